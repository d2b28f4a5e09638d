"""GeoSANE: a transformer autoencoder over weight tokens (the learned weight space).

Self-contained (imports only torch, transformers and its siblings ``configuration_geosane``,
``modeling_geosane_layers`` (the building blocks) and ``modeling_geosane_long`` (halo-windowed long inputs)), because
these files are uploaded to the Hub as remote code: ``save_pretrained`` copies the relatively imported siblings
(transformers' ``custom_object_save``) and the remote-code loader follows the same imports. Module names follow the original GeoSANE state_dict (``tokenizer``,
``transformer_encoder.transformer.{i}.ln_1`` ... ``projection_head.head.{0,1,3,4}``), so an original checkpoint
loads 1:1 (its ``pe.div_term`` buffer is recomputed here and dropped by the converter).

Shapes: B batch, N tokens, T token size, d hidden size, L latent size, h heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_geosane import GeoSANEConfig
from .modeling_geosane_layers import (
    GeoSANELayerTypeEmbedding,
    GeoSANEPositionEmbedding,
    GeoSANEProjectionHead,
    GeoSANETransformer,
)
from .modeling_geosane_long import GeoSANELongInputsMixin

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


class GeoSANEModel(GeoSANELongInputsMixin, GeoSANEPreTrainedModel):
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


__all__ = [
    "GeoSANEModel",
    "GeoSANEModelOutput",
    "GeoSANEPreTrainedModel",
    "masked_normalized_mse",
    "nt_xent",
]
