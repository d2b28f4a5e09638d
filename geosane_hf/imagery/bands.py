"""Band names per sensor, so that Landsat-8 ``B8`` (panchromatic) and Sentinel-2 ``B8``/``B08`` (NIR) never mix.

Landsat-8/9 OLI-TIRS numbers its bands ``B1``..``B11``; Sentinel-2 MSI ``B01``..``B12`` and ``B8A``, but many tools
(Google Earth Engine, SNAP exports) write them unpadded: ``B8`` means 590 nm to a Landsat user and 842 nm to a
Sentinel-2 user. :func:`resolve_bands` turns user band names into the ids this package uses internally (Landsat-8
unpadded ``B5``, Sentinel-2 padded ``B08``/``B8A``; STAC common names and SAR ``VV``/``VH`` unchanged), given

- a ``sensor=`` hint (``"L8"``, ``"S2"``, ``"S1"`` or a long name such as ``"sentinel-2"``), or
- sensor-qualified names (``"S2:B8"``, ``"L8:B5"``), or
- names that only one sensor has (``B02``, ``B8A``, ``B12``), which fix the sensor for the whole list.

An unpadded name whose meaning differs between the two sensors (``B5``..``B11``) with nothing that says which sensor
is an error that says how to qualify it. ``B1``..``B4`` mean the same colour for both (coastal, blue, green, red)
and resolve to Landsat-8 when nothing else says otherwise.

Example:
    >>> resolve_bands(["B2", "B3", "B4", "B8"], sensor="S2")
    ('B02', 'B03', 'B04', 'B08')
    >>> resolve_bands(["B02", "B03", "B04", "B8"])  # padded names fix the sensor: Sentinel-2
    ('B02', 'B03', 'B04', 'B08')
    >>> resolve_bands(["L8:B2", "L8:B5"]), resolve_bands(["red", "nir", "VV"])
    (('B2', 'B5'), ('red', 'nir', 'VV'))
    >>> resolve_bands(["B4", "B8"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geosane_hf.imagery.bands.AmbiguousBandError: band 'B8' is ambiguous without a sensor: Landsat-8 B8 (panchromatic, ...
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "SENSOR_BANDS",
    "AmbiguousBandError",
    "BandNameError",
    "qualify_bands",
    "resolve_bands",
    "sensor_band_wavelength",
    "sensor_id",
]


class BandNameError(ValueError):
    """A band name or sensor that cannot be resolved."""


class AmbiguousBandError(BandNameError):
    """A band name that means different bands for different sensors, given without a sensor."""


#: Per sensor: internal band id -> (description, centre wavelength in nm or None).
SENSOR_BANDS: dict[str, dict[str, tuple[str, float | None]]] = {
    "L8": {
        "B1": ("coastal aerosol", 443), "B2": ("blue", 482), "B3": ("green", 561), "B4": ("red", 655),
        "B5": ("NIR", 865), "B6": ("SWIR 1", 1609), "B7": ("SWIR 2", 2201), "B8": ("panchromatic", 590),
        "B9": ("cirrus", 1373), "B10": ("thermal 1", 10895), "B11": ("thermal 2", 12005),
    },
    "S2": {
        "B01": ("coastal aerosol", 443), "B02": ("blue", 490), "B03": ("green", 560), "B04": ("red", 665),
        "B05": ("red edge 1", 705), "B06": ("red edge 2", 740), "B07": ("red edge 3", 783), "B08": ("NIR", 842),
        "B8A": ("narrow NIR", 865), "B09": ("water vapour", 945), "B10": ("cirrus", 1375), "B11": ("SWIR 1", 1610),
        "B12": ("SWIR 2", 2190),
    },
    "S1": {"VV": ("SAR VV", None), "VH": ("SAR VH", None), "HH": ("SAR HH", None), "HV": ("SAR HV", None)},
}  # fmt: skip
SENSOR_NAMES = {"L8": "Landsat-8", "S2": "Sentinel-2", "S1": "Sentinel-1"}
_SENSOR_ALIASES = {
    "l8": "L8", "landsat8": "L8", "landsat-8": "L8", "landsat_8": "L8", "l9": "L8", "landsat9": "L8",
    "landsat-9": "L8", "oli": "L8", "s2": "S2", "sentinel2": "S2", "sentinel-2": "S2", "sentinel_2": "S2",
    "msi": "S2", "s1": "S1", "sentinel1": "S1", "sentinel-1": "S1", "sentinel_1": "S1", "sar": "S1",
}  # fmt: skip


def sensor_id(sensor: str) -> str:
    """The short sensor id (``L8``, ``S2``, ``S1``) of a sensor name.

    >>> sensor_id("sentinel-2"), sensor_id("L9")
    ('S2', 'L8')
    """
    key = _SENSOR_ALIASES.get(str(sensor).strip().lower())
    if key is None:
        raise BandNameError(
            f"expected a sensor among {sorted(SENSOR_NAMES)} (or {', '.join(sorted(set(_SENSOR_ALIASES)))}), "
            f"got {sensor!r}"
        )
    return key


def _band_in(sensor: str, name: str, explicit: bool = False) -> str | None:
    """The internal id of ``name`` for ``sensor`` (``B8`` -> ``B08`` for S2), or None.

    Padded ids (``B05``) are Sentinel-2's notation: they name a Landsat-8 band only when the sensor is explicit.
    """
    table = SENSOR_BANDS[sensor]
    upper = name.strip().upper()
    if upper in table:
        return upper
    if sensor == "S2":
        if upper in ("B8A", "B08A"):
            return "B8A"
        digits = upper[1:]
        if upper.startswith("B") and digits.isdigit():
            padded = f"B{int(digits):02d}"
            return padded if padded in table else None
    if explicit and sensor == "L8" and upper.startswith("B") and upper[1:].isdigit():
        unpadded = f"B{int(upper[1:])}"
        return unpadded if unpadded in table else None
    return None


def _describe(sensor: str, band: str) -> str:
    what, nm = SENSOR_BANDS[sensor][band]
    return f"{SENSOR_NAMES[sensor]} {band} ({what}{f', {nm:g} nm' if nm else ''})"


def _same_meaning(a: tuple[str, float | None], b: tuple[str, float | None]) -> bool:
    return a[0] == b[0] and a[1] is not None and b[1] is not None and abs(a[1] - b[1]) <= 20


def resolve_bands(names: Sequence[str], sensor: str | None = None, *, qualified: bool = False) -> tuple[str, ...]:
    """Internal band ids of user band names (see the module docstring).

    Args:
        names: Band names: sensor ids (``B8``, ``B08``, ``B8A``), sensor-qualified (``S2:B8``), STAC common names
            (``red``, ``nir``), SAR polarisations (``VV``); other names pass through unchanged.
        sensor: The sensor of unqualified names (``L8``, ``S2``, ``S1``, or ``landsat-8``, ``sentinel-2``, ...).
        qualified: Return sensor-qualified ids (``S2:B08``) where the sensor is known; :func:`resolve_bands`
            accepts them again, so they can be passed on safely.

    Returns:
        One id per name.

    Raises:
        AmbiguousBandError: An unpadded id (``B5``..``B11``) that Landsat-8 and Sentinel-2 use for different bands,
            with no sensor given and no other name fixing it.
        BandNameError: An unknown sensor, or a qualified name the sensor does not have.
    """
    if isinstance(names, str):
        raise BandNameError(f"expected a sequence of band names, got the string {names!r}; split it first")
    hint = sensor_id(sensor) if sensor is not None else None
    parsed: list[tuple[str | None, str]] = []
    for name in names:
        text = str(name).strip()
        prefix, sep, rest = text.partition(":")
        parsed.append((sensor_id(prefix), rest.strip()) if sep else (hint, text))
    # The list's sensor when nothing is given: the one sensor that names only it has (B02, B8A, B12) point to.
    if hint is None:
        only = {
            s
            for given, n in parsed
            if given is None
            for s in ("L8", "S2")
            if _band_in(s, n) is not None and _band_in({"L8": "S2", "S2": "L8"}[s], n) is None
        }
        only |= {given for given, _ in parsed if given in ("L8", "S2")}
        hint = only.pop() if len(only) == 1 else None
    out = []
    for given, name in parsed:
        chosen = given or hint
        if chosen is not None:
            band = _band_in(chosen, name, explicit=given is not None or sensor is not None)
            if band is None:
                if given is not None or chosen == "S1":
                    raise BandNameError(
                        f"expected a {SENSOR_NAMES[chosen]} band among {list(SENSOR_BANDS[chosen])}, got {name!r}"
                    )
                out.append(name)  # a common name or another sensor's id: unchanged
                continue
            out.append(f"{chosen}:{band}" if qualified else band)
            continue
        l8, s2 = _band_in("L8", name), _band_in("S2", name)
        if l8 is not None and s2 is not None:
            if not _same_meaning(SENSOR_BANDS["L8"][l8], SENSOR_BANDS["S2"][s2]):
                raise AmbiguousBandError(
                    f"band {name!r} is ambiguous without a sensor: {_describe('L8', l8)} or {_describe('S2', s2)}; "
                    f"qualify it ('L8:{name}' or 'S2:{name}') or give the sensor (sensor='L8' / sensor='S2', "
                    "--sensor L8 / --sensor S2 on the command line)"
                )
            out.append(f"L8:{l8}" if qualified else l8)  # B1..B4: the same colour for both sensors
        elif l8 is not None or s2 is not None:
            which = "L8" if l8 is not None else "S2"
            out.append(f"{which}:{l8 or s2}" if qualified else (l8 or s2))
        else:
            out.append(name)
    return tuple(out)


def qualify_bands(names: Sequence[str], sensor: str | None = None) -> tuple[str, ...]:
    """``resolve_bands(names, sensor, qualified=True)``: ids that keep their sensor (``S2:B08``).

    >>> qualify_bands(["B2", "B5"], sensor="L8")
    ('L8:B2', 'L8:B5')
    """
    return resolve_bands(names, sensor, qualified=True)


def sensor_band_wavelength(name: str) -> float | None:
    """Centre wavelength (nm) of a sensor-qualified band (``S2:B08`` -> 842), None for SAR or unknown ids.

    >>> sensor_band_wavelength("S2:B8"), sensor_band_wavelength("L8:B8")
    (842, 590)
    """
    prefix, sep, rest = str(name).partition(":")
    if not sep:
        return None
    sensor = sensor_id(prefix)
    band = _band_in(sensor, rest, explicit=True)
    return None if band is None else SENSOR_BANDS[sensor][band][1]
