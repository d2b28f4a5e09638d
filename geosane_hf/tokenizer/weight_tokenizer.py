"""Lossless, fast conversion between a state_dict and a sequence of weight tokens.

Two modes (format spec in ``docs/tokenizer.md``):

- ``"geosane"``: bit-compatible with the original GeoSANE tokenizer. Only keys containing ``weight`` are
  tokenized; ``W`` is viewed as ``(W.shape[0], -1)``, the bias ``key.replace("weight", "bias")`` (if present) is
  appended as the last column, the matrix is flattened row-major and cut into dense tokens of ``token_size``
  values, the last token of each layer zero-padded. Other tensors are listed in the layout
  (:attr:`WeightLayout.missing_keys`) and must come from elsewhere (e.g. the prompt checkpoint).
- ``"full"``: every floating tensor is tokenized (``pos_embed``, ``cls_token``, relative position tables,
  ``q_bias``, layer scales, BN running statistics ...). A ``<prefix>weight`` and its ``<prefix>bias`` form one
  layer exactly as in ``"geosane"`` mode; every other floating tensor is a layer of its own. Non-floating tensors
  (``num_batches_tracked``, ``relative_position_index``) are stored in the layout, so :meth:`detokenize` returns a
  complete state_dict that loads strictly, without a reference checkpoint.

Tokenizing plans the output from shapes first, allocates one padded ``[N, T]`` tensor and copies each tensor into
its place once; mask, positions and layer types are built vectorised from the plan. A lazy mapping with a
``tensor_specs`` attribute (see :mod:`geosane_hf.checkpoints`) is read one tensor at a time, so tokenizing a
safetensors file needs the output plus one tensor (and its bias) of memory.

Example:
    >>> import torch
    >>> from geosane_hf.tokenizer import WeightTokenizer
    >>> sd = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([10.0, 20.0])}
    >>> tok = WeightTokenizer(token_size=4).tokenize(sd)
    >>> tok.tokens
    tensor([[ 0.,  1.,  2., 10.],
            [ 3.,  4.,  5., 20.]])
    >>> tok.positions.tolist()
    [[0, 0, 0], [1, 0, 1]]
    >>> back = WeightTokenizer(token_size=4).detokenize(tok)
    >>> all(torch.equal(back[k], sd[k]) for k in sd)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from geosane_hf.tokenizer.layout import (
    _MODES,
    LayoutEntry,
    LayoutMismatchError,
    Mode,
    NonFiniteWeightsError,
    StoredTensor,
    TokenizedWeights,
    TokenizerError,
    WeightLayout,
    _dtype_name,
    _read_specs,
)
from geosane_hf.tokenizer.planning import (
    _count_nonfinite,
    _entry_views,
    _EntryView,
    _index_tensors,
    _make_plan,
    _Plan,
    _views,
)

# --------------------------------------------------------------------------------------------------- tokenizer


class WeightTokenizer:
    """Turns a state_dict into tokens ``[N, T]`` (with mask, 3-D positions, layer types, layout) and back.

    Args:
        token_size: Values per token ``T`` (230 in GeoSANE).
        mode: ``"geosane"`` (bit-compatible with the original: ``weight`` keys only) or ``"full"`` (every tensor;
            detokenize gives back a complete state_dict).
        allow_nonfinite: Tokenize NaN/Inf values instead of raising :class:`NonFiniteWeightsError`.

    Example:
        >>> import torch
        >>> sd = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.weight": torch.ones(4), "bn.bias": torch.zeros(4),
        ...       "bn.running_mean": torch.zeros(4), "bn.num_batches_tracked": torch.tensor(7)}
        >>> full = WeightTokenizer(token_size=8, mode="full")
        >>> tok = full.tokenize(sd)
        >>> tok.tokens.shape, tok.positions.dtype
        (torch.Size([16, 8]), torch.int16)
        >>> back = full.detokenize(tok)
        >>> all(torch.equal(back[k], sd[k]) for k in sd)
        True
        >>> WeightTokenizer(token_size=8).tokenize(sd).layout.missing_keys
        ['bn.running_mean', 'bn.num_batches_tracked']
    """

    def __init__(self, token_size: int = 230, mode: Mode = "geosane", allow_nonfinite: bool = False) -> None:
        if isinstance(token_size, bool) or not isinstance(token_size, int) or token_size <= 0:
            raise TokenizerError(f"expected token_size to be a positive int (GeoSANE uses 230), got {token_size!r}")
        if mode not in _MODES:
            raise TokenizerError(f"expected mode to be one of {_MODES}, got {mode!r}")
        self.token_size = token_size
        self.mode = mode
        self.allow_nonfinite = allow_nonfinite

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token_size={self.token_size}, mode={self.mode!r}, "
            f"allow_nonfinite={self.allow_nonfinite})"
        )

    # ------------------------------------------------------------------------------------------------ tokenize

    def tokenize(
        self, state_dict: Mapping[str, torch.Tensor], *, out: TokenizedWeights | None = None
    ) -> TokenizedWeights:
        """Tokenizes a state_dict (a dict, or a lazy mapping with ``tensor_specs`` read one tensor at a time).

        Args:
            state_dict: Ordered mapping from keys to tensors, e.g. ``model.state_dict()``.
            out: A previous result for the same architecture (same mode and token size) whose tensors are reused:
                the tokens are overwritten in place and mask, positions and layer types (which depend on shapes
                only) are shared. Saves the allocation and first-touch cost when tokenizing a population of
                same-architecture checkpoints; ``out`` must not be used afterwards except through the result.

        Returns:
            The :class:`TokenizedWeights`, on the device of the first tokenized tensor.

        Raises:
            TokenizerError: Empty state_dict, nothing to tokenize, a tensor that cannot be viewed as
                ``(shape[0], -1)`` or a bias that does not fit its weight (``"geosane"`` mode).
            NonFiniteWeightsError: NaN/Inf values and ``allow_nonfinite`` is False.

        Example:
            >>> import torch
            >>> tok = WeightTokenizer(token_size=3).tokenize({"norm.weight": torch.ones(2), "norm.bias": torch.zeros(2)})
            >>> tok.tokens.tolist(), tok.mask.tolist()
            ([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], [[True, True, True], [True, False, False]])
        """
        specs = _read_specs(state_dict)
        if not specs:
            raise TokenizerError("expected a state_dict with at least one tensor, got an empty one")
        T = self.token_size
        plan = _make_plan(self.mode, T, specs)
        N = plan.num_tokens
        if N == 0:
            what = "a key containing 'weight'" if self.mode == "geosane" else "a floating-point tensor"
            raise TokenizerError(
                f"expected at least one tensor to tokenize ({what} with values), got none among keys "
                f"{list(plan.keys)[:5]}; in 'geosane' mode only keys containing 'weight' are tokenized, try "
                "mode='full'"
            )
        device = self._output_device(state_dict, plan.entries)

        if out is not None:
            self._check_out(out, plan, device)
            tokens = out.tokens  # [N, T]
        else:
            tokens = torch.empty((N, T), dtype=plan.tokens_dtype, device=device)  # [N, T]
        flat = tokens.view(-1)  # [N * T]
        # Only each layer's last token can hold padding: zero those rows, then the copies overwrite the real values.
        tokens.index_fill_(0, plan.last_rows.to(device), 0)
        if getattr(state_dict, "tensor_specs", None) is None:  # in memory: one copy call for every tensor
            self._write_batched(state_dict, plan.views, flat)
        else:
            self._write_one_by_one(state_dict, plan.views, flat)

        if not self.allow_nonfinite:
            self._check_finite(tokens, flat, plan.views)

        if out is not None:
            num_real, positions, layer_types = out.num_real, out.positions, out.layer_types
        else:
            num_real, positions, layer_types = _index_tensors(plan, self.mode, T, device)

        layout = WeightLayout(
            mode=self.mode,
            token_size=T,
            num_tokens=N,
            tokens_dtype=_dtype_name(plan.tokens_dtype),
            fingerprint=plan.fingerprint,
            keys=list(plan.keys),
            entries=list(plan.entries),
            stored=self._stored(state_dict, plan),
        )
        return TokenizedWeights(
            tokens=tokens, positions=positions, layer_types=layer_types, layout=layout, num_real=num_real
        )

    def _write_one_by_one(
        self, state_dict: Mapping[str, torch.Tensor], views: Sequence[_EntryView], flat: torch.Tensor
    ) -> None:
        """Copies tensor by tensor: a lazy mapping then holds one source tensor at a time."""
        base = flat.storage_offset()
        for view in views:
            if view.pair:  # a norm's weight [C] and bias [C]: one stack into their [C, 2] block
                pair = (state_dict[view.key], state_dict[view.bias_key])
                torch.stack(pair, 1, out=flat.as_strided((view.rows, 2), (2, 1), base + view.start))
                del pair
                continue
            for key, target in zip((view.key, view.bias_key), _views(flat, view), strict=True):
                if key is None:
                    continue
                source = state_dict[key]
                target.copy_(source)
                if not source.dtype.is_floating_point:
                    self._check_exact_cast(key, target, source)
                del source

    def _write_batched(
        self, state_dict: Mapping[str, torch.Tensor], views: Sequence[_EntryView], flat: torch.Tensor
    ) -> None:
        """Copies every tensor with one ``torch._foreach_copy_`` (a loop in C++): the per-call Python and dispatch
        cost of ~200 separate copies is what bounds models with many small tensors (MobileNetV2: 262)."""
        keys: list[str] = []
        targets: list[torch.Tensor] = []
        for view in views:
            weight, bias = _views(flat, view)  # a pair's bias is its [C, 2] block's second column
            keys.append(view.key)
            targets.append(weight)
            if bias is not None:
                keys.append(view.bias_key)
                targets.append(bias)
        sources = [state_dict[key] for key in keys]
        torch._foreach_copy_(targets, sources)
        for key, target, source in zip(keys, targets, sources, strict=True):
            if not source.dtype.is_floating_point:  # integer tensors ("geosane" mode) must cast exactly
                self._check_exact_cast(key, target, source)

    def _check_out(self, out: TokenizedWeights, plan: _Plan, device: torch.device) -> None:
        if not isinstance(out, TokenizedWeights):
            raise TokenizerError(f"expected `out` to be a TokenizedWeights from tokenize(), got {type(out).__name__}")
        layout = out.layout
        same = (
            layout.mode == self.mode
            and layout.token_size == self.token_size
            and layout.fingerprint == plan.fingerprint
            and [e.key for e in layout.entries] == [e.key for e in plan.entries]
            and tuple(out.tokens.shape) == (plan.num_tokens, self.token_size)
            and out.tokens.dtype == plan.tokens_dtype
            and out.tokens.device == device
            and out.tokens.is_contiguous()
        )
        if not same:
            raise TokenizerError(
                f"expected `out` from tokenizing the same architecture with mode={self.mode!r}, "
                f"token_size={self.token_size} (fingerprint {plan.fingerprint}, tokens [{plan.num_tokens}, "
                f"{self.token_size}] {plan.tokens_dtype}), got mode={layout.mode!r}, fingerprint {layout.fingerprint}, "
                f"tokens {list(out.tokens.shape)} {out.tokens.dtype}; tokenize without `out` first"
            )

    def _output_device(self, state_dict: Mapping[str, torch.Tensor], entries: Sequence[LayoutEntry]) -> torch.device:
        if getattr(state_dict, "tensor_specs", None) is not None:
            return torch.device(getattr(state_dict, "device", "cpu"))
        return state_dict[entries[0].key].device

    def _stored(self, state_dict: Mapping[str, torch.Tensor], plan: _Plan) -> list[StoredTensor]:
        if self.mode == "geosane":  # not tokenized and not kept: the caller supplies them (layout.missing_keys)
            return [StoredTensor(key, shape, dtype) for key, shape, dtype in plan.stored_specs]
        return [StoredTensor.from_tensor(key, state_dict[key]) for key in plan.stored_keys]

    @staticmethod
    def _check_exact_cast(key: str, view: torch.Tensor, source: torch.Tensor) -> None:
        if not torch.equal(view.to(source.dtype), source.to(view.device)):
            raise TokenizerError(
                f"expected the integer tensor {key!r} to be exactly representable as {view.dtype}, got values that "
                f"are not (|x| > 2**24 for float32); drop it before tokenizing, or use mode='full' which stores "
                "non-floating tensors in the layout"
            )

    @staticmethod
    def _check_finite(tokens: torch.Tensor, flat: torch.Tensor, views: Sequence[_EntryView]) -> None:
        # Fast path: one read-only reduction. A NaN/Inf anywhere makes the sum non-finite; a non-finite sum of
        # finite values (overflow) falls through to the exact per-tensor count below and passes.
        if torch.isfinite(tokens.sum()):
            return
        bad: list[tuple[str, int]] = []
        for view in views:
            weight_view, bias_view = _views(flat, view)
            for key, values in ((view.key, weight_view), (view.bias_key, bias_view)):
                if values is not None and (count := _count_nonfinite(values)):
                    bad.append((key, count))
        if bad:
            listed = ", ".join(f"{k!r} ({c} values)" for k, c in bad[:5])
            more = f" and {len(bad) - 5} more tensors" if len(bad) > 5 else ""
            raise NonFiniteWeightsError(
                f"expected finite weights, got NaN/Inf in {listed}{more}; fix the checkpoint, or pass "
                "allow_nonfinite=True to tokenize them anyway"
            )

    # ------------------------------------------------------------------------------------------------ detokenize

    def detokenize(
        self,
        tokenized_or_tokens: TokenizedWeights | torch.Tensor,
        layout: WeightLayout | Mapping[str, Any] | None = None,
        *,
        copy: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Turns tokens back into a state_dict, in the original key order and dtypes.

        The layout alone decides the format (mode, token size), so any tokenizer instance can detokenize.

        Args:
            tokenized_or_tokens: A :class:`TokenizedWeights`, or a ``[N, T]`` tensor of (e.g. generated) tokens.
            layout: The :class:`WeightLayout` (or its ``to_dict()``); required with a bare tensor. Given with a
                :class:`TokenizedWeights`, it must describe the same architecture.
            copy: True (default) returns fresh contiguous tensors. False returns views into the tokens where the
                dtype and memory layout allow (tensors without an interleaved bias), which saves one copy but
                shares memory with the tokens (``safetensors`` refuses to save shared tensors).

        Returns:
            ``{key: tensor}``. In ``"full"`` mode every key of the source; in ``"geosane"`` mode all but
            ``layout.missing_keys``, which the caller takes from elsewhere.

        Raises:
            LayoutMismatchError: Layout from another model, too few/many tokens or a different token width.

        Example:
            >>> import torch
            >>> tokenizer = WeightTokenizer(token_size=4, mode="full")
            >>> tok = tokenizer.tokenize({"pos_embed": torch.randn(1, 3, 2), "idx": torch.arange(3)})
            >>> back = tokenizer.detokenize(tok.tokens, tok.layout.to_dict())
            >>> sorted(back), back["pos_embed"].shape
            (['idx', 'pos_embed'], torch.Size([1, 3, 2]))
        """
        tokens, layout = self._resolve(tokenized_or_tokens, layout)
        flat = tokens.reshape(-1)  # [N * T]
        base = flat.storage_offset()
        out: dict[str, torch.Tensor] = {}
        for view in _entry_views(tuple(layout.entries), layout.token_size):
            out[view.key] = self._materialise(flat, view.shape, view.strides, base + view.start, view.dtype, copy)
            if view.bias_key is not None:
                bias_start = base + view.bias_start
                bias = self._materialise(flat, (view.rows,), (view.row_stride,), bias_start, view.bias_dtype, copy)
                out[view.bias_key] = bias
        for stored in layout.stored:
            if stored.values is not None or stored.data is not None:
                out[stored.key] = stored.to_tensor(tokens.device)
        return {key: out[key] for key in layout.keys if key in out}

    @staticmethod
    def _materialise(
        flat: torch.Tensor,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        offset: int,
        dtype: torch.dtype,
        copy: bool,
    ) -> torch.Tensor:
        """One entry's tensor from the flat tokens: a fresh contiguous copy, or with ``copy=False`` a view if it can.

        Tensor by tensor on purpose: ``torch.empty`` + one ``_foreach_copy_`` measured 35% slower here (the
        Python-side ``torch.empty`` per tensor costs more than the copy call it saves). ``as_strided_copy`` makes the
        strided view and its contiguous copy in one operator call.
        """
        if copy and flat.dtype == dtype:
            return torch.as_strided_copy(flat, shape, strides, offset)
        view = flat.as_strided(shape, strides, offset)
        if not copy and view.dtype == dtype and view.is_contiguous():
            return view
        return view.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)

    @staticmethod
    def _resolve(
        tokenized_or_tokens: TokenizedWeights | torch.Tensor, layout: WeightLayout | Mapping[str, Any] | None
    ) -> tuple[torch.Tensor, WeightLayout]:
        if layout is not None and not isinstance(layout, WeightLayout):
            layout = WeightLayout.from_dict(layout)
        if isinstance(tokenized_or_tokens, TokenizedWeights):
            tokens = tokenized_or_tokens.tokens
            own = tokenized_or_tokens.layout
            if layout is not None and layout.fingerprint != own.fingerprint:
                raise LayoutMismatchError(
                    f"expected a layout of the tokenized model (fingerprint {own.fingerprint}), got one of another "
                    f"model (fingerprint {layout.fingerprint}); pass the layout that tokenize() returned"
                )
            layout = layout or own
        elif isinstance(tokenized_or_tokens, torch.Tensor):
            tokens = tokenized_or_tokens
            if layout is None:
                raise TokenizerError(
                    "expected a layout with bare tokens, got layout=None; pass tokenized.layout (or its to_dict())"
                )
        else:
            raise TokenizerError(
                f"expected TokenizedWeights or a [N, T] tensor, got {type(tokenized_or_tokens).__name__}"
            )
        if tokens.dim() != 2:
            raise LayoutMismatchError(
                f"expected tokens of shape [N, T] = [{layout.num_tokens}, {layout.token_size}], got "
                f"{list(tokens.shape)}; detokenize one model at a time (e.g. tokens[0] of a batch)"
            )
        if tokens.shape[1] != layout.token_size:
            raise LayoutMismatchError(
                f"expected tokens of width {layout.token_size} (the layout's token_size), got width {tokens.shape[1]}"
            )
        if tokens.shape[0] != layout.num_tokens:
            few = "too few" if tokens.shape[0] < layout.num_tokens else "too many"
            raise LayoutMismatchError(
                f"expected {layout.num_tokens} tokens for this layout, got {tokens.shape[0]} ({few}); pass all "
                "tokens of one model (drop window padding with tokens[:layout.num_tokens]) or the matching layout"
            )
        if not tokens.is_floating_point():
            raise TokenizerError(f"expected floating-point tokens, got dtype {tokens.dtype}")
        return tokens, layout
