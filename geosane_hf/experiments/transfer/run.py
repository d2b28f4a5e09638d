"""Run a comparison of starts: every (task, target, start, seed) fine-tuned with one protocol, resumable, in parallel.

:func:`run_experiment` takes an :class:`ExperimentConfig` (see :mod:`.experiment_config`, YAML files in
``geosane_hf/resources/experiments``) and an output folder:

- every run writes ``out/runs/<task>/<target>/<start>/seed<k>.json`` atomically (status "ok", "n/a" with the reason,
  or "failed" with the error; the score, the test-metric curve, the distance to the prompt, seconds, the provenance
  and the full fine-tuning record). With ``resume=True`` a run file made from the same inputs (a fingerprint of the
  task slice, target, start, seed, protocol and, where the start depends on them, the GeoSANE model's weights,
  the generation options and the collection) is reused, so re-running a finished experiment is instant;
- before the runs, the GeoSANE starts are generated and published into the store (``store/<task>/<arch>-<sampler>-
  seed<k>``, reused when made from the same request) and the distillation teachers are trained once per (task,
  teacher, seed) with the same budget (``out/teachers/``), so no two processes do the same work;
- ``workers=N`` runs independent jobs in N spawned processes with one torch thread each (the starts are built inside
  the worker from the config; nothing but dataclasses crosses processes). ``workers=1`` runs in this process, also
  with one thread, and gives the same numbers (tested);
- ``out/results.json``, ``out/results.md`` (per task and target: mean ± sample std of the primary metric over
  seeds, per-seed values, distance to the prompt, seconds per run, notes; a verdict per GeoSANE sampler against
  scratch, the matched prompt + noise and weight selection) and ``out/plots/<task>__<target>.png`` (test metric per
  epoch, mean ± std band per start).

Example:
    >>> import tempfile
    >>> cfg = ExperimentConfig.from_dict({
    ...     "tasks": [{"name": "statlog-classification", "max_train": 16, "max_test": 16}],
    ...     "targets": ["test_resnet"], "starts": ["scratch"], "seeds": [0], "finetune": {"epochs": 1}})
    >>> result = run_experiment(cfg, tempfile.mkdtemp(), progress=False)
    >>> [row.start for row in result.tables[0].rows], result.tables[0].rows[0].status
    (['scratch'], 'ok')
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from geosane_hf.atomic_io import write_json
from geosane_hf.evaluation.geosane_start import (
    distance_keys,
    fitted_prompt,
    geosane_start,
    matched_prompt_noise,
    model_fingerprint,
)
from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.runner import run_start
from geosane_hf.evaluation.starts import (
    IMAGENET_PROMPTS,
    Start,
    StartError,
    checkpoint_average,
    checkpoint_plus_noise,
    distillation,
    magnitude_pruning,
    matching_sparsity,
    prompt_plus_noise,
    scratch,
    weight_distance,
    weight_selection,
)
from geosane_hf.evaluation.tasks import Task, get_task_config
from geosane_hf.experiments.transfer.config import (
    DEFAULT_STARTS,
    START_KINDS,
    ExperimentConfig,
    ExperimentConfigError,
    GeoSANESpec,
    TargetSpec,
    TaskSpec,
    bundled_experiment,
    load_experiment_config,
    packaged_experiments,
    parse_start,
)
from geosane_hf.experiments.transfer.report import ExperimentResult, StartRow, TargetTable, build_report
from geosane_hf.task_data import Split, load_task_data, sample_index

__all__ = [
    "DEFAULT_STARTS",
    "START_KINDS",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "GeoSANESpec",
    "RunKey",
    "StartRow",
    "TargetSpec",
    "TargetTable",
    "TaskSpec",
    "bundled_experiment",
    "load_experiment_config",
    "load_task",
    "packaged_experiments",
    "plan_runs",
    "run_experiment",
]

RECORD_VERSION = 1
_METRIC_MODULES = {"classification": "accuracy_f1", "segmentation": "mean_iou", "detection": "map50"}
#: Landsat MSS band ids of the Statlog data -> STAC common names with a wavelength (for the stem adaptation).
MSS_BANDS = {"MSS4": "green", "MSS5": "red", "MSS6": "rededge", "MSS7": "nir"}


@dataclass(frozen=True)
class RunKey:
    """One run: a start of a target on a task with a seed."""

    task: str
    target: str
    start: str
    seed: int

    def path(self, out_dir: str | Path) -> Path:
        """``out/runs/<task>/<target>/<start>/seed<k>.json`` (":" in a start name becomes "_")."""
        return (
            Path(out_dir) / "runs" / self.task / self.target / self.start.replace(":", "_") / f"seed{self.seed}.json"
        )


@dataclass(frozen=True)
class _Prep:
    """A job the runs depend on: generate + publish a GeoSANE start, or train a distillation teacher."""

    kind: Literal["generate", "teacher"]
    task: str
    arch: str
    seed: int
    sampler: str | None = None


@dataclass(frozen=True)
class _Context:
    """Everything a worker needs (picklable)."""

    config: ExperimentConfig
    out_dir: str
    store: str
    resume: bool
    model_fp: str | None
    collection_fp: str | None


class _NotApplicable(Exception):
    """This start does not exist for this target (listed as n/a with the reason)."""


def plan_runs(config: ExperimentConfig) -> list[RunKey]:
    """Every run of the experiment in table order (task, target, start, seed).

    >>> cfg = ExperimentConfig.from_dict({"tasks": ["statlog-classification"], "targets": ["test_resnet"],
    ...                                   "starts": ["scratch", "imagenet_prompt"], "seeds": [0, 1]})
    >>> [(k.start, k.seed) for k in plan_runs(cfg)]
    [('scratch', 0), ('scratch', 1), ('imagenet_prompt', 0), ('imagenet_prompt', 1)]
    """
    keys = []
    for task in config.tasks:
        for target in config.targets_of(task):
            for start in config.starts_of(target):
                keys.extend(RunKey(task.name, target.architecture, start, seed) for seed in config.seeds)
    return keys


def _capped(split: Split, count: int | None, how: str) -> Split:
    if count is None or count >= len(split):
        return split
    if how == "first":
        return split.subset(range(count))
    return split.subset(sample_index(split, count, seed=0, stratify=False))


def load_task(spec: TaskSpec) -> Task:
    """The task of a spec: capped splits are a seeded random subset (``subset="random"``) or the first samples.

    >>> task = load_task(TaskSpec("statlog-classification", max_train=192, max_test=64))
    >>> len(task.data.train), int(task.data.train.labels.unique().numel())
    (192, 6)
    """
    if spec.name.startswith(("torchgeo:", "data:")):
        caps = {"max_train": spec.max_train, "max_test": spec.max_test} if spec.name.startswith("torchgeo:") else {}
        if spec.name.startswith("torchgeo:"):
            task = Task.from_torchgeo(spec.name.partition(":")[2], spec.root, input_size=spec.input_size, **caps)
        else:
            kind = spec.kind or "classification"
            task = Task.from_folder(
                spec.root, kind=kind, bands=spec.bands, sensor=spec.sensor, input_size=spec.input_size
            )
            task.config = replace(task.config, name=spec.name)
        config, data = task.config, task.data
    else:
        config = get_task_config(spec.name, **spec.overrides())
        data = load_task_data(config.data)
    data = replace(
        data,
        train=_capped(data.train, spec.max_train, spec.subset),
        test=_capped(data.test, spec.max_test, spec.subset),
    )
    return Task(config, data)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _task_spec(config: ExperimentConfig, name: str) -> TaskSpec:
    return next(t for t in config.tasks if t.name == name)


def _target_spec(config: ExperimentConfig, task: str, arch: str) -> TargetSpec:
    return next(t for t in config.targets_of(_task_spec(config, task)) if t.architecture == arch)


def _protocol(config: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in config.finetune.to_dict().items() if k not in ("seed", "progress")}


def _geosane_inputs(ctx: _Context) -> dict[str, Any]:
    spec = {k: v for k, v in ctx.config.geosane.to_dict().items() if k not in ("model", "store", "collection")}
    return {**spec, "model": ctx.model_fp, "collection": ctx.collection_fp}


def run_fingerprint(ctx: _Context, key: RunKey) -> str:
    """Hash of everything a run's result depends on (resume reuses a run file only when it matches)."""
    config = ctx.config
    kind, sampler = parse_start(key.start)
    task = _task_spec(config, key.task)
    target = _target_spec(config, key.task, key.target)
    parts: dict[str, Any] = {
        "version": RECORD_VERSION,
        "task": {k: v for k, v in task.to_dict().items() if k != "targets"},
        "target": key.target,
        "start": key.start,
        "seed": key.seed,
        "finetune": _protocol(config),
    }
    if kind.name != "scratch":
        parts["band_method"] = config.geosane.band_method
    if kind.needs_teacher:
        parts["teacher"] = target.teacher
    if kind.name == "magnitude_pruning":
        parts["pruning_scope"] = config.pruning_scope
    if kind.name in ("checkpoint_average", "checkpoint_plus_noise"):
        parts["collection"] = ctx.collection_fp
    if kind.name == "geosane" or (kind.name in ("prompt_plus_noise", "checkpoint_plus_noise") and ctx.model_fp):
        parts["geosane"] = _geosane_inputs(ctx)
        parts["matched_sampler"] = sampler or config.geosane.match_sampler
    elif kind.name in ("prompt_plus_noise", "checkpoint_plus_noise"):
        parts["noise_relative_norm"] = config.noise_relative_norm
    return _digest(parts)


def _teacher_fingerprint(ctx: _Context, task: str, arch: str, seed: int) -> str:
    spec = _task_spec(ctx.config, task)
    return _digest(
        {
            "version": RECORD_VERSION,
            "task": {k: v for k, v in spec.to_dict().items() if k != "targets"},
            "teacher": arch,
            "seed": seed,
            "finetune": _protocol(ctx.config),
            "band_method": ctx.config.geosane.band_method,
        }
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


# --------------------------------------------------------------------------------------------------- the worker


class _Worker:
    """Builds starts from the config and runs them; caches tasks, prompts and teachers for its process."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self._tasks: dict[str, Task] = {}
        self._teachers: dict[tuple[str, str, int], tuple[nn.Module, dict[str, Any]]] = {}
        self._inputs: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------------------------------- pieces

    def task(self, name: str) -> Task:
        if name not in self._tasks:
            from geosane_hf.evaluation.metrics import load_metric

            task = load_task(_task_spec(self.config, name))
            load_metric(_METRIC_MODULES[task.kind])  # import `evaluate` now, not inside the first run's timing
            self._tasks[name] = task
        return self._tasks[name]

    def target(self, task: str, arch: str) -> TargetArch:
        return self.task(task).target_for(arch)

    def bands(self, task: str) -> tuple[str, ...] | None:
        """Sensor-qualified band names of the task (``L8:B5``), so generation never guesses between sensors."""
        from geosane_hf.generation.bands import band_wavelength
        from geosane_hf.imagery.bands import qualify_bands

        spec = _task_spec(self.config, task)
        data = self.task(task).data
        if spec.bands is not None:
            return qualify_bands(spec.bands, data.sensor)
        names = data.band_names
        if all(band_wavelength(b) is not None for b in names):
            return qualify_bands(names, data.sensor)
        if all(b in MSS_BANDS for b in names):
            return tuple(MSS_BANDS[b] for b in names)
        return None

    def prompt(self, task: str, arch: str, seed: int) -> Start:
        target = self.target(task, arch)
        return fitted_prompt(target, seed, bands=self.bands(task), band_method=self.config.geosane.band_method)

    def _task_images(self, task: str, count: int) -> tuple[torch.Tensor, Any]:
        t = self.task(task)
        n = len(t.data.train)
        index = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: min(count, n)]
        return t.batch(t.data.train, index.sort().values, torch.device("cpu"))  # [M, C, S, S], targets

    def calibration(self, task: str) -> torch.Tensor | None:
        spec = self.config.geosane
        if spec.calibration != "task":
            return None
        key = (task, "calibration")
        if key not in self._inputs:
            self._inputs[key] = self._task_images(task, spec.calibration_count)[0]
        return self._inputs[key]

    def reference(self, task: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Train images with image-level labels (classification labels; segmentation: the majority class)."""
        spec = self.config.geosane
        if spec.reference != "task":
            return None
        key = (task, "reference")
        if key not in self._inputs:
            t = self.task(task)
            images, targets = self._task_images(task, spec.reference_count)
            labels = None
            if t.kind == "classification":
                labels = targets.long()
            elif t.kind == "segmentation":
                from geosane_hf.task_data import IGNORE_INDEX

                counts = torch.stack(
                    [
                        ((targets == c) & (targets != IGNORE_INDEX)).flatten(1).sum(1)
                        for c in range(t.data.num_classes)
                    ],
                    dim=1,
                )  # [M, K]
                labels = counts.argmax(1)
            ok = labels is not None and labels.unique().numel() >= 2
            self._inputs[key] = (images, labels) if ok else None  # one class only: the packaged reference set
        return self._inputs[key]

    def geosane(self, task: str, arch: str, sampler: str, seed: int) -> Start:
        spec = self.config.geosane
        if not spec.model:
            raise ExperimentConfigError(f"expected geosane.model for geosane:{sampler}, got none")
        return geosane_start(
            spec.model,
            self.target(task, arch),
            seed,
            sampler=sampler,
            noise_scale=spec.noise_scale,
            collection=spec.collection,
            store=self.ctx.store,
            group=task,
            bands=self.bands(task),
            band_method=spec.band_method,
            tokenizer_mode=spec.tokenizer_mode,
            max_anchors=spec.max_anchors,
            candidates=spec.candidates,
            keep=spec.keep,
            rounds=spec.rounds,
            calibration_data=self.calibration(task),
            calibration_count=spec.calibration_count,
            reference=self.reference(task),
            img_size=self.task(task).config.input_size,
            revision=spec.revision,
            model_id=spec.model_id,
            reuse=self.ctx.resume,
        )

    def collection_starts(self, task: str, arch: str, seed: int) -> list[Start]:
        """The collection's checkpoints of `arch`, fitted to the target (stem band-adapted, head re-initialised).

        A checkpoint whose fitted weights equal the prompt's (the offline collection holds the ImageNet weights that
        are the prompt) is left out: "checkpoint + noise" would be the prompt + noise run twice.
        """
        root = self.config.geosane.collection
        if not root:
            raise _NotApplicable("no collection given (geosane.collection)")
        from geosane_hf.collection.collector import read_collection_index

        records = [
            r
            for r in read_collection_index(root)
            if r.architecture and r.architecture.get("library") == "timm" and r.architecture.get("name") == arch
        ]
        if not records:
            raise _NotApplicable(f"no collection checkpoint of {arch}")
        starts, same_as_prompt = [], []
        prompt = self.prompt(task, arch, seed)
        for record in records:
            start = fitted_prompt(
                self.target(task, arch),
                seed,
                bands=self.bands(task),
                band_method=self.config.geosane.band_method,
                source=Path(root) / record.file,
            )
            start.name = "checkpoint"
            start.provenance = {
                "method": "collection checkpoint",
                "id": record.id,
                "role": record.entry.get("role"),
                **start.provenance,
            }
            if all(torch.equal(start.state_dict[k], v) for k, v in prompt.state_dict.items()):
                same_as_prompt.append(record.id)
                continue
            starts.append(start)
        if not starts:
            raise _NotApplicable(
                f"the only collection checkpoint of {arch} is the prompt itself ({', '.join(same_as_prompt)}): see "
                "imagenet_prompt / prompt_plus_noise"
            )
        return starts

    def teacher(self, task: str, arch: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        """The teacher task model (the teacher's prompt fine-tuned with the same budget), trained once."""
        key = (task, arch, seed)
        if key in self._teachers:
            return self._teachers[key]
        from safetensors.torch import load_file

        from geosane_hf.checkpoints import save_safetensors

        folder = Path(self.ctx.out_dir) / "teachers" / task
        weights, info_path = folder / f"{arch}-seed{seed}.safetensors", folder / f"{arch}-seed{seed}.json"
        fingerprint = _teacher_fingerprint(self.ctx, task, arch, seed)
        t = self.task(task)
        prompt = self.prompt(task, arch, seed)
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        if self.ctx.resume and info.get("fingerprint") == fingerprint and weights.is_file():
            model = t.build_model(prompt.target, prompt.state_dict, head_seed=seed)
            model.load_state_dict(load_file(str(weights)), strict=True)
        else:
            torch.manual_seed(seed)
            run = run_start(t, prompt, replace(self.config.finetune, seed=seed, progress=False), keep_model=True)
            model = run.model
            folder.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
            save_safetensors({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
            os.replace(tmp, weights)
            info = {
                "fingerprint": fingerprint,
                "task": task,
                "architecture": arch,
                "seed": seed,
                "start": "imagenet_prompt",
                "prompt_source": prompt.provenance["source"],
                "metric": t.primary_metric,
                "score": run.score,
                "seconds": run.result.seconds,
            }
            write_json(info_path, info, default=str)
        model.eval()
        self._teachers[key] = (model, info)
        return model, info

    # ------------------------------------------------------------------------------------------- starts

    def _geosane_distance_start(self, key: RunKey, sampler: str | None) -> Start | None:
        if not self.config.geosane.model:
            return None
        return self.geosane(key.task, key.target, sampler or self.config.geosane.match_sampler, key.seed)

    def build(self, key: RunKey) -> Start:
        kind, sampler = parse_start(key.start)
        target = self.target(key.task, key.target)
        spec = _target_spec(self.config, key.task, key.target)
        seed = key.seed
        if kind.needs_teacher and spec.teacher is None:
            raise _NotApplicable(f"no teacher architecture for {key.target}")
        teacher_target = TargetArch(spec.teacher, target.in_chans, target.num_classes) if spec.teacher else None
        name = kind.name
        if name == "scratch":
            return scratch(target, seed)
        if name == "imagenet_prompt":
            if key.target not in IMAGENET_PROMPTS:
                raise _NotApplicable(f"no packaged ImageNet weights of {key.target}")
            return self.prompt(key.task, key.target, seed)
        if name == "prompt_plus_noise":
            prompt = self.prompt(key.task, key.target, seed)
            generated = self._geosane_distance_start(key, sampler)
            if generated is None:
                out = prompt_plus_noise(prompt, relative_norm=self.config.noise_relative_norm, seed=seed)
                out.provenance["matched_to"] = None
                return out
            return matched_prompt_noise(prompt, generated, seed)
        if name in ("checkpoint_plus_noise", "checkpoint_average"):
            checkpoints = self.collection_starts(key.task, key.target, seed)
            if name == "checkpoint_average":
                if len(checkpoints) < 2:
                    raise _NotApplicable(f"only {len(checkpoints)} collection checkpoint of {key.target} (needs 2)")
                return checkpoint_average(checkpoints, target)
            base = checkpoints[0]
            generated = self._geosane_distance_start(key, sampler)
            if generated is None:
                out = checkpoint_plus_noise(base, relative_norm=self.config.noise_relative_norm, seed=seed)
                out.provenance["matched_to"] = None
                return out
            prompt = self.prompt(key.task, key.target, seed)
            return matched_prompt_noise(prompt, generated, seed, name="checkpoint_plus_noise", base=base)
        if name == "weight_selection":
            teacher = fitted_prompt(
                teacher_target, seed, bands=self.bands(key.task), band_method=self.config.geosane.band_method
            )
            return weight_selection(
                teacher, target, seed, teacher_name=f"{spec.teacher} ({teacher.provenance['source']})"
            )
        if name == "magnitude_pruning":
            large = fitted_prompt(
                teacher_target, seed, bands=self.bands(key.task), band_method=self.config.geosane.band_method
            )
            sparsity = matching_sparsity(teacher_target, target)
            return magnitude_pruning(large, sparsity, scope=self.config.pruning_scope, seed=seed)
        if name == "distillation":
            model, info = self.teacher(key.task, spec.teacher, seed)
            start = distillation(
                target, model, seed, teacher_name=f"{spec.teacher} fine-tuned from its ImageNet prompt"
            )
            start.provenance["teacher_record"] = {k: v for k, v in info.items() if k != "fingerprint"}
            return start
        if name == "geosane":
            return self.geosane(key.task, key.target, sampler, seed)
        raise ExperimentConfigError(f"expected a start among {sorted(START_KINDS)}, got {key.start!r}")

    # ------------------------------------------------------------------------------------------- jobs

    def run(self, key: RunKey) -> dict[str, Any]:
        """Builds the start, fine-tunes it and writes the run file; returns the record."""
        task = self.task(key.task)
        record: dict[str, Any] = {
            **asdict(key),
            "fingerprint": run_fingerprint(self.ctx, key),
            "metric": task.primary_metric,
            "train_samples": len(task.data.train),
            "test_samples": len(task.data.test),
        }
        began = time.perf_counter()
        try:
            torch.manual_seed(key.seed)
            start = self.build(key)
            built = time.perf_counter() - began
            torch.manual_seed(key.seed)
            run = run_start(task, start, replace(self.config.finetune, seed=key.seed, progress=False))
        except _NotApplicable as reason:
            record.update(status="n/a", reason=str(reason))
        except Exception as error:  # recorded as "failed" (never reused on resume), reported in the table and CLI
            record.update(status="failed", reason=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        else:
            primary = task.primary_metric
            curve = [run.result.initial_metrics.get(primary)] + [h.metrics.get(primary) for h in run.result.history]
            distance = None
            if start.target is not None and start.target.name == key.target:
                prompt = self.prompt(key.task, key.target, key.seed)
                distance = weight_distance(
                    prompt.state_dict, start.state_dict, distance_keys(start.target, prompt.state_dict)
                )
            record.update(
                status="ok",
                score=run.score,
                curve=curve,
                distance_to_prompt=distance,
                trained_architecture=run.architecture,
                seconds=run.result.seconds,
                build_seconds=built,
                run=_jsonable(run.to_dict()),
            )
        write_json(key.path(self.ctx.out_dir), record, default=str)
        return record

    def prepare(self, job: _Prep) -> dict[str, Any]:
        began = time.perf_counter()
        out: dict[str, Any] = asdict(job)
        try:
            if job.kind == "generate":
                start = self.geosane(job.task, job.arch, job.sampler, job.seed)
                out.update(
                    distance=start.provenance["distance_to_prompt"], reused=start.provenance["reused_published"]
                )
            else:
                _, info = self.teacher(job.task, job.arch, job.seed)
                out.update(score=info.get("score"))
        except Exception as error:  # the dependent runs fail with the same error and record it
            out["error"] = f"{type(error).__name__}: {error}"
        out["seconds"] = time.perf_counter() - began
        return out

    def do(self, job: RunKey | _Prep) -> dict[str, Any]:
        return self.run(job) if isinstance(job, RunKey) else self.prepare(job)


_WORKER: _Worker | None = None


def _init_worker(ctx: _Context, threads: int) -> None:
    global _WORKER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    _WORKER = _Worker(ctx)


def _do(job: RunKey | _Prep) -> dict[str, Any]:
    if _WORKER is None:
        raise RuntimeError("expected _init_worker to run in this process first")
    return _WORKER.do(job)


class _Pool:
    """Runs jobs inline (workers=1) or in spawned processes, one torch thread each."""

    def __init__(self, ctx: _Context, workers: int, threads: int = 1) -> None:
        self.ctx, self.workers, self.threads = ctx, workers, threads
        self._executor: ProcessPoolExecutor | None = None
        self._inline: _Worker | None = None
        self._previous_threads = torch.get_num_threads()

    def __enter__(self) -> _Pool:
        if self.workers == 1:
            torch.set_num_threads(self.threads)
            self._inline = _Worker(self.ctx)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._previous_threads)

    def map(self, jobs: Sequence[RunKey | _Prep], desc: str, progress: bool) -> Iterator[dict[str, Any]]:
        bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress)
        try:
            if self._inline is not None:
                for job in jobs:
                    result = self._inline.do(job)
                    bar.update(1)
                    bar.set_postfix_str(_describe(result))
                    yield result
                return
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.ctx, self.threads),
                )
            futures = [self._executor.submit(_do, job) for job in jobs]
            for future in as_completed(futures):
                result = future.result()
                bar.update(1)
                bar.set_postfix_str(_describe(result))
                yield result
        finally:
            bar.close()


def _describe(result: dict[str, Any]) -> str:
    if "start" in result:
        score = f"{result['score']:.3f}" if result.get("status") == "ok" else result.get("status")
        return f"{result['task']}/{result['target']}/{result['start']}/seed{result['seed']}: {score}"
    return f"{result['kind']} {result['arch']} seed{result['seed']}"


def _check_inputs(config: ExperimentConfig) -> tuple[str | None, str | None]:
    model_fp = collection_fp = None
    spec = config.geosane
    if spec.model:
        path = Path(spec.model)
        looks_local = path.exists() or spec.model.startswith((".", "/", "~")) or spec.model.count("/") > 1
        if looks_local and not path.is_dir():
            raise ExperimentConfigError(
                f"expected geosane.model to be a GeoSANE model folder (save_pretrained output) or a Hub id, got "
                f"{spec.model!r} (no such folder)"
            )
        try:
            model_fp = model_fingerprint(spec.model, spec.revision)
        except StartError as error:
            raise ExperimentConfigError(str(error)) from error
    if spec.collection:
        index = Path(spec.collection) / "collection.jsonl"
        if not index.is_file():
            raise ExperimentConfigError(
                f"expected geosane.collection to be a collection folder with collection.jsonl (geosane collect "
                f"output), got {spec.collection!r}"
            )
        collection_fp = hashlib.sha256(index.read_bytes()).hexdigest()
    return model_fp, collection_fp


def _preparation(ctx: _Context, pending: Sequence[RunKey]) -> list[_Prep]:
    """Generation and teacher jobs the pending runs need (each once)."""
    jobs: dict[_Prep, None] = {}
    config = ctx.config
    for key in pending:
        kind, sampler = parse_start(key.start)
        if kind.name == "geosane" or (kind.name in ("prompt_plus_noise", "checkpoint_plus_noise") and ctx.model_fp):
            if kind.name == "checkpoint_plus_noise" and not config.geosane.collection:
                continue
            jobs[_Prep("generate", key.task, key.target, key.seed, sampler or config.geosane.match_sampler)] = None
        if kind.name == "distillation":
            teacher = _target_spec(config, key.task, key.target).teacher
            if teacher is not None:
                jobs[_Prep("teacher", key.task, teacher, key.seed)] = None
    return list(jobs)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Runs every (task, target, start, seed) of `config` and writes run files, results.json/.md and plots.

    Args:
        config: the experiment.
        out_dir: output folder (created); run files under ``runs/``, teachers under ``teachers/``, the GeoSANE
            store under ``store/`` unless ``config.geosane.store`` is set.
        resume: reuse run files, teachers and published GeoSANE starts made from the same inputs.
        workers: processes (default: ``config.workers``); each uses one torch thread; results do not depend on it.
        progress: tqdm bars over the preparation jobs and the runs.

    Returns:
        An :class:`ExperimentResult` (tables, verdicts, run records, paths of the written files).

    Raises:
        ExperimentConfigError: an invalid config, a missing GeoSANE model folder or collection.
    """
    began = time.perf_counter()
    config.validate()
    workers = config.workers if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExperimentConfigError(f"expected workers to be an integer >= 1, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_fp, collection_fp = _check_inputs(config)
    store = Path(config.geosane.store) if config.geosane.store else out / "store"
    ctx = _Context(config, str(out), str(store), resume, model_fp, collection_fp)
    keys = plan_runs(config)
    records: dict[RunKey, dict[str, Any]] = {}
    pending = []
    for key in keys:
        path = key.path(out)
        if resume and path.is_file():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                record = {}
            if record.get("fingerprint") == run_fingerprint(ctx, key) and record.get("status") in ("ok", "n/a"):
                records[key] = record
                continue
        pending.append(key)
    prep_results: list[dict[str, Any]] = []
    phases = {"prepare": 0.0, "runs": 0.0}
    if pending:
        jobs = _preparation(ctx, pending)
        with _Pool(ctx, min(workers, max(len(pending), 1))) as pool:
            mark = time.perf_counter()
            if jobs:
                prep_results = list(pool.map(jobs, "prepare (GeoSANE starts, teachers)", progress))
            phases["prepare"] = time.perf_counter() - mark
            mark = time.perf_counter()
            for record in pool.map(pending, "runs", progress):
                records[RunKey(record["task"], record["target"], record["start"], record["seed"])] = record
            phases["runs"] = time.perf_counter() - mark
    ordered = [records[k] for k in keys]
    result = build_report(
        config,
        out,
        ordered,
        preparation=prep_results,
        seconds=time.perf_counter() - began,
        phase_seconds=phases,
        workers=workers,
        reused=len(keys) - len(pending),
    )
    result.write()
    return result
