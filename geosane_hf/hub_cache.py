"""Publish a model folder into the local Hugging Face Hub cache, so ``from_pretrained("org/name")`` finds it offline.

The offline demo has no Hub to push to, yet users expect ``AutoModel.from_pretrained("geosane/base")`` to work
afterwards on that machine. This module writes the folder into the cache exactly as ``huggingface_hub`` lays out a
download (``models--org--name/blobs/<etag>``, ``snapshots/<commit>/<file>`` -> relative symlinks to the blobs,
``refs/<revision>`` = the commit), so every offline resolution path (``hf_hub_download``, ``snapshot_download``,
``cached_file`` in transformers, ``scan_cache_dir``) treats it as a downloaded repository.

Blob names follow the Hub: the sha256 of the content for LFS-sized files (``*.safetensors`` and anything >= 10 MB),
the git blob sha1 otherwise. The commit id is a sha1 over the sorted (path, blob) pairs, so publishing the same
folder twice gives the same commit. Writes are atomic: blobs and the snapshot are written under temporary names
and renamed; ``refs/<revision>`` is replaced last, so an interrupted publish leaves the previous revision intact.

Example:
    >>> import tempfile, pathlib
    >>> src, cache = pathlib.Path(tempfile.mkdtemp()), tempfile.mkdtemp()
    >>> _ = (src / "config.json").write_text('{"model_type": "geosane"}')
    >>> commit = publish_to_cache(src, "geosane/doc-example", cache_dir=cache)
    >>> from huggingface_hub import try_to_load_from_cache
    >>> pathlib.Path(try_to_load_from_cache("geosane/doc-example", "config.json", cache_dir=cache)).read_text()
    '{"model_type": "geosane"}'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from geosane_hf.atomic_io import copy_file
from geosane_hf.errors import GeoSANEError

__all__ = ["CachePublishError", "cache_repo_folder", "publish_to_cache"]

LFS_THRESHOLD = 10 * 2**20  # the Hub stores files above this (and every *.safetensors) in LFS
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".parquet", ".png")


class CachePublishError(GeoSANEError, ValueError):
    """The folder cannot be published into the cache (missing, empty, bad repo id)."""


def _blob_id(path: Path) -> str:
    """The Hub's etag of a file: sha256 for LFS files, the git blob sha1 otherwise."""
    size = path.stat().st_size
    lfs = size >= LFS_THRESHOLD or path.suffix in LFS_SUFFIXES
    digest = hashlib.sha256() if lfs else hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_repo_folder(repo_id: str, repo_type: str = "model", cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder of a repository (``<cache>/models--org--name``)."""
    from huggingface_hub import constants

    if repo_id.count("/") != 1 or any(not part or part in {".", ".."} for part in repo_id.split("/")):
        raise CachePublishError(f"expected a repo id 'org/name', got {repo_id!r}")
    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    return root / f"{repo_type}s--{repo_id.replace('/', '--')}"


def publish_to_cache(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    cache_dir: str | os.PathLike | None = None,
) -> str:
    """Writes every file of ``folder`` into the local Hub cache as revision ``revision`` of ``repo_id``.

    Args:
        folder: A model folder (e.g. the output of ``save_pretrained``).
        repo_id: ``org/name`` under which ``from_pretrained`` will find it.
        repo_type: ``"model"``, ``"dataset"`` or ``"space"``.
        revision: The ref to point at the new snapshot.
        cache_dir: The hub cache (default: ``huggingface_hub.constants.HF_HUB_CACHE``, i.e. ``$HF_HOME/hub``).

    Returns:
        The (deterministic) commit id of the snapshot.

    Raises:
        CachePublishError: ``folder`` is missing or empty, or ``repo_id`` is not ``org/name``.
    """
    repo = cache_repo_folder(repo_id, repo_type, cache_dir)  # checks the id before anything is read or written
    source = Path(folder)
    if not source.is_dir():
        raise CachePublishError(f"expected a model folder to publish, got {source} (not a directory)")
    files = sorted(p for p in source.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:]))
    if not files:
        raise CachePublishError(f"expected files in {source} to publish as {repo_id}, found none")
    blobs_dir, snapshots_dir, refs_dir = repo / "blobs", repo / "snapshots", repo / "refs"
    for d in (blobs_dir, snapshots_dir, refs_dir):
        d.mkdir(parents=True, exist_ok=True)

    entries = [(p.relative_to(source).as_posix(), p, _blob_id(p)) for p in files]
    commit = hashlib.sha1("\n".join(f"{rel} {blob}" for rel, _, blob in entries).encode()).hexdigest()
    for _, path, blob in entries:
        if not (blobs_dir / blob).is_file():
            copy_file(path, blobs_dir / blob)

    snapshot = snapshots_dir / commit
    if not snapshot.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit}.", dir=snapshots_dir))
        try:
            for rel, _, blob in entries:
                link = tmp / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                # Relative to the final snapshot folder (same depth as tmp), as huggingface_hub does.
                link.symlink_to(os.path.relpath(blobs_dir / blob, (snapshot / rel).parent))
            os.replace(tmp, snapshot)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    ref = refs_dir / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_ref = tempfile.mkstemp(prefix=f".{ref.name}.", dir=ref.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(commit)
    os.replace(tmp_ref, ref)
    return commit
