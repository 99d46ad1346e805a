"""The import graph of the installed package is a strict layering, read from the source with ``ast``:

    spikebottlenet.v1 <- shared <- device, edge <- training <- sbn

A module imports only from its own subpackage and the layers below it; device and edge never import each other;
nothing installed imports ``bench`` or ``tests``; and no two modules import each other, directly or in a ring.
Imports inside functions count too (they are how a lazy dependency would slip in); only ``if TYPE_CHECKING:``
blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "v1": ROOT / "spikebottlenet" / "v1",
    "shared": ROOT / "shared",
    "device": ROOT / "device",
    "edge": ROOT / "edge",
    "training": ROOT / "training",
    "sbn": ROOT / "sbn",
}
LAYER = {"v1": 0, "shared": 1, "device": 2, "edge": 2, "training": 3, "sbn": 4}


def modules() -> dict[str, Path]:
    """Dotted name (``spikebottlenet.shared.rpc.wire``) -> source file, for every installed module."""
    found = {}
    for part, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("").parts
            relative = relative[:-1] if relative[-1] == "__init__" else relative
            found[".".join(("spikebottlenet", part, *relative))] = path
    return found


def imported(name: str, path: Path) -> Iterator[str]:
    """The absolute names ``path`` (module ``name``) imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for node in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`


def part_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == "spikebottlenet" and len(parts) > 1 else None


def test_each_module_imports_only_its_own_subpackage_and_the_layers_below() -> None:
    found = modules()
    assert len(found) > 50, "too few modules found: the folder map is out of date"
    wrong = []
    for name, path in found.items():
        own = part_of(name)
        for target in imported(name, path):
            top = target.split(".")[0]
            if top in {"bench", "tests", *{p for p in FOLDERS if p != "v1"}}:
                wrong.append(f"{name} imports {target} (not installed, or not under spikebottlenet)")
            other = part_of(target)
            if other is None or other == own or other not in LAYER:
                continue
            if LAYER[other] >= LAYER[own]:
                wrong.append(f"{name} ({own}) imports {target} ({other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    found = modules()
    graph = {name: {t for t in imported(name, path) if t in found and t != name} for name, path in found.items()}
    for name in graph:  # a package's __init__ is imported with each of its modules: not an edge of its own
        graph[name] -= {p for p in graph[name] if name.startswith(p + ".")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)
