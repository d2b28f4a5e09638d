"""The house's rooms import one way (docs/architecture.md): an AST check of every import, lazy ones included.

Each module of ``geosane_hf`` (and ``modeling/``, ``training/``, ``spaces/``) belongs to a room with a rank; a module
may import its own room and rooms of a lower rank only. Imports inside functions count (a lazy back-import is still
a dependency), imports under ``if TYPE_CHECKING:`` do not (they never run). The few compatibility shims that keep an
old public import path alive are listed in ``SHIMS`` with the one target each may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# room -> rank; a module's room is the longest matching prefix.
ROOMS: dict[str, int] = {
    # foundation: no torch models, no I/O formats
    "geosane_hf.errors": 0,
    "geosane_hf.atomic_io": 0,
    "geosane_hf.safe_paths": 0,
    "geosane_hf.redaction": 0,
    "geosane_hf.runtime": 0,
    "geosane_hf.layer_types": 0,
    "geosane_hf.package_data": 0,
    "geosane_hf.hub_cache": 0,
    "geosane_hf.cards": 0,
    "geosane_hf.plots": 0,
    "geosane_hf.token_norm": 0,
    "geosane_hf.train_loop": 0,
    # the self-contained model (Hub remote code): torch + transformers only
    "geosane_hf.modeling": 1,
    "modeling": 1,
    # weights in and out: formats, tokens, imagery, Hub repos
    "geosane_hf.checkpoints": 2,
    "geosane_hf.packaged": 2,
    "geosane_hf.tokenizer": 2,
    "geosane_hf.imagery": 2,
    "geosane_hf.task_data": 2,
    "geosane_hf.hub": 2,
    "geosane_hf.conversion": 2,
    "geosane_hf.collection": 3,
    "geosane_hf.augmentations": 4,
    "geosane_hf.generation": 5,
    "geosane_hf.embedding": 5,
    "geosane_hf.evaluation": 6,
    "geosane_hf.experiments": 7,
    "geosane_hf.commands": 8,
    "geosane_hf.cli": 8,
    "geosane_hf": 8,  # the package's __init__ (lazy registration of the model classes and the pipeline task)
    "training": 9,
    "spaces": 10,
}

# Compatibility shims (docs/architecture.md): module -> the one higher room it may import.
SHIMS = {
    "geosane_hf.evaluation": "geosane_hf.experiments.transfer",
    "geosane_hf.evaluation.zoo_experiment": "geosane_hf.experiments.zoo",
}


def _room(module: str) -> str | None:
    best = None
    for room in ROOMS:
        if (module == room or module.startswith(room + ".")) and (best is None or len(room) > len(best)):
            best = room
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] == "modeling":
        parts = ["geosane_hf", *parts]  # installed as geosane_hf.modeling
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file that runs (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _sources() -> list[Path]:
    files = [*ROOT.joinpath("geosane_hf").rglob("*.py"), *ROOT.joinpath("modeling").rglob("*.py")]
    files += [*ROOT.joinpath("training").glob("*.py"), *ROOT.joinpath("spaces").glob("*.py")]
    return sorted(files)


def back_imports() -> list[str]:
    problems = []
    for path in _sources():
        module = _module_name(path)
        own = _room(module)
        if own is None:
            problems.append(f"{module}: in no room of ROOMS; add it to the room map (docs/architecture.md)")
            continue
        for line, target in imports_of(path):
            if target == "modeling" or target.startswith("modeling."):
                target = "geosane_hf." + target  # the same files, imported under their installed name
            room = _room(target)
            if room is None or room == own or ROOMS[room] < ROOMS[own]:
                continue
            if ROOMS[room] == ROOMS[own] and own != "geosane_hf":
                continue  # siblings of one rank (e.g. tokenizer and checkpoints) may use each other
            if SHIMS.get(module) and (target == SHIMS[module] or target.startswith(SHIMS[module] + ".")):
                continue
            if own == "geosane_hf" and ROOMS[room] <= ROOMS[own]:
                continue
            problems.append(
                f"{path.relative_to(ROOT)}:{line}: {own} (rank {ROOMS[own]}) imports {target} "
                f"({room}, rank {ROOMS[room]})"
            )
    return problems


def test_rooms_import_only_rooms_below_them():
    problems = back_imports()
    assert not problems, "back-imports against the room map (docs/architecture.md):\n" + "\n".join(problems)


def test_modeling_imports_nothing_of_ours():
    for path in ROOT.joinpath("modeling").rglob("*.py"):
        ours = [
            (line, t)
            for line, t in imports_of(path)
            if t.startswith(("geosane_hf", "training", "spaces")) and _room(t) != "geosane_hf.modeling"
        ]
        assert not ours, f"{path}: modeling/ is Hub remote code (torch + transformers only), got {ours}"


def test_the_check_catches_a_lazy_back_import(tmp_path, monkeypatch):
    """A check that cannot fail is no check: a function-level import of a higher room is reported."""
    fake = ROOT / "geosane_hf" / "collection" / "_fake_back_import.py"
    fake.write_text("def f():\n    from geosane_hf.experiments.zoo import run_zoo_experiment\n")
    try:
        problems = back_imports()
    finally:
        fake.unlink()
    assert any("_fake_back_import.py:2" in p and "geosane_hf.experiments" in p for p in problems), problems


def test_no_circle_between_rooms():
    """Siblings of one rank may import each other, but never in a circle (e.g. demo <-> its command)."""
    graph: dict[str, set[str]] = {}
    for path in _sources():
        module = _module_name(path)
        own = _room(module)
        for _, target in imports_of(path):
            if SHIMS.get(module) and target.startswith(SHIMS[module]):
                continue  # a compatibility shim's one re-export
            room = _room("geosane_hf." + target if target.split(".")[0] == "modeling" else target)
            if room and own and room != own and own != "geosane_hf" and room != "geosane_hf":
                graph.setdefault(own, set()).add(room)
    state: dict[str, int] = {}

    def visit(room: str, trail: list[str]) -> list[str] | None:
        state[room] = 1
        for nxt in sorted(graph.get(room, ())):
            if state.get(nxt) == 1:
                return [*trail, room, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, room])):
                return found
        state[room] = 2
        return None

    for room in sorted(graph):
        if room not in state:
            circle = visit(room, [])
            assert circle is None, f"rooms import each other in a circle: {' -> '.join(circle)}"
