"""The package's shape: calls go down, no module imports another in a circle.

Every import counts: at module level, under ``TYPE_CHECKING`` and inside functions.
"""

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pipecat_gradium"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # "from pkg import sub" imports the submodule; "from pkg import name" the package.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_no_module_imports_another_in_a_circle():
    graph = import_graph()
    # The package's __init__ only re-exports, lazily: its arrows are not part of the layout.
    graph = {m: deps - {"pipecat_gradium"} for m, deps in graph.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None
    assert "pipecat_gradium.answer" in order and "pipecat_gradium.emulator.request" in order


def test_only_the_package_imports_the_service_module():
    importers = sorted(m for m, deps in import_graph().items() if "pipecat_gradium.tts" in deps)
    assert importers == ["pipecat_gradium"]


def test_the_emulator_layers_go_down():
    graph = import_graph()
    emulator = "pipecat_gradium.emulator"
    assert f"{emulator}.connection" in graph[f"{emulator}.server"]
    assert f"{emulator}.request" in graph[f"{emulator}.connection"]
    for upper in ("server", "connection"):
        assert f"{emulator}.{upper}" not in graph[f"{emulator}.request"]
    assert f"{emulator}.server" not in graph[f"{emulator}.connection"]
