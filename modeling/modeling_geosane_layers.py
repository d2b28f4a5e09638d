"""GeoSANE's building blocks: position and layer-type codes, attention, MLP, pre-LN blocks, the transformer stack and
the projection head (used by ``modeling_geosane.GeoSANEModel``).

Self-contained (imports only torch, transformers and ``configuration_geosane``): uploaded to the Hub as remote code
next to ``modeling_geosane.py``, which imports it relatively (``save_pretrained`` copies it, the remote-code loader
follows the import). Shapes: B batch, N tokens, T token size, d hidden size, L latent size, h heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .configuration_geosane import GeoSANEConfig


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


__all__ = [
    "GeoSANEAttention",
    "GeoSANEBlock",
    "GeoSANELayerTypeEmbedding",
    "GeoSANEMLP",
    "GeoSANEPositionEmbedding",
    "GeoSANEProjectionHead",
    "GeoSANETransformer",
    "eager_attention_forward",
    "take_rows",
]
