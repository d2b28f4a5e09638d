"""Long inputs for GeoSANE: a whole model's tokens encoded and decoded in halo windows with bounded memory.

``GeoSANEModel`` inherits these methods (``halo_windows``, ``encode_long``, ``decode_long``) from
:class:`GeoSANELongInputsMixin`; they use its modules and input checks. Self-contained like ``modeling_geosane.py``
(torch + transformers only), uploaded next to it as remote code. Shapes: N tokens, T token size, d hidden size,
L latent size, W windows, S window span (content + halos), C content rows.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

from .modeling_geosane_layers import take_rows


class GeoSANELongInputsMixin:
    """``encode_long`` / ``decode_long``: halo-windowed encoding and decoding of any number of tokens (the methods of
    ``GeoSANEModel`` for whole models; they rely on its modules, ``_embed``, ``_key_mask`` and input checks)."""

    @staticmethod
    def halo_windows(length: int, window_size: int, halo_size: int) -> list[tuple[int, int, int, int]]:
        """Splits ``range(length)`` into content windows with halo context.

        Returns ``(context_start, content_start, content_end, context_end)`` per window: content windows of
        ``window_size`` tokens (the last may be shorter) and up to ``halo_size`` context tokens on each side,
        clipped at the sequence ends. Every token is content of exactly one window, for every length.

        Example:

        >>> from geosane_hf.modeling import GeoSANEModel
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


__all__ = ["GeoSANELongInputsMixin"]
