"""Resumable stages of an experiment (the demo, the zoo experiment): run each once, skip what is done.

A stage is done when the state file records it with the same fingerprint (the settings it depends on); a stage that
fails leaves the state of the earlier ones, so running the same command again resumes there. Each stage's own
outputs are resumable too (zoo runs, training checkpoints, evaluation runs).

Example:
    >>> import tempfile, pathlib
    >>> state = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> calls = []
    >>> stage = Stage("one", "the first stage", lambda: calls.append(1) or {"ok": True}, "fp-1")
    >>> run_stages([stage], state, log=lambda text: None)["one"]["summary"]
    {'ok': True}
    >>> _ = run_stages([stage], state, log=lambda text: None)  # done before: skipped
    >>> calls
    [1]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_json
from geosane_hf.errors import UsageError

__all__ = ["Stage", "read_state", "run_stages"]


@dataclass
class Stage:
    """One resumable step: ``run()`` returns a JSON-able summary; ``fingerprint`` names the settings it used."""

    name: str
    description: str
    run: Callable[[], dict[str, Any]]
    fingerprint: str


def read_state(path: Path) -> dict[str, Any]:
    """The recorded stages ({} when missing or torn)."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}  # a torn write of an older version: redo the stages (each resumes on its own)


def run_stages(
    stages: Sequence[Stage],
    state_path: Path,
    *,
    resume: bool = True,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda text: print(text, flush=True),
) -> dict[str, Any]:
    """Runs (or resumes) the stages in order and returns the state (per stage: done, fingerprint, seconds, summary).

    Args:
        stages: The stages.
        state_path: The JSON state file (written atomically after each stage).
        resume: Skip stages recorded as done with the same fingerprint.
        only: Run just these stages (their inputs must exist).
        log: Where progress lines go.

    Raises:
        UsageError: ``only`` names an unknown stage.
    """
    state = read_state(state_path) if resume else {}
    unknown = set(only or []) - {s.name for s in stages}
    if unknown:
        raise UsageError(f"expected stage names from {[s.name for s in stages]}, got {sorted(unknown)}")
    for number, stage in enumerate(stages, 1):
        if only and stage.name not in only:
            continue
        record = state.get(stage.name)
        header = f"[{number}/{len(stages)}] {stage.name}: {stage.description}"
        if record and record.get("fingerprint") == stage.fingerprint and record.get("done"):
            log(f"{header} ... done before ({record['seconds']:.0f} s), skipped")
            continue
        log(f"\n{header}")
        started = time.perf_counter()
        summary = stage.run()
        state[stage.name] = {
            "done": True,
            "fingerprint": stage.fingerprint,
            "seconds": round(time.perf_counter() - started, 1),
            "summary": summary,
        }
        state_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(state_path, state, indent=2, default=str)
        log(f"{header} ... {state[stage.name]['seconds']:.0f} s")
    return state
