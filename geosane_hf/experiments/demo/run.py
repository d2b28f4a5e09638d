"""The demo's driver: runs (or resumes) the stages, then combines their summaries into ``results.md``."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_text
from geosane_hf.errors import UsageError
from geosane_hf.experiments.demo.config import STATE_FILE, DemoConfig, DemoError
from geosane_hf.experiments.demo.stages import demo_stages


@dataclass
class DemoResult:
    """What the demo did: per stage, seconds and summary; and the path of the combined report."""

    stages: dict[str, dict[str, Any]]
    report: Path
    seconds: float


def run_demo(config: DemoConfig, only: list[str] | None = None) -> DemoResult:
    """Runs (or resumes) every stage, then writes ``results.md`` in ``config.out_dir``.

    Args:
        config: The settings.
        only: Run just these stages (their inputs must exist).

    Raises:
        DemoError: A stage failed (re-running resumes from there).
    """
    from geosane_hf.experiments.stages import Stage, run_stages

    started = time.perf_counter()
    stages = [
        Stage(s.name, s.description, functools.partial(s.run, config), s.fingerprint(config))
        for s in demo_stages(config)
    ]
    try:
        state = run_stages(stages, config.root / STATE_FILE, resume=config.resume, only=only)
    except UsageError as error:
        raise DemoError(str(error)) from error
    report = write_report(config, state)
    return DemoResult(state, report, time.perf_counter() - started)


def write_report(config: DemoConfig, state: dict[str, Any]) -> Path:
    """Combines the stage summaries and the result tables into ``<out_dir>/results.md``."""
    lines = [
        "# GeoSANE-HF offline demo results",
        "",
        f"Command: `make demo{'-quick' if config.quick else ''}` (= `geosane demo{' --quick' if config.quick else ''} "
        f"--out {config.out_dir}`). Settings: `{json.dumps(asdict(config), default=str)}`",
        "",
        "| stage | seconds | summary |",
        "|---|---:|---|",
    ]
    for name, record in state.items():
        summary = {k: v for k, v in record.get("summary", {}).items() if k not in {"generated", "final_evaluation"}}
        lines.append(f"| {name} | {record['seconds']:.0f} | `{json.dumps(summary, default=str)[:200]}` |")
    train = state.get("train", {}).get("summary", {})
    if train.get("final_evaluation"):
        lines += [
            "",
            "## GeoSANE training (held-out reconstruction)",
            "",
            "```json",
            json.dumps(train["final_evaluation"], indent=1),
            "```",
        ]
        if train.get("curve"):
            lines += ["", "![training curve](train/training_curve.png)"]
    generated = state.get("generate", {}).get("summary", {}).get("generated", [])
    if generated:
        lines += [
            "",
            "## Generated models (published as timm repos)",
            "",
            "| prompt | params | seconds | loads with timm local-dir | folder |",
            "|---|---:|---:|---|---|",
        ]
        lines += [
            f"| {g['prompt']} | {g['params']:,} | {g['seconds']:.1f} | {g['loads_with_timm']} | `{g['folder']}` |"
            for g in generated
        ]
    if state.get("embed", {}).get("done"):
        lines += [
            "",
            "## The latent view (UMAP of per-model latents, generated models starred)",
            "",
            "![latent view](embeddings/latent_umap.png)",
        ]
    for section, table in (
        ("Fine-tuning every start", config.path("evaluation") / "results.md"),
        ("Zoo experiment", config.path("zoo_experiment") / "zoo_experiment.md"),
    ):
        if table.is_file():
            lines += ["", f"## {section}", "", table.read_text().strip()]
    return write_text(config.path("results.md"), "\n".join(lines) + "\n")
