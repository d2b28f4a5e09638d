"""Named builders of the architectures in our trained population.

Every member of the offline collection records ``architecture`` (a name registered here) and
``architecture_kwargs``; :func:`build_architecture` rebuilds it so a saved state_dict loads with ``strict=True``.

The modules are deliberately plain (named conv -> BatchNorm -> ReLU steps, no fused or wrapped layers) so the
state_dict keys read like the diagram and the hidden-unit permutation symmetries are easy to state:

- ``statlog_cnn``: ``conv1 -> bn1 -> relu -> conv2 -> bn2 -> relu -> head``; the channels of conv1/bn1 (and
  of conv2/bn2) can be permuted together with the matching input channels of the next layer.
- ``tiny_resnet``: a stem and ``depth`` residual basic blocks at constant width, no downsampling; inside each
  block the channels of ``conv1``/``bn1`` permute freely, the residual stream (stem, every ``conv2``/``bn2``,
  the head's inputs) permutes with one shared permutation.
- ``tiny_mobilenet``: a stem and ``depth`` inverted-residual blocks (1x1 expand, 3x3 depthwise, 1x1 project);
  the expanded channels of ``expand``/``bn1``/``dwconv``/``bn2``/``project`` (inputs) permute together, the
  residual stream as in ``tiny_resnet``.

Both image families end with ``head="segmentation"`` (a 1x1 conv, logits [B, K, H, W] at input resolution) or
``head="classification"`` (global average pooling + linear, logits [B, K]).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from geosane_hf.errors import GeoSANEError


class ArchitectureError(GeoSANEError, ValueError):
    """Unknown architecture name or bad builder arguments."""


@dataclass(frozen=True)
class ArchitectureInfo:
    """A registered builder.

    Attributes:
        name: registry key recorded in the zoo index.
        builder: function(**kwargs) -> nn.Module.
        description: one line for listings and model cards.
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str


ARCHITECTURES: dict[str, ArchitectureInfo] = {}


def register_architecture(
    name: str, description: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to :data:`ARCHITECTURES` under `name`."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ArchitectureError(f"expected a new architecture name, got {name!r} twice")
        ARCHITECTURES[name] = ArchitectureInfo(name=name, builder=builder, description=description)
        return builder

    return decorator


def list_architectures() -> list[str]:
    """Names of the registered architectures, sorted.

    Example:
        >>> list_architectures()
        ['statlog_cnn', 'tiny_mobilenet', 'tiny_resnet']
    """
    return sorted(ARCHITECTURES)


def build_architecture(name: str, **kwargs: object) -> nn.Module:
    """Builds a registered architecture with random weights.

    Args:
        name: a name from :func:`list_architectures`.
        **kwargs: the builder's keyword arguments (as recorded in the zoo index).

    Raises:
        ArchitectureError: unknown name or keyword.

    Example:
        >>> model = build_architecture("statlog_cnn", width=8)
        >>> model(torch.zeros(2, 4, 3, 3)).shape
        torch.Size([2, 6])
    """
    info = ARCHITECTURES.get(name)
    if info is None:
        raise ArchitectureError(f"expected an architecture among {list_architectures()}, got {name!r}")
    accepted = inspect.signature(info.builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ArchitectureError(f"expected keyword arguments of {name!r} among {sorted(accepted)}, got {unknown}")
    return info.builder(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def _check(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ArchitectureError(f"expected an integer {name} >= {minimum}, got {value!r}")


class StatlogCNN(nn.Module):
    """Two 3x3 conv/BN/ReLU steps and a linear head for 3x3-pixel multispectral patches."""

    def __init__(self, in_chans: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, 3, 3]
        x = torch.relu(self.bn1(self.conv1(x)))  # [B, W, 3, 3]
        x = torch.relu(self.bn2(self.conv2(x)))  # [B, W, 1, 1]
        return self.head(x.flatten(1))  # [B, K]


@register_architecture("statlog_cnn", "2-layer conv/BN/ReLU CNN for 3x3-pixel patches (~0.3k-3k params)")
def statlog_cnn(in_chans: int = 4, width: int = 8, num_classes: int = 6) -> nn.Module:
    """A CNN for [B, in_chans, 3, 3] patches; width 4 has 334 parameters, width 8 950, width 16 3,046.

    Example:
        >>> count_parameters(statlog_cnn(width=8))
        950
    """
    _check("in_chans", in_chans)
    _check("width", width)
    _check("num_classes", num_classes, 2)
    return StatlogCNN(in_chans, width, num_classes)


class BasicBlock(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 -> bn2, added to the input, then relu (constant width, stride 1)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, W, H, W']
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class InvertedResidual(nn.Module):
    """expand (1x1) -> bn1 -> relu6 -> dwconv (3x3 depthwise) -> bn2 -> relu6 -> project (1x1) -> bn3, + input."""

    def __init__(self, width: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = width * expand_ratio
        self.expand = nn.Conv2d(width, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, width, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, W, H, W'] -> hidden [B, W * e, H, W'] -> [B, W, H, W']
        y = nn.functional.relu6(self.bn1(self.expand(x)))
        y = nn.functional.relu6(self.bn2(self.dwconv(y)))
        return x + self.bn3(self.project(y))


class TinyImageNet(nn.Module):
    """stem_conv -> stem_bn -> relu -> blocks -> head, at the input resolution (no downsampling)."""

    def __init__(self, in_chans: int, width: int, blocks: list[nn.Module], num_classes: int, head: str) -> None:
        super().__init__()
        self.head_type = head
        self.stem_conv = nn.Conv2d(in_chans, width, kernel_size=3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.Sequential(*blocks)
        if head == "segmentation":
            self.head = nn.Conv2d(width, num_classes, kernel_size=1)
        else:
            self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, H, W]
        x = torch.relu(self.stem_bn(self.stem_conv(x)))  # [B, W, H, W]
        x = self.blocks(x)  # [B, W, H, W]
        if self.head_type == "segmentation":
            return self.head(x)  # [B, K, H, W]
        return self.head(x.mean(dim=(2, 3)))  # [B, K]


def _check_head(head: str) -> None:
    if head not in ("segmentation", "classification"):
        raise ArchitectureError(f"expected head 'segmentation' or 'classification', got {head!r}")


@register_architecture(
    "tiny_resnet", "stem + residual basic blocks (conv/BN/ReLU), segmentation or classification head"
)
def tiny_resnet(
    in_chans: int = 4,
    width: int = 16,
    depth: int = 2,
    num_classes: int = 2,
    head: Literal["segmentation", "classification"] = "segmentation",
) -> nn.Module:
    """A residual CNN at constant width and full resolution.

    Example:
        >>> model = tiny_resnet(width=8, depth=1)
        >>> model(torch.zeros(2, 4, 16, 16)).shape, count_parameters(model)
        (torch.Size([2, 2, 16, 16]), 1506)
    """
    for name, value in (("in_chans", in_chans), ("width", width), ("depth", depth)):
        _check(name, value)
    _check("num_classes", num_classes, 2)
    _check_head(head)
    return TinyImageNet(in_chans, width, [BasicBlock(width) for _ in range(depth)], num_classes, head)


@register_architecture("tiny_mobilenet", "stem + inverted-residual blocks (1x1/depthwise 3x3/1x1 with BN)")
def tiny_mobilenet(
    in_chans: int = 4,
    width: int = 16,
    depth: int = 2,
    expand_ratio: int = 2,
    num_classes: int = 2,
    head: Literal["segmentation", "classification"] = "segmentation",
) -> nn.Module:
    """A MobileNetV2-style CNN at constant width and full resolution.

    Example:
        >>> model = tiny_mobilenet(width=8, depth=1, head="classification")
        >>> model(torch.zeros(2, 4, 16, 16)).shape
        torch.Size([2, 2])
    """
    for name, value in (("in_chans", in_chans), ("width", width), ("depth", depth), ("expand_ratio", expand_ratio)):
        _check(name, value)
    _check("num_classes", num_classes, 2)
    _check_head(head)
    blocks = [InvertedResidual(width, expand_ratio) for _ in range(depth)]
    return TinyImageNet(in_chans, width, blocks, num_classes, head)
