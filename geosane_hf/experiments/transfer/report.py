"""Tables, verdicts and figures of a comparison of starts (what ``results.md``/``results.json`` hold).

Per task and target, one row per start: mean ± sample std (ddof=1) of the primary metric over seeds, the per-seed
values, the mean L2 distance to GeoSANE's prompt (float parameters, head and BatchNorm statistics excluded) when the
start has the target's architecture, the mean fine-tuning seconds per run, and a note (what the prompt, teacher,
checkpoint or matched distance was). Starts that do not exist for a target are rows with "n/a" and the reason;
failed runs are rows with "failed" and the error.

Verdict per GeoSANE sampler: against scratch, the prompt + noise matched to that sampler's distance, weight
selection and every other baseline of the table (the prompt, pruning, distillation, collection checkpoints), by
mean over the seeds both have, whether the difference exceeds the spread (the larger of the two sample
stds), and on how many seeds the GeoSANE start scored higher (the seeds share batches, flips and heads, so a
per-seed comparison is paired).

Example:
    >>> v = Verdict("geosane:kde", "scratch", 0.03, 0.01, True, 3, 3, 0.61, 0.58)
    >>> v.short()
    'beats scratch (+0.0300, beyond the spread 0.0100; higher on 3/3 seeds)'
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_text
from geosane_hf.experiments.transfer.config import ExperimentConfig, parse_start

__all__ = ["ExperimentResult", "StartRow", "TargetTable", "Verdict", "build_report"]


@dataclass
class StartRow:
    """One start of a (task, target) table.

    Attributes:
        start: the start name.
        status: "ok" (every seed ran), "partial" (some seeds failed), "n/a" (does not exist for this target) or
            "failed" (no seed ran).
        seeds / scores: the seeds that ran and their final primary metric.
        mean / std: over those seeds (sample std, 0 for one seed); None without any.
        distance: mean L2 distance to the prompt (None: other architecture or unknown).
        seconds: mean fine-tuning seconds per run.
        note: what the start was (prompt source, matched distance, teacher, sparsity ...).
        reason: why n/a or failed.
        curves: per seed, the test metric before training and after each epoch.
    """

    start: str
    status: str
    seeds: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    mean: float | None = None
    std: float | None = None
    distance: float | None = None
    seconds: float | None = None
    note: str = ""
    reason: str = ""
    curves: list[list[float | None]] = field(default_factory=list)

    def score_of(self, seed: int) -> float | None:
        return self.scores[self.seeds.index(seed)] if seed in self.seeds else None


@dataclass
class Verdict:
    """A GeoSANE start against one opponent, on the seeds both ran."""

    start: str
    opponent: str
    difference: float  # mean(start) - mean(opponent)
    spread: float  # the larger of the two sample stds
    exceeds_spread: bool
    wins: int  # seeds on which the GeoSANE start scored higher
    seeds: int
    mean: float
    opponent_mean: float

    def short(self) -> str:
        how = "beats" if self.difference > 0 else "does not beat"
        where = "beyond" if self.exceeds_spread else "within"
        return (
            f"{how} {self.opponent} ({self.difference:+.4f}, {where} the spread {self.spread:.4f}; "
            f"higher on {self.wins}/{self.seeds} seeds)"
        )


@dataclass
class TargetTable:
    """All starts of one target on one task."""

    task: str
    target: str
    teacher: str | None
    metric: str
    train_samples: int | None
    test_samples: int | None
    rows: list[StartRow]
    verdicts: dict[str, list[Verdict]]  # GeoSANE start -> verdicts
    missing_opponents: dict[str, list[str]]
    plot: str | None = None  # path relative to the results folder

    def verdict_lines(self) -> list[str]:
        """One honest line per GeoSANE start."""
        lines = []
        for start, verdicts in self.verdicts.items():
            parts = [v.short() for v in verdicts]
            parts += [f"{name}: not run" for name in self.missing_opponents.get(start, [])]
            lines.append(f"**{start}** on {self.target}: " + ("; ".join(parts) if parts else "no opponent ran") + ".")
        return lines

    def to_markdown(self) -> str:
        teacher = f" (teacher {self.teacher})" if self.teacher else ""
        lines = [
            f"### {self.target}{teacher}",
            "",
            f"| start | {self.metric} (mean ± std) | per seed | distance to prompt | s/run | notes |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            if row.status in ("n/a", "failed"):
                lines.append(f"| {row.start} | {row.status} | | | | {row.reason} |")
                continue
            per_seed = ", ".join(f"{s:.4f}" for s in row.scores)
            distance = f"{row.distance:.3f}" if row.distance is not None else ""
            seconds = f"{row.seconds:.1f}" if row.seconds is not None else ""
            note = row.note + (f" **partial**: {row.reason}" if row.status == "partial" else "")
            lines.append(
                f"| {row.start} | {row.mean:.4f} ± {row.std:.4f} | {per_seed} | {distance} | {seconds} | {note} |"
            )
        verdicts = self.verdict_lines()
        if verdicts:
            lines += ["", *(f"- {line}" for line in verdicts)]
        if self.plot:
            lines += ["", f"![convergence of {self.task} / {self.target}]({self.plot})"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict_lines"] = self.verdict_lines()
        return out


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns and writes.

    Attributes:
        config: the experiment.
        out_dir: the results folder.
        tables: one per (task, target), in config order.
        runs: every run record (the run files' content), in table order.
        preparation: the generation and teacher jobs of this call (empty when everything was reused).
        seconds: wall time of this call.
        phase_seconds: wall time of the preparation (generation, teachers; includes starting the workers) and of
            the runs.
        workers: processes used.
        reused: runs taken from earlier run files.
    """

    config: ExperimentConfig
    out_dir: Path
    tables: list[TargetTable]
    runs: list[dict[str, Any]]
    preparation: list[dict[str, Any]]
    seconds: float
    workers: int
    reused: int
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """ "task/target/start/seed<k>: error" of every failed run."""
        return [
            f"{r['task']}/{r['target']}/{r['start']}/seed{r['seed']}: {r.get('reason', '')}"
            for r in self.runs
            if r.get("status") == "failed"
        ]

    @property
    def finetune_seconds(self) -> float:
        """Fine-tuning seconds summed over the runs (a run's own time, whichever process ran it)."""
        return sum(r.get("seconds") or 0.0 for r in self.runs if r.get("status") == "ok")

    def to_markdown(self) -> str:
        config = self.config
        protocol = ", ".join(f"{k} {v}" for k, v in config.finetune.to_dict().items() if k not in ("seed", "progress"))
        spec = config.geosane
        lines = [f"# Comparison of starts: {config.name}", ""]
        if config.description:
            lines += [config.description.strip(), ""]
        lines += [
            f"- Protocol, identical for every start: {protocol}; seeds {', '.join(map(str, config.seeds))} (each "
            "seed fixes the batches, flips, task head and the start's own randomness).",
            f"- GeoSANE model: {spec.model or 'none'}; collection: {spec.collection or 'none'}; sampler noise scale "
            f"{spec.noise_scale}; stems band-adapted with '{spec.band_method}'; BatchNorm calibration on "
            f"{spec.calibration} images.",
            f"- {len(self.runs)} runs ({self.reused} reused from earlier run files), {self.workers} worker(s) with one "
            f"torch thread each; wall time {self.seconds:.0f} s (preparation: GeoSANE generation and teachers "
            f"{self.phase_seconds.get('prepare', 0.0):.0f} s, runs {self.phase_seconds.get('runs', 0.0):.0f} s); "
            f"fine-tuning {self.finetune_seconds:.0f} s summed over runs.",
            "- Distance to prompt: L2 over float parameters (head and BatchNorm statistics excluded) to GeoSANE's "
            "prompt (packaged ImageNet weights, same band adaptation). std: sample std over seeds.",
        ]
        if self.failed:
            lines += ["", f"**{len(self.failed)} run(s) failed**:", *(f"- {f}" for f in self.failed)]
        task = None
        for table in self.tables:
            if table.task != task:
                task = table.task
                sizes = f"{table.train_samples} train / {table.test_samples} test"
                lines += ["", f"## {task} ({table.metric}, {sizes})", ""]
            lines += [table.to_markdown(), ""]
        return "\n".join(lines).rstrip() + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "seconds": self.seconds,
            "phase_seconds": self.phase_seconds,
            "finetune_seconds": self.finetune_seconds,
            "workers": self.workers,
            "reused": self.reused,
            "failed": self.failed,
            "tables": [t.to_dict() for t in self.tables],
            "preparation": self.preparation,
            "runs": self.runs,
        }

    def write(self) -> None:
        """Writes plots/<task>__<target>.png, results.md and results.json into `out_dir` (each atomically)."""
        from geosane_hf.plots import convergence_figure, save_figure

        for table in self.tables:
            curves = {row.start: row.curves for row in table.rows if row.curves}
            if not curves:
                continue
            relative = f"plots/{table.task}__{table.target}.png"
            fig = convergence_figure(curves, table.metric, title=f"{table.task} / {table.target}")
            save_figure(fig, self.out_dir / relative)
            table.plot = relative
        write_text(self.out_dir / "results.md", self.to_markdown())
        write_text(self.out_dir / "results.json", json.dumps(self.to_dict(), indent=1, default=str) + "\n")


# ------------------------------------------------------------------------------------------------------ rows


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _provenance(record: dict[str, Any]) -> dict[str, Any]:
    return (record.get("run") or {}).get("provenance") or {}


def _note(start: str, records: list[dict[str, Any]], config: ExperimentConfig) -> str:
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return ""
    kind, _ = parse_start(start)
    prov = _provenance(ok[0])
    if kind.name == "scratch":
        return "timm init (seeded)"
    if kind.name == "imagenet_prompt":
        adapted = prov.get("band_adaptation") or {}
        how = "; ".join(adapted.values()) if isinstance(adapted, dict) else str(adapted)
        return f"{prov.get('source')}; stem {how or 'unchanged'}"
    if kind.name in ("prompt_plus_noise", "checkpoint_plus_noise"):
        base = ""
        if kind.name == "checkpoint_plus_noise":
            base = f"collection checkpoint {(prov.get('base') or {}).get('id')} + "
        matched = prov.get("matched_to")
        if matched:
            return f"{base}noise of norm = {matched.get('start')}'s distance to the prompt (same seed)"
        return f"{base}noise of relative norm {config.noise_relative_norm} (no GeoSANE start to match)"
    if kind.name == "checkpoint_average":
        return f"mean of {prov.get('count')} collection checkpoints"
    if kind.name == "weight_selection":
        return f"from {prov.get('teacher')}, uniform element selection"
    if kind.name == "magnitude_pruning":
        sparsity = prov.get("achieved_sparsity")
        trained = ok[0].get("trained_architecture")
        return f"{trained} pruned to sparsity {sparsity:.3f} ({prov.get('scope')}), trains {trained} with masks"
    if kind.name == "distillation":
        teachers = [(_provenance(r).get("teacher_record") or {}) for r in ok]
        scores = [t["score"] for t in teachers if t.get("score") is not None]
        arch = teachers[0].get("architecture")
        if scores:
            mean, std = _mean_std(scores)
            return (
                f"teacher: {arch} ImageNet prompt fine-tuned with the same budget, {ok[0]['metric']} "
                f"{mean:.4f} ± {std:.4f}; KD alpha {config.finetune.distill_alpha}, T {config.finetune.distill_temperature}"
            )
        return f"teacher: {arch}"
    if kind.name == "geosane":
        relative = [_provenance(r).get("relative_distance") for r in ok]
        relative = [v for v in relative if v is not None]
        published = prov.get("published")
        where = f"; published to {Path(published).parent}/" if published else ""
        rel = f"relative distance {sum(relative) / len(relative):.4f}" if relative else ""
        return f"{prov.get('prompt_source')}; {rel}{where}"
    return ""


def _row(start: str, records: list[dict[str, Any]], config: ExperimentConfig) -> StartRow:
    ok = [r for r in records if r.get("status") == "ok"]
    na = [r for r in records if r.get("status") == "n/a"]
    failed = [r for r in records if r.get("status") == "failed"]
    if not ok:
        if na and not failed:
            return StartRow(start, "n/a", reason="n/a: " + na[0].get("reason", ""))
        reasons = sorted({r.get("reason", "") for r in failed})
        return StartRow(start, "failed", reason="; ".join(reasons))
    scores = [float(r["score"]) for r in ok]
    mean, std = _mean_std(scores)
    distances = [r.get("distance_to_prompt") for r in ok]
    distance = sum(distances) / len(distances) if all(d is not None for d in distances) else None
    row = StartRow(
        start,
        "ok" if not failed and not na else "partial",
        seeds=[int(r["seed"]) for r in ok],
        scores=scores,
        mean=mean,
        std=std,
        distance=distance,
        seconds=sum(r.get("seconds") or 0.0 for r in ok) / len(ok),
        note=_note(start, records, config),
        curves=[list(r.get("curve") or []) for r in ok],
    )
    if failed or na:
        row.reason = "; ".join(sorted({f"seed {r['seed']}: {r.get('reason', '')}" for r in failed + na}))
    return row


def _verdict(start: StartRow, opponent: StartRow) -> Verdict | None:
    common = [s for s in start.seeds if s in opponent.seeds]
    if not common:
        return None
    a = [start.score_of(s) for s in common]
    b = [opponent.score_of(s) for s in common]
    mean_a, std_a = _mean_std(a)
    mean_b, std_b = _mean_std(b)
    spread = max(std_a, std_b)
    difference = mean_a - mean_b
    wins = sum(x > y for x, y in zip(a, b, strict=True))
    return Verdict(
        start.start, opponent.start, difference, spread, abs(difference) > spread, wins, len(common), mean_a, mean_b
    )


def _opponents(sampler: str, rows: dict[str, StartRow], config: ExperimentConfig) -> list[str]:
    """Scratch, the matched noise and weight selection (reported missing when not run), then every other baseline
    of the table that exists for the target (the prompt, pruning, distillation, collection checkpoints ...; a
    failed one is reported missing); never another GeoSANE start or noise matched to another sampler."""
    noise = f"prompt_plus_noise:{sampler}"
    if noise not in rows and "prompt_plus_noise" in rows:
        noise = "prompt_plus_noise"  # matched to geosane.match_sampler (its note says which)
    first = ["scratch", noise if noise in rows else f"prompt_plus_noise:{sampler}", "weight_selection"]
    others = [
        name
        for name, row in rows.items()
        if name not in first
        and row.status != "n/a"
        and parse_start(name)[0].name != "geosane"
        and not name.startswith("prompt_plus_noise")  # noise matched to another sampler's change
    ]
    return first + others


def build_report(
    config: ExperimentConfig,
    out_dir: Path,
    records: list[dict[str, Any]],
    *,
    preparation: list[dict[str, Any]],
    seconds: float,
    workers: int,
    reused: int,
    phase_seconds: dict[str, float] | None = None,
) -> ExperimentResult:
    """Groups run records into per-(task, target) tables with verdicts (no files written; see `write`)."""
    tables = []
    for task in config.tasks:
        for target in config.targets_of(task):
            mine = [r for r in records if r["task"] == task.name and r["target"] == target.architecture]
            if not mine:
                continue
            rows = [
                _row(start, [r for r in mine if r["start"] == start], config) for start in config.starts_of(target)
            ]
            by_name = {row.start: row for row in rows}
            verdicts: dict[str, list[Verdict]] = {}
            missing: dict[str, list[str]] = {}
            for row in rows:
                kind, sampler = parse_start(row.start)
                if kind.name != "geosane" or not row.scores:
                    continue
                verdicts[row.start], missing[row.start] = [], []
                for name in _opponents(sampler, by_name, config):
                    opponent = by_name.get(name)
                    verdict = _verdict(row, opponent) if opponent is not None and opponent.scores else None
                    if verdict is None:
                        missing[row.start].append(name)
                    else:
                        verdicts[row.start].append(verdict)
            tables.append(
                TargetTable(
                    task.name,
                    target.architecture,
                    target.teacher,
                    mine[0].get("metric", ""),
                    mine[0].get("train_samples"),
                    mine[0].get("test_samples"),
                    rows,
                    verdicts,
                    missing,
                )
            )
    return ExperimentResult(
        config, Path(out_dir), tables, records, preparation, seconds, workers, reused, dict(phase_seconds or {})
    )
