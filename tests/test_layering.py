"""The package's floors, read from its source with ``ast`` (function-local imports included):

* no import cycle anywhere in ``musebot/``;
* ``musebot/realtime/`` never imports the network face, the benchmarks, the CLI, nor torch;
* one mode never imports another (``modes/base.py`` and ``modes/band.py`` are what modes share; the
  call mode is ``call``, ``call_worker`` and ``answers``; ``modes/__init__.py`` is the factory of them all);
* no module over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "musebot"
MAX_LINES = 600
FORBIDDEN_IN_REALTIME = ("musebot.server", "musebot.bench", "musebot.cli", "musebot.serve", "musebot.tools",
                         "torch", "transformers", "lightning")
MODE_FAMILIES = {"call": "call", "call_worker": "call", "answers": "call", "accompany": "accompany",
                 "accompany_plan": "accompany",
                 "looper": "looper"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from a import b`` counts ``a.b`` when that is a
    module of the package, else ``a``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: {i for i in imports_of(path) if i in MODULES and i != name} for name, path in MODULES.items()}


def test_no_import_cycle_anywhere_in_the_package():
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_realtime_floor_imports_nothing_above_it_nor_torch():
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("musebot.realtime"):
            continue
        for imported in imports_of(path):
            if any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN_IN_REALTIME):
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(bad)


def test_one_mode_never_imports_another():
    bad = []
    for name in MODULES:
        family = MODE_FAMILIES.get(name.rpartition(".")[2]) if name.startswith("musebot.realtime.modes.") else None
        if family is None:
            continue
        for imported in GRAPH[name]:
            if imported.startswith("musebot.realtime.modes."):
                other = MODE_FAMILIES.get(imported.rpartition(".")[2])
                if other is not None and other != family:
                    bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(bad)


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_walk_sees_the_package_and_its_imports():
    # The checks above are only as good as the graph: it must hold the floors and their edges.
    assert {"musebot.realtime.daemon", "musebot.realtime.modes.base", "musebot.server.app"} <= set(MODULES)
    assert "musebot.realtime.modes.base" in GRAPH["musebot.realtime.modes.call"]
    assert "musebot.realtime.daemon" in GRAPH["musebot.serve"] or "musebot.realtime.daemon" in imports_of(
        MODULES["musebot.serve"])
