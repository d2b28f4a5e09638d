"""Training data: the tokenized-weights dataset in memory, seeded window sampling across models, two-view batches.

What happens per step (all randomness comes from two ``torch.Generator`` objects whose states are checkpointed):

1. **Which windows.** A *global* sampler (same seed and state on every rank) draws ``batch_size * world_size``
   (model, start) pairs; each rank keeps its own slice, so ranks never train on the same window and the data order
   does not depend on timing. A model is drawn with probability ``w_m / sum(w)``:

   - ``"sqrt"`` (default): ``w_m = sqrt(num_tokens_m)``. A ViT-L (1.3M tokens) is drawn ~100x as often as a 1-token
     CNN, not ~10^6 x as often (``"tokens"``, i.e. uniform over all tokens, where small models vanish) and not as
     often (``"uniform"``, where one huge model's millions of tokens would be seen once in a blue moon each);
   - ``"uniform"``: every model equally often; ``"tokens"``: every token equally often.

   Then a window start uniformly in ``[0, max(0, N_m - W)]``. Models shorter than ``W`` give one window of the whole
   model, padded with all-False-mask tokens (ignored as attention keys and by the loss).
2. **Two views.** Per window, an independent function-preserving permutation per view when the model's
   architecture has permutation rules (needs the whole model's tokens, which we hold in memory), cut to the window
   in token space; then multiplicative noise and token erasing on the collated batch (per rank generator).
   Architectures without rules (U-Nets, unknown) get noise and erasing only.

Memory: every training model's tokens are held once in RAM (``4 * T`` bytes per token; the offline collection,
~110M values, takes ~0.5 GB). A streaming reader for Hub-scale collections is future work (docs/training.md).

Example:
    >>> import torch
    >>> from training.data import WindowSampler
    >>> sampler = WindowSampler([5, 500], window_size=32, weighting="sqrt", seed=0)
    >>> picks = sampler.draw(4)
    >>> [(m, s) for m, s in picks]  # doctest: +SKIP
    [(1, 112), (1, 395), (0, 0), (1, 37)]
    >>> all(s == 0 for m, s in picks if m == 0)
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from geosane_hf.augmentations import TwoViewAugmenter, TwoViewConfig, permutation_spec
from geosane_hf.augmentations.spec import PermutationSpec
from geosane_hf.collection.schema import MODELS_DIR, TOKENS_DIR, ModelsColumn, TokensColumn
from geosane_hf.errors import GeoSANEError
from geosane_hf.token_norm import NORMALIZATIONS, LayerStats, layer_stats, standardize
from geosane_hf.tokenizer import TokenizedWeights, WeightLayout

logger = logging.getLogger(__name__)

__all__ = [
    "ModelTokens",
    "TrainingData",
    "TrainingDataError",
    "WindowBatch",
    "WindowSampler",
    "load_training_data",
    "make_batch",
    "select_holdout",
]

Weighting = Literal["sqrt", "uniform", "tokens"]


class TrainingDataError(GeoSANEError, ValueError):
    """The dataset cannot be trained on (empty, wrong token size, unknown held-out ids ...)."""


@dataclass
class ModelTokens:
    """One model of the dataset, whole, in memory.

    Attributes:
        model_id: the collection id.
        tokenized: its :class:`TokenizedWeights` (tokens ``[N, T]``, mask, positions ``[N, 3]``, layer types, layout).
        spec: its permutation spec, or None (noise and erasing only).
        architecture: the ``architecture`` JSON of the ``models`` table (None when unknown).
        stats: per-layer statistics when the tokens were standardised (``token_normalization="per-layer"``):
            ``tokenized.tokens`` then holds standardised values, ``destandardize(tokens, mask, stats)`` the weights.
    """

    model_id: str
    tokenized: TokenizedWeights
    spec: PermutationSpec | None
    architecture: dict[str, Any] | None = None
    stats: LayerStats | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens of the model."""
        return self.tokenized.num_tokens


@dataclass
class TrainingData:
    """The dataset split into training and held-out models.

    Attributes:
        train: models windows are sampled from.
        holdout: models used only for evaluation (held out by id).
        token_size: values per token ``T``.
        mode: tokenizer mode of the dataset.
        source: the path or Hub id it was loaded from.
        num_models: models in the dataset.
    """

    train: list[ModelTokens]
    holdout: list[ModelTokens]
    token_size: int
    mode: str
    source: str
    num_models: int = 0
    permutable: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and the model card."""
        return {
            "source": self.source,
            "mode": self.mode,
            "token_size": self.token_size,
            "num_models": self.num_models,
            "train_models": len(self.train),
            "train_tokens": int(sum(m.num_tokens for m in self.train)),
            "holdout_models": len(self.holdout),
            "holdout_tokens": int(sum(m.num_tokens for m in self.holdout)),
            "holdout_ids": [m.model_id for m in self.holdout],
            "permutable_models": len(self.permutable),
        }


# ------------------------------------------------------------------------------------------------------ loading


def _load_tables(source: str, cache_dir: str | None) -> tuple[Any, Any]:
    """(tokens, models) as pyarrow tables, from a local dataset folder (read directly) or a Hub id (datasets)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if os.path.isdir(source):
        tables = []
        for sub in (TOKENS_DIR, MODELS_DIR):
            files = (
                sorted(
                    os.path.join(source, sub, name)
                    for name in os.listdir(os.path.join(source, sub))
                    if name.startswith("train-") and name.endswith(".parquet")
                )
                if os.path.isdir(os.path.join(source, sub))
                else []
            )
            if not files:
                raise TrainingDataError(
                    f"expected a tokenized-weights dataset folder with {sub}/train-*.parquet (written by "
                    f"`geosane build-dataset`), got none in {source!r}; build one with `geosane build-dataset`."
                )
            tables.append(pa.concat_tables([pq.read_table(f) for f in files]))
        return tables[0], tables[1]
    if os.path.exists(source):
        raise TrainingDataError(f"expected a dataset folder or a Hub dataset id, got the file {source!r}.")
    import datasets

    tokens = datasets.load_dataset(source, TOKENS_DIR, split="train", cache_dir=cache_dir)  # the config names
    models = datasets.load_dataset(source, MODELS_DIR, split="train", cache_dir=cache_dir)
    return tokens.data.table, models.data.table


def _spec_for(architecture: dict[str, Any] | None, model_id: str, layout: WeightLayout) -> PermutationSpec | None:
    """The permutation spec of a model's architecture, or None (with a debug log saying why)."""
    if not architecture or not architecture.get("name"):
        logger.debug("model %s: no architecture recorded, noise and erasing only", model_id)
        return None
    try:
        spec = permutation_spec(architecture["name"], **(architecture.get("kwargs") or {}))
    except (ValueError, TypeError, KeyError, RuntimeError) as error:  # unsupported or unbuildable architecture
        logger.info("model %s (%s): no permutations (%s); noise and erasing only", model_id, architecture, error)
        return None
    shapes = getattr(spec, "shapes", None)
    if shapes is not None:
        entries = {entry.key: tuple(entry.shape) for entry in layout.entries}
        if any(key in entries and tuple(shape) != entries[key] for key, shape in dict(shapes).items()):
            logger.info("model %s: permutation spec shapes differ from the layout; noise and erasing only", model_id)
            return None
    return spec


def select_holdout(model_ids: Sequence[str], holdout_ids: Sequence[str] | None, holdout_every: int) -> set[str]:
    """The held-out ids: the given ones (all must exist), else every ``holdout_every``-th id in sorted order.

    Example:
        >>> sorted(select_holdout(["a", "b", "c", "d"], None, 2))
        ['b', 'd']
    """
    known = set(model_ids)
    if holdout_ids:
        unknown = sorted(set(holdout_ids) - known)
        if unknown:
            raise TrainingDataError(
                f"expected holdout_ids from the dataset's models, got unknown ids {unknown}; known ids start with "
                f"{sorted(known)[:8]}."
            )
        return set(holdout_ids)
    if holdout_every <= 0:
        return set()
    ordered = sorted(known)
    return {mid for i, mid in enumerate(ordered) if (i + 1) % holdout_every == 0}


def load_training_data(
    source: str,
    *,
    token_size: int,
    holdout_ids: Sequence[str] | None = None,
    holdout_every: int = 0,
    permute: bool = True,
    cache_dir: str | None = None,
    normalization: str = "none",
) -> TrainingData:
    """Loads the tokenized-weights dataset (``geosane build-dataset``) and splits it by model id.

    Args:
        source: a dataset folder or a Hub dataset id.
        token_size: the model's token size; the dataset's must match.
        holdout_ids: ids to hold out for evaluation (default: every ``holdout_every``-th id).
        holdout_every: see ``holdout_ids``; 0 holds out nothing.
        permute: look up permutation specs (False: noise and erasing only, for every model).
        cache_dir: ``datasets`` cache for Hub ids.
        normalization: ``"none"`` (raw weights) or ``"per-layer"`` (each model's layers standardised with that
            model's own statistics, see :mod:`geosane_hf.token_norm`; the model's ``token_normalization``).

    Returns:
        A :class:`TrainingData`.

    Raises:
        TrainingDataError: empty dataset, a token size different from the model's, unknown held-out ids,
            no training model left.
    """
    if normalization not in NORMALIZATIONS:
        raise TrainingDataError(f"expected token normalization in {NORMALIZATIONS}, got {normalization!r}")
    tokens_table, models_table = _load_tables(source, cache_dir)
    models = models_table.to_pylist()
    if not models or tokens_table.num_rows == 0:
        raise TrainingDataError(
            f"expected a dataset with at least one model, got {len(models)} models and {tokens_table.num_rows} token "
            f"rows in {source!r}; collect models first (`geosane collect`, `geosane build-dataset`)."
        )
    sizes = sorted({int(m[ModelsColumn.TOKEN_SIZE]) for m in models})
    if sizes != [token_size]:
        raise TrainingDataError(
            f"expected dataset token size {token_size} (the model's token_size), got {sizes} in {source!r}; rebuild the "
            f"dataset with `geosane build-dataset --token-size {token_size}` or pick a model with that token size."
        )
    held = select_holdout([m[ModelsColumn.MODEL_ID] for m in models], holdout_ids, holdout_every)

    # One pass over the token rows: group by model, order by offset.
    column = tokens_table.column
    ids = column(TokensColumn.MODEL_ID).to_pylist()
    offsets = column(TokensColumn.TOKEN_OFFSET).to_numpy()
    counts = column(TokensColumn.NUM_TOKENS).to_numpy()
    flat_tokens = column(TokensColumn.TOKENS).combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)
    flat_real = column(TokensColumn.NUM_REAL).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    flat_pos = column(TokensColumn.POSITIONS).combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False)
    flat_types = column(TokensColumn.LAYER_TYPES).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    row_start = np.concatenate([[0], np.cumsum(counts)])
    rows_of: dict[str, list[int]] = {}
    for row, mid in enumerate(ids):
        rows_of.setdefault(mid, []).append(row)

    train, holdout, permutable = [], [], []
    arange_t = np.arange(token_size)
    for entry in sorted(models, key=lambda m: m[ModelsColumn.MODEL_ID]):
        mid = entry[ModelsColumn.MODEL_ID]
        rows = sorted(rows_of.get(mid, []), key=lambda r: offsets[r])
        if not rows:
            raise TrainingDataError(f"expected token rows for model {mid!r}, got none; rebuild the dataset.")
        index = np.concatenate([np.arange(row_start[r], row_start[r + 1]) for r in rows])  # token indices
        n = len(index)
        if n != int(entry[ModelsColumn.NUM_TOKENS]):
            raise TrainingDataError(
                f"expected {entry[ModelsColumn.NUM_TOKENS]} tokens for model {mid!r} (models table), got {n}; rebuild the dataset."
            )
        values = flat_tokens.reshape(-1, token_size)[index]  # [N, T]
        real = flat_real[index].astype(np.int64)  # [N]
        if not np.isfinite(values).all():  # one NaN would make every loss NaN and the saved model all NaN
            bad = int((~np.isfinite(values)).sum())
            raise TrainingDataError(
                f"expected finite token values, got {bad} NaN/Inf values in model {mid!r}; rebuild the dataset with "
                "`geosane build-dataset` (it rejects NaN/Inf weights) or hold the model out of the collection."
            )
        tokenized = TokenizedWeights(
            tokens=torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
            mask=torch.from_numpy(arange_t[None, :] < real[:, None]),
            positions=torch.from_numpy(flat_pos.reshape(-1, 3)[index].astype(np.int64)),
            layer_types=torch.from_numpy(flat_types[index].astype(np.int64)),
            layout=WeightLayout.from_dict(json.loads(entry[ModelsColumn.LAYOUT])),
        )
        stats = None
        if normalization == "per-layer":
            stats = layer_stats(tokenized.tokens, tokenized.mask, tokenized.positions)
            tokenized.tokens = standardize(tokenized.tokens, tokenized.mask, stats)
        architecture = json.loads(entry[ModelsColumn.ARCHITECTURE]) if entry.get(ModelsColumn.ARCHITECTURE) else None
        spec = _spec_for(architecture, mid, tokenized.layout) if permute else None
        if spec is not None:
            permutable.append(mid)
        (holdout if mid in held else train).append(ModelTokens(mid, tokenized, spec, architecture, stats))
    if not train:
        raise TrainingDataError(
            f"expected at least one training model after holding out {sorted(held)}, got none; hold out fewer models."
        )
    return TrainingData(
        train=train,
        holdout=holdout,
        token_size=token_size,
        mode=str(models[0]["mode"]),
        source=source,
        num_models=len(models),
        permutable=permutable,
    )


# ----------------------------------------------------------------------------------------------------- sampling


class WindowSampler:
    """Draws (model index, window start) pairs from a seeded generator; its state is checkpointable.

    Args:
        num_tokens: tokens per model.
        window_size: window length ``W``.
        weighting: ``"sqrt"``, ``"uniform"`` or ``"tokens"`` (module docstring).
        seed: generator seed.
    """

    def __init__(self, num_tokens: Sequence[int], window_size: int, weighting: Weighting = "sqrt", seed: int = 0):
        if not num_tokens:
            raise TrainingDataError("expected at least one model to sample windows from, got none.")
        if weighting not in ("sqrt", "uniform", "tokens"):
            raise TrainingDataError(f"expected weighting 'sqrt', 'uniform' or 'tokens', got {weighting!r}.")
        self.num_tokens = torch.tensor([int(n) for n in num_tokens], dtype=torch.float64)
        power = {"sqrt": 0.5, "uniform": 0.0, "tokens": 1.0}[weighting]
        self.weights = self.num_tokens**power / (self.num_tokens**power).sum()  # [M]
        self.window_size = window_size
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, count: int) -> list[tuple[int, int]]:
        """``count`` (model index, start) pairs."""
        models = torch.multinomial(self.weights, count, replacement=True, generator=self.generator)  # [count]
        spans = (self.num_tokens[models] - self.window_size).clamp(min=0) + 1  # [count] number of valid starts
        starts = (torch.rand(count, generator=self.generator, dtype=torch.float64) * spans).floor().long()
        return list(zip(models.tolist(), starts.tolist(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable generator state."""
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


def expected_share(num_tokens: Sequence[int], weighting: Weighting) -> list[float]:
    """Share of windows each model gets under a weighting (for docs and logs).

    Example:
        >>> [round(s, 3) for s in expected_share([1, 100], "sqrt")]
        [0.091, 0.909]
    """
    power = {"sqrt": 0.5, "uniform": 0.0, "tokens": 1.0}[weighting]
    raw = [float(n) ** power for n in num_tokens]
    return [r / sum(raw) for r in raw]


# ---------------------------------------------------------------------------------------------------- batching


@dataclass
class WindowBatch:
    """A collated batch of two-view windows (``B`` windows of ``W`` tokens of ``T`` values).

    Attributes:
        tokens / tokens_2: ``[B, W, T]`` the two corrupted views (model inputs).
        labels / labels_2: ``[B, W, T]`` the clean (permuted) targets of each view.
        mask: ``[B, W, T]`` bool, True on real values (padding tokens all False).
        positions: ``[B, W, 3]`` int64.
        layer_types: ``[B, W]`` int64.
        num_real_tokens: tokens that are not padding (for throughput).
    """

    tokens: torch.Tensor
    tokens_2: torch.Tensor
    labels: torch.Tensor
    labels_2: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    layer_types: torch.Tensor
    num_real_tokens: int

    def to(self, device: torch.device) -> WindowBatch:
        """The batch on ``device``."""
        moved = {name: getattr(self, name).to(device) for name in self._tensors()}
        return WindowBatch(**moved, num_real_tokens=self.num_real_tokens)

    @staticmethod
    def _tensors() -> tuple[str, ...]:
        return ("tokens", "tokens_2", "labels", "labels_2", "mask", "positions", "layer_types")

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``GeoSANEModel.forward``."""
        return {
            "tokens": self.tokens,
            "positions": self.positions,
            "mask": self.mask,
            "layer_types": self.layer_types,
            "tokens_2": self.tokens_2,
            "labels": self.labels,
            "labels_2": self.labels_2,
        }


def make_augmenters(config: TwoViewConfig) -> tuple[TwoViewAugmenter, TwoViewAugmenter]:
    """(permuting, non-permuting) augmenters with the same noise and erasing settings."""
    plain = TwoViewConfig(**{**config.__dict__, "permute": False})
    return TwoViewAugmenter(config), TwoViewAugmenter(plain)


def make_batch(
    models: Sequence[ModelTokens],
    picks: Sequence[tuple[int, int]],
    window_size: int,
    augmenters: tuple[TwoViewAugmenter, TwoViewAugmenter],
    generator: torch.Generator,
) -> WindowBatch:
    """Cuts, permutes (where supported), collates, then noises and erases a batch of windows.

    Args:
        models: the training models.
        picks: (model index, start) per window, from :meth:`WindowSampler.draw`.
        window_size: ``W``; shorter windows are padded.
        augmenters: from :func:`make_augmenters`.
        generator: this rank's augmentation generator.

    Returns:
        A :class:`WindowBatch`.
    """
    permuting, plain = augmenters
    batch = len(picks)
    T = models[0].tokenized.tokens.shape[1]
    labels = torch.zeros(2, batch, window_size, T)  # [2, B, W, T]
    mask = torch.zeros(batch, window_size, T, dtype=torch.bool)  # [B, W, T]
    positions = torch.zeros(batch, window_size, 3, dtype=torch.long)  # [B, W, 3]
    layer_types = torch.zeros(batch, window_size, dtype=torch.long)  # [B, W]
    for b, (m, start) in enumerate(picks):
        source = models[m]
        augment = permuting if (source.spec is not None and permuting.config.permute) else plain
        views = augment(
            source.tokenized, spec=source.spec, start=start, length=window_size, generator=generator, corrupt=False
        )
        w = views.mask.shape[0]
        labels[0, b, :w] = views.view1.target
        labels[1, b, :w] = views.view2.target
        mask[b, :w] = views.mask
        positions[b, :w] = views.positions
        layer_types[b, :w] = views.layer_types
    view1 = plain.corrupt(labels[0], mask, generator)  # noise + erasing on the whole batch at once
    view2 = plain.corrupt(labels[1], mask, generator)
    return WindowBatch(
        tokens=view1.tokens,
        tokens_2=view2.tokens,
        labels=labels[0],
        labels_2=labels[1],
        mask=mask,
        positions=positions,
        layer_types=layer_types,
        num_real_tokens=int(mask.any(-1).sum()),
    )


def num_windows_per_epoch(models: Sequence[ModelTokens], window_size: int) -> int:
    """Non-overlapping windows needed to cover the training models once (a reference for ``num_steps``)."""
    return sum(max(1, math.ceil(m.num_tokens / window_size)) for m in models)
