"""``trellis dspy modules|workflows|run`` in-process, against a fresh embedded data directory; the
module's model calls go to a scriptable fake upstream configured through the environment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.dspy.support import answer, upstream_model
from tests.gateway.upstream import FakeUpstream
from trellis.cli.main import app


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_data_dir: Path, upstream: FakeUpstream) -> Path:
    monkeypatch.setenv("TRELLIS_MODELS", json.dumps({"up": upstream_model(upstream)}))
    monkeypatch.setenv("TRELLIS_DSPY__DEFAULT_MODEL", "up")
    return cli_data_dir


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_modules_and_workflows_are_listed(data_dir: Path) -> None:
    result = cli("dspy", "modules", "--json")
    assert result.exit_code == 0, result.output
    names = {m["name"] for m in json.loads(result.output)}
    assert {"model_switcher", "context_synthesis", "role_refinement"} <= names
    result = cli("dspy", "workflows", "--json")
    assert result.exit_code == 0, result.output
    flows = {w["name"]: w for w in json.loads(result.output)}
    assert [s["module"] for s in flows["documentation_retrieval"]["stages"]][-1] == "context_synthesis"


def test_run_a_module(data_dir: Path, upstream: FakeUpstream) -> None:
    upstream.chat(answer(result="Blue."))
    result = cli("dspy", "run", "model_switcher", "-i", "task=Name a color.", "-i", "complexity=simple", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["data"]["result"] == "Blue."
    assert out["data"]["model"] == "up"
    assert out["module_type"] == "ModelSwitcher"


def test_bad_inputs_and_unknown_modules_are_one_line_errors(data_dir: Path) -> None:
    result = cli("dspy", "run", "model_switcher", "-i", "task=5")
    assert result.exit_code == 1
    assert "inputs.task" in result.output
    result = cli("dspy", "run", "nope", "-i", "task=x")
    assert result.exit_code == 1
    assert "No DSPy module named 'nope'" in " ".join(result.output.split())
    result = cli("dspy", "run", "model_switcher", "--inputs", "[1]")
    assert result.exit_code == 1
