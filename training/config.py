"""The typed training configuration, loaded from YAML (a file, or a packaged name: ``tiny-test``, ``small-demo``,
``base-v1`` in ``geosane_hf/resources/training/``) with CLI overrides.

Example:
    >>> from training.config import TrainingConfig
    >>> config = TrainingConfig.from_dict({"model_preset": "tiny", "num_steps": 10})
    >>> config.num_steps, config.batch_size
    (10, 8)
    >>> TrainingConfig.from_dict({"learning_rte": 1e-3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    training.config.TrainingConfigError: unknown training config key(s) ['learning_rte']; expected keys from ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.errors import GeoSANEError

__all__ = ["RESUME_KEYS", "TrainingConfig", "TrainingConfigError", "load_config"]


class TrainingConfigError(GeoSANEError, ValueError):
    """A bad training configuration (unknown key, bad value, or a resume directory from another config)."""


@dataclass
class TrainingConfig:
    """Everything a training run depends on. Comments name the unit; docs/training.md explains the choices."""

    # model
    model_preset: str = "small"  # GeoSANEConfig.from_preset name: tiny | small | base-v1
    model_overrides: dict[str, Any] = field(default_factory=dict)  # GeoSANEConfig fields to change
    use_layer_types: bool = True  # embed each token's LayerType (num_layer_types = len(LayerType))
    # data
    window_size: int | None = None  # tokens per window; None = the model's window_size (must not exceed it)
    batch_size: int = 8  # windows per process per micro-step
    weighting: str = "sqrt"  # model sampling weight: sqrt | uniform | tokens (of the model's token count)
    holdout_ids: list[str] = field(default_factory=list)  # model ids kept for evaluation only
    holdout_every: int = 0  # with no holdout_ids: hold out every k-th id (sorted); 0 = none
    permute: bool = True  # permutation augmentation where the architecture has rules
    noise_sigma: float = 0.1  # multiplicative noise w * (1 + sigma * N(0, 1))
    erase_rate: float = 0.1  # fraction of real tokens erased per view
    # optimisation
    num_steps: int = 1000  # optimizer steps (the schedule's length)
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step
    learning_rate: float = 1e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW decay for weights with dim >= 2 (others never decay)
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    fused_optimizer: bool = True  # AdamW(fused=True): one kernel for all parameters, 2.5x faster steps on CPU here
    schedule: str = "onecycle"  # onecycle (warm-up then cosine) | cosine (no warm-up) | constant
    warmup_fraction: float = 0.1  # onecycle: share of steps spent warming up
    max_grad_norm: float = 1.0  # gradient clipping (0 disables)
    mixed_precision: str = "auto"  # auto (bf16 only where the device has fast native bf16) | no | bf16 | fp16
    seed: int = 0
    # bookkeeping
    log_every: int = 10  # steps between logged losses
    eval_every: int = 100  # steps between held-out evaluations (0: only at the end)
    checkpoint_every: int = 100  # steps between save_state checkpoints (0: only at the end)
    checkpoints_total_limit: int | None = 3  # keep the last k checkpoints
    eval_batch_size: int = 8  # windows per pass in evaluation
    torch_threads: int | None = None  # torch.set_num_threads per process (None: leave torch's default)

    @classmethod
    def valid_keys(cls) -> list[str]:
        """The field names."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Builds and validates a config; unknown keys raise listing the valid ones."""
        unknown = sorted(set(values) - set(cls.valid_keys()))
        if unknown:
            raise TrainingConfigError(
                f"unknown training config key(s) {unknown}; expected keys from {cls.valid_keys()}. "
                "Fix the spelling in the YAML file or the --set override."
            )
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raises :class:`TrainingConfigError` on a value of the wrong type or out of range (before any work)."""

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                value = getattr(self, name)
                hint = ""
                if isinstance(value, str) and _is_number(value):
                    hint = (
                        " (YAML reads a number such as 1e-3 without a decimal point as a string: write 1.0e-3, "
                        "or 0.001)"
                    )
                raise TrainingConfigError(f"training config {name}: expected {expected}, got {value!r}{hint}.")

        for item in dataclasses.fields(self):  # the declared type first: every later check may rely on it
            value = getattr(self, item.name)
            kind = _FIELD_KINDS.get(str(item.type))
            if kind is not None:
                need(kind[0](value), item.name, kind[1])
        need(self.weighting in ("sqrt", "uniform", "tokens"), "weighting", "'sqrt', 'uniform' or 'tokens'")
        need(self.schedule in ("onecycle", "cosine", "constant"), "schedule", "'onecycle', 'cosine' or 'constant'")
        need(self.mixed_precision in ("auto", "no", "bf16", "fp16"), "mixed_precision", "auto | no | bf16 | fp16")
        for name in ("batch_size", "num_steps", "gradient_accumulation_steps", "eval_batch_size"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name, "a positive integer")
        for name in ("log_every", "eval_every", "checkpoint_every", "holdout_every"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(
            self.window_size is None or (isinstance(self.window_size, int) and self.window_size > 0),
            "window_size",
            "a positive integer or null",
        )
        need(self.learning_rate > 0, "learning_rate", "a positive finite number")
        need(0 <= self.warmup_fraction < 1, "warmup_fraction", "a number in [0, 1)")
        need(
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            "adam_betas",
            "two numbers in [0, 1)",
        )
        need(self.noise_sigma >= 0, "noise_sigma", "a finite number >= 0")
        need(0 <= self.erase_rate <= 1, "erase_rate", "a number in [0, 1]")
        need(self.weight_decay >= 0, "weight_decay", "a finite number >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm", "a finite number >= 0 (0 disables clipping)")
        need(
            self.checkpoints_total_limit is None or self.checkpoints_total_limit >= 1,
            "checkpoints_total_limit",
            "an integer >= 1 (the checkpoints kept) or null (keep all)",
        )
        need(self.torch_threads is None or self.torch_threads >= 1, "torch_threads", "an integer >= 1 or null")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of the fields."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that a resumed run must share (:data:`RESUME_KEYS`)."""
        values = {key: getattr(self, key) for key in RESUME_KEYS}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


# Fields that decide the model, the data order and the schedule: resuming with any of them changed is refused.
RESUME_KEYS = (
    "model_preset",
    "model_overrides",
    "use_layer_types",
    "window_size",
    "batch_size",
    "weighting",
    "holdout_ids",
    "holdout_every",
    "permute",
    "noise_sigma",
    "erase_rate",
    "num_steps",
    "gradient_accumulation_steps",
    "learning_rate",
    "weight_decay",
    "adam_betas",
    "schedule",
    "warmup_fraction",
    "max_grad_norm",
    "seed",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


# The type check of each annotation used by TrainingConfig (the annotations are strings: `from __future__`).
_FIELD_KINDS: dict[str, tuple[Any, str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "float": (_is_finite, "a finite number"),
    "int | None": (lambda v: v is None or _is_int(v), "an integer or null"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "list[float]": (lambda v: isinstance(v, list) and all(_is_finite(x) for x in v), "a list of finite numbers"),
    "dict[str, Any]": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "a mapping"),
}


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainingConfig:
    """Reads a YAML config and applies ``key=value`` overrides (values parsed as YAML).

    Args:
        path: YAML file, or a packaged config name (``small-demo``; see
            :func:`geosane_hf.package_data.training_configs`); None: the defaults.
        overrides: ``["num_steps=20", "holdout_ids=[a, b]"]``.

    Returns:
        The validated :class:`TrainingConfig`.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        from geosane_hf.package_data import training_config_path

        try:
            path = training_config_path(path)
        except FileNotFoundError as error:
            raise TrainingConfigError(str(error)) from None
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise TrainingConfigError(f"expected a mapping at the top of {str(path)!r}, got {type(loaded).__name__}.")
        values.update(loaded)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise TrainingConfigError(f"expected an override KEY=VALUE, got {item!r}.")
        values[key.strip()] = _parse_value(text)
    return TrainingConfig.from_dict(values)
