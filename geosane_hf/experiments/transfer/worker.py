"""The worker of a comparison of starts: builds each start from the config, fine-tunes it and writes its run file.

One :class:`_Worker` lives in each process (or in the caller's with ``workers=1``); it caches the tasks, the band
names, the calibration and reference images and the teachers for its process. :meth:`_Worker.build` turns a
:class:`RunKey` into a :class:`Start` (or says the start is n/a for the target); :meth:`_Worker.run` fine-tunes it
with the experiment's one protocol and writes ``out/runs/<task>/<target>/<start>/seed<k>.json``;
:meth:`_Worker.prepare` does a preparation job (generate a GeoSANE start, train a teacher).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.atomic_io import write_json
from geosane_hf.evaluation.geosane_start import distance_keys, fitted_prompt, geosane_start, matched_prompt_noise
from geosane_hf.evaluation.models import TargetArch
from geosane_hf.evaluation.runner import run_start
from geosane_hf.evaluation.starts import (
    IMAGENET_PROMPTS,
    Start,
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
from geosane_hf.evaluation.tasks import Task
from geosane_hf.experiments.transfer.config import START_KINDS, ExperimentConfigError, parse_start
from geosane_hf.experiments.transfer.planning import (
    RunKey,
    _Context,
    _Prep,
    _target_spec,
    _task_spec,
    load_task,
    run_fingerprint,
)
from geosane_hf.experiments.transfer.preparation import train_teacher

__all__ = ["MSS_BANDS"]

_METRIC_MODULES = {"classification": "accuracy_f1", "segmentation": "mean_iou", "detection": "map50"}
#: Landsat MSS band ids of the Statlog data -> STAC common names with a wavelength (for the stem adaptation).
MSS_BANDS = {"MSS4": "green", "MSS5": "red", "MSS6": "rededge", "MSS7": "nir"}


class _NotApplicable(Exception):
    """This start does not exist for this target (listed as n/a with the reason)."""


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
            sampler_options=spec.sampler_options.get(sampler),
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
        self._teachers[key] = train_teacher(self.ctx, task, self.task(task), self.prompt(task, arch, seed), arch, seed)
        return self._teachers[key]

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
            if self.task(key.task).kind == "detection":
                raise _NotApplicable("distillation is for classification and segmentation (no box distillation)")
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
