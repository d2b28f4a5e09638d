"""The collection manifest: one YAML entry per checkpoint that GeoSANE learns from.

A manifest names where each checkpoint comes from (a Hub repo, a local file, a file shipped inside an installed
package, a model of our trained zoo, or a timm architecture with random weights), how to rebuild the network it
belongs to, and what it is (bands, sensor, task, training data, license, citation). The collector
(:mod:`geosane_hf.collection.collector`) resolves the entries; this module only parses and validates them.

Example:
    >>> from geosane_hf.collection.manifest import CollectionManifest
    >>> manifest = CollectionManifest.from_dict({
    ...     "name": "demo",
    ...     "models": [{"id": "r18", "source": {"kind": "timm", "name": "resnet18"}, "task": "classification"}],
    ... })
    >>> manifest.entries[0].source.kind
    'timm'
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml

from geosane_hf.errors import GeoSANEError
from geosane_hf.safe_paths import check_name, resolve_inside

SourceKind = Literal["hub", "local", "packaged", "zoo", "timm"]
ArchitectureLibrary = Literal["timm", "torchvision", "geosane"]
Role = Literal["rs-model", "prompt"]
KeyMap = Literal["by-name", "by-order"]

MANIFEST_VERSION = 1


class ManifestError(GeoSANEError, ValueError):
    """A manifest that does not follow the schema; the message names the entry, the field and what is expected."""


@dataclass(frozen=True)
class CheckpointSource:
    """Where one checkpoint comes from.

    Attributes:
        kind: "hub" (``repo_id`` + ``filename`` + optional ``revision``), "local" (``path``, relative to the
            manifest's folder), "packaged" (``package`` + ``path`` inside it), "zoo" (``path`` of a model file of
            a trained population, relative to the manifest), "timm" (``name``: random init, offline).
        repo_id: Hub repository id, for "hub".
        filename: File inside the Hub repository; None lets the loader choose (safetensors preferred).
        revision: A branch, tag or 40-hex commit; pin commits for reproducible collections.
        path: A file path, for "local", "packaged" and "zoo".
        package: An importable package name, for "packaged".
        name: A timm architecture name, for "timm".
    """

    kind: SourceKind
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    path: str | None = None
    package: str | None = None
    name: str | None = None

    _REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {
        "hub": ("repo_id",),
        "local": ("path",),
        "packaged": ("package", "path"),
        "zoo": ("path",),
        "timm": ("name",),
    }

    def validate(self, where: str) -> None:
        if self.kind not in get_args(SourceKind):
            raise ManifestError(
                f"{where}: source.kind must be one of {list(get_args(SourceKind))}, got {self.kind!r}."
            )
        for required in self._REQUIRED[self.kind]:
            if not getattr(self, required):
                raise ManifestError(
                    f"{where}: a {self.kind!r} source needs `{required}`; add it to the entry's source."
                )

    def describe(self) -> str:
        """A short human-readable form, e.g. ``hub:org/name/file.pth@abc123``."""
        if self.kind == "hub":
            target = f"{self.repo_id}/{self.filename}" if self.filename else str(self.repo_id)
            return f"hub:{target}" + (f"@{self.revision[:12]}" if self.revision else "")
        if self.kind == "packaged":
            return f"packaged:{self.package}/{self.path}"
        if self.kind == "timm":
            return f"timm:{self.name}"
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class ArchitectureSpec:
    """How to rebuild the network a checkpoint belongs to, so that it can be loaded strictly.

    Attributes:
        library: "timm" (``timm.create_model``), "torchvision" (``torchvision.models.get_model``) or "geosane"
            (a named builder of :mod:`geosane_hf.collection.architectures`).
        name: The architecture name inside that library.
        kwargs: Keyword arguments for the builder (``num_classes``, ``in_chans``, widths ...).
    """

    library: ArchitectureLibrary
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        if self.library not in get_args(ArchitectureLibrary):
            raise ManifestError(
                f"{where}: architecture.library must be one of {list(get_args(ArchitectureLibrary))}, got {self.library!r}."
            )
        if not isinstance(self.kwargs, dict):
            raise ManifestError(f"{where}: architecture.kwargs must be a mapping, got {type(self.kwargs).__name__}.")


@dataclass(frozen=True)
class ManifestEntry:
    """One checkpoint of the collection.

    Attributes:
        id: Unique slug of the checkpoint within the manifest.
        source: Where the weights come from.
        architecture: How to rebuild the network; None when the weights are collected without a strict check.
        role: "rs-model" (learned from) or "prompt" (an ImageNet start used to prompt generation).
        task: What the checkpoint was trained for (classification, segmentation, foundation, ...).
        in_chans: Number of input bands the first layer expects.
        bands: Band names in input order, when known.
        sensor: Sensor or modality (Landsat-8 OLI, Sentinel-2 MSI, aerial RGB, SAR ...).
        training_data: The dataset the checkpoint was trained on.
        license: License of the weights.
        citation: How to cite the weights.
        family: Model family or paper.
        strip_prefixes: Key prefixes removed from the state_dict, in order (e.g. ``model.``, ``backbone.``).
        select_prefix: Keep only keys starting with this prefix (before stripping), e.g. ``encoder.``.
        num_classes: Number of output classes, when there is a head.
        metrics: Reported metrics, e.g. ``{"test_accuracy": 0.91}``.
        notes: Free text.
        key_map: How the checkpoint's tensors map onto ``architecture``: "by-name" (same keys, after the prefix
            rules) or "by-order" (the same tensors in the same order under other names, e.g. EfficientNet-PyTorch's
            ``_conv_stem.weight`` -> timm's ``conv_stem.weight``: the i-th tensor goes to the architecture's i-th
            key, each pair must agree in shape and in the last name component; the collection stores the
            architecture's names). "by-order" needs an ``architecture``.
    """

    id: str
    source: CheckpointSource
    architecture: ArchitectureSpec | None = None
    role: Role = "rs-model"
    task: str | None = None
    in_chans: int | None = None
    bands: list[str] | None = None
    sensor: str | None = None
    training_data: str | None = None
    license: str | None = None
    citation: str | None = None
    family: str | None = None
    strip_prefixes: list[str] = field(default_factory=list)
    select_prefix: str | None = None
    num_classes: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str | None = None
    key_map: KeyMap = "by-name"


@dataclass
class CollectionManifest:
    """A validated list of checkpoints.

    Attributes:
        name: Name of the collection.
        entries: The checkpoints, in order.
        description: What the collection is for.
        root: Folder that relative ``local``/``zoo`` paths are resolved against (the manifest's folder).
    """

    name: str
    entries: list[ManifestEntry]
    description: str | None = None
    root: Path | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> CollectionManifest:
        """Reads and validates a manifest file; relative paths resolve against its folder."""
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"No manifest at {str(path)!r}: expected a YAML file with `name` and `models`.")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ManifestError(f"{path}: not valid YAML ({error}).") from error
        return cls.from_dict(data, root=path.parent, where=str(path))

    @classmethod
    def from_dict(
        cls, data: Any, root: str | os.PathLike | None = None, where: str = "manifest"
    ) -> CollectionManifest:
        """Validates a manifest given as a mapping (the parsed YAML)."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a mapping with `name` and `models`, got {type(data).__name__}.")
        _reject_unknown(data, {"name", "description", "manifest_version", "models"}, where)
        version = data.get("manifest_version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ManifestError(
                f"{where}: manifest_version {version!r} is not supported; expected {MANIFEST_VERSION}."
            )
        models = data.get("models")
        if not isinstance(models, list) or not models:
            raise ManifestError(f"{where}: `models` must be a non-empty list of entries.")
        entries = [_parse_entry(raw, f"{where}: models[{index}]") for index, raw in enumerate(models)]
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if entry.id in seen:
                raise ManifestError(
                    f"{where}: duplicate id {entry.id!r} in models[{seen[entry.id]}] and models[{index}]."
                )
            seen[entry.id] = index
        return cls(
            name=str(data.get("name") or Path(where).stem),
            entries=entries,
            description=data.get("description"),
            root=Path(root) if root is not None else None,
        )

    def merged(self, other: CollectionManifest, name: str | None = None) -> CollectionManifest:
        """This manifest's entries followed by ``other``'s (ids must stay unique); relative paths keep their root.

        Entries of ``other`` with relative ``local``/``zoo`` paths are made absolute against ``other.root``.

        Raises:
            ManifestError: An id that appears in both manifests.
        """
        mine = {entry.id for entry in self.entries}
        clash = [entry.id for entry in other.entries if entry.id in mine]
        if clash:
            raise ManifestError(
                f"ids {clash[:5]} appear in both {self.name!r} and {other.name!r}; rename them in one manifest."
            )
        absolute = [_absolute_entry(entry, other) for entry in other.entries]
        own = [_absolute_entry(entry, self) for entry in self.entries]
        return CollectionManifest(
            name=name or f"{self.name}+{other.name}",
            entries=own + absolute,
            description=self.description,
            root=self.root,
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain data (the inverse of :meth:`from_dict`), without defaults."""
        return {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            **({"description": self.description} if self.description else {}),
            "models": [_entry_to_dict(entry) for entry in self.entries],
        }

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Writes the manifest atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        os.replace(tmp, path)

    def resolve_path(self, relative: str) -> Path:
        """Resolves a ``local``/``zoo`` source path against the manifest's folder."""
        candidate = Path(relative).expanduser()
        if candidate.is_absolute() or self.root is None:
            return candidate
        return self.root / candidate


def _absolute_entry(entry: ManifestEntry, manifest: CollectionManifest) -> ManifestEntry:
    if entry.source.kind not in ("local", "zoo") or manifest.root is None:
        return entry
    path = str(manifest.resolve_path(entry.source.path).resolve())
    return dataclasses.replace(entry, source=dataclasses.replace(entry.source, path=path))


def manifest_from_zoo(zoo_dir: str | os.PathLike, name: str | None = None) -> CollectionManifest:
    """Turns a trained population (``geosane zoo train --out DIR``: ``index.json`` + ``models/``) into a manifest.

    Every index record becomes an entry with ``source: {kind: zoo, path: models/<id>.safetensors}`` (relative to
    ``zoo_dir``, which becomes the manifest's root), ``architecture: {library: geosane, name, kwargs}`` from the
    record's builder and its kwargs (so the collector loads it strictly), the task, bands, sensor, training data,
    test metrics, and ``license: Apache-2.0`` (the population is trained here, under the project's license).

    Args:
        zoo_dir: The population folder.
        name: Name of the manifest (default ``zoo-<folder name>``).

    Raises:
        ManifestError: No ``index.json`` in ``zoo_dir``, an empty index, or a record without the expected fields.

    Example:
        >>> import tempfile
        >>> manifest_from_zoo(tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ManifestError: no trained population in ...
    """
    from geosane_hf.collection.zoo import INDEX_FILENAME, ZooError, read_zoo_index

    root = Path(zoo_dir)
    index_path = root / INDEX_FILENAME
    if not index_path.is_file():
        raise ManifestError(
            f"no trained population in {str(root)!r}: expected {index_path.name} written by `geosane zoo train --out "
            f"{root}`; train it first or fix --zoo."
        )
    try:
        index = read_zoo_index(root)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{index_path}: expected JSON, got a decoding error ({error}).") from error
    except ZooError as error:  # another format
        raise ManifestError(f"{error}; pass the folder of `geosane zoo train --out`.") from error
    if not index.get("models"):
        raise ManifestError(f"{index_path}: expected a 'geosane-zoo' index with models, got 0 models.")
    models = []
    for number, record in enumerate(index["models"]):
        if isinstance(record, dict) and "file" in record:
            resolve_inside(root, record["file"], f"{index_path}: models[{number}].file")
        try:
            metrics = _flat_metrics(record.get("test_metrics") or {}, "test_")
            entry: dict[str, Any] = {
                "id": record["id"],
                "source": {"kind": "zoo", "path": record["file"]},
                "architecture": {
                    "library": "geosane",
                    "name": record["architecture"],
                    "kwargs": dict(record.get("architecture_kwargs") or {}),
                },
                "task": record.get("task"),
                "in_chans": record.get("in_chans"),
                "bands": record.get("bands"),
                "sensor": record.get("sensor"),
                "training_data": record.get("dataset"),
                "license": "Apache-2.0",
                "citation": "GeoSANE-HF trained population (geosane zoo train)",
                "family": f"geosane-zoo/{record['architecture']}",
                "num_classes": len(record["class_names"]) if record.get("class_names") else None,
                "metrics": metrics,
                "notes": f"run {record.get('run_id')}, epoch {record.get('epoch')}, seed {record.get('seed')}",
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ManifestError(
                f"{index_path}: models[{number}] lacks {error} (expected id, file, architecture); retrain the zoo."
            ) from error
        models.append({k: v for k, v in entry.items() if v is not None})
    return CollectionManifest.from_dict(
        {"name": name or f"zoo-{root.resolve().name}", "models": models}, root=root, where=str(index_path)
    )


def _flat_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"miou": 0.8, "iou": [0.9, 0.7]}`` -> ``{"test_miou": 0.8, "test_iou_0": 0.9, "test_iou_1": 0.7}``."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, (list, tuple)):
            flat.update({f"{prefix}{key}_{i}": float(v) for i, v in enumerate(value)})
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _reject_unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {unknown}; expected only {sorted(allowed)}.")


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _parse_entry(raw: Any, where: str) -> ManifestEntry:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(raw).__name__}.")
    _reject_unknown(raw, _field_names(ManifestEntry), where)
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise ManifestError(f"{where}: every entry needs a non-empty string `id`.")
    check_name(raw["id"], f"{where} id")  # the id names the collected file: models/<id>.safetensors
    where = f"{where} ({raw['id']})"
    source_raw = raw.get("source")
    if not isinstance(source_raw, dict):
        raise ManifestError(f"{where}: `source` must be a mapping with `kind` and its fields.")
    _reject_unknown(source_raw, _field_names(CheckpointSource), f"{where}.source")
    source = CheckpointSource(**source_raw)
    source.validate(where)
    architecture = None
    if raw.get("architecture") is not None:
        arch_raw = raw["architecture"]
        if not isinstance(arch_raw, dict):
            raise ManifestError(f"{where}: `architecture` must be a mapping with `library`, `name`, `kwargs`.")
        _reject_unknown(arch_raw, _field_names(ArchitectureSpec), f"{where}.architecture")
        architecture = ArchitectureSpec(**{"kwargs": {}, **arch_raw})
        architecture.validate(where)
    values = {**raw, "source": source, "architecture": architecture}
    if values.get("key_map", "by-name") not in get_args(KeyMap):
        raise ManifestError(f"{where}: key_map must be one of {list(get_args(KeyMap))}, got {values['key_map']!r}.")
    if values.get("key_map") == "by-order" and architecture is None:
        raise ManifestError(f"{where}: key_map 'by-order' maps onto an architecture; add `architecture`.")
    if values.get("role", "rs-model") not in get_args(Role):
        raise ManifestError(f"{where}: role must be one of {list(get_args(Role))}, got {values['role']!r}.")
    for int_field in ("in_chans", "num_classes"):
        value = values.get(int_field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ManifestError(f"{where}: {int_field} must be a positive integer, got {value!r}.")
    for line_field in ("license", "task", "family", "sensor", "training_data"):  # they go into cards and tables
        value = values.get(line_field)
        if value is not None and (not isinstance(value, str) or "\n" in value or "\r" in value):
            raise ManifestError(f"{where}: {line_field} must be a one-line string, got {value!r}.")
    for list_field in ("bands", "strip_prefixes"):
        value = values.get(list_field)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ManifestError(f"{where}: {list_field} must be a list of strings, got {value!r}.")
    if values.get("bands") and values.get("in_chans") and len(values["bands"]) != values["in_chans"]:
        raise ManifestError(f"{where}: {len(values['bands'])} bands listed but in_chans is {values['in_chans']}.")
    values = {key: value for key, value in values.items() if value is not None}
    return ManifestEntry(**values)


def _entry_to_dict(entry: ManifestEntry) -> dict[str, Any]:
    defaults = ManifestEntry(id="", source=CheckpointSource(kind="timm", name="x"))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(ManifestEntry):
        value = getattr(entry, f.name)
        if f.name not in ("id", "source") and value == getattr(defaults, f.name):
            continue
        if dataclasses.is_dataclass(value):
            value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None and v != {}}
        out[f.name] = value
    return out


def resolve_manifest(name_or_path: str | os.PathLike) -> CollectionManifest:
    """A manifest from a path, or from a bundled name (`offline`, `public_rs`) when no such file exists.

    >>> resolve_manifest("offline").name
    'offline'
    """
    from geosane_hf.package_data import bundled_manifests

    path = Path(name_or_path)
    bundled = bundled_manifests()
    if not path.exists() and str(name_or_path) in bundled:
        return CollectionManifest.from_yaml(bundled[str(name_or_path)])
    if not path.exists():
        raise ManifestError(
            f"no manifest at {str(name_or_path)!r}: expected a YAML file or a bundled name {sorted(bundled)}."
        )
    return CollectionManifest.from_yaml(path)
