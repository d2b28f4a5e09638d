"""The layout of tokenized weights (what each token holds, which tensors are stored aside) and the tokens
themselves: :class:`WeightLayout`, :class:`LayoutEntry`, :class:`StoredTensor`, :class:`TokenizedWeights`, the errors."""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from geosane_hf.errors import GeoSANEError

FORMAT_VERSION = 1
INT16_MAX = 32767  # positions are int16 when their maximum fits, else int32 (as the original)
INLINE_VALUES_MAX = 64  # integer/bool tensors up to this many values are stored in the layout as a JSON list
Mode = Literal["geosane", "full"]
_MODES = ("geosane", "full")


class TokenizerError(GeoSANEError, ValueError):
    """Bad input to the tokenizer (the message says what was expected and what to do)."""


class NonFiniteWeightsError(TokenizerError):
    """The state_dict holds NaN or Inf values and ``allow_nonfinite`` is False."""


class LayoutMismatchError(TokenizerError):
    """Tokens and layout do not belong together (other model, too few tokens, other token width)."""


# --------------------------------------------------------------------------------------------------- layout


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TokenizerError(f"expected a torch dtype name in the layout (e.g. 'float32'), got {name!r}")
    return dtype


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class LayoutEntry:
    """One tokenized layer: a tensor viewed as ``(rows, cols)``, optionally with its bias as one more column.

    Attributes:
        key: State_dict key of the tensor (the weight).
        shape: Its shape.
        dtype: Its dtype name (``"float32"``, ``"bfloat16"`` ...); detokenize casts back to it.
        layer_index: Index ``l`` of the layer in the token positions.
        token_offset: Index of the layer's first token.
        token_count: Number of tokens of the layer (the last one zero-padded).
        layer_type: :class:`LayerType` id of every token of the layer.
        bias_key: Key of the bias appended as the last column, or None.
        bias_dtype: The bias' dtype name, or None.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    layer_index: int
    token_offset: int
    token_count: int
    layer_type: int
    bias_key: str | None = None
    bias_dtype: str | None = None

    @property
    def rows(self) -> int:
        """``shape[0]`` (1 for a 0-dim tensor)."""
        return self.shape[0] if self.shape else 1

    @property
    def cols(self) -> int:
        """Values per row of the weight, without the bias column."""
        return math.prod(self.shape) // self.rows if self.rows else 0

    @property
    def num_values(self) -> int:
        """Real (unpadded) values of the layer: ``rows * (cols + has_bias)``."""
        return self.rows * (self.cols + (self.bias_key is not None))


@dataclass
class StoredTensor:
    """A tensor that is not tokenized.

    In ``"full"`` mode its values are kept here (``values`` as a JSON list when small, else ``data``: zlib-compressed,
    base64-encoded little-endian bytes). In ``"geosane"`` mode both are None: the caller supplies the tensor.
    """

    key: str
    shape: tuple[int, ...]
    dtype: str
    values: list[Any] | None = None
    data: str | None = None

    @classmethod
    def from_tensor(cls, key: str, tensor: torch.Tensor) -> StoredTensor:
        """Stores a tensor's values."""
        if tensor.ndim == 0 and not (tensor.is_floating_point() or tensor.is_complex()):  # num_batches_tracked
            return cls(key, (), _dtype_name(tensor.dtype), values=[tensor.item()])
        tensor = tensor.detach().to("cpu").contiguous()
        if not (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel() <= INLINE_VALUES_MAX:
            return cls(key, tuple(tensor.shape), _dtype_name(tensor.dtype), values=tensor.reshape(-1).tolist())
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        data = base64.b64encode(zlib.compress(raw, 6)).decode("ascii")
        return cls(key, tuple(tensor.shape), _dtype_name(tensor.dtype), data=data)

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Rebuilds the tensor (a fresh, contiguous one)."""
        dtype = _dtype_from_name(self.dtype)
        if self.values is not None and len(self.shape) == 0 and len(self.values) == 1:  # num_batches_tracked: ~1 us
            return torch.scalar_tensor(self.values[0], dtype=dtype, device=device)
        if self.values is not None:
            return torch.tensor(self.values, dtype=dtype, device=device).reshape(self.shape)
        if self.data is None:
            raise TokenizerError(
                f"expected stored values for {self.key!r}, got none: in 'geosane' mode this tensor is not tokenized, "
                "take it from the original checkpoint (see WeightLayout.missing_keys)"
            )
        raw = zlib.decompress(base64.b64decode(self.data))
        expected = math.prod(self.shape) * torch.empty((), dtype=dtype).element_size()
        if len(raw) != expected:
            raise TokenizerError(f"expected {expected} bytes for {self.key!r} in the layout, got {len(raw)}")
        if not raw:
            return torch.empty(self.shape, dtype=dtype, device=device)
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)
        return flat.reshape(self.shape).to(device)


def architecture_fingerprint(keys_and_shapes: Sequence[tuple[str, Sequence[int]]]) -> str:
    """Hash of a model's keys and shapes, in order (dtypes excluded: an fp16 copy is the same architecture).

    Example:
        >>> architecture_fingerprint([("fc.weight", (2, 3))]) == architecture_fingerprint([("fc.weight", (3, 2))])
        False
    """
    digest = hashlib.sha256()
    for key, shape in keys_and_shapes:
        digest.update(f"{key}:{','.join(map(str, shape))};".encode())
    return digest.hexdigest()[:16]


@dataclass
class WeightLayout:
    """Everything needed to turn tokens back into a state_dict; JSON-serialisable via :meth:`to_dict`.

    Attributes:
        mode: ``"geosane"`` or ``"full"``.
        token_size: Values per token ``T``.
        num_tokens: Number of tokens ``N``.
        tokens_dtype: Dtype of the tokens (``"float32"``, or ``"float64"`` if the state_dict holds float64).
        fingerprint: :func:`architecture_fingerprint` of the source state_dict (all keys, all shapes).
        keys: Every key of the source state_dict, in its order.
        entries: The tokenized layers, in token order.
        stored: Tensors not tokenized (values kept in ``"full"`` mode, only key/shape/dtype in ``"geosane"``).
        format_version: Version of this format.
    """

    mode: str
    token_size: int
    num_tokens: int
    tokens_dtype: str
    fingerprint: str
    keys: list[str]
    entries: list[LayoutEntry]
    stored: list[StoredTensor] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def missing_keys(self) -> list[str]:
        """Keys that :meth:`WeightTokenizer.detokenize` cannot give back (``"geosane"`` mode: not tokenized)."""
        return [s.key for s in self.stored if s.values is None and s.data is None]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``json.dumps(layout.to_dict())`` works)."""
        out = asdict(self)
        for item in out["entries"] + out["stored"]:
            item["shape"] = list(item["shape"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightLayout:
        """Rebuilds a layout from :meth:`to_dict` output, checking its version and fields."""
        if not isinstance(data, Mapping):
            raise TokenizerError(f"expected a layout dict (WeightLayout.to_dict()), got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise TokenizerError(
                f"expected layout format_version {FORMAT_VERSION}, got {version!r}: re-tokenize with this version"
            )
        try:
            entries = [LayoutEntry(**{**e, "shape": tuple(e["shape"])}) for e in data["entries"]]
            stored = [StoredTensor(**{**s, "shape": tuple(s["shape"])}) for s in data.get("stored", [])]
            fields = {k: data[k] for k in ("mode", "token_size", "num_tokens", "tokens_dtype", "fingerprint")}
            return cls(**fields, keys=list(data["keys"]), entries=entries, stored=stored, format_version=version)
        except (KeyError, TypeError) as error:
            raise TokenizerError(
                f"expected a complete layout dict (WeightLayout.to_dict()), got an error: {error}"
            ) from error

    def check_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Raises :class:`LayoutMismatchError` unless ``state_dict`` has the keys and shapes this layout came from."""
        specs = _read_specs(state_dict)
        found = architecture_fingerprint([(key, shape) for key, shape, _ in specs])
        if found != self.fingerprint:
            raise LayoutMismatchError(
                f"expected a state_dict with architecture fingerprint {self.fingerprint}, got {found} "
                f"({_describe_key_difference(self.keys, [key for key, _, _ in specs])})"
            )


def _describe_key_difference(expected: list[str], found: list[str]) -> str:
    missing = [k for k in expected if k not in set(found)]
    extra = [k for k in found if k not in set(expected)]
    if missing or extra:
        return f"missing keys {missing[:3]}, unexpected keys {extra[:3]}"
    return "same keys, different shapes or order"


@dataclass(init=False)
class TokenizedWeights:
    """Output of :meth:`WeightTokenizer.tokenize`.

    Attributes:
        tokens: ``[N, T]`` float32 values (float64 only if the state_dict holds float64), zero padding.
        mask: ``[N, T]`` bool, True on real values, False on padding. Padding only ever ends a token, so the
            tokenizer stores ``num_real`` and builds the mask from it on first access (a quarter of the tokens'
            bytes that tokenizing no longer writes); a mask passed in explicitly is kept as given.
        positions: ``[N, 3]`` int16 (int32 when ``N > 32768``): (global token index n, layer index l, token
            index j within the layer).
        layer_types: ``[N]`` int64 :class:`LayerType` ids.
        layout: The :class:`WeightLayout` needed to detokenize.
        num_real: ``[N]`` number of real values at the start of each token (``mask[i] == arange(T) < num_real[i]``).
    """

    tokens: torch.Tensor  # [N, T]
    positions: torch.Tensor  # [N, 3]
    layer_types: torch.Tensor  # [N]
    layout: WeightLayout
    num_real: torch.Tensor  # [N]

    def __init__(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        layer_types: torch.Tensor | None = None,
        layout: WeightLayout | None = None,
        *,
        num_real: torch.Tensor | None = None,
    ) -> None:
        if positions is None or layer_types is None or layout is None:
            raise TokenizerError("expected tokens, positions, layer_types and layout, got one of them missing")
        if mask is None and num_real is None:
            raise TokenizerError("expected a mask [N, T] or num_real [N], got neither")
        if mask is not None and tuple(mask.shape) != tuple(tokens.shape):
            raise TokenizerError(f"expected mask of shape {list(tokens.shape)}, got {list(mask.shape)}")
        self.tokens = tokens
        self.positions = positions
        self.layer_types = layer_types
        self.layout = layout
        self._mask = mask
        self.num_real = num_real if num_real is not None else mask.sum(dim=1)  # [N]

    @property
    def mask(self) -> torch.Tensor:
        """``[N, T]`` bool, True on real values (built from ``num_real`` on first access, then kept)."""
        if self._mask is None:
            T = self.tokens.shape[1]
            arange = torch.arange(T, device=self.num_real.device)
            self._mask = arange[None, :] < self.num_real[:, None]  # [N, T]
        return self._mask

    @property
    def num_tokens(self) -> int:
        """Number of tokens ``N``."""
        return self.tokens.shape[0]


SpecTuple = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


def _read_specs(state_dict: Mapping[str, Any]) -> SpecTuple:
    """(key, shape, dtype) in the state_dict's order, without reading a lazy mapping's tensors."""
    if not isinstance(state_dict, Mapping):
        raise TokenizerError(
            f"expected a Mapping[str, Tensor] such as model.state_dict(), got {type(state_dict).__name__}"
        )
    lazy_specs = getattr(state_dict, "tensor_specs", None)
    if lazy_specs is None:  # fast path for a plain dict of tensors; anything unexpected gets the checks below
        try:
            specs = tuple((key, tuple(value.shape), value.dtype) for key, value in state_dict.items())
            if all(type(key) is str and isinstance(dtype, torch.dtype) for key, _, dtype in specs):
                return specs
        except AttributeError:
            pass
    specs = []
    for key in state_dict:
        if not isinstance(key, str):
            raise TokenizerError(f"expected str keys in the state_dict, got {key!r} ({type(key).__name__})")
        if lazy_specs is not None:
            if key not in lazy_specs:
                raise TokenizerError(f"expected tensor_specs to describe every key, {key!r} is missing")
            spec = lazy_specs[key]
            specs.append((key, tuple(int(s) for s in spec.shape), spec.dtype))
        else:
            value = state_dict[key]
            if not isinstance(value, torch.Tensor):
                raise TokenizerError(f"expected a torch.Tensor for {key!r}, got {type(value).__name__}")
            specs.append((key, tuple(value.shape), value.dtype))
    return tuple(specs)
