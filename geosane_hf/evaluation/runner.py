"""Run starts through the shared fine-tuning loop and compare them over seeds (mean and spread).

For each seed, every start is fine-tuned with the SAME `FinetuneConfig` whose `seed` is that seed (so within a
seed every start sees the same batches, flips and task-head init; across seeds these change), and the start
itself is built with that seed. The results are JSON-friendly for the results table and convergence plots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from geosane_hf.evaluation.finetune import CPU_DEMO, FinetuneConfig, FinetuneResult, finetune
from geosane_hf.evaluation.starts import Start
from geosane_hf.evaluation.tasks import Task
from geosane_hf.task_data import EvaluationError

StartFactory = Callable[[int], Start]  # seed -> Start


@dataclass
class RunResult:
    """One start fine-tuned on one task with one seed."""

    task: str
    start: str
    seed: int
    architecture: str
    provenance: dict[str, Any]
    result: FinetuneResult
    model: nn.Module | None = None  # the fine-tuned task model when run_start(keep_model=True); not serialised

    @property
    def score(self) -> float:
        return self.result.score

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "start": self.start,
            "seed": self.seed,
            "architecture": self.architecture,
            "score": self.score,
            "provenance": _jsonable(self.provenance),
            "result": self.result.to_dict(),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def run_start(
    task: Task,
    start: Start,
    config: FinetuneConfig = CPU_DEMO,
    device: str | torch.device | None = None,
    keep_model: bool = False,
) -> RunResult:
    """Builds the task model from a start and fine-tunes it with the shared protocol.

    Args:
        task: the task.
        start: the initial weights (its target must take the task's bands).
        config: the protocol (its seed seeds data order, flips and the task head).
        device: where to train (default: CPU, or wherever the teacher lives).
        keep_model: return the fine-tuned task model in `RunResult.model`.

    >>> from geosane_hf.evaluation.starts import scratch
    >>> task = Task.from_name("statlog-classification", max_train=16, max_test=16)
    >>> run = run_start(task, scratch(task.target_for("test_resnet")), FinetuneConfig(epochs=1, progress=False))
    >>> run.start, len(run.result.history)
    ('scratch', 1)
    """
    if start.target is None:
        raise EvaluationError(f"expected a Start with a target architecture, got target=None ({start.name})")
    model = task.build_model(start.target, start.state_dict, head_seed=config.seed)
    if device is None and start.teacher is not None:
        device = next(start.teacher.parameters()).device
    if device is not None:
        model.to(device)
    teacher = start.teacher.to(next(model.parameters()).device) if start.teacher is not None else None
    result = finetune(
        model,
        task,
        config,
        teacher=teacher,
        keep_masks=start.keep_masks,
        description=f"{task.config.name}/{start.name}/seed{config.seed}",
    )
    return RunResult(
        task.config.name,
        start.name,
        config.seed,
        start.target.name,
        start.provenance,
        result,
        model if keep_model else None,
    )


def train_teacher(task: Task, start: Start, config: FinetuneConfig = CPU_DEMO) -> nn.Module:
    """A teacher for distillation: `start` (usually a larger pretrained model) fine-tuned on the task, same budget."""
    if start.target is None:
        raise EvaluationError("expected a teacher Start with a target architecture, got target=None")
    model = task.build_model(start.target, start.state_dict, head_seed=config.seed)
    finetune(model, task, config, keep_masks=start.keep_masks, description=f"teacher/{start.name}")
    return model.eval()


@dataclass
class StartSummary:
    """Mean and spread of one start's final primary metric over seeds."""

    start: str
    scores: list[float]
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for one seed
    seconds: float


@dataclass
class Comparison:
    """All runs of a comparison on one task, with per-start summaries."""

    task: str
    metric: str
    config: FinetuneConfig
    seeds: list[int]
    runs: list[RunResult] = field(default_factory=list)
    summaries: list[StartSummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "summaries": [asdict(s) for s in self.summaries],
            "runs": [r.to_dict() for r in self.runs],
        }

    def to_markdown(self) -> str:
        """A markdown table: start, mean +- std of the primary metric, per-seed scores.

        >>> Comparison("t", "f1_macro", FinetuneConfig(), [0], summaries=[StartSummary("scratch", [0.5], 0.5, 0.0, 1.0)]).to_markdown().splitlines()[2]
        '| scratch | 0.5000 ± 0.0000 | 0.5000 | 1 |'
        """
        lines = [f"| start | {self.metric} (mean ± std) | per seed | seconds (all seeds) |", "|---|---|---|---|"]
        for s in self.summaries:
            per_seed = ", ".join(f"{v:.4f}" for v in s.scores)
            lines.append(f"| {s.start} | {s.mean:.4f} ± {s.std:.4f} | {per_seed} | {s.seconds:.0f} |")
        return "\n".join(lines)


def summarize(runs: Sequence[RunResult]) -> list[StartSummary]:
    """Per-start mean and sample std of the final score, in first-seen order."""
    by_start: dict[str, list[RunResult]] = {}
    for run in runs:
        by_start.setdefault(run.start, []).append(run)
    out = []
    for name, group in by_start.items():
        scores = [r.score for r in group]
        mean = sum(scores) / len(scores)
        std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
        out.append(StartSummary(name, scores, mean, std, sum(r.result.seconds for r in group)))
    return out


def compare_starts(
    task: Task,
    starts: Mapping[str, StartFactory],
    seeds: Sequence[int] = (0, 1, 2),
    config: FinetuneConfig = CPU_DEMO,
    device: str | torch.device | None = None,
) -> Comparison:
    """Fine-tunes every start for every seed with one protocol and summarises mean ± std of the primary metric.

    Args:
        task: the task.
        starts: {name: seed -> Start}; the name labels the row (a factory's Start.name is overridden by it).
        seeds: the seeds (>= 3 for a reported comparison).
        config: the shared protocol; its `seed` is replaced by each seed.
        device: where to train.

    >>> from geosane_hf.evaluation.starts import scratch
    >>> task = Task.from_name("statlog-classification", max_train=16, max_test=16)
    >>> cmp = compare_starts(task, {"scratch": lambda s: scratch(task.target_for("test_resnet"), s)}, seeds=(0,),
    ...                      config=FinetuneConfig(epochs=1, progress=False))
    >>> [s.start for s in cmp.summaries]
    ['scratch']
    """
    if not starts:
        raise EvaluationError("expected at least one start to compare, got none")
    runs = []
    for seed in seeds:
        seeded = replace(config, seed=seed)
        for name, factory in starts.items():
            start = factory(seed)
            start.name = name
            runs.append(run_start(task, start, seeded, device))
    comparison = Comparison(task.config.name, task.primary_metric, config, list(seeds), runs, summarize(runs))
    return comparison
