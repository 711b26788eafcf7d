"""The shape of the code: packages import one way, without cycles, and no module or function grows too long.

Built from the source with :mod:`ast` (nothing is imported): every ``import`` of a ``fusemycell``
module, at the top of a file or inside a function, is an edge of the import graph. The layers are
those of ``docs/architecture.md``.
"""

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "fusemycell"

#: Bottom to top: a module may import its own layer and the layers below it, never one above.
LAYERS = (
    (
        "foundations",
        {
            "fusemycell",
            "configuration",
            "devices",
            "errors",
            "io",
            "memory",
            "normalization",
            "plotting",
            "position",
            "progress",
            "ranks",
            "workspace",
        },
    ),
    (
        "science",
        {
            "metrics",
            "simulation",
            "preprocessing",
            "models",
            "patching",
            "inference",
            "evaluation",
            "training",
            "export",
        },
    ),
    (
        "Kedro wiring",
        {
            "parameters",
            "run_planning",
            "tracking",
            "datasets",
            "pipelines",
            "pipeline_registry",
            "hooks",
            "run_messages",
            "settings",
        },
    ),
    ("entry points", {"cli", "__main__", "napari"}),
)

#: Third-party packages the foundations and the science do not import: they run without a Kedro session.
KEDRO_ONLY = {"kedro", "kedro_datasets", "kedro_mlflow", "kedro_viz", "mlflow"}

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

#: Modules allowed over :data:`MAX_MODULE_LINES`, each with the reason.
KNOWN_LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``src/fusemycell`` (a package is its ``__init__``)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The ``fusemycell`` modules that module ``name`` imports (a name imported from a package that is
    itself a module counts as that module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                yield f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module


def _third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _top(module: str) -> str:
    """The top-level package or module under ``fusemycell`` (``fusemycell`` itself for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


GRAPH = {name: {imported for imported in _imports(name, path) if imported != name} for name, path in MODULES.items()}
LAYER_OF = {top: index for index, (_, tops) in enumerate(LAYERS) for top in tops}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            if successor not in state and (found := visit(successor)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_package_has_a_layer():
    unplaced = sorted({_top(name) for name in MODULES} - set(LAYER_OF))
    assert not unplaced, f"put {unplaced} in a layer of LAYERS (and of docs/architecture.md)"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{name} ({LAYERS[LAYER_OF[_top(name)]][0]}) imports {imported} ({LAYERS[LAYER_OF[_top(imported)]][0]})"
        for name, imports in GRAPH.items()
        for imported in sorted(imports)
        if LAYER_OF.get(_top(imported), -1) > LAYER_OF.get(_top(name), len(LAYERS))
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_packages_import_each_other_one_way():
    packages: dict[str, set[str]] = defaultdict(set)
    for name, imports in GRAPH.items():
        packages[_top(name)] |= {_top(imported) for imported in imports} - {_top(name)}
    assert _cycle(packages) is None, f"package import cycle: {' -> '.join(_cycle(packages))}"


def test_no_module_import_cycle():
    assert _cycle(GRAPH) is None, f"module import cycle: {' -> '.join(_cycle(GRAPH))}"


def test_the_science_runs_without_kedro():
    science = {top for _, tops in LAYERS[:2] for top in tops}
    offenders = {
        name: sorted(_third_party(path) & KEDRO_ONLY) for name, path in MODULES.items() if _top(name) in science
    }
    assert not {name: found for name, found in offenders.items() if found}


def test_the_import_graph_resolves_what_it_checks():
    """Not blind to what it exists for: imports inside functions, ``from package import module``, cycles."""
    assert "fusemycell.inference.onnx_backend" in GRAPH["fusemycell.inference.apply"]  # inside make_backend
    assert "fusemycell.io.folder_lock" in GRAPH["fusemycell.datasets.folder_writer"]  # `from fusemycell.io import x`
    # the training node composes inference and training; neither imports the other
    assert {"fusemycell.inference.predictor", "fusemycell.training.engine"} <= GRAPH[
        "fusemycell.pipelines.training.nodes"
    ]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _functions(path: Path) -> Iterator[tuple[str, int]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{node.name} (line {node.lineno})", node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("relative", sorted(str(path.relative_to(SRC)) for path in MODULES.values()))
def test_modules_and_functions_stay_short(relative):
    path = SRC / relative
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if relative not in KNOWN_LONG_MODULES:
        assert lines <= MAX_MODULE_LINES, f"{relative}: {lines} lines; split it by concern"
    long = [f"{name}: {length} lines" for name, length in _functions(path) if length > MAX_FUNCTION_LINES]
    assert not long, f"{relative}: functions over {MAX_FUNCTION_LINES} lines: {long}"
