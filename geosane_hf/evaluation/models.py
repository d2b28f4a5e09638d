"""Task models built around a timm backbone whose weights come from a start's state_dict.

- classification: the timm model itself (`timm.create_model(name, in_chans, num_classes)`), loaded strictly;
- segmentation: :class:`FPNSegmenter`, timm ``features_only`` stages + a light FPN decoder (lateral 1x1 convs,
  top-down nearest upsampling and sums, a 3x3 conv per level, the levels upsampled to the finest and summed, then a
  1x1 classifier, bilinearly upsampled to the input);
- detection: torchvision Faster R-CNN on :class:`TimmFPNBackbone` (timm ``features_only`` last three stages +
  torchvision's ``FeaturePyramidNetwork`` with a max-pool level).

For segmentation and detection the backbone takes every tensor of the start's state_dict that it has (same key
names as the classifier: timm's feature wrappers keep them); a missing backbone tensor is an error, the
classifier-only tensors (head, and e.g. MobileNet's ``conv_head``) are ignored. Decoder and detection heads are
initialised from `head_seed`, identically for every start.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from geosane_hf.task_data import EvaluationError


@dataclass(frozen=True)
class TargetArch:
    """The architecture a start is made for.

    Attributes:
        name: timm model name, e.g. "mobilenetv2_100", or a name of our collection's registry
            (`geosane_hf.collection.architectures`, e.g. "statlog_cnn") when `library` is "collection".
        in_chans: input bands.
        num_classes: classifier outputs (the classification head; other tasks replace it).
        library: "timm" or "collection".
        kwargs: extra builder arguments as (name, value) pairs, e.g. (("width", 8),) for a collection model.
    """

    name: str
    in_chans: int = 3
    num_classes: int = 1000
    library: Literal["timm", "collection"] = "timm"
    kwargs: tuple[tuple[str, Any], ...] = ()

    def create(self, **kwargs: Any) -> nn.Module:
        """A randomly initialised classifier of this architecture (never downloads).

        >>> TargetArch("test_resnet", 4, 6).create().get_classifier().out_features
        6
        >>> TargetArch("statlog_cnn", 4, 6, library="collection", kwargs=(("width", 8),)).create().head.out_features
        6
        """
        if self.library == "collection":
            from geosane_hf.collection.architectures import ArchitectureError, build_architecture

            if kwargs:
                raise EvaluationError(
                    f"expected a timm architecture for {sorted(kwargs)} (e.g. features_only), got the collection "
                    f"architecture {self.name!r}; use its own head (head='segmentation') instead"
                )
            try:
                return build_architecture(
                    self.name, in_chans=self.in_chans, num_classes=self.num_classes, **dict(self.kwargs)
                )
            except ArchitectureError as error:
                raise EvaluationError(str(error)) from error
        if self.library != "timm":
            raise EvaluationError(f"expected library 'timm' or 'collection', got {self.library!r}")
        import timm

        try:
            return timm.create_model(
                self.name,
                pretrained=False,
                in_chans=self.in_chans,
                num_classes=self.num_classes,
                **dict(self.kwargs),
                **kwargs,
            )
        except RuntimeError as error:
            if "Unknown model" in str(error):
                raise EvaluationError(
                    f"expected a timm model name (see timm.list_models()), got {self.name!r}"
                ) from error
            raise


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """`model.load_state_dict(state_dict, strict=True)` with an error that names the mismatched keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise EvaluationError(
            f"expected a state_dict for {type(model).__name__} ({len(own)} tensors), got {len(missing)} missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(shapes)} with other shapes "
            f"{shapes[:3]}; build the start for this exact architecture, in_chans and num_classes"
        )
    model.load_state_dict(dict(state_dict), strict=True)
    return model


def load_backbone(backbone: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Loads every backbone tensor from a classifier state_dict; returns the ignored (classifier-only) keys."""
    own = backbone.state_dict()
    missing = [k for k in own if k not in state_dict]
    shapes = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or shapes:
        raise EvaluationError(
            f"expected the backbone's {len(own)} tensors in the start's state_dict, got {len(missing)} missing "
            f"{missing[:3]} and {len(shapes)} with other shapes {shapes[:3]}"
        )
    backbone.load_state_dict({k: state_dict[k] for k in own}, strict=True)
    return [k for k in state_dict if k not in own]


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class FPNSegmenter(nn.Module):
    """timm ``features_only`` encoder + a light FPN decoder; logits [B, K, H, W] at input resolution."""

    def __init__(self, encoder: nn.Module, num_classes: int, decoder_channels: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info.channels()
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder_channels, 1) for c in channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(decoder_channels, decoder_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(decoder_channels),
                nn.ReLU(inplace=True),
            )
            for _ in channels
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)  # list of [B, C_i, H / r_i, W / r_i], finest first
        laterals = [lat(f) for lat, f in zip(self.lateral, feats, strict=True)]  # [B, D, h_i, w_i]
        for i in range(len(laterals) - 2, -1, -1):  # top-down
            laterals[i] = laterals[i] + F.interpolate(laterals[i + 1], size=laterals[i].shape[-2:], mode="nearest")
        size = laterals[0].shape[-2:]
        fused = sum(
            F.interpolate(s(lat), size=size, mode="bilinear", align_corners=False)
            for s, lat in zip(self.smooth, laterals, strict=True)
        )  # [B, D, h_0, w_0]
        logits = self.classifier(fused)  # [B, K, h_0, w_0]
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)  # [B, K, H, W]


class TimmFPNBackbone(nn.Module):
    """timm ``features_only`` stages + torchvision FPN, the backbone interface Faster R-CNN expects."""

    def __init__(self, encoder: nn.Module, out_channels: int = 64) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.encoder = encoder
        self.fpn = FeaturePyramidNetwork(encoder.feature_info.channels(), out_channels, LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.encoder(x)  # 3 maps, strides 8, 16, 32
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))  # "0", "1", "2", "pool"


def build_classifier(target: TargetArch, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """The timm classifier with the start's weights (strict)."""
    return load_strict(target.create(), state_dict)


def build_segmenter(
    target: TargetArch, state_dict: Mapping[str, torch.Tensor], num_classes: int, head_seed: int = 0
) -> FPNSegmenter:
    """FPN segmenter on the target's ``features_only`` stages (all stages), backbone loaded from `state_dict`.

    A collection architecture built with ``head="segmentation"`` is its own segmenter (loaded strictly).
    """
    if target.library == "collection":
        if dict(target.kwargs).get("head") != "segmentation" or target.num_classes != num_classes:
            raise EvaluationError(
                f"expected a collection architecture with head='segmentation' and num_classes={num_classes}, got "
                f"{target}"
            )
        return load_strict(target.create(), state_dict)
    encoder = target.create(features_only=True)
    load_backbone(encoder, state_dict)
    model = _seeded(head_seed, lambda: FPNSegmenter(encoder, num_classes))
    return model


def build_detector(
    target: TargetArch,
    state_dict: Mapping[str, torch.Tensor],
    num_classes: int,
    image_size: int,
    head_seed: int = 0,
) -> nn.Module:
    """torchvision Faster R-CNN on a timm FPN backbone; `num_classes` object classes (+ background inside).

    Images are expected normalised already (the transform's mean/std are 0/1) and of side `image_size` (no resize).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    encoder = target.create(features_only=True, out_indices=(2, 3, 4))
    load_backbone(encoder, state_dict)

    def build() -> nn.Module:
        backbone = TimmFPNBackbone(encoder)
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
        return FasterRCNN(
            backbone,
            num_classes=num_classes + 1,
            min_size=image_size,
            max_size=image_size,
            image_mean=[0.0] * target.in_chans,
            image_std=[1.0] * target.in_chans,
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2),
            box_detections_per_img=100,
            box_score_thresh=0.01,
        )

    return _seeded(head_seed, build)
