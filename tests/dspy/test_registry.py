"""A user's own DSPy module becomes available by installing a package: the registry finds it through
the ``trellis.dspy_modules`` entry-point group (a real distribution on ``sys.path``, as pip would leave
it), next to the built-in modules registered the same way."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from trellis.dspy.modules.base import TrellisModule
from trellis.dspy.registry import ModuleRegistry
from trellis.kit.errors import NotFound

PACKAGE = '''
import dspy

from trellis.dspy.modules.base import TrellisModule


class Shout(dspy.Signature):
    """Repeat the text louder."""

    text: str = dspy.InputField()
    loud: str = dspy.OutputField()


class Shouter(TrellisModule):
    signature = Shout
    description = "Repeats the text louder."

    async def aforward(self, **inputs):
        return dspy.Prediction(loud=inputs["text"].upper())


NOT_A_MODULE = 42
'''


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[None]:
    """``acme-dspy`` installed into a directory on ``sys.path``: its code and its dist-info."""
    (tmp_path / "acme_dspy.py").write_text(textwrap.dedent(PACKAGE))
    info = tmp_path / "acme_dspy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-dspy\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[trellis.dspy_modules]\nshouter = acme_dspy:Shouter\nbroken = acme_dspy:NOT_A_MODULE\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("acme_dspy", None)


def test_an_installed_packages_module_is_found_beside_the_built_ins(installed: None) -> None:
    registry = ModuleRegistry()
    assert {"shouter", "model_switcher", "documentation_query"} <= set(registry.module_names)
    shouter = registry.module("shouter")
    assert issubclass(shouter, TrellisModule)
    assert shouter.__module__ == "acme_dspy"
    assert list(shouter.signature.output_fields) == ["loud"]


def test_an_entry_point_that_is_no_module_is_refused_by_name(installed: None) -> None:
    with pytest.raises(TypeError, match=r"entry point 'broken' of trellis\.dspy_modules is not a TrellisModule"):
        ModuleRegistry().module("broken")


def test_without_the_package_its_module_is_not_found() -> None:
    registry = ModuleRegistry()
    assert "shouter" not in registry.module_names
    with pytest.raises(NotFound):
        registry.module("shouter")
