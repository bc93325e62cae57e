"""The import rules of ARCHITECTURE.md, read from the source: layers, no circles, no builder.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import is
still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Runtime layers, lowest first. A part may import its own layer and the layers below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "edge",
            "errors",
            "files",
            "log_format",
            "cpu",
            "systemd",
            "config",
            "board",
            "identity",
            "release",
            "text_enum",
        }
    ),
    frozenset({"outbox", "inference", "voice", "update"}),
    frozenset({"uplink", "triggers", "camera"}),
    frozenset({"wiring"}),
    frozenset(
        {
            "service",
            "operations",
            "voice_actions",
            "api",
            "doctor",
            "selftest",
            "system_setup",
            "update_jobs",
        }
    ),
    frozenset({"cli"}),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in (REPO / package).rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def module_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (``from a.b import c``: ``a.b.c``, else ``a.b``)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for imported in imports_of(path):
            target = imported
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def part_of(module: str) -> str:
    """``edge.uplink.sync`` → ``uplink``; ``edge.wiring`` → ``wiring``; ``edge`` → ``edge``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(part: str) -> int:
    for number, layer in enumerate(LAYERS):
        if part in layer:
            return number
    raise AssertionError(
        f"edge/{part} is in no layer: add it to LAYERS here and to ARCHITECTURE.md's table"
    )


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_another_in_a_circle() -> None:
    graph = module_graph(modules("edge") | modules("images"))
    assert circles(graph) == []


def test_the_folder_map_of_the_runtime_has_no_circle() -> None:
    folders: dict[str, set[str]] = defaultdict(set)
    for source, targets in module_graph(modules("edge")).items():
        folders[part_of(source)].update(
            part_of(t) for t in targets if part_of(t) != part_of(source)
        )
    assert circles(folders) == []


def test_no_runtime_part_imports_a_higher_layer() -> None:
    upward = [
        f"{source} imports {target}"
        for source, targets in module_graph(modules("edge")).items()
        for target in targets
        if layer_of(part_of(target)) > layer_of(part_of(source))
    ]
    assert upward == [], "see ARCHITECTURE.md: lower layers never import higher ones"


def test_the_runtime_never_imports_the_builder() -> None:
    offenders = [
        name
        for name, path in modules("edge").items()
        if any(target.split(".")[0] == "images" for target in imports_of(path))
    ]
    assert offenders == []


def test_command_modules_import_the_context_never_each_other() -> None:
    commands = {name for name in modules("edge") if name.startswith("edge.cli.")}
    allowed = {"edge.cli.context"}
    crossing = [
        f"{source} imports {target}"
        for source, targets in module_graph(modules("edge")).items()
        if source in commands
        for target in targets
        if target in commands and target not in allowed
    ]
    assert crossing == []


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an outbox module importing the uplink is reported."""
    graph = {"edge.outbox.store": {"edge.uplink.topics"}, "edge.uplink.topics": set()}
    upward = [
        (s, t) for s, ts in graph.items() for t in ts if layer_of(part_of(t)) > layer_of(part_of(s))
    ]
    assert upward == [("edge.outbox.store", "edge.uplink.topics")]
    assert circles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
