"""The model and the optimizer of a training config: ``GeoSANEConfig`` from the preset, the window, AdamW with
decay groups, the learning-rate schedule and the mixed-precision choice (``training/train.py`` uses them).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from training.config import TrainingConfig, TrainingConfigError


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
