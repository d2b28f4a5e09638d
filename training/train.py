# Train a GeoSANE weight-space autoencoder with Accelerate.
#
# This script trains GeoSANEModel (transformer encoder-decoder over windows of weight tokens) on a
# tokenized-weights dataset (`geosane build-dataset`, a local folder or a Hub dataset id), from one
# CPU process to a multi-GPU node without changing a line:
#
#   - window sampling across models (each model weighted by sqrt(#tokens), see training/data.py),
#   - two augmented views per window (permutations where supported, noise, erasing),
#   - the masked-normalised reconstruction + NT-Xent loss of the model,
#   - AdamW with decay groups, OneCycle/cosine schedule, gradient accumulation, clipping,
#   - bf16 only where the device has fast native bf16 (fp32 on CPUs without it),
#   - tensorboard logging, held-out reconstruction R^2 (tokens and weights per layer type),
#   - save_state/load_state checkpoints with an exact `--resume`, save_pretrained + model card, --push_to_hub.
#
# Run (see docs/training.md and training/accelerate_configs/ for multi-process and GPU setups):
#
#   accelerate launch --cpu --num_processes 1 training/train.py \
#       --config small-demo --dataset DATASET_DIR --output_dir runs/small
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `training` and `geosane_hf` importable from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from geosane_hf.atomic_io import exclusive_lock, write_json
from geosane_hf.errors import GeoSANEError
from training.checkpointing import (
    _STAGE_SUFFIX,
    CHECKPOINTS_DIR,
    RANK_STATE_FILE,
    STATE_FILE,
    TrainingDivergedError,
    TrainingSetupError,
    _checkpoint_index,
    _last_good,
    _prune_checkpoints,
    check_finite_weights,
    check_output_dir,
    check_resume_compatible,
    complete_checkpoints,
    find_resume_dir,
    incomplete_checkpoints,
)
from training.config import TrainingConfig, TrainingConfigError, load_config
from training.evaluation import EvalResult, evaluate
from training.model_setup import (
    build_model_config,
    build_optimizer,
    lr_lambda,
    native_bf16,
    parameter_groups,
    window_size_for,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "RANK_STATE_FILE",
    "STATE_FILE",
    "EvalResult",
    "TrainingConfigError",
    "TrainingDivergedError",
    "TrainingResult",
    "TrainingSetupError",
    "build_model_config",
    "build_optimizer",
    "build_parser",
    "check_finite_weights",
    "check_output_dir",
    "check_resume_compatible",
    "complete_checkpoints",
    "evaluate",
    "find_resume_dir",
    "incomplete_checkpoints",
    "lr_lambda",
    "main",
    "native_bf16",
    "parameter_groups",
    "parse_args",
    "training_function",
    "window_size_for",
]

logger = logging.getLogger("geosane.train")


@dataclass
class TrainingResult:
    """What a run produced.

    Attributes:
        step: optimizer steps done.
        history: logged ``{"step", "loss", ...}`` rows (main process).
        evaluations: ``{"step", ...EvalResult}`` rows.
        model_dir: folder written by ``save_pretrained`` (None when the run stopped early).
        tokens_per_second: window tokens (both views, incl. padding) per second of the training loop.
        model: the trained (unwrapped) model of this process.
    """

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    model_dir: str | None = None
    tokens_per_second: float = 0.0
    model: torch.nn.Module | None = None


# ------------------------------------------------------------------------------------------------- training


def training_function(config: TrainingConfig, args: argparse.Namespace) -> TrainingResult:
    """Trains (or resumes) a GeoSANE model as configured; see the module header and docs/training.md.

    Raises:
        TrainingConfigError, TrainingSetupError, TrainingDataError: Bad input, found before any training step.
        TrainingDivergedError: The loss or the weights became NaN/Inf (nothing non-finite is saved).
        OutputBusyError: Another run is writing ``--output_dir``.
    """
    with contextlib.ExitStack() as resources:  # the output folder's lock, held by the main process
        return _training_function(config, args, resources)


def _training_function(
    config: TrainingConfig, args: argparse.Namespace, resources: contextlib.ExitStack
) -> TrainingResult:
    from accelerate import Accelerator, PartialState
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from geosane_hf.augmentations import TwoViewConfig
    from geosane_hf.modeling import GeoSANEModel
    from training.data import WindowSampler, load_training_data, make_augmenters, make_batch

    output_dir = Path(args.output_dir)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)

    # ---- everything that can be wrong with the input, before any compute
    model_config = build_model_config(config)
    window = window_size_for(config, model_config)
    check_output_dir(output_dir, args.resume, args.push_to_hub)
    resume_dir, resume_state = None, None
    if args.resume:
        resume_dir = find_resume_dir(args.resume, output_dir)
        if resume_dir is not None:
            resume_state = check_resume_compatible(resume_dir, config, args.dataset)
    next_index = _checkpoint_index(resume_dir) + 1 if resume_dir is not None else 0
    newer = [p.name for p in complete_checkpoints(output_dir) if _checkpoint_index(p) >= next_index]
    if newer:
        raise TrainingSetupError(
            f"--resume: {str(resume_dir)!r} is older than the checkpoints {newer} in {str(output_dir)!r}; resume from "
            "the latest (--resume without a folder) or move the newer ones away first."
        )
    data = load_training_data(
        args.dataset,
        token_size=model_config.token_size,
        holdout_ids=config.holdout_ids,
        holdout_every=config.holdout_every,
        permute=config.permute,
        normalization=model_config.token_normalization,
    )

    # ---- accelerator
    # --cpu, or ACCELERATE_USE_CPU=1 as `accelerate launch --cpu` / the CPU configs set it
    use_cpu = args.cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=use_cpu)
    if state.is_main_process:
        resources.enter_context(exclusive_lock(output_dir, "training"))
        for leftover in incomplete_checkpoints(output_dir):  # only with --resume: a new run needs an empty folder
            logger.warning("removing %s: an interrupted checkpoint save or deletion left it incomplete", leftover)
            shutil.rmtree(leftover)
    state.wait_for_everyone()
    mixed = config.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if native_bf16(state.device) else "no"
    elif mixed == "bf16" and not native_bf16(state.device):
        logger.warning(
            "mixed_precision=bf16 on %s without known fast native bf16: it may be much slower", state.device
        )
    has_tensorboard = _has_tensorboard()
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=mixed,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard" if has_tensorboard and not args.no_tensorboard else None,
        # Checkpoints are named and pruned here (save_checkpoint), not by accelerate: each is staged and renamed
        # when complete, so an interrupted save never leaves a checkpoint_<n> that breaks --resume.
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        summary = data.summary()
        accelerator.print(
            f"GeoSANE training: {summary['train_models']} models ({summary['train_tokens']:,} tokens) for training, "
            f"{summary['holdout_models']} held out; preset {config.model_preset}, window {window}, "
            f"{accelerator.num_processes} process(es) on {accelerator.device}, mixed precision {mixed}"
            + ("" if has_tensorboard else " (tensorboard not installed: no tensorboard logs)")
        )
    set_seed(config.seed)
    model = GeoSANEModel(model_config)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.schedule, config.num_steps, config.warmup_fraction)
    )
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler steps per optimizer step, ourselves
    unwrapped = accelerator.unwrap_model(model)

    # ---- data order: one global sampler (same on every rank), one augmentation generator per rank
    sampler = WindowSampler([m.num_tokens for m in data.train], window, config.weighting, seed=config.seed)
    augment_rng = torch.Generator().manual_seed(config.seed * 1000 + 17 + accelerator.process_index)
    augmenters = make_augmenters(
        TwoViewConfig(
            permute=config.permute,
            noise_sigma=config.noise_sigma,
            erase_rate=config.erase_rate,
            token_size=model_config.token_size,
            tokenizer_mode=data.mode if data.mode in ("geosane", "full") else "full",
        )
    )

    start_step = 0
    resumed_running: list[torch.Tensor] = []  # losses of steps since the last log line, restored on resume
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, Any]] = []
    if resume_dir is not None:
        if int(resume_state.get("num_processes", accelerator.num_processes)) != accelerator.num_processes:
            raise TrainingSetupError(
                f"--resume: the checkpoint was written by {resume_state['num_processes']} process(es), got "
                f"{accelerator.num_processes}; the data order depends on the process count, resume with the same."
            )
        accelerator.load_state(str(resume_dir))
        start_step = int(resume_state["step"])
        sampler.load_state_dict(resume_state["sampler"])
        scheduler.load_state_dict(resume_state["scheduler"])
        history, evaluations = resume_state.get("history", []), resume_state.get("evaluations", [])
        rank_file = resume_dir / RANK_STATE_FILE.format(rank=accelerator.process_index)
        if not rank_file.is_file():
            raise TrainingSetupError(
                f"--resume: expected {rank_file.name} in {str(resume_dir)!r} (one per process); the checkpoint was "
                f"written with fewer processes than the {accelerator.num_processes} now."
            )
        rank_state = json.loads(rank_file.read_text())
        augment_rng.set_state(torch.tensor(rank_state["generator"], dtype=torch.uint8))
        resumed_running = [torch.tensor(r, device=accelerator.device) for r in rank_state.get("running", [])]
        accelerator.print(f"resumed from {resume_dir} at step {start_step}")

    checkpoints_dir = output_dir / CHECKPOINTS_DIR

    def save_checkpoint(step: int) -> None:
        """Saves into ``.checkpoint_<n>.partial`` and renames it to ``checkpoint_<n>`` once every file is written
        (``trainer_state.json`` last); then prunes the oldest complete checkpoints beyond the limit."""
        nonlocal next_index
        check_finite_weights(unwrapped, step, complete_checkpoints(output_dir))
        final = checkpoints_dir / f"checkpoint_{next_index}"
        stage = checkpoints_dir / f".{final.name}{_STAGE_SUFFIX}"
        if accelerator.is_main_process:
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(stage))
        write_json(
            stage / RANK_STATE_FILE.format(rank=accelerator.process_index),
            {"generator": augment_rng.get_state().tolist(), "running": [r.tolist() for r in running]},
            sort_keys=True,
        )
        accelerator.wait_for_everyone()  # every rank's files are in the stage before it is declared complete
        if accelerator.is_main_process:
            write_json(
                stage / STATE_FILE,
                {
                    "step": step,
                    "sampler": sampler.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "config": config.to_dict(),
                    "config_fingerprint": config.fingerprint(),
                    "dataset": args.dataset,
                    "num_processes": accelerator.num_processes,
                    "history": history,
                    "evaluations": evaluations,
                },
                sort_keys=True,
            )
            os.rename(stage, final)
            _prune_checkpoints(output_dir, config.checkpoints_total_limit)
        accelerator.wait_for_everyone()
        next_index += 1

    def run_eval(step: int) -> None:
        result = evaluate(unwrapped, data.holdout, accelerator, config.eval_batch_size)
        if result is None:
            return
        row = {"step": step, **result.__dict__}
        evaluations.append(row)
        accelerator.log(
            {"eval/r2_tokens": result.r2_tokens, "eval/r2_tokens_pooled": result.r2_tokens_pooled}
            | {f"eval/r2_weights/{k}": v for k, v in result.r2_weights_by_type.items()},
            step=step,
        )
        accelerator.print(
            f"step {step}: held-out R^2 tokens {result.r2_tokens:.4f} (pooled {result.r2_tokens_pooled:.4f}) over "
            f"{result.num_models} models"
        )

    if accelerator.log_with:
        accelerator.init_trackers("geosane", config=_flat_hparams(config))

    world, rank = accelerator.num_processes, accelerator.process_index
    progress = tqdm(
        total=config.num_steps, initial=start_step, disable=not accelerator.is_local_main_process, desc="train"
    )
    model.train()
    window_tokens = 0
    loop_start = time.perf_counter()
    step = start_step
    running: list[torch.Tensor] = resumed_running
    while step < config.num_steps:
        for _ in range(config.gradient_accumulation_steps):
            picks = sampler.draw(config.batch_size * world)[rank * config.batch_size : (rank + 1) * config.batch_size]
            batch = make_batch(data.train, picks, window, augmenters, augment_rng).to(accelerator.device)
            with accelerator.accumulate(model):
                output = model(**batch.model_inputs())
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if config.log_every:
                running.append(
                    torch.stack(
                        [output.loss.detach(), output.reconstruction_loss.detach(), output.contrastive_loss.detach()]
                    )
                )
            window_tokens += 2 * batch.tokens.shape[0] * batch.tokens.shape[1] * world
        scheduler.step()
        step += 1
        progress.update(1)
        if config.log_every and (step % config.log_every == 0 or step == config.num_steps):
            mean = accelerator.reduce(torch.stack(running).mean(0), reduction="mean").tolist()
            running.clear()
            if not all(math.isfinite(value) for value in mean):
                raise TrainingDivergedError(
                    f"the training loss became {mean[0]} by step {step} (reconstruction {mean[1]}, contrastive "
                    f"{mean[2]}); stopped without saving. {_last_good(complete_checkpoints(output_dir))} Lower "
                    "learning_rate (or raise warmup_fraction), keep max_grad_norm > 0, and check the dataset."
                )
            row = {
                "step": step,
                "loss": mean[0],
                "reconstruction_loss": mean[1],
                "contrastive_loss": mean[2],
                "lr": scheduler.get_last_lr()[0],
            }
            history.append(row)
            accelerator.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
            progress.set_postfix(loss=f"{mean[0]:.4f}")
        if config.eval_every and step % config.eval_every == 0 and step < config.num_steps:
            run_eval(step)
        stopping = args.stop_after_step is not None and step >= args.stop_after_step
        if (config.checkpoint_every and step % config.checkpoint_every == 0) or stopping:
            save_checkpoint(step)
        if stopping and step < config.num_steps:
            progress.close()
            accelerator.print(f"stopped after step {step} (--stop_after_step); resume with --resume")
            accelerator.end_training()
            return TrainingResult(step=step, history=history, evaluations=evaluations, model=unwrapped)
    progress.close()
    elapsed = time.perf_counter() - loop_start
    run_eval(step)
    if not (config.checkpoint_every and step % config.checkpoint_every == 0):
        save_checkpoint(step)

    model_dir = output_dir / "model"
    check_finite_weights(unwrapped, step, complete_checkpoints(output_dir))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from geosane_hf.generation.pipeline import save_pretrained_with_pipeline
        from training.model_card import write_model_card

        save_pretrained_with_pipeline(unwrapped, model_dir)  # + custom_pipelines and pipeline.py (remote pipeline)
        write_json(output_dir / "history.json", {"history": history, "evaluations": evaluations}, sort_keys=True)
        write_model_card(
            model_dir,
            config=config,
            model_config=model_config,
            data_summary=data.summary(),
            window=window,
            evaluations=evaluations,
            history=history,
            steps=step,
            num_processes=world,
            mixed_precision=mixed,
        )
        if args.push_to_hub:
            from huggingface_hub import HfApi

            api = HfApi()
            api.create_repo(args.push_to_hub, exist_ok=True, private=args.private)
            api.upload_folder(folder_path=str(model_dir), repo_id=args.push_to_hub, commit_message="GeoSANE training")
            accelerator.print(f"pushed {model_dir} to {args.push_to_hub}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    rate = window_tokens / elapsed if elapsed > 0 else 0.0
    return TrainingResult(step, history, evaluations, str(model_dir), rate, unwrapped)


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def _flat_hparams(config: TrainingConfig) -> dict[str, Any]:
    return {k: v if isinstance(v, int | float | str | bool) else json.dumps(v) for k, v in config.to_dict().items()}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``python training/train.py --help``)."""
    parser = argparse.ArgumentParser(description="Train a GeoSANE weight-space autoencoder with Accelerate.")
    parser.add_argument(
        "--config", help="training config: a YAML file or a packaged name (tiny-test, small-demo, base-v1)"
    )
    parser.add_argument("--dataset", required=True, help="tokenized-weights dataset folder or Hub dataset id")
    parser.add_argument("--output_dir", default="runs/geosane", help="checkpoints, logs, the final model")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="resume from the newest checkpoint in --output_dir (or from the given checkpoint folder)",
    )
    parser.add_argument("--push_to_hub", metavar="REPO", help="upload the final model folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (YAML value), repeatable: --set num_steps=200",
    )
    parser.add_argument("--num_steps", type=int, help="shortcut for --set num_steps=N")
    parser.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    parser.add_argument(
        "--stop_after_step", type=int, help="save a checkpoint and stop after this step (as if killed)"
    )
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if an accelerator is present")
    parser.add_argument("--no_tensorboard", action="store_true", help="no tensorboard logs")
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[TrainingConfig, argparse.Namespace]:
    """(config with CLI overrides applied, parsed arguments); raises TrainingConfigError on a bad config."""
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.num_steps is not None:
        overrides.append(f"num_steps={args.num_steps}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return load_config(args.config, overrides), args


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, train, report; bad input exits with code 2 and a one-line error."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from geosane_hf.redaction import one_line, redact
    from geosane_hf.runtime import tune_cpu_allocator

    tune_cpu_allocator()  # glibc malloc thresholds: 5-10% faster CPU steps (geosane_hf/runtime.py)
    try:
        config, args = parse_args(argv)
        result = training_function(config, args)
    except GeoSANEError as error:  # bad input, a diverged run, a busy folder: one line, no traceback
        print(f"error: {redact(one_line(error))}", file=sys.stderr)
        return 2
    if result.model_dir and os.environ.get("RANK", "0") == "0":
        print(f"done: {result.step} steps, model in {result.model_dir}, {result.tokens_per_second:,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
