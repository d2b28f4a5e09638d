"""GeoSANE: a transformer autoencoder over weight tokens (the learned weight space).

Self-contained (imports only torch, transformers and ``configuration_geosane``), because this file is uploaded to
the Hub as remote code. Module names follow the original GeoSANE state_dict (``tokenizer``,
``transformer_encoder.transformer.{i}.ln_1`` ... ``projection_head.head.{0,1,3,4}``), so an original checkpoint
loads 1:1 (its ``pe.div_term`` buffer is recomputed here and dropped by the converter).

Shapes: B batch, N tokens, T token size, d hidden size, L latent size, h heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_geosane import GeoSANEConfig

logger = logging.get_logger(__name__)


@dataclass
class GeoSANEModelOutput(ModelOutput):
    r"""Output of [`GeoSANEModel.forward`].

    With two views, the views are stacked along the batch: rows ``[:B]`` are view 1, rows ``[B:]`` view 2.

    Args:
        loss: ``gamma * contrastive_loss + (1 - gamma) * reconstruction_loss`` with two views, the reconstruction
            loss alone with one view; ``None`` when ``return_loss=False``.
        reconstruction_loss: masked-loss-normalised MSE over the real (mask True) target values of all views.
        contrastive_loss: NT-Xent between the projections of the two views (``None`` with one view).
        latents: ``[V*B, N, latent_size]`` per-token latents.
        reconstruction: ``[V*B, N, token_size]`` decoded tokens.
        projections: ``[V*B, projection_size]`` projection-head outputs (``None`` when ``N > window_size``).
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    projections: torch.FloatTensor | None = None


def masked_normalized_mse(
    output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """GeoSANE's "masked loss normalisation": standardise output and target with one mean/std pair taken over all
    real target values, then average the squared error over the real values only.

    Computed in float32. ``std`` is the unbiased standard deviation, clamped at ``eps``.

    Args:
        output: ``[..., T]`` reconstruction.
        target: ``[..., T]`` target tokens.
        mask: ``[..., T]`` bool, True on real values; ``None`` means all values are real.
        eps: lower bound of the standard deviation.

    Returns:
        A scalar tensor.

    Example:

    >>> import torch
    >>> target = torch.tensor([[1.0, 3.0, 0.0]]); mask = torch.tensor([[True, True, False]])
    >>> round(float(masked_normalized_mse(target + 1.0, target, mask)), 6)  # (1 / std)^2 with std = sqrt(2)
    0.5
    """
    output, target = output.float(), target.float()
    if mask is None:
        count = target.numel()
        total = target.sum()
        squares = target.square().sum()
        error = (output - target).square().sum()
    else:
        weights = mask.to(torch.float32)  # masked sums instead of boolean indexing: no sync, no gather
        count = int(mask.sum())
        total = (target * weights).sum()
        squares = (target.square() * weights).sum()
        error = ((output - target).square() * weights).sum()
    if count == 0:
        raise ValueError("masked_normalized_mse: expected at least one real (mask True) target value, got none.")
    mean = total / count
    variance = (squares - count * mean.square()) / max(count - 1, 1) if count > 1 else torch.ones_like(total)
    std = variance.clamp_min(0).sqrt().clamp_min(eps)
    # standardising output and target with the same (mean, std) leaves ((o - t) / std)^2: the mean cancels
    return error / count / std.square()


def nt_xent(projections_1: torch.Tensor, projections_2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR): each row's positive is the same row of the other view, the other ``2B - 2`` rows are
    negatives; cosine similarity over ``temperature``, cross-entropy averaged over the ``2B`` rows.

    Args:
        projections_1: ``[B, P]`` projections of view 1.
        projections_2: ``[B, P]`` projections of view 2.
        temperature: softmax temperature.

    Returns:
        A scalar tensor (float32).

    Example:

    >>> import torch
    >>> p = torch.eye(2)
    >>> round(float(nt_xent(p, p, temperature=0.1)), 3)  # positives identical, negatives orthogonal
    0.0
    """
    batch = projections_1.shape[0]
    z = F.normalize(torch.cat([projections_1, projections_2]).float(), dim=-1)  # [2B, P]
    logits = z @ z.t() / temperature  # [2B, 2B]
    logits = logits.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(0, batch)]).to(z.device)  # [2B]
    return F.cross_entropy(logits, targets)


class GeoSANEPositionEmbedding(nn.Module):
    """Position code for ``[B, N, 3]`` positions ``(n, layer, token-in-layer)``.

    ``"sinusoidal-3d"``: for each column p, ``emb[..., 0::2] += sin(p * div)`` and ``emb[..., 1::2] += cos(p * div)``
    with ``div = exp(arange(0, d, 2) * -ln(base) / d)``, accumulated in ``config.position_sum_dtype``.
    ``"learned"`` (SANE): ``[pe1(n) + pe2(layer) | pe3(j)]`` with three half-width tables.
    """

    def __init__(self, config: GeoSANEConfig):
        super().__init__()
        self.mode = config.position_encoding
        self.hidden_size = config.hidden_size
        self.base = float(config.position_base)
        self.sum_dtype = getattr(torch, config.position_sum_dtype)
        if self.mode == "learned":
            half = config.hidden_size // 2
            sizes = config.max_position_embeddings
            self.pe1 = nn.Embedding(sizes[0], half)
            self.pe2 = nn.Embedding(sizes[1], half)
            self.pe3 = nn.Embedding(sizes[2], half)

    def frequencies(self, device: torch.device) -> torch.Tensor:
        """``div`` of the sinusoids, ``[d / 2]`` float32."""
        steps = torch.arange(0, self.hidden_size, 2, dtype=torch.float32, device=device)
        return torch.exp(steps * (-math.log(self.base) / self.hidden_size))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Returns ``[B, N, d]`` (sinusoidal: in ``sum_dtype``; learned: in the table dtype)."""
        if self.mode == "learned":
            positions = positions.long()  # the tokenizer stores int16/int32; embedding lookups need int64
            first = self.pe1(positions[..., 0]) + self.pe2(positions[..., 1])  # [B, N, d/2]
            return torch.cat([first, self.pe3(positions[..., 2])], dim=-1)  # [B, N, d]
        div = self.frequencies(positions.device)  # [d/2]
        angle = positions.to(torch.float32)[..., None] * div  # [B, N, C, d/2]
        waves = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)  # [B, N, C, d/2, 2]: sin even, cos odd
        # accumulate column by column in sum_dtype, rounding after each addition like `emb += wave` in sum_dtype
        emb = waves[..., 0, :, :].to(self.sum_dtype)  # [B, N, d/2, 2]
        for column in range(1, positions.shape[-1]):
            emb = (emb + waves[..., column, :, :]).to(self.sum_dtype)  # computed in the promoted dtype
        emb = emb.flatten(-2)  # [B, N, d], interleaved sin/cos
        return emb  # [B, N, d]


class GeoSANELayerTypeEmbedding(nn.Module):
    """Optional learned embedding of the layer type of each token (ids from the tokenizer's vocabulary)."""

    def __init__(self, config: GeoSANEConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.num_layer_types, config.hidden_size)

    def forward(self, layer_types: torch.Tensor) -> torch.Tensor:
        return self.embedding(layer_types.long())  # [B, N, d]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; ``query/key/value`` ``[B, h, N, hd]``, boolean mask True = attend."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # [B, h, N, N]
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()  # [B, N, h, hd]
    return output, probs


def take_rows(hidden: torch.Tensor, rows: torch.Tensor | slice) -> torch.Tensor:
    """``hidden [B, N, F]`` at ``rows`` (``[B, C]`` indices, or one slice shared by the batch: a view)."""
    if isinstance(rows, slice):
        return hidden[:, rows]
    return hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, C, F]


class GeoSANEAttention(nn.Module):
    """Non-causal multi-head self-attention with a fused ``c_attn`` (d -> 3d) and ``c_proj`` (d -> d)."""

    def __init__(self, config: GeoSANEConfig, num_layers: int):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.dropout = config.attention_dropout
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        # GPT-2 residual scaling, read by `_init_weights` (remote-code init visits only modules owning parameters)
        self.c_proj.init_std = config.initializer_range / math.sqrt(2 * max(num_layers, 1))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        query_rows: torch.Tensor | slice | None = None,
    ) -> torch.Tensor:
        """``[B, N, d]`` -> ``[B, N, d]``; with ``query_rows`` (``[B, C]`` or a slice) only those rows are queried
        (keys and values still come from all ``N``) -> ``[B, C, d]``, each row equal to the same row in full."""
        batch, length, width = hidden_states.shape
        # split (not unbind) so that the backward pass merges the three gradients with one contiguous cat
        query, key, value = self.c_attn(hidden_states).split(width, dim=-1)  # [B, N, d] each
        if query_rows is not None:
            query = take_rows(query, query_rows)  # [B, C, d]
        count = query.shape[1]
        query = query.view(batch, count, self.num_heads, self.head_dim).transpose(1, 2)  # [B, h, C, hd]
        key, value = (t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (key, value))
        attention = eager_attention_forward
        if self.config._attn_implementation not in (None, "eager"):
            attention = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        output, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
        )  # [B, C, h, hd]
        return self.c_proj(output.reshape(batch, count, width))  # [B, C, d]


class GeoSANEMLP(nn.Module):
    """``c_fc`` (d -> 4d), activation, ``c_proj`` (4d -> d)."""

    def __init__(self, config: GeoSANEConfig, num_layers: int):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.c_proj.init_std = config.initializer_range / math.sqrt(2 * max(num_layers, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(hidden_states)))  # [B, N, d]


class GeoSANEBlock(GradientCheckpointingLayer):
    """Pre-LN GPT-2 block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, config: GeoSANEConfig, num_layers: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.layer_norm_bias)
        self.attn = GeoSANEAttention(config, num_layers)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, bias=config.layer_norm_bias)
        self.mlp = GeoSANEMLP(config, num_layers)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rows: torch.Tensor | slice | None = None,
    ) -> torch.Tensor:
        """``[B, N, d]`` -> ``[B, N, d]``, or only at ``rows`` -> ``[B, C, d]`` (see [`GeoSANEAttention.forward`]):
        the last block of a stack in ``encode_long`` needs only the rows whose output is kept."""
        attended = self.attn(self.ln_1(hidden_states), attention_mask, query_rows=rows)  # [B, C, d]
        if rows is not None:
            hidden_states = take_rows(hidden_states, rows)
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.ln_2(hidden_states)))  # [B, C, d]


class GeoSANETransformer(nn.Module):
    """A stack of blocks (no final norm), named ``transformer`` as in the original."""

    def __init__(self, config: GeoSANEConfig, num_layers: int):
        super().__init__()
        self.transformer = nn.ModuleList([GeoSANEBlock(config, num_layers) for _ in range(num_layers)])

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.transformer:
            hidden_states = block(hidden_states, attention_mask)
        return hidden_states


class GeoSANEProjectionHead(nn.Module):
    """Flatten ``[B, window, L]`` -> Linear -> LayerNorm -> ReLU -> Linear -> LayerNorm -> ReLU."""

    def __init__(self, config: GeoSANEConfig):
        super().__init__()
        self.window_size = config.window_size
        self.head = nn.Sequential(
            nn.Linear(config.window_size * config.latent_size, config.projection_hidden_size, bias=False),
            nn.LayerNorm(config.projection_hidden_size, eps=config.layer_norm_eps),
            nn.ReLU(),
            nn.Linear(config.projection_hidden_size, config.projection_size, bias=False),
            nn.LayerNorm(config.projection_size, eps=config.layer_norm_eps),
            nn.ReLU(),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, N <= window, L]`` -> ``[B, P]``; shorter sequences are zero-padded to the window."""
        batch, length, _ = latents.shape
        if length < self.window_size:
            latents = F.pad(latents, (0, 0, 0, self.window_size - length))  # [B, window, L]
        return self.head(latents.reshape(batch, -1))


class GeoSANEPreTrainedModel(PreTrainedModel):
    """Weight initialisation and transformers plumbing shared by GeoSANE models."""

    config_class = GeoSANEConfig
    config: GeoSANEConfig
    base_model_prefix = "geosane"
    main_input_name = "tokens"
    supports_gradient_checkpointing = True
    _no_split_modules = ("GeoSANEBlock",)
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """normal(0, initializer_range) for Linear/Embedding, zero biases, unit LayerNorms, and
        normal(0, initializer_range / sqrt(2 * layers)) for every ``c_proj.weight`` (GPT-2 residual scaling)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=getattr(module, "init_std", std))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)


class GeoSANEModel(GeoSANEPreTrainedModel):
    r"""GeoSANE autoencoder: weight tokens -> per-token latents -> weight tokens.

    Inputs are windows of tokens from ``geosane_hf.tokenizer.WeightTokenizer``: ``tokens [B, N, T]`` float,
    ``positions [B, N, 3]`` int ``(n, layer, token-in-layer)``, ``mask [B, N, T]`` bool (True on real values),
    optional ``layer_types [B, N]`` int (used only when ``config.num_layer_types > 0``). Tokens whose mask is all
    False (padding tokens) are excluded as attention keys.

    Example:

    >>> import torch
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> tokens = torch.randn(2, 32, 230)
    >>> positions = torch.stack([torch.arange(32), torch.zeros(32, dtype=torch.long), torch.arange(32)], -1)
    >>> positions = positions.expand(2, 32, 3)
    >>> latents = model.encode(tokens, positions)
    >>> tuple(latents.shape), tuple(model.decode(latents, positions).shape)
    ((2, 32, 16), (2, 32, 230))
    >>> out = model(tokens, positions, tokens_2=tokens + 0.01 * torch.randn_like(tokens))
    >>> tuple(out.latents.shape), out.loss.ndim
    ((4, 32, 16), 0)
    """

    def __init__(self, config: GeoSANEConfig):
        super().__init__(config)
        self.tokenizer = nn.Linear(config.token_size, config.hidden_size, bias=config.io_bias)
        self.pe = GeoSANEPositionEmbedding(config)
        self.layer_type_embs = GeoSANELayerTypeEmbedding(config) if config.num_layer_types > 0 else None
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.transformer_encoder = GeoSANETransformer(config, config.num_encoder_layers)
        self.encoder_comp = nn.Linear(config.hidden_size, config.latent_size, bias=config.io_bias)
        self.decoder_comp = nn.Linear(config.latent_size, config.hidden_size, bias=config.io_bias)
        self.transformer_decoder = GeoSANETransformer(config, config.num_decoder_layers)
        self.detokenizer = nn.Linear(config.hidden_size, config.token_size, bias=config.io_bias)
        self.projection_head = GeoSANEProjectionHead(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------- validation
    def _check_positions(self, positions: torch.Tensor, batch: int, length: int, name: str = "positions") -> None:
        if not isinstance(positions, torch.Tensor) or positions.shape != (batch, length, 3):
            found = tuple(positions.shape) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise ValueError(
                f"GeoSANEModel: expected {name} of shape [B, N, 3] = {[batch, length, 3]} (n, layer, "
                f"token-in-layer), got {found}."
            )
        if positions.is_floating_point() or positions.is_complex() or positions.dtype == torch.bool:
            raise ValueError(
                f"GeoSANEModel: expected integer {name}, got dtype {positions.dtype}; convert with `.long()`."
            )
        if self.pe.mode == "learned" and positions.numel() > 0:
            sizes = self.config.max_position_embeddings
            largest = positions.reshape(-1, 3).amax(0).tolist()
            for column, (found, size) in enumerate(zip(largest, sizes, strict=True)):
                if found >= size:
                    raise ValueError(
                        f"GeoSANEModel: {name}[..., {column}] reaches {found}, but the learned position table has "
                        f"{size} entries (max_position_embeddings={sizes}); learned tables cannot extrapolate."
                    )
            if positions.amin() < 0:
                raise ValueError(f"GeoSANEModel: expected non-negative {name}, got {int(positions.amin())}.")

    def _check_layer_types(self, layer_types: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None:
        if layer_types is None or self.layer_type_embs is None:
            return None  # the layer-type embedding is off in this config: layer types are ignored
        if layer_types.shape != (batch, length) or layer_types.is_floating_point():
            raise ValueError(
                f"GeoSANEModel: expected integer layer_types of shape [B, N] = {[batch, length]}, got "
                f"{tuple(layer_types.shape)} {layer_types.dtype}."
            )
        if layer_types.numel() and (layer_types.min() < 0 or layer_types.max() >= self.config.num_layer_types):
            raise ValueError(
                f"GeoSANEModel: expected layer_types in [0, {self.config.num_layer_types}), got values in "
                f"[{int(layer_types.min())}, {int(layer_types.max())}]."
            )
        return layer_types

    def _check_tokens(self, tokens: torch.Tensor, mask: torch.Tensor | None, name: str = "tokens") -> None:
        width = self.config.token_size
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[-1] != width:
            found = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(
                f"GeoSANEModel: expected {name} of shape [B, N, T] with T = token_size = {width}, got {found}. "
                "Tokenize with the same token size as the model config."
            )
        if not tokens.is_floating_point():
            raise ValueError(f"GeoSANEModel: expected floating-point {name}, got dtype {tokens.dtype}.")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != tokens.shape):
            found = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"GeoSANEModel: expected a mask of the same shape as {name} {tuple(tokens.shape)}, got {found}."
            )

    @staticmethod
    def _key_mask(token_mask: torch.Tensor | None) -> torch.Tensor | None:
        """``[B, N, T]`` value mask -> ``[B, 1, 1, N]`` attention mask (True = attend), or None without padding."""
        if token_mask is None:
            return None
        valid = token_mask.any(-1)  # [B, N]
        if bool(valid.all()):
            return None
        valid = valid | ~valid.any(-1, keepdim=True)  # an all-padding row attends to everything (no NaNs)
        return valid[:, None, None, :]

    # -------------------------------------------------------------------------------------------- encode/decode
    def _embed(self, hidden: torch.Tensor, position_embeds: torch.Tensor, layer_types: torch.Tensor | None):
        """Adds the position (and layer-type) code in float32 math, keeping the activation dtype."""
        hidden = (hidden.float() + position_embeds.float()).to(hidden.dtype)  # [B, N, d]
        if layer_types is not None:
            hidden = hidden + self.layer_type_embs(layer_types).to(hidden.dtype)
        return self.dropout(hidden)

    def _encode(self, tokens, position_embeds, attention_mask, layer_types) -> torch.Tensor:
        hidden = self._embed(self.tokenizer(tokens), position_embeds, layer_types)  # [B, N, d]
        hidden = self.transformer_encoder(hidden, attention_mask)
        return self.encoder_comp(hidden)  # [B, N, L]

    def _decode(self, latents, position_embeds, attention_mask, layer_types) -> torch.Tensor:
        hidden = self._embed(self.decoder_comp(latents), position_embeds, layer_types)  # [B, N, d]
        hidden = self.transformer_decoder(hidden, attention_mask)
        return self.detokenizer(hidden)  # [B, N, T]

    def encode(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        layer_types: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encodes a batch of windows into per-token latents.

        Args:
            tokens: ``[B, N, T]`` weight tokens.
            positions: ``[B, N, 3]`` integer positions.
            mask: ``[B, N, T]`` bool, True on real values; all-False tokens are ignored as attention keys.
            layer_types: ``[B, N]`` layer-type ids (only used when ``config.num_layer_types > 0``).

        Returns:
            ``[B, N, latent_size]`` latents.

        Example:

        >>> import torch
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
        >>> model.encode(torch.randn(1, 5, 230), torch.zeros(1, 5, 3, dtype=torch.long)).shape
        torch.Size([1, 5, 16])
        """
        self._check_tokens(tokens, mask)
        batch, length, _ = tokens.shape
        self._check_positions(positions, batch, length)
        layer_types = self._check_layer_types(layer_types, batch, length)
        return self._encode(tokens, self.pe(positions), self._key_mask(mask), layer_types)

    def decode(
        self,
        latents: torch.Tensor,
        positions: torch.Tensor,
        layer_types: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decodes per-token latents back into weight tokens.

        Args:
            latents: ``[B, N, latent_size]``.
            positions: ``[B, N, 3]`` integer positions (the same as for ``encode``).
            layer_types: ``[B, N]`` layer-type ids (only used when ``config.num_layer_types > 0``).
            attention_mask: ``[B, N]`` bool, True on real tokens; False tokens are ignored as attention keys.

        Returns:
            ``[B, N, token_size]`` tokens (apply the tokenizer mask before detokenizing).

        Example:

        >>> import torch
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny"))
        >>> model.decode(torch.randn(1, 5, 16), torch.zeros(1, 5, 3, dtype=torch.long)).shape
        torch.Size([1, 5, 230])
        """
        width = self.config.latent_size
        if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or latents.shape[-1] != width:
            found = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(
                f"GeoSANEModel: expected latents of shape [B, N, L] with L = latent_size = {width}, got {found}."
            )
        batch, length, _ = latents.shape
        self._check_positions(positions, batch, length)
        layer_types = self._check_layer_types(layer_types, batch, length)
        key_mask = None
        if attention_mask is not None:
            if attention_mask.shape != (batch, length):
                raise ValueError(
                    f"GeoSANEModel: expected attention_mask of shape [B, N] = {[batch, length]}, got "
                    f"{tuple(attention_mask.shape)}."
                )
            key_mask = self._key_mask(attention_mask.bool()[..., None])
        return self._decode(latents, self.pe(positions), key_mask, layer_types)

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        layer_types: torch.Tensor | None = None,
        tokens_2: torch.Tensor | None = None,
        positions_2: torch.Tensor | None = None,
        mask_2: torch.Tensor | None = None,
        layer_types_2: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        labels_2: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> GeoSANEModelOutput:
        r"""Encodes and decodes one or two views of the same windows and computes the training loss.

        Both views run as one batch. The reconstruction target of each view is its ``labels`` (default: the view's
        own tokens); the loss is ``gamma * NT-Xent(proj(z_1), proj(z_2)) + (1 - gamma) * reconstruction`` with
        two views and the reconstruction loss alone with one view.

        Args:
            tokens / positions / mask / layer_types: view 1, as in [`encode`].
            tokens_2: ``[B, N, T]`` view 2 (e.g. a permuted, noised copy of view 1); enables the contrastive loss.
            positions_2 / mask_2 / layer_types_2: view 2's; default to view 1's.
            labels / labels_2: ``[B, N, T]`` reconstruction targets (e.g. the un-erased tokens); default to the
                views' tokens.
            return_loss: compute the losses.
            kwargs: only ``return_dict`` / ``output_attentions`` / ``output_hidden_states`` (passed by generic
                transformers code; ignored); any other name raises, so that a typo is never silently dropped.

        Returns:
            A [`GeoSANEModelOutput`].

        Raises:
            TypeError: An unknown keyword argument.
        """
        unknown = sorted(set(kwargs) - {"return_dict", "output_attentions", "output_hidden_states"})
        if unknown:
            raise TypeError(
                f"GeoSANEModel.forward() expected keyword arguments among tokens, positions, mask, layer_types, "
                f"tokens_2, positions_2, mask_2, layer_types_2, labels, labels_2, return_loss, got unknown {unknown}"
            )
        self._check_tokens(tokens, mask)
        batch, length, _ = tokens.shape
        self._check_positions(positions, batch, length)
        layer_types = self._check_layer_types(layer_types, batch, length)
        views = [(tokens, positions, mask, layer_types, tokens if labels is None else labels)]
        if tokens_2 is not None:
            self._check_tokens(tokens_2, mask_2 if mask_2 is not None else mask, name="tokens_2")
            if tokens_2.shape != tokens.shape:
                raise ValueError(
                    f"GeoSANEModel: expected tokens_2 of the same shape as tokens {tuple(tokens.shape)}, got "
                    f"{tuple(tokens_2.shape)}."
                )
            positions_2 = positions if positions_2 is None else positions_2
            self._check_positions(positions_2, batch, length, name="positions_2")
            layer_types_2 = (
                layer_types if layer_types_2 is None else self._check_layer_types(layer_types_2, batch, length)
            )
            mask_2 = mask if mask_2 is None else mask_2
            views.append((tokens_2, positions_2, mask_2, layer_types_2, tokens_2 if labels_2 is None else labels_2))
        for view_labels in (view[4] for view in views):
            if view_labels.shape != tokens.shape:
                raise ValueError(
                    f"GeoSANEModel: expected labels of the same shape as tokens {tuple(tokens.shape)}, got "
                    f"{tuple(view_labels.shape)}."
                )

        def stack(index: int) -> torch.Tensor | None:
            parts = [view[index] for view in views]
            if any(part is None for part in parts):
                if index == 2 and not all(part is None for part in parts):  # one view masked: the other is all real
                    parts = [torch.ones_like(views[0][0], dtype=torch.bool) if p is None else p for p in parts]
                else:
                    return None
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        all_tokens, all_masks = stack(0), stack(2)  # [V*B, N, T]
        all_layer_types = stack(3)
        if all_masks is not None:
            all_masks = all_masks.bool()
        if len(views) == 2 and views[1][1] is positions:  # same positions: compute the code once
            position_embeds = self.pe(positions).repeat(2, 1, 1)  # [2B, N, d], shared by encoder and decoder
        else:
            position_embeds = self.pe(stack(1))  # [V*B, N, d], shared by encoder and decoder
        key_mask = self._key_mask(all_masks)
        latents = self._encode(all_tokens, position_embeds, key_mask, all_layer_types)  # [V*B, N, L]
        reconstruction = self._decode(latents, position_embeds, key_mask, all_layer_types)  # [V*B, N, T]
        projections = self.projection_head(latents) if length <= self.config.window_size else None  # [V*B, P]

        loss = reconstruction_loss = contrastive_loss = None
        if return_loss:
            reconstruction_loss = masked_normalized_mse(reconstruction, stack(4), all_masks)
            loss = reconstruction_loss
            if len(views) == 2:
                if projections is None:
                    raise ValueError(
                        f"GeoSANEModel: the contrastive loss needs windows of at most window_size="
                        f"{self.config.window_size} tokens, got N={length}; cut longer sequences into windows."
                    )
                contrastive_loss = nt_xent(projections[:batch], projections[batch:], self.config.temperature)
                gamma = self.config.contrastive_weight
                loss = gamma * contrastive_loss + (1.0 - gamma) * reconstruction_loss
        return GeoSANEModelOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            contrastive_loss=contrastive_loss,
            latents=latents,
            reconstruction=reconstruction,
            projections=projections,
        )

    # ---------------------------------------------------------------------------------------- long sequences
    @staticmethod
    def halo_windows(length: int, window_size: int, halo_size: int) -> list[tuple[int, int, int, int]]:
        """Splits ``range(length)`` into content windows with halo context.

        Returns ``(context_start, content_start, content_end, context_end)`` per window: content windows of
        ``window_size`` tokens (the last may be shorter) and up to ``halo_size`` context tokens on each side,
        clipped at the sequence ends. Every token is content of exactly one window, for every length.

        Example:

        >>> GeoSANEModel.halo_windows(10, 4, 1)
        [(0, 0, 4, 5), (3, 4, 8, 9), (7, 8, 10, 10)]
        """
        if window_size <= 0 or halo_size < 0:
            raise ValueError(f"expected window_size > 0 and halo_size >= 0, got {window_size} and {halo_size}.")
        windows = []
        for start in range(0, length, window_size):
            end = min(start + window_size, length)
            windows.append((max(0, start - halo_size), start, end, min(length, end + halo_size)))
        return windows

    @staticmethod
    def _window_bounds(length: int, window_size: int, halo_size: int) -> tuple[torch.Tensor, ...]:
        """[`halo_windows`] as four ``[W]`` int64 tensors (context start, content start, content end, context end)."""
        starts = torch.arange(0, length, window_size)  # [W]
        ends = (starts + window_size).clamp(max=length)
        return (starts - halo_size).clamp(min=0), starts, ends, (ends + halo_size).clamp(max=length)

    def _run_long(
        self,
        kind: str,
        inputs: torch.Tensor,
        positions: torch.Tensor,
        layer_types: torch.Tensor | None,
        valid: torch.Tensor | None,
        batch_size: int,
        window_size: int | None,
        halo_size: int | None,
        show_progress: bool,
    ) -> torch.Tensor:
        """Shared windowed loop of ``encode_long`` / ``decode_long``; inputs ``[N, F]`` -> outputs ``[N, F_out]``.

        Per pass of ``batch_size`` windows (a contiguous token range ``[lo, hi)`` with the halos): the input
        projection + position/layer-type code run once per token of the range (they are per-token, so a halo
        token's embedding is the one of its own window), one gather builds the padded ``[b, S, d]`` windows, the
        transformer runs on them, the last block and the output projection only on the content rows (the halo's
        outputs are never used), and one contiguous copy writes the content back. Every window's content equals
        ``encode``/``decode`` of its context slice.
        """
        if batch_size <= 0:
            raise ValueError(f"GeoSANEModel: expected batch_size > 0, got {batch_size}.")
        window = self.config.window_size if window_size is None else window_size
        halo = self.config.halo_size if halo_size is None else halo_size
        if window <= 0 or halo < 0:
            raise ValueError(f"expected window_size > 0 and halo_size >= 0, got {window} and {halo}.")
        length, _ = inputs.shape
        self._check_positions(positions[None], 1, length)
        if layer_types is not None and self.layer_type_embs is not None:
            self._check_layer_types(layer_types[None], 1, length)
        else:
            layer_types = None
        if kind == "encode":
            project_in, stack, project_out = self.tokenizer, self.transformer_encoder, self.encoder_comp
        else:
            project_in, stack, project_out = self.decoder_comp, self.transformer_decoder, self.detokenizer
        blocks = list(stack.transformer)
        device, dtype = self.device, self.dtype
        output = torch.empty(length, project_out.out_features, dtype=dtype, device=inputs.device)  # [N, F_out]
        context_starts, starts, ends, context_ends = self._window_bounds(length, window, halo)  # [W] each
        num_windows = starts.numel()
        progress = logging.tqdm(total=num_windows, desc=f"GeoSANE {kind}", unit="window", disable=not show_progress)
        for first in range(0, num_windows, batch_size):
            group = slice(first, min(first + batch_size, num_windows))
            ctx_start, start, end, ctx_end = (t[group] for t in (context_starts, starts, ends, context_ends))  # [b]
            lo, hi = int(ctx_start[0]), int(ctx_end[-1])  # the pass's token range, halos included
            span = int((ctx_end - ctx_start).max())
            types = None if layer_types is None else layer_types[lo:hi].to(device)[None]  # [1, M]
            embedded = self._embed(
                project_in(inputs[lo:hi].to(device=device, dtype=dtype)),
                self.pe(positions[lo:hi].to(device)[None]),
                types,
            )[0]  # [M, d], M = hi - lo
            windows = int(start.numel())
            if hi - lo == windows * span:  # no halo and full windows: they tile the range, a view does
                hidden = embedded.view(windows, span, -1)  # [b, S, d]
                chunk_valid = None if valid is None else valid[lo:hi].to(device).view(windows, span)  # [b, S]
            else:
                index = ctx_start[:, None] + torch.arange(span)  # [b, S] token ids of each padded window
                inside = index < ctx_end[:, None]  # [b, S]; False = padding after a short window
                index = torch.where(inside, index, ctx_start[:, None]) - lo  # padding repeats a real row (masked)
                flat = index.reshape(-1).to(device)  # [b*S]
                hidden = embedded.index_select(0, flat).view(*index.shape, -1)  # [b, S, d]
                chunk_valid = inside.to(device)
                if valid is not None:
                    chunk_valid = chunk_valid & valid[lo:hi].to(device).index_select(0, flat).view(index.shape)
            del embedded
            key_mask = None if chunk_valid is None else self._key_mask(chunk_valid[..., None])
            for block in blocks[:-1]:
                hidden = block(hidden, key_mask)  # [b, S, d]
            count = min(window, span)  # content rows per window (the sequence's last window may have fewer)
            offsets = start - ctx_start  # [b] first content row of each window
            offset = int(offsets[0])
            if bool((offsets == offset).all()) and offset + count <= span:
                rows: torch.Tensor | slice = slice(offset, offset + count)  # the same rows in every window: a view
            else:
                rows = (offsets[:, None] + torch.arange(count)).clamp(max=span - 1).to(device)  # [b, C]
            last = blocks[-1] if blocks else None  # the last block runs on the content rows only
            hidden = take_rows(hidden, rows) if last is None else last(hidden, key_mask, rows=rows)
            result = project_out(hidden)  # [b, C, F_out]: content rows, in token order
            first_token, last_token = int(start[0]), int(end[-1])  # only the sequence's last window is short
            output[first_token:last_token] = result.reshape(-1, result.shape[-1])[: last_token - first_token]
            progress.update(int(start.numel()))
        progress.close()
        return output

    @torch.no_grad()
    def encode_long(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        layer_types: torch.Tensor | None = None,
        *,
        batch_size: int = 8,
        window_size: int | None = None,
        halo_size: int | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Encodes a whole model's tokens (any length) in halo windows with bounded memory.

        Each window of ``window_size`` content tokens is encoded together with up to ``halo_size`` context tokens
        on each side (clipped at the ends); the context is dropped afterwards. ``batch_size`` windows run per
        pass (shorter ones are padded and masked out as attention keys), so peak memory depends on the batch,
        not on N. The result for each window equals ``encode`` on its context slice, for every N. The halo's own
        outputs are never computed past what the content needs (the last block and the output projection run on
        content rows only) and the per-token input embedding runs once per token.

        Args:
            tokens: ``[N, T]`` all tokens of one model (any device; moved pass by pass to the model's).
            positions: ``[N, 3]`` integer positions.
            mask: ``[N, T]`` bool, True on real values (all-False tokens are ignored as keys).
            layer_types: ``[N]`` layer-type ids.
            batch_size: windows per forward pass.
            window_size / halo_size: override the config's.
            show_progress: show a progress bar.

        Returns:
            ``[N, latent_size]`` latents on the device of ``tokens``.

        Example:

        >>> import torch
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
        >>> positions = torch.stack([torch.arange(100)] * 3, -1)
        >>> model.encode_long(torch.randn(100, 230), positions).shape
        torch.Size([100, 16])
        """
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[-1] != self.config.token_size:
            found = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(
                f"GeoSANEModel.encode_long: expected tokens of shape [N, T] with T = {self.config.token_size} "
                f"(one model's tokens, unbatched), got {found}."
            )
        if mask is not None and mask.shape != tokens.shape:
            raise ValueError(
                f"GeoSANEModel.encode_long: expected a mask of shape {tuple(tokens.shape)}, got {tuple(mask.shape)}."
            )
        valid = None if mask is None else mask.bool().any(-1)  # [N]
        return self._run_long(
            "encode", tokens, positions, layer_types, valid, batch_size, window_size, halo_size, show_progress
        )

    @torch.no_grad()
    def decode_long(
        self,
        latents: torch.Tensor,
        positions: torch.Tensor,
        layer_types: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        batch_size: int = 8,
        window_size: int | None = None,
        halo_size: int | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Decodes a whole model's latents (any length) in halo windows; the inverse of [`encode_long`].

        Args:
            latents: ``[N, latent_size]``.
            positions: ``[N, 3]`` integer positions.
            layer_types: ``[N]`` layer-type ids.
            attention_mask: ``[N]`` bool, True on real tokens.
            batch_size / window_size / halo_size / show_progress: as in [`encode_long`].

        Returns:
            ``[N, token_size]`` tokens on the device of ``latents``.

        Example:

        >>> import torch
        >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
        >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
        >>> positions = torch.stack([torch.arange(100)] * 3, -1)
        >>> model.decode_long(torch.randn(100, 16), positions).shape
        torch.Size([100, 230])
        """
        width = self.config.latent_size
        if not isinstance(latents, torch.Tensor) or latents.ndim != 2 or latents.shape[-1] != width:
            found = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(
                f"GeoSANEModel.decode_long: expected latents of shape [N, L] with L = {width}, got {found}."
            )
        if attention_mask is not None and attention_mask.shape != latents.shape[:1]:
            raise ValueError(
                f"GeoSANEModel.decode_long: expected attention_mask of shape [{latents.shape[0]}], got "
                f"{tuple(attention_mask.shape)}."
            )
        valid = None if attention_mask is None else attention_mask.bool()
        return self._run_long(
            "decode", latents, positions, layer_types, valid, batch_size, window_size, halo_size, show_progress
        )


__all__ = [
    "GeoSANEModel",
    "GeoSANEModelOutput",
    "GeoSANEPreTrainedModel",
    "masked_normalized_mse",
    "nt_xent",
]
