"""GeoSANE model configuration.

Self-contained (imports only transformers), because this file is uploaded to the Hub as remote code next to
``modeling_geosane.py``.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from transformers import PreTrainedConfig

POSITION_ENCODINGS = ("sinusoidal-3d", "learned")
POSITION_SUM_DTYPES = ("float16", "bfloat16", "float32", "float64")
TOKEN_NORMALIZATIONS = ("none", "per-layer")  # geosane_hf.token_norm

# Named architectures. `base-v1` is the published GeoSANE-909M model (reconstructed from the released logs; the
# head count was never published, 12, 16 and 24 all divide 1536: pass `num_attention_heads` when converting).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "token_size": 230,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_encoder_layers": 2,
        "num_decoder_layers": 2,
        "latent_size": 16,
        "window_size": 32,
        "halo_size": 8,
        "position_sum_dtype": "float32",
    },
    "small": {
        "token_size": 230,
        "hidden_size": 192,
        "num_attention_heads": 6,
        "num_encoder_layers": 3,
        "num_decoder_layers": 3,
        "latent_size": 32,
        "window_size": 128,
        # No halo: trained on windows without context, a 16-token halo bought +0.00006 held-in R^2 for 16% more time
        # (benchmarks/halo_quality.py on the demo model, docs/benchmarks.md). base-v1 keeps the published 64.
        "halo_size": 0,
        "position_sum_dtype": "float32",
    },
    "base-v1": {
        "token_size": 230,
        "hidden_size": 1536,
        "num_attention_heads": 16,
        "num_encoder_layers": 16,
        "num_decoder_layers": 16,
        "latent_size": 128,
        "window_size": 512,
        "halo_size": 64,
        "position_sum_dtype": "float16",
    },
}


class GeoSANEConfig(PreTrainedConfig):
    r"""Configuration of a [`GeoSANEModel`]: a transformer autoencoder over windows of weight tokens.

    The defaults build the published GeoSANE-909M architecture (``from_preset("base-v1")``). Field by field:

    token_size: values per weight token (230 in GeoSANE).
    hidden_size: transformer width ``d`` (alias ``d_model``).
    num_attention_heads: heads per attention layer; must divide ``hidden_size``.
    num_encoder_layers / num_decoder_layers: pre-LN GPT-2 blocks in each stack.
    intermediate_size: MLP width; ``None`` means ``4 * hidden_size``.
    latent_size: size of the per-token latent (the bottleneck; keep it well below ``token_size``).
    window_size: tokens per training window; also fixes the projection head input (``window_size * latent_size``).
    halo_size: context tokens on each side of a window in ``encode_long`` / ``decode_long``.
    hidden_dropout: dropout after the embeddings and on both residual branches.
    attention_dropout: dropout on the attention probabilities.
    attention_bias / mlp_bias: biases in ``c_attn``/``c_proj`` and ``c_fc``/``c_proj`` (GeoSANE: none).
    layer_norm_bias: bias in the block LayerNorms (GeoSANE: weight only).
    io_bias: biases in ``tokenizer``, ``encoder_comp``, ``decoder_comp`` and ``detokenizer`` (GeoSANE: yes).
    layer_norm_eps: epsilon of every LayerNorm.
    hidden_act: MLP activation, a ``transformers.activations.ACT2FN`` key (``"gelu"`` is the exact GELU).
    position_encoding: ``"sinusoidal-3d"`` (GeoSANE: one sinusoid per position column, summed) or ``"learned"``
        (SANE: tables for the three columns, ``[table0 + table1 | table2]`` of half width each).
    position_sum_dtype: dtype in which the three sinusoids are accumulated before they are added to the
        activations (``"float16"`` in the original).
    position_base: base of the sinusoid frequencies.
    max_position_embeddings: sizes of the three learned tables (``[n, layer, token-in-layer]``); only for
        ``position_encoding="learned"``.
    num_layer_types: size of the optional layer-type embedding (0 disables it; the original GeoSANE had none).
    token_normalization: what the model expects its tokens to be: ``"none"`` (raw weights, as the original) or
        ``"per-layer"`` (every layer standardised to mean 0, std 1 over its real values, as SANE does; the caller
        standardises before ``encode`` and undoes it after ``decode`` with the prompt's statistics, see
        ``geosane_hf.token_norm``). The model itself never reads it; it records how its training data was prepared.
    projection_hidden_size / projection_size: widths of the two Linear layers of the contrastive projection head.
    contrastive_weight: ``gamma`` in ``loss = gamma * nt_xent + (1 - gamma) * reconstruction``.
    temperature: NT-Xent temperature.
    initializer_range: std of the normal init (residual projections use ``std / sqrt(2 * layers)``).

    Example:

    >>> from geosane_hf.modeling import GeoSANEConfig
    >>> config = GeoSANEConfig.from_preset("tiny")
    >>> (config.hidden_size, config.latent_size, config.window_size)
    (64, 16, 32)
    """

    model_type = "geosane"
    attribute_map: ClassVar[dict[str, str]] = {"d_model": "hidden_size", "num_heads": "num_attention_heads"}

    token_size: int = 230
    hidden_size: int = 1536
    num_attention_heads: int = 16
    num_encoder_layers: int = 16
    num_decoder_layers: int = 16
    intermediate_size: int | None = None
    latent_size: int = 128
    window_size: int = 512
    halo_size: int = 64
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    attention_bias: bool = False
    mlp_bias: bool = False
    layer_norm_bias: bool = False
    io_bias: bool = True
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    position_encoding: str = "sinusoidal-3d"
    position_sum_dtype: str = "float16"
    position_base: float = 10000.0
    max_position_embeddings: list[int] | None = None
    num_layer_types: int = 0
    token_normalization: str = "none"
    projection_hidden_size: int = 30
    projection_size: int = 30
    contrastive_weight: float = 0.05
    temperature: float = 0.1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.max_position_embeddings is not None:
            self.max_position_embeddings = [int(size) for size in self.max_position_embeddings]
        self.validate_architecture()

    def validate_architecture(self):
        """Raises ``ValueError`` naming the offending field when the sizes do not describe a buildable model."""
        positive = (
            "token_size",
            "hidden_size",
            "num_attention_heads",
            "latent_size",
            "window_size",
            "intermediate_size",
            "projection_hidden_size",
            "projection_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GeoSANEConfig.{name}: expected a positive integer, got {value!r}.")
        for name in ("num_encoder_layers", "num_decoder_layers", "halo_size", "num_layer_types"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"GeoSANEConfig.{name}: expected a non-negative integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"GeoSANEConfig: expected hidden_size divisible by num_attention_heads, got hidden_size="
                f"{self.hidden_size} and num_attention_heads={self.num_attention_heads} "
                f"(remainder {self.hidden_size % self.num_attention_heads}); pick a head count that divides it."
            )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"GeoSANEConfig.position_encoding: expected one of {POSITION_ENCODINGS}, got {self.position_encoding!r}."
            )
        if self.position_sum_dtype not in POSITION_SUM_DTYPES:
            raise ValueError(
                f"GeoSANEConfig.position_sum_dtype: expected one of {POSITION_SUM_DTYPES}, "
                f"got {self.position_sum_dtype!r}."
            )
        if self.hidden_size % 2 != 0:
            raise ValueError(
                f"GeoSANEConfig.hidden_size: expected an even width (sin/cos pairs, half-width learned tables), "
                f"got {self.hidden_size}."
            )
        if self.position_encoding == "learned":
            tables = self.max_position_embeddings
            if tables is None or len(tables) != 3 or any(size <= 0 for size in tables):
                raise ValueError(
                    "GeoSANEConfig.max_position_embeddings: learned positions need three positive table sizes "
                    f"[n, layer, token-in-layer], got {tables!r}."
                )
            if self.window_size > tables[0]:
                raise ValueError(
                    f"GeoSANEConfig: window_size {self.window_size} is larger than the learned position table "
                    f"max_position_embeddings[0]={tables[0]}; a window could never be embedded. Shrink the window "
                    "or enlarge the table."
                )
        if self.token_normalization not in TOKEN_NORMALIZATIONS:
            raise ValueError(
                f"GeoSANEConfig.token_normalization: expected one of {TOKEN_NORMALIZATIONS}, "
                f"got {self.token_normalization!r}."
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"GeoSANEConfig.{name}: expected a probability in [0, 1), got {value!r}.")
        if not 0.0 <= float(self.contrastive_weight) <= 1.0:
            raise ValueError(
                f"GeoSANEConfig.contrastive_weight: expected gamma in [0, 1], got {self.contrastive_weight!r}."
            )
        if float(self.temperature) <= 0.0:
            raise ValueError(f"GeoSANEConfig.temperature: expected a positive number, got {self.temperature!r}.")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GeoSANEConfig:
        """Builds a named configuration, optionally overriding fields.

        Args:
            name: ``"tiny"`` (tests), ``"small"`` (CPU demo) or ``"base-v1"`` (the published 909M model).
            **overrides: fields to change, e.g. ``token_size=64``.

        Returns:
            The configuration.

        Example:

        >>> GeoSANEConfig.from_preset("small", latent_size=16).latent_size
        16
        """
        if name not in PRESETS:
            raise ValueError(f"GeoSANEConfig.from_preset: expected one of {sorted(PRESETS)}, got {name!r}.")
        kwargs = copy.deepcopy(PRESETS[name])
        kwargs.update(overrides)
        return cls(**kwargs)


__all__ = ["PRESETS", "GeoSANEConfig"]
