"""A collection folder's records: ``collection.jsonl`` (one :class:`CollectedModel` per line, written atomically),
the run's :class:`CollectionReport` and the collector's errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.atomic_io import write_text
from geosane_hf.errors import GeoSANEError
from geosane_hf.safe_paths import check_name, resolve_inside

INDEX_FILENAME = "collection.jsonl"
MODELS_DIRNAME = "models"
REPORT_MARKDOWN = "report.md"
REPORT_JSON = "report.json"


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
