"""Where things live: no import cycles inside revdistill, and the typed interfaces hold for the real classes."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import revdistill

PACKAGE = Path(revdistill.__file__).parent

#: Cycles that exist today and are being removed elsewhere; each entry must go once its cycle is gone.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name an import in ``tree`` may load: module level and inside functions, not the imports
    under ``if TYPE_CHECKING:`` (they never run); ``importlib.import_module("...")`` with a literal too."""
    found: list[str] = []
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.extend(f"{source}.{alias.name}" for alias in node.names)
            found.append(source)
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(node.args[0].value)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of revdistill it imports}`` read from the source files (nothing is imported)."""
    files = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            # ``from a.b import c``: the module a.b.c when it is one, else the module a.b
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan), each a set of module names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_cycles_through_any_import():
    tree = ast.parse("import revdistill.a\nfrom . import b\n"
                     "def f():\n    from .c import thing\n"
                     "if TYPE_CHECKING:\n    import revdistill.d\n"
                     "importlib.import_module('revdistill.e')\n")
    assert sorted(_imported_names(tree, "revdistill.x", False)) == [
        "revdistill", "revdistill.a", "revdistill.b", "revdistill.c", "revdistill.c.thing", "revdistill.e"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"g"}}
    assert sorted(sorted(component) for component in cycles(graph)) == [["a", "b", "c"], ["e", "f"]]


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert "revdistill.esm.models.registry" in graph and len(graph) > 60  # the whole package was read
    found = set(cycles(graph))
    new = [sorted(component) for component in found - KNOWN_CYCLES]
    assert not new, f"import cycles inside revdistill: {new}; import in one direction (see STYLE.md)"
    gone = [sorted(component) for component in KNOWN_CYCLES - found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES in {__file__}: {gone}"


def test_the_foundation_and_the_registry_import_nothing_above_them():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("revdistill.io"):
            assert all(target.startswith("revdistill.io") for target in targets), (module, targets)
        if module.startswith("revdistill.core"):
            assert "revdistill.io.download" not in targets, f"{module} imports the HTTP module"
            assert all(target.startswith(("revdistill.core", "revdistill.io.files")) for target in targets), \
                (module, targets)
    assert graph["revdistill.esm.models.registry"] == set()
    # checkpoint.py is the one place a .pt file is opened; it depends on nothing of revdistill
    assert graph["revdistill.esm.checkpoint"] == set()
    assert graph["revdistill.esm.models.weights"] <= {"revdistill.esm.models.registry", "revdistill.io.download",
                                                        "revdistill.io.files", "revdistill.esm.checkpoint"}


@pytest.mark.parametrize("module", ["revdistill.dashboard.analysis", "revdistill.dashboard.timing",
                                    "revdistill.dashboard.models_panel"])
def test_the_dashboard_asks_the_package_for_model_rules(module):
    """No model family listed again, no window arithmetic re-derived: the UI asks the registry and the engine."""
    source = (PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text()
    for repeated in ('"8M", "35M"', '"tiny-32", "tiny-48"', "1022", "MAX_TOKENS", "WINDOW_OVERLAP", "ordered_models"):
        assert repeated not in source, f"{module} repeats {repeated!r}"


def test_the_real_store_and_embedders_have_the_typed_interfaces(tmp_path):
    from revdistill.esm.interfaces import EmbedSettings, Embedder, EmbeddingStoreLike
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder
    from revdistill.esm.store import EmbeddingStore
    from revdistill.service.client import WorkerEmbedder

    assert isinstance(EmbeddingStore(tmp_path / "s.h5"), EmbeddingStoreLike)
    assert isinstance(EmbedOptions(), EmbedSettings)
    assert isinstance(LocalEmbedder(), Embedder)
    assert isinstance(WorkerEmbedder(EmbedOptions()), Embedder)
    assert not isinstance(object(), Embedder) and not isinstance(tmp_path, EmbeddingStoreLike)
