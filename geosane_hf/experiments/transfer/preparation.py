"""What the runs depend on, done once before them: the inputs' fingerprints, the jobs, the distillation teachers.

:func:`_check_inputs` checks the GeoSANE model folder (or Hub id) and the collection and fingerprints them (a run file
is reused only when they are unchanged); :func:`_preparation` lists the jobs the pending runs need, each once (the
GeoSANE starts to generate and publish, the teachers to train); :func:`train_teacher` trains a distillation teacher
(its ImageNet prompt fine-tuned with the experiment's budget) into ``out/teachers/<task>/`` or loads it back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.atomic_io import write_json
from geosane_hf.evaluation.geosane_start import model_fingerprint
from geosane_hf.evaluation.runner import run_start
from geosane_hf.evaluation.starts import Start, StartError
from geosane_hf.evaluation.tasks import Task
from geosane_hf.experiments.transfer.config import ExperimentConfig, ExperimentConfigError, parse_start
from geosane_hf.experiments.transfer.planning import RunKey, _Context, _Prep, _target_spec, _teacher_fingerprint

__all__ = ["train_teacher"]


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


def train_teacher(
    ctx: _Context, name: str, task: Task, prompt: Start, arch: str, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher task model: `prompt` (the teacher's ImageNet prompt) fine-tuned with the experiment's budget.

    Written to ``out/teachers/<task>/<arch>-seed<k>.safetensors`` with a JSON record; with ``ctx.resume`` a teacher
    made from the same inputs (its fingerprint) is loaded back instead of trained again.

    Args:
        ctx: the experiment's context (config, output folder, resume).
        name: the task's name in the config (the folder under ``teachers/``).
        task: the loaded task.
        prompt: the teacher architecture's fitted ImageNet prompt for the task.
        arch: the teacher architecture (timm name).
        seed: the run seed (the fine-tuning's and the head's).

    Returns:
        The model in eval mode and its record (fingerprint, score, seconds, ...).
    """
    from safetensors.torch import load_file

    from geosane_hf.checkpoints import save_safetensors

    folder = Path(ctx.out_dir) / "teachers" / name
    weights, info_path = folder / f"{arch}-seed{seed}.safetensors", folder / f"{arch}-seed{seed}.json"
    fingerprint = _teacher_fingerprint(ctx, name, arch, seed)
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if ctx.resume and info.get("fingerprint") == fingerprint and weights.is_file():
        model = task.build_model(prompt.target, prompt.state_dict, head_seed=seed)
        model.load_state_dict(load_file(str(weights)), strict=True)
    else:
        torch.manual_seed(seed)
        run = run_start(task, prompt, replace(ctx.config.finetune, seed=seed, progress=False), keep_model=True)
        model = run.model
        folder.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
        save_safetensors({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, weights)
        info = {
            "fingerprint": fingerprint,
            "task": name,
            "architecture": arch,
            "seed": seed,
            "start": "imagenet_prompt",
            "prompt_source": prompt.provenance["source"],
            "metric": task.primary_metric,
            "score": run.score,
            "seconds": run.result.seconds,
        }
        write_json(info_path, info, default=str)
    model.eval()
    return model, info
