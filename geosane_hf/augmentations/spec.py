"""Permutation specs: which tensor axes share one hidden-unit permutation.

A :class:`PermutationSpec` is a list of :class:`PermutationGroup`. A group is one set of interchangeable hidden
units (the channels of a conv/BN pair, the hidden units of an MLP, the heads of an attention layer ...) and lists
every place those units live as an :class:`AxisSlot` ``(key, axis, start, repeat, inner)``: the slice
``[start, start + repeat * size * inner)`` of ``state_dict[key]`` along ``axis`` is viewed as ``[repeat, size,
inner]`` and the permutation acts on the ``size`` dimension. Plain channels are ``repeat = inner = 1``; the heads
of a fused ``qkv`` weight ``[3 * D, D]`` are ``repeat = 3, size = heads, inner = head_dim``.

Applying the same permutation to every slot of a group leaves the network's function unchanged (the producers'
rows, biases and normalisation parameters/statistics move together with the consumers' input columns). Groups are
independent: any subset of them can be permuted. A group with ``blocks > 1`` only permutes within each of its
``blocks`` equal contiguous blocks (within-head dimensions: ``blocks = heads``).

Example:
    >>> spec = PermutationSpec(
    ...     architecture="mlp",
    ...     groups=(PermutationGroup("hidden", 4, (AxisSlot("fc1.weight", 0), AxisSlot("fc2.weight", 1, role="in"))),),
    ...     shapes={"fc1.weight": (4, 3), "fc2.weight": (2, 4)},
    ... )
    >>> spec.num_units, spec.group("hidden").size
    (4, 4)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from geosane_hf.errors import GeoSANEError

__all__ = [
    "GROUP_KINDS",
    "AxisSlot",
    "GroupKind",
    "PermutationGroup",
    "PermutationSpec",
    "PermutationSpecError",
    "UnsupportedArchitectureError",
]

#: What a group permutes. ``hidden``: units between two layers inside a block; ``residual``: the channels of a
#: residual stream (stem, every block's output, the head's input) across a chain of blocks; ``se``: the reduced
#: channels of a squeeze-excitation module; ``heads``: attention head order; ``head_dims``: dimensions inside each
#: head (q/k jointly, v/proj jointly).
GroupKind = Literal["hidden", "residual", "se", "heads", "head_dims"]
GROUP_KINDS: tuple[str, ...] = ("hidden", "residual", "se", "heads", "head_dims")


class PermutationSpecError(GeoSANEError, ValueError):
    """A spec that does not fit a state_dict, or an inconsistent spec."""


class UnsupportedArchitectureError(PermutationSpecError):
    """No permutation rules exist for this architecture (or one of its blocks)."""


@dataclass(frozen=True)
class AxisSlot:
    """Where one group's units live in one tensor.

    Attributes:
        key: state_dict key.
        axis: tensor axis that holds the units.
        start: first index of the slice along ``axis``.
        repeat: the slice is ``repeat`` consecutive copies of the unit axis (3 for a fused qkv).
        inner: values per unit per copy (``head_dim`` for heads, 1 for channels).
        role: ``"out"`` for the unit's own parameters (producing weights, bias, norm parameters and statistics),
            ``"in"`` for consumers (the next layer's input columns).
    """

    key: str
    axis: int
    start: int = 0
    repeat: int = 1
    inner: int = 1
    role: Literal["out", "in"] = "out"

    def length(self, size: int) -> int:
        """Length of the slice along ``axis`` for a group of ``size`` units."""
        return self.repeat * size * self.inner


@dataclass(frozen=True)
class PermutationGroup:
    """One set of interchangeable units and every slot where they live.

    Attributes:
        name: unique name, e.g. ``"layer1.0.conv1"`` or ``"blocks.3.attn.heads"``.
        size: number of units.
        slots: the :class:`AxisSlot` s that share the permutation.
        kind: one of :data:`GROUP_KINDS`.
        blocks: the permutation is block-diagonal with this many equal blocks (1: any permutation).
    """

    name: str
    size: int
    slots: tuple[AxisSlot, ...]
    kind: GroupKind = "hidden"
    blocks: int = 1


@dataclass(frozen=True, eq=False)  # hashed by identity: compiled plans are cached per spec object
class PermutationSpec:
    """All permutation groups of one architecture, plus the shapes they were derived from.

    Attributes:
        architecture: name for messages (registry name, timm name or class name).
        groups: the groups, parents before nested children (heads before head_dims).
        shapes: ``{key: shape}`` of the state_dict the spec describes (every key, in order).
    """

    architecture: str
    groups: tuple[PermutationGroup, ...]
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise PermutationSpecError(f"expected unique group names in the spec of {self.architecture}, got {dup}")
        for group in self.groups:
            if group.kind not in GROUP_KINDS:
                raise PermutationSpecError(f"expected group kind among {GROUP_KINDS}, got {group.kind!r}")
            if group.size < 1 or group.blocks < 1 or group.size % group.blocks:
                raise PermutationSpecError(
                    f"expected group {group.name!r} to have size >= 1 divisible by blocks, got size {group.size}, "
                    f"blocks {group.blocks}"
                )
            for slot in group.slots:
                shape = self.shapes.get(slot.key)
                if shape is None:
                    continue
                if not 0 <= slot.axis < len(shape) or slot.start + slot.length(group.size) > shape[slot.axis]:
                    raise PermutationSpecError(
                        f"expected slot {slot} of group {group.name!r} to fit {slot.key!r} of shape {list(shape)}"
                    )

    @property
    def num_units(self) -> int:
        """Total number of permuted units over all groups."""
        return sum(g.size for g in self.groups)

    @property
    def keys(self) -> list[str]:
        """Keys touched by at least one group, in state_dict order."""
        touched = {s.key for g in self.groups for s in g.slots}
        return [k for k in self.shapes if k in touched]

    def group(self, name: str) -> PermutationGroup:
        """The group called ``name``."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"expected a group name of {self.architecture} such as {self.groups[0].name!r}, got {name!r}")

    def select(self, kinds: Iterable[str]) -> PermutationSpec:
        """The same spec restricted to groups of the given kinds (each group alone preserves the function).

        Example:
            >>> spec = PermutationSpec("x", (PermutationGroup("a", 2, (AxisSlot("w", 0),), kind="residual"),))
            >>> len(spec.select(["hidden"]).groups)
            0
        """
        kinds = tuple(kinds)
        unknown = sorted(set(kinds) - set(GROUP_KINDS))
        if unknown:
            raise PermutationSpecError(f"expected group kinds among {GROUP_KINDS}, got {unknown}")
        groups = tuple(g for g in self.groups if g.kind in kinds)
        return PermutationSpec(self.architecture, groups, dict(self.shapes))

    def fingerprint(self) -> str:
        """A short hash of the groups and shapes (used to cache compiled plans)."""
        payload = json.dumps(
            [
                self.architecture,
                [(g.name, g.size, g.kind, g.blocks, [tuple(vars(s).values()) for s in g.slots]) for g in self.groups],
                [(k, list(v)) for k, v in self.shapes.items()],
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def check_state_dict(self, state_dict: Mapping[str, object]) -> None:
        """Raises :class:`PermutationSpecError` unless every slot's key exists with the spec's shape."""
        specs = getattr(state_dict, "tensor_specs", None)
        for key in self.keys:
            if key not in state_dict:
                raise PermutationSpecError(
                    f"expected key {key!r} (permutation spec of {self.architecture}) in the state_dict, got keys "
                    f"{list(state_dict)[:4]}...; build the spec from the same architecture"
                )
            shape = tuple(specs[key].shape) if specs is not None else tuple(state_dict[key].shape)  # type: ignore[attr-defined]
            if shape != tuple(self.shapes[key]):
                raise PermutationSpecError(
                    f"expected {key!r} of shape {list(self.shapes[key])} (permutation spec of {self.architecture}), "
                    f"got {list(shape)}; build the spec with the same architecture arguments (width, depth ...)"
                )


class SpecBuilder:
    """Collects slots group by group from a state_dict's shapes (used by the architecture rules).

    Slots whose key is absent (a conv without bias, a BatchNorm without running stats) are skipped, so rules can
    name every possible tensor of a module.
    """

    def __init__(self, architecture: str, shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.architecture = architecture
        self.shapes = dict(shapes)
        self._groups: dict[str, dict] = {}
        self._counter = 0

    def new_group(self, name: str, kind: GroupKind, size: int | None = None, blocks: int = 1) -> str:
        if name in self._groups:
            raise PermutationSpecError(f"rule error: group {name!r} defined twice in {self.architecture}")
        self._groups[name] = {"kind": kind, "size": size, "blocks": blocks, "slots": []}
        return name

    def add(
        self,
        group: str,
        key: str,
        axis: int,
        *,
        role: Literal["out", "in"] = "out",
        start: int = 0,
        repeat: int = 1,
        inner: int = 1,
        length: int | None = None,
    ) -> None:
        """Adds ``(key, axis)`` to ``group``; the slice length defaults to the whole axis minus ``start``."""
        shape = self.shapes.get(key)
        if shape is None:
            return
        g = self._groups[group]
        span = (shape[axis] - start) if length is None else length
        if span % (repeat * inner):
            raise PermutationSpecError(
                f"rule error in {self.architecture}: axis {axis} of {key!r} {list(shape)} is not divisible into "
                f"{repeat} x units x {inner}"
            )
        size = span // (repeat * inner)
        if g["size"] is None:
            g["size"] = size
        elif g["size"] != size:
            raise PermutationSpecError(
                f"expected {key!r} axis {axis} (shape {list(shape)}) to hold the {g['size']} units of group "
                f"{group!r} in {self.architecture}, got {size}; the architecture differs from what the rules assume"
            )
        g["slots"].append(AxisSlot(key, axis, start, repeat, inner, role))

    # Common layer patterns -------------------------------------------------------------------------------------

    def producer(self, group: str, prefix: str) -> None:
        """A conv/linear's output channels: ``weight`` rows and ``bias``."""
        self.add(group, f"{prefix}.weight", 0)
        self.add(group, f"{prefix}.bias", 0)

    def norm(self, group: str, prefix: str) -> None:
        """A BatchNorm/LayerNorm over the channels: affine parameters and running statistics."""
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.add(group, f"{prefix}.{name}", 0)

    def consumer(self, group: str, prefix: str) -> None:
        """A conv/linear's input channels: ``weight`` columns."""
        self.add(group, f"{prefix}.weight", 1, role="in")

    def build(self) -> PermutationSpec:
        groups = []
        for name, g in self._groups.items():
            if not g["slots"]:
                continue
            groups.append(PermutationGroup(name, g["size"], tuple(g["slots"]), g["kind"], g["blocks"]))
        return PermutationSpec(self.architecture, tuple(groups), self.shapes)
