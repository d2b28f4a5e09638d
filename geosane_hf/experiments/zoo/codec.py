"""The zoo experiment's view of GeoSANE: which members it saw (held-out ids, dataset), the layout, the codec."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geosane_hf.experiments.zoo.config import ZooExperimentConfig, ZooExperimentError
from geosane_hf.generation.latents import EncodedWeights
from geosane_hf.token_norm import LayerStats

__all__ = ["ZooCodec", "read_holdout_ids"]


def read_holdout_ids(model_dir: str | os.PathLike) -> list[str] | None:
    """GeoSANE's held-out model ids from a trained model folder's card (``README.md`` row "held-out ids").

    Returns None when the folder has no card or the card has no such row (unknown), [] for "none".

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "README.md").write_text("| held-out ids | `a-1`, `b-2` |\\n")
        >>> read_holdout_ids(d), read_holdout_ids(tempfile.mkdtemp())
        (['a-1', 'b-2'], None)
    """
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return None
    for line in card.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] == "held-out ids":
            return re.findall(r"`([^`]+)`", cells[1])
    return None


def _find_dataset(model_dir: Path | None) -> str | None:
    """The dataset a training run used, from ``<run>/checkpoints/*/trainer_state.json`` next to ``<run>/model``."""
    if model_dir is None:
        return None
    for state in sorted((model_dir.parent / "checkpoints").glob("checkpoint_*/trainer_state.json"), reverse=True):
        with contextlib.suppress(OSError, ValueError):
            dataset = json.loads(state.read_text()).get("dataset")
            if dataset and Path(dataset).is_dir():
                return str(dataset)
    return None


def _dataset_models(dataset_dir: str, check: Sequence[str]) -> tuple[set[str], str | None, dict[str, str]]:
    """(model ids, tokenizer mode, {id: layout fingerprint} for the ids in `check`) of a build-dataset folder."""
    import pyarrow.parquet as pq

    files = sorted(glob.glob(str(Path(dataset_dir) / "models" / "*.parquet")))
    if not files:
        raise ZooExperimentError(
            f"expected a tokenized dataset (models/*.parquet from `geosane build-dataset`) in {dataset_dir}, got none"
        )
    table = pq.read_table(files, columns=["model_id", "mode"])
    ids = table.column("model_id").to_pylist()
    modes = sorted(set(table.column("mode").to_pylist()))
    wanted = sorted(set(check) & set(ids))
    fingerprints = {}
    if wanted:
        layouts = pq.read_table(files, columns=["model_id", "layout"], filters=[("model_id", "in", wanted)])
        columns = layouts.column("model_id").to_pylist(), layouts.column("layout").to_pylist()
        for model_id, layout in zip(*columns, strict=True):
            fingerprints[model_id] = json.loads(layout)["fingerprint"]
    return set(ids), modes[0] if len(modes) == 1 else None, fingerprints


def _select_layout(
    records: list[dict[str, Any]], config: ZooExperimentConfig
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    same_arch = [r for r in records if r["architecture"] == config.architecture]
    if config.checkpoints == "final":
        same_arch = [r for r in same_arch if r.get("is_final")]
    if not same_arch:
        known = sorted({r["architecture"] for r in records})
        raise ZooExperimentError(
            f"expected population members of architecture {config.architecture!r} ({config.checkpoints} "
            f"checkpoints), got none; the zoo has {known}"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in same_arch:
        groups.setdefault(json.dumps(record["architecture_kwargs"], sort_keys=True), []).append(record)
    if config.architecture_kwargs is not None:
        wanted = dict(config.architecture_kwargs)
        matching = [k for k in sorted(groups) if all(json.loads(k).get(n) == v for n, v in wanted.items())]
        if not matching:
            raise ZooExperimentError(
                f"expected members with architecture_kwargs {wanted}, got none; layouts of {config.architecture}: "
                f"{sorted(groups)}"
            )
    else:
        matching = sorted(groups)
    key = max(matching, key=lambda k: len(groups[k]))  # the most members; ties: first in sorted order
    return json.loads(key), sorted(groups[key], key=lambda r: r["id"])


class ZooCodec:
    """Tokenize -> encode -> decode -> detokenize for one layout of the zoo (the generation's :class:`LatentCodec`).

    Every member is encoded standardised with its own per-layer statistics (models trained with
    ``token_normalization="per-layer"``) and decoded tokens are mapped back with the statistics of the model they
    stand for: a reconstruction with its own member's, an interpolated model with the same mixture of its two ends'
    (never the population's average, which would move every decoded model away from its anchor and inflate the
    distance matched noise is given).
    """

    def __init__(self, model: nn.Module, template: Mapping[str, torch.Tensor], mode: str, batch_size: int) -> None:
        from geosane_hf.generation.latents import LatentCodec
        from geosane_hf.tokenizer import WeightTokenizer

        self.tokenizer = WeightTokenizer(model.config.token_size, mode=mode)
        self.template = {k: v.clone() for k, v in template.items()}
        tokenized = self.tokenizer.tokenize(self.template)
        kinds = int(getattr(model.config, "num_layer_types", 0) or 0)
        if kinds and int(tokenized.layer_types.max()) >= kinds:
            raise ZooExperimentError(
                f"expected layer types below the model's num_layer_types={kinds}, got "
                f"{int(tokenized.layer_types.max())}; this GeoSANE model was not trained on this layout"
            )
        self.layout = tokenized.layout
        self.mask = tokenized.mask  # [N, T]
        self.latent = LatentCodec(model, window_batch_size=batch_size)

    @property
    def num_tokens(self) -> int:
        return int(self.layout.num_tokens)

    def encode(self, state_dict: Mapping[str, torch.Tensor], member_id: str) -> EncodedWeights:
        """The member in latent space (latents ``[N, L]``, its own per-layer statistics)."""
        tok = self.tokenizer.tokenize(state_dict)
        if tok.layout.fingerprint != self.layout.fingerprint:
            raise ZooExperimentError("expected every member of the layout to tokenize to the same layout, got another")
        encoded = self.latent.encode(tok, member_id)
        encoded.latents = encoded.latents.float().cpu()
        return encoded

    def decode(self, latents: torch.Tensor, like: EncodedWeights, stats: LayerStats | None = None) -> dict:
        """A state_dict from latents ``[N, L]``, mapped back with ``stats`` (default: ``like``'s own)."""
        device, dtype = self.latent.device, self.latent.model.dtype
        decoded = self.latent.decode(latents.to(device, dtype), like, stats=stats)  # [N, T]
        sd = self.tokenizer.detokenize(torch.where(self.mask, decoded, 0.0), self.layout)
        for key in self.layout.missing_keys:  # "geosane" mode: BN statistics are not generated
            sd[key] = self.template[key].clone()
        return {k: sd[k] for k in self.template}
