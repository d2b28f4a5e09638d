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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `training` and `geosane_hf` importable from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from geosane_hf.atomic_io import exclusive_lock, write_json
from geosane_hf.errors import GeoSANEError
from training.config import TrainingConfig, TrainingConfigError, load_config

logger = logging.getLogger("geosane.train")

STATE_FILE = "trainer_state.json"  # step, sampler and scheduler state, config (main process)
RANK_STATE_FILE = "augment_rng_rank{rank}.json"  # each rank's augmentation generator


class TrainingSetupError(GeoSANEError, ValueError):
    """Bad input found before training starts (the message says what was expected and what to do)."""


class TrainingDivergedError(GeoSANEError, RuntimeError):
    """The loss or the weights became NaN/Inf: the run stops before it saves them (earlier checkpoints stay)."""


@dataclass
class EvalResult:
    """Held-out reconstruction quality.

    Attributes:
        r2_tokens: mean over held-out models of the token-space R^2 (real values only).
        r2_tokens_pooled: R^2 over all held-out values together.
        r2_weights_by_type: R^2 of the detokenized weights per LayerType name (pooled over models).
        num_models: held-out models evaluated.
    """

    r2_tokens: float
    r2_tokens_pooled: float
    r2_weights_by_type: dict[str, float]
    num_models: int


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


# --------------------------------------------------------------------------------------------------- helpers


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` has native, fast bf16 matmuls: CUDA devices that report bf16 support.

    CPUs always return False, even with AVX512-BF16 flags: on this machine class bf16 matmuls measured ~1 GFLOP/s
    against 125-156 GFLOP/s fp32 (RESOURCES.md), and a timing probe is unreliable on a shared, loaded CPU. Ask for
    ``mixed_precision: bf16`` explicitly on a CPU with AMX if you have measured that it helps.

    Example:
        >>> native_bf16(torch.device("cpu"))
        False
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def build_model_config(config: TrainingConfig):
    """The GeoSANEConfig of a training config (preset + overrides + layer types)."""
    from geosane_hf.layer_types import LayerType
    from geosane_hf.modeling import GeoSANEConfig

    overrides = dict(config.model_overrides)
    if config.use_layer_types:
        overrides.setdefault("num_layer_types", len(LayerType))
    try:
        return GeoSANEConfig.from_preset(config.model_preset, **overrides)
    except (ValueError, TypeError) as error:
        raise TrainingConfigError(f"model_preset/model_overrides: {error}") from error


def window_size_for(config: TrainingConfig, model_config) -> int:
    """The training window, checked against the model's limit (its projection head is sized for it)."""
    window = config.window_size or model_config.window_size
    if window > model_config.window_size:
        raise TrainingConfigError(
            f"window_size: expected at most the model's window_size {model_config.window_size} (the contrastive "
            f"projection head is sized for it), got {window}; lower window_size or raise "
            "model_overrides.window_size."
        )
    return window


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weights with ``dim >= 2`` decay, biases, norms and 1-D tables do not (nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; ``fused_optimizer`` picks torch's fused kernel (CPU, CUDA, XPU, MPS)."""
    return torch.optim.AdamW(
        parameter_groups(model, config.weight_decay),
        lr=config.learning_rate,
        betas=tuple(config.adam_betas),
        fused=config.fused_optimizer or None,  # None: torch's default per-parameter loop
    )


def lr_lambda(schedule: str, num_steps: int, warmup_fraction: float):
    """Multiplier of the peak learning rate at a step (OneCycle = linear warm-up then cosine to ~0)."""
    warmup = round(warmup_fraction * num_steps) if schedule == "onecycle" else 0

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, num_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress)) * (1 - 1e-3) + 1e-3

    return factor


CHECKPOINTS_DIR = "checkpoints"
_STAGE_SUFFIX = ".partial"  # `.checkpoint_<n>.partial`: a save in progress, renamed to checkpoint_<n> when complete
_DELETE_SUFFIX = ".deleting"  # `.checkpoint_<n>.deleting`: an old checkpoint being removed (checkpoints_total_limit)


def _checkpoint_index(path: Path) -> int:
    name = path.name
    if not name.startswith("checkpoint_") or not name[len("checkpoint_") :].isdigit():
        raise TrainingSetupError(f"expected a checkpoint folder named checkpoint_<n> (save_state), got {str(path)!r}.")
    return int(name[len("checkpoint_") :])


def find_resume_dir(resume: str, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``"latest"`` -> newest ``output_dir/checkpoints/checkpoint_<n>`` with a
    complete state (None when there is none), else the given folder (which must exist)."""
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise TrainingSetupError(
                f"--resume: expected a checkpoint folder with {STATE_FILE} (written by this script), got {resume!r}."
            )
        _checkpoint_index(path)
        return path
    candidates = complete_checkpoints(output_dir)
    return candidates[-1] if candidates else None


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoints/checkpoint_<n>`` folders whose trainer state was written (the last file of a save), by n."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint_*") if p.name[len("checkpoint_") :].isdigit()]
    return sorted((p for p in found if (p / STATE_FILE).is_file()), key=_checkpoint_index)


def incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """What interrupted saves and deletions left in ``checkpoints/``: staged folders and states without
    ``trainer_state.json`` (written by versions that saved in place)."""
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    staged = [p for p in folder.iterdir() if p.name.endswith((_STAGE_SUFFIX, _DELETE_SUFFIX))]
    unfinished = [p for p in folder.glob("checkpoint_*") if p.is_dir() and not (p / STATE_FILE).is_file()]
    return sorted(staged + unfinished)


def check_output_dir(output_dir: Path, resume: str | None, push_to_hub: str | None) -> None:
    """Refuses, before any compute, what would fail or mix runs later: an earlier run's folder without --resume, a
    folder that cannot be written, a Hub repo id that the Hub would reject after all the training steps."""
    if push_to_hub is not None:
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(push_to_hub)
        except HFValidationError as error:
            raise TrainingSetupError(
                f"--push_to_hub: expected a Hub repo id like 'org/name', got {push_to_hub!r}: {error}"
            ) from error
    if output_dir.exists() and not output_dir.is_dir():
        raise TrainingSetupError(f"--output_dir: expected a folder, got the file {str(output_dir)!r}.")
    if resume is None and output_dir.is_dir():
        earlier = sorted(p.name for p in output_dir.iterdir() if not p.name.startswith("."))
        if earlier:
            raise TrainingSetupError(
                f"--output_dir {str(output_dir)!r} holds an earlier run ({earlier[:6]}); pass --resume to continue "
                "it, or choose a new (or empty) --output_dir: a second run there would mix checkpoints, logs and "
                "models."
            )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise TrainingSetupError(
            f"--output_dir: expected a folder this process can write, got {str(output_dir)!r} ({error}); choose "
            "another folder or fix its permissions."
        ) from error


def check_resume_compatible(resume_dir: Path, config: TrainingConfig, dataset: str) -> dict[str, Any]:
    """Reads a checkpoint's trainer state and refuses one written with another config (before any compute)."""
    state = json.loads((resume_dir / STATE_FILE).read_text())
    saved = state.get("config", {})
    from training.config import RESUME_KEYS

    differing = sorted(key for key in RESUME_KEYS if saved.get(key) != config.to_dict().get(key))
    if differing:
        detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {config.to_dict().get(k)!r}" for k in differing)
        raise TrainingSetupError(
            f"--resume: the checkpoint {str(resume_dir)!r} was written with another config ({detail}); resume with "
            "the same config or start a new --output_dir."
        )
    if state.get("dataset") not in (None, dataset):
        raise TrainingSetupError(
            f"--resume: the checkpoint was trained on dataset {state.get('dataset')!r}, got --dataset {dataset!r}."
        )
    return state


# ------------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model, models, accelerator, batch_size: int) -> EvalResult | None:
    """Reconstruction R^2 on held-out models: in token space and of the detokenized weights per layer type.

    Held-out models are split across processes; the sums are reduced, so every process gets the same result.
    """
    from geosane_hf.layer_types import LayerType
    from geosane_hf.token_norm import destandardize
    from geosane_hf.tokenizer import WeightTokenizer

    if not models:
        return None
    num_types = len(LayerType)
    # per type t: [sse, sum_x, sum_x2, n]; then [r2 sum over models, model count, pooled sse, sum_x, sum_x2, n]
    sums = torch.zeros(num_types * 4 + 6, dtype=torch.float64, device=accelerator.device)
    was_training = model.training
    model.eval()
    use_types = model.config.num_layer_types > 0
    for source in models[accelerator.process_index :: accelerator.num_processes]:
        tok = source.tokenized
        device = accelerator.device
        tokens, mask = tok.tokens.to(device), tok.mask.to(device)  # [N, T]
        positions = tok.positions.to(device)  # [N, 3]
        layer_types = tok.layer_types.to(device) if use_types else None  # [N]
        latents = model.encode_long(tokens, positions, mask, layer_types, batch_size=batch_size)  # [N, L]
        recon = model.decode_long(latents, positions, layer_types, mask.any(-1), batch_size=batch_size)  # [N, T]
        recon = torch.where(mask, recon.float(), 0.0)
        x = tokens.double()[mask]
        err = (recon.double()[mask] - x).pow(2).sum()
        sst = (x - x.mean()).pow(2).sum()
        sums[-6] += 1.0 - err / sst.clamp_min(1e-30)
        sums[-5] += 1
        sums[-4:] += torch.stack([err, x.sum(), x.pow(2).sum(), torch.tensor(float(x.numel()), device=device)])
        # weights put back into the model, per layer type of the tokenized tensors (in weight units: standardised
        # tokens are mapped back with the model's own per-layer statistics, as generation does with the prompt's)
        tokenizer = WeightTokenizer(token_size=tok.tokens.shape[1], mode=tok.layout.mode)
        original_tokens, rebuilt_tokens = tok.tokens, recon.cpu()
        if source.stats is not None:
            original_tokens = destandardize(original_tokens, tok.mask, source.stats)
            rebuilt_tokens = destandardize(rebuilt_tokens, tok.mask, source.stats)
        original = tokenizer.detokenize(original_tokens, tok.layout)
        rebuilt = tokenizer.detokenize(rebuilt_tokens, tok.layout)
        for entry in tok.layout.entries:
            for key in (entry.key, entry.bias_key):
                if key is None:
                    continue
                a, b = original[key].double().flatten(), rebuilt[key].double().flatten()
                row = entry.layer_type * 4
                stats = torch.stack([(b - a).pow(2).sum(), a.sum(), a.pow(2).sum(), torch.tensor(float(a.numel()))])
                sums[row : row + 4] += stats.to(device)
    sums = accelerator.reduce(sums, reduction="sum")
    if was_training:
        model.train()

    def r2(sse, sx, sx2, n) -> float:
        sst = sx2 - sx * sx / n
        return float(1.0 - sse / sst) if n > 0 and sst > 0 else float("nan")

    by_type = {}
    for t in LayerType:
        sse, sx, sx2, n = sums[t * 4 : t * 4 + 4].tolist()
        if n > 0:
            by_type[t.name] = r2(sse, sx, sx2, n)
    r2_sum, count = sums[-6].item(), sums[-5].item()
    return EvalResult(
        r2_tokens=r2_sum / max(count, 1),
        r2_tokens_pooled=r2(*sums[-4:].tolist()),
        r2_weights_by_type=by_type,
        num_models=int(count),
    )


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


def check_finite_weights(model: torch.nn.Module, step: int, checkpoints: list[Path]) -> None:
    """Raises :class:`TrainingDivergedError` when a parameter holds NaN/Inf (called before every save)."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            bad = int((~torch.isfinite(parameter)).sum())
            raise TrainingDivergedError(
                f"parameter {name!r} holds {bad} NaN/Inf values at step {step}; stopped without saving them. "
                f"{_last_good(checkpoints)} Lower learning_rate (or raise warmup_fraction), keep max_grad_norm > 0, "
                "and check the dataset."
            )


def _last_good(checkpoints: list[Path]) -> str:
    if not checkpoints:
        return "No checkpoint was saved before."
    return f"The last checkpoint, {str(checkpoints[-1])!r}, is intact."


def _prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Deletes the oldest complete checkpoints beyond ``keep`` (hidden by a rename first: a kill mid-delete never
    leaves a half-deleted ``checkpoint_<n>`` that resuming would pick)."""
    if keep is None:
        return
    for old in complete_checkpoints(output_dir)[:-keep]:
        doomed = old.with_name(f".{old.name}{_DELETE_SUFFIX}")
        os.rename(old, doomed)
        shutil.rmtree(doomed)


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
