"""The import rules of docs/architecture.md, read from the source of ``src/trellis``.

1. ``settings``, ``kit`` and ``storage`` import no domain (``storage/models.py``, the table
   registry, excepted): the layers every domain stands on know none of them.
2. Only doors import ``trellis.runtime``: ``app.py``, the REST modules (``api.py``, ``openai_api.py``,
   and ``auth/deps.py``, the REST doors' dependencies), ``cli/``, ``graphql/`` and ``ws/`` (the GraphQL
   and WebSocket doors). Services get what they need through their constructors.
3. Nobody imports another package's private names (``_name``): a name with an underscore is private
   to the package (folder) that defines it.
4. No import cycles between modules.

Each rule is checked by a function that takes the parsed imports, so the tests below also show
that a forbidden import is caught (``test_*_is_caught``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
FOUNDATIONS = ("trellis.settings", "trellis.kit", "trellis.storage")
TABLE_REGISTRY = "trellis.storage.models"
DOOR_FILES = ("api.py", "openai_api.py", "deps.py")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    module: str  # the imported module (resolved from relative imports)
    names: tuple[str, ...]  # for ``from m import a, b``; empty for ``import m``
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def imports_of(path: Path, source: str | None = None) -> list[Import]:
    """Every import in a file, function-level ones included (they are dependencies too), except
    those under ``if TYPE_CHECKING``."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    importer = module_name(path)
    skip = _type_checking_lines(tree)
    package = importer if is_package(path) else importer.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.extend(Import(importer, alias.name, (), node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(Import(importer, module, tuple(a.name for a in node.names), node.lineno))
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(SRC.rglob("*.py")) for imp in imports_of(path)]


def all_modules() -> set[str]:
    return {module_name(path) for path in SRC.rglob("*.py")}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# --- the rules -------------------------------------------------------------------------------------


def foundation_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if imp.importer == TABLE_REGISTRY or not any(_within(imp.importer, f) for f in FOUNDATIONS):
            continue
        if not _within(imp.module, "trellis") or imp.module == "trellis":
            continue
        if not any(_within(imp.module, f) for f in FOUNDATIONS):
            bad.append(f"{imp.importer}:{imp.line} imports the domain module {imp.module}")
    return bad


def is_door(module: str) -> bool:
    if module == "trellis.app" or any(
        _within(module, door) for door in ("trellis.cli", "trellis.graphql", "trellis.ws")
    ):
        return True
    return module.rpartition(".")[2] + ".py" in DOOR_FILES


def runtime_violations(imports: list[Import]) -> list[str]:
    return [
        f"{imp.importer}:{imp.line} imports trellis.runtime but is not a door"
        for imp in imports
        if _within(imp.module, "trellis.runtime") and imp.importer != "trellis.runtime" and not is_door(imp.importer)
    ]


def private_name_violations(imports: list[Import], modules: set[str]) -> list[str]:
    bad = []
    for imp in imports:
        if not _within(imp.module, "trellis"):
            continue
        # The package (folder) the imported module belongs to: the module itself for a package.
        is_package = _is_package_name(imp.module, modules)
        owner = imp.module if is_package else imp.module.rpartition(".")[0]
        importer_package = imp.importer.rpartition(".")[0]
        for name in imp.names:
            private = name.startswith("_") and not name.startswith("__")
            if private and not _within(importer_package, owner):
                bad.append(f"{imp.importer}:{imp.line} imports the private name {name} from {imp.module}")
        private_module = any(part.startswith("_") and not part.startswith("__") for part in imp.module.split("."))
        if private_module and not _within(importer_package, imp.module.rpartition(".")[0]):
            bad.append(f"{imp.importer}:{imp.line} imports the private module {imp.module}")
    return bad


def _is_package_name(module: str, modules: set[str]) -> bool:
    return any(other.startswith(module + ".") for other in modules)


def cycles(imports: list[Import], modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over module-to-module edges.
    ``from package import submodule`` counts as an edge to the submodule."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        if imp.importer not in graph:
            continue
        submodules = {f"{imp.module}.{name}" for name in imp.names} & modules
        targets = set(submodules)
        # ``from package import name`` depends on the package itself unless every name is a submodule.
        if imp.module in modules and (not imp.names or len(submodules) < len(imp.names)):
            targets.add(imp.module)
        graph[imp.importer].update(targets - {imp.importer})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the tree obeys them ---------------------------------------------------------------------------


def test_foundations_import_no_domain() -> None:
    assert foundation_violations(all_imports()) == []


def test_only_doors_import_the_runtime() -> None:
    assert runtime_violations(all_imports()) == []


def test_no_private_names_cross_packages() -> None:
    assert private_name_violations(all_imports(), all_modules()) == []


def test_no_import_cycles() -> None:
    assert cycles(all_imports(), all_modules()) == []


def test_the_rules_see_the_whole_tree() -> None:
    modules = all_modules()
    # A walk that found nothing would pass every rule: make sure it reads the real tree.
    assert {"trellis.runtime", "trellis.app", "trellis.cli.main", "trellis.context.search.service"} <= modules
    assert any(imp.module == "trellis.runtime" for imp in all_imports())


# --- and catch what breaks them --------------------------------------------------------------------


def _with(path: str, source: str) -> list[Import]:
    return imports_of(SRC / path, source)


def test_a_domain_import_in_kit_is_caught() -> None:
    assert foundation_violations(_with("trellis/kit/ids.py", "from trellis.gateway.service import Gateway\n"))
    assert not foundation_violations(_with("trellis/kit/ids.py", "from trellis.kit.clock import Clock\n"))
    assert not foundation_violations(_with("trellis/storage/models.py", "from trellis.auth.models import User\n"))


def test_a_service_importing_the_runtime_is_caught() -> None:
    assert runtime_violations(_with("trellis/context/service.py", "from trellis.runtime import Runtime\n"))
    assert not runtime_violations(_with("trellis/context/api.py", "from trellis.runtime import Runtime\n"))
    assert not runtime_violations(_with("trellis/cli/context.py", "from trellis.runtime import Runtime\n"))


def test_a_private_name_from_another_package_is_caught() -> None:
    modules = all_modules()
    bad = _with("trellis/vectors/service.py", "from trellis.context.index.exact import _Matrix\n")
    assert private_name_violations(bad, modules)
    same_package = _with("trellis/context/index/pgvector.py", "from trellis.context.index.exact import _Matrix\n")
    assert not private_name_violations(same_package, modules)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("trellis/kit/ids.py", "trellis/kit/clock.py"),
        ("trellis/context/service.py", "trellis/context/repository.py"),
    ],
)
def test_a_cycle_is_caught(first: str, second: str) -> None:
    a, b = module_name(SRC / first), module_name(SRC / second)
    imports = [*_with(first, f"import {b}\n"), *_with(second, f"import {a}\n")]
    assert cycles(imports, {a, b}) == [sorted([a, b])]
