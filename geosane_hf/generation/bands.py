"""Adapting a prompt's RGB stem to the target's bands (4-band Landsat, 13-band Sentinel-2, 2-band SAR ...).

Default (``method="wavelength"``): each target band whose centre wavelength lies in the blue, green or red range
of the prompt gets a copy of that RGB filter; every other band (coastal, red edge, NIR, SWIR, thermal, SAR ...) gets
the mean of the three RGB filters. All filters are then scaled by ``3 / in_chans``, as timm's ``adapt_input_conv``
does for channel repetition, so a constant image (all bands equal) produces exactly the prompt's stem activations
and the input to the first normalisation layer keeps its scale. Why the default: the visible bands of an RS sensor
measure what the RGB filters were trained on, so copying them keeps the prompt's learned colour contrasts where
they mean something; filling the remaining bands with the mean filter adds a band-agnostic "brightness/texture"
response instead of a colour contrast the band never had, and the 3 / C scaling keeps activation variance for
correlated bands.

Alternatives (``method=``): ``"repeat"`` (timm's ``adapt_input_conv``: RGB filters repeated cyclically, scaled by
3 / C; what ``geosane_hf.evaluation.starts.adapt_bands`` uses), ``"mean"`` (the mean filter everywhere, scaled),
``"random"`` (a fresh Kaiming-uniform stem, what the released GeoSANE code does). Bands without a known wavelength
(SAR ``VV``/``VH``, or no names at all) fall back from ``"wavelength"`` to ``"repeat"``.

Example:
    >>> import torch
    >>> w = torch.randn(8, 3, 3, 3)  # [O, RGB, k, k]
    >>> out = adapt_stem(w, ["B2", "B3", "B4", "B5"])  # Landsat-8 blue, green, red, NIR
    >>> out.weight.shape, out.mapping
    (torch.Size([8, 4, 3, 3]), ['B', 'G', 'R', 'mean'])
    >>> torch.allclose(out.weight.sum(1), w.sum(1))  # constant-image response preserved
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from geosane_hf.errors import GeoSANEError

__all__ = [
    "BAND_WAVELENGTHS_NM",
    "DEFAULT_BANDS",
    "BandAdaptation",
    "BandAdaptationError",
    "adapt_stem",
    "band_wavelength",
    "default_bands",
]

Method = Literal["wavelength", "repeat", "mean", "random"]
METHODS = ("wavelength", "repeat", "mean", "random")

# Centre wavelengths (nm) of the band ids of Landsat-8 OLI/TIRS and Sentinel-2 MSI, and of STAC common names.
# ``B10``/``B11`` are Landsat-8 thermal here (Sentinel-2 cirrus/SWIR16 otherwise): outside RGB for both sensors,
# so the adaptation is the same whichever is meant.
BAND_WAVELENGTHS_NM: dict[str, float] = {
    # Landsat-8
    "B1": 443, "B2": 482, "B3": 561, "B4": 655, "B5": 865, "B6": 1609, "B7": 2201, "B8": 590, "B9": 1373,
    "B10": 10895, "B11": 12005,
    # Sentinel-2
    "B01": 443, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740, "B07": 783, "B08": 842, "B8A": 865,
    "B09": 945, "B12": 2190,
    # STAC eo common names
    "coastal": 443, "blue": 490, "green": 560, "red": 665, "yellow": 600, "rededge": 720, "nir": 842, "nir08": 865,
    "nir09": 945, "cirrus": 1375, "swir16": 1610, "swir22": 2200, "lwir11": 10900, "lwir12": 12000,
}  # fmt: skip
# The prompt's RGB channels (timm/torchvision ImageNet order R, G, B) and the wavelength range each one stands for.
RGB_RANGES_NM: dict[str, tuple[int, float, float]] = {
    "R": (0, 620.0, 700.0),
    "G": (1, 520.0, 600.0),
    "B": (2, 450.0, 520.0),
}

# Default band names per target band count: the packaged scenes used for BatchNorm calibration have these bands.
DEFAULT_BANDS: dict[int, tuple[str, ...]] = {
    1: ("B5",),
    2: ("VV", "VH"),  # SAR: no packaged imagery; calibration needs user data
    3: ("B4", "B3", "B2"),
    4: ("B2", "B3", "B4", "B5"),
    5: ("B2", "B3", "B4", "B5", "B6"),
    6: ("B2", "B3", "B4", "B5", "B6", "B7"),
    7: ("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
    13: ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
}


class BandAdaptationError(GeoSANEError, ValueError):
    """Bad input to band adaptation."""


@dataclass
class BandAdaptation:
    """Result of :func:`adapt_stem`.

    Attributes:
        weight: ``[O, C_target, *k]`` adapted stem weight.
        method: The method actually used (``"wavelength"`` may fall back to ``"repeat"``).
        mapping: Per target band, where its filter came from (``"R"``, ``"G"``, ``"B"``, ``"mean"``, ``"repeat:R"``,
            ``"random"``).
        scale: Factor applied to the copied filters.
    """

    weight: torch.Tensor
    method: str
    mapping: list[str]
    scale: float

    def describe(self) -> str:
        """One line for provenance and model cards."""
        return f"{self.method}: bands <- {self.mapping}, scaled by {self.scale:.4g}"


def band_wavelength(name: str) -> float | None:
    """Centre wavelength in nm of a band id, a sensor-qualified id or a STAC common name, or None (e.g. SAR ``VV``).

    Unqualified ids are this package's internal ids (Landsat-8 ``B8``, Sentinel-2 ``B08``); resolve user names
    first with :func:`geosane_hf.imagery.bands.resolve_bands`, which refuses the ambiguous ones.

    >>> band_wavelength("B04"), band_wavelength("VV"), band_wavelength("S2:B8")
    (665, None, 842)
    """
    if ":" in str(name):  # sensor-qualified ("S2:B8"): that sensor's table
        from geosane_hf.imagery.bands import sensor_band_wavelength

        return sensor_band_wavelength(name)
    return BAND_WAVELENGTHS_NM.get(name, BAND_WAVELENGTHS_NM.get(str(name).lower()))


def default_bands(in_chans: int) -> tuple[str, ...] | None:
    """The band names assumed for ``in_chans`` bands when none are given (None: no default, band-agnostic).

    >>> default_bands(4)
    ('B2', 'B3', 'B4', 'B5')
    """
    return DEFAULT_BANDS.get(in_chans)


def _rgb_slot(name: str) -> str | None:
    wavelength = band_wavelength(name)
    if wavelength is None:
        return None
    for slot, (_, low, high) in RGB_RANGES_NM.items():
        if low <= wavelength < high:
            return slot
    return "mean"


def adapt_stem(
    weight: torch.Tensor,
    bands: Sequence[str] | None = None,
    *,
    in_chans: int | None = None,
    method: Method = "wavelength",
    generator: torch.Generator | None = None,
) -> BandAdaptation:
    """Adapts a stem weight ``[O, 3, *k]`` (RGB, ImageNet order) to the target bands.

    Args:
        weight: The prompt's stem conv / patch-embedding weight, input channels in dim 1.
        bands: Target band names (Landsat-8 ``B1..B11``, Sentinel-2 ``B01..B12``, STAC common names, SAR
            ``VV``/``VH``); their count is the target ``in_chans``.
        in_chans: Target band count when ``bands`` is None.
        method: See the module docstring.
        generator: RNG for ``method="random"``.

    Returns:
        A :class:`BandAdaptation`.

    Raises:
        BandAdaptationError: ``in_chans`` < 1, bands and ``in_chans`` disagree, a weight that is not ``[O, 3, ...]``
            for the wavelength method, or an unknown method.

    Example:
        >>> import torch
        >>> adapt_stem(torch.ones(2, 3, 1, 1), in_chans=2, method="mean").weight[:, :, 0, 0]
        tensor([[1.5000, 1.5000],
                [1.5000, 1.5000]])
    """
    if method not in METHODS:
        raise BandAdaptationError(f"expected method in {METHODS}, got {method!r}")
    if bands is not None:
        bands = [str(b) for b in bands]
        if in_chans is not None and in_chans != len(bands):
            raise BandAdaptationError(f"expected in_chans == len(bands) = {len(bands)}, got in_chans={in_chans}")
        in_chans = len(bands)
    if in_chans is None or isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise BandAdaptationError(
            f"expected in_chans to be an int >= 1 (the number of target bands), got {in_chans!r}"
        )
    if weight.ndim < 2:
        raise BandAdaptationError(f"expected a stem weight [O, C, ...], got shape {tuple(weight.shape)}")
    source = weight.shape[1]
    if method == "random":
        fresh = torch.empty((weight.shape[0], in_chans, *weight.shape[2:]), dtype=torch.float32)
        fan_in = in_chans * math.prod(weight.shape[2:])
        bound = 1.0 / math.sqrt(fan_in)
        fresh.uniform_(-bound, bound, generator=generator)  # kaiming_uniform(a=sqrt(5)) as nn.Conv2d
        return BandAdaptation(fresh.to(weight.device, weight.dtype), "random", ["random"] * in_chans, 1.0)
    slots = [_rgb_slot(b) for b in bands] if bands is not None else [None]
    if method == "wavelength" and (source != 3 or any(slot is None for slot in slots)):
        method = "repeat"  # unknown wavelengths (SAR, unnamed bands) or a non-RGB prompt
    w = weight.float()
    scale = source / in_chans
    if method == "repeat":
        from timm.models._manipulate import adapt_input_conv

        out = adapt_input_conv(in_chans, w, base_chans=source)  # repeat cyclically, * source / in_chans
        if in_chans == 1:
            return BandAdaptation(out.to(weight.dtype), "repeat", ["sum"], 1.0)
        mapping = [f"repeat:{'RGB'[i % source] if source == 3 else i % source}" for i in range(in_chans)]
        return BandAdaptation(out.to(weight.dtype), "repeat", mapping, scale)
    mean = w.mean(dim=1)  # [O, *k]
    if method == "mean":
        out = mean.unsqueeze(1).expand(-1, in_chans, *([-1] * (w.ndim - 2))) * scale
        return BandAdaptation(out.contiguous().to(weight.dtype), "mean", ["mean"] * in_chans, scale)
    filters = [w[:, RGB_RANGES_NM[slot][0]] if slot in RGB_RANGES_NM else mean for slot in slots]
    out = torch.stack(filters, dim=1) * scale  # [O, C_target, *k]
    return BandAdaptation(out.to(weight.dtype), "wavelength", [str(s) for s in slots], scale)
