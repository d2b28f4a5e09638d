"""Encode and decode steps: weights <-> latents with a GeoSANE model, and the anchors a sampler draws around.

- :class:`EncodedWeights`: one model in latent space: per-token latents ``[N, L]``, the per-layer statistics of its
  raw tokens (:class:`~geosane_hf.token_norm.LayerStats`, for models trained on per-layer standardised tokens),
  its layout and, when a sampler asks for them, its raw tokenized weights.
- :class:`AnchorSet`: the prompt (always first, id ``"prompt"``) and the collection models a sampler draws around,
  with latents aligned to the prompt's tokens ``[A, N, L]``.
- :class:`LatentCodec`: the encode step (standardise per layer when the model was trained so, ``encode_long``) and
  the decode step (``decode_long``, then back to weight values with the chosen statistics; ``"plain"`` or
  ``"residual"`` decoding: ``base + dec(z') - dec(z_base)`` in the model's token space).
- :func:`load_anchors` / :func:`check_coverage`: the anchor-loading and coverage steps of the pipeline.

Example:
    >>> import timm, torch
    >>> from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
    >>> from geosane_hf.tokenizer import WeightTokenizer
    >>> model = GeoSANEModel(GeoSANEConfig.from_preset("tiny")).eval()
    >>> tok = WeightTokenizer(model.config.token_size).tokenize(timm.create_model("test_resnet").state_dict())
    >>> codec = LatentCodec(model)
    >>> prompt = codec.encode(tok)
    >>> prompt.latents.shape == (tok.num_tokens, model.config.latent_size)
    True
    >>> codec.decode(prompt.latents, prompt).shape == tok.tokens.shape  # [N, T]
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from geosane_hf.generation.errors import GenerationError
from geosane_hf.layer_types import LayerType
from geosane_hf.token_norm import LayerStats, destandardize, layer_stats, standardize
from geosane_hf.tokenizer import TokenizedWeights, WeightLayout, WeightTokenizer

__all__ = [
    "AnchorSet",
    "EncodedWeights",
    "LatentCodec",
    "align_index",
    "check_coverage",
    "load_anchors",
    "same_body",
]


@dataclass
class EncodedWeights:
    """One model in the latent space of a GeoSANE model.

    Attributes:
        id: ``"prompt"`` or the collection id.
        latents: ``[N, L]`` per-token latents (an anchor of another layout: aligned to the prompt's tokens).
        stats: Per-layer statistics of its raw tokens (models with ``token_normalization="per-layer"``), else None.
        layout: Its own :class:`WeightLayout`.
        positions: ``[N, 3]`` int64 token positions on the model's device (its own layout's).
        layer_types: ``[N]`` layer types on the model's device.
        tokens: Its raw tokenized weights, kept only when the sampler asks (``Sampler.keeps_tokens``).
        aligned: True when ``latents``/``stats`` were mapped from another layout onto the prompt's tokens.
        same_body: True when that other layout is the prompt's architecture up to its stem and head (another task's
            bands or classes, :func:`same_body`): its body tokens map one to one.
    """

    id: str
    latents: torch.Tensor | None
    stats: LayerStats | None
    layout: WeightLayout
    positions: torch.Tensor
    layer_types: torch.Tensor
    tokens: TokenizedWeights | None = None
    aligned: bool = False
    same_body: bool = False


@dataclass
class AnchorSet:
    """The models a sampler draws around: the prompt first, then collection models.

    Attributes:
        ids: ``["prompt", collection ids ...]``.
        latents: ``[A, N, L]`` latents on the prompt's tokens.
        members: One :class:`EncodedWeights` per anchor (stats, layout, raw tokens when kept).
        match: How the collection anchors were chosen (same architecture, or nearest layouts).
    """

    ids: list[str]
    latents: torch.Tensor | None
    members: list[EncodedWeights] = field(default_factory=list)
    match: str = "prompt only"

    @classmethod
    def from_prompt(cls, prompt: EncodedWeights) -> AnchorSet:
        return cls(["prompt"], prompt.latents[None], [prompt])

    def __len__(self) -> int:
        return len(self.ids)

    def release_latents(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Frees the latents no longer needed (after sampling); anchors in ``keep`` (residual bases) keep theirs."""
        self.latents = None
        for member in self.members:
            if member.id not in keep:
                member.latents = None

    def stats_of(self, spec: str | Mapping[str, float]) -> LayerStats | None:
        """Per-layer statistics a candidate maps its decoded tokens back with (None: the prompt's).

        Args:
            spec: An anchor id (``"prompt"``: None, the codec's default), or ``{anchor id: weight}``: the weighted
                mean of those anchors' means and standard deviations (an interpolated model's statistics).

        Raises:
            GenerationError: An unknown anchor id, or weights that do not sum to 1.
        """
        if isinstance(spec, str):
            return None if spec == "prompt" else self.member(spec).stats
        total = sum(spec.values())
        if not math.isclose(total, 1.0, rel_tol=1e-6, abs_tol=1e-6):
            raise GenerationError(f"expected statistics weights that sum to 1, got {dict(spec)} (sum {total})")
        parts = [(self.member(i).stats, float(w)) for i, w in spec.items()]
        if any(stats is None for stats, _ in parts):
            return None  # a model without per-layer normalisation: nothing to map back
        mean = sum(w * stats.mean for stats, w in parts)  # [N]
        std = sum(w * stats.std for stats, w in parts)  # [N]
        return LayerStats(mean, std)

    def member(self, anchor_id: str) -> EncodedWeights:
        """The anchor called ``anchor_id``; raises :class:`GenerationError` naming the known ids."""
        for member in self.members:
            if member.id == anchor_id:
                return member
        raise GenerationError(f"expected an anchor id among {self.ids}, got {anchor_id!r}")


class LatentCodec:
    """The encode and decode steps of a GeoSANE model (token space <-> latents), batched in halo windows.

    Args:
        model: A :class:`~geosane_hf.modeling.GeoSANEModel` in eval mode.
        window_batch_size: Windows per encode/decode pass.
        show_progress: Progress bars.
    """

    def __init__(self, model: nn.Module, *, window_batch_size: int = 32, show_progress: bool = False) -> None:
        self.model = model
        self.per_layer = getattr(model.config, "token_normalization", "none") == "per-layer"
        self.long_kwargs = {"batch_size": window_batch_size, "show_progress": show_progress}
        self._base_decoded: dict[str, torch.Tensor] = {}  # residual decoding: dec(z_base) per base id

    @property
    def device(self) -> torch.device:
        return self.model.device

    def encode(self, tok: TokenizedWeights, id: str = "prompt", *, keep_tokens: bool = False) -> EncodedWeights:
        """Encodes a whole model's tokens: ``[N, T]`` -> latents ``[N, L]`` (standardised per layer if trained so).

        A model trained on per-layer standardised tokens (``config.token_normalization == "per-layer"``, see
        :mod:`geosane_hf.token_norm`) encodes every model standardised with its own statistics.
        """
        device = self.device
        stats = layer_stats(tok.tokens, tok.mask, tok.positions) if self.per_layer else None
        valid = (tok.num_real > 0).to(device)  # [N]; padding only ever ends a token
        mask = valid[:, None].expand(-1, tok.tokens.shape[1])  # [N, T] view, no memory
        tokens = tok.tokens
        if stats is not None:
            tokens = standardize(tokens, tok.mask, stats)
        tokens = tokens.to(device, self.model.dtype)  # [N, T]
        positions = tok.positions.to(device).long()  # [N, 3]
        layer_types = tok.layer_types.to(device)  # [N]
        latents = self.model.encode_long(tokens, positions, mask, layer_types, **self.long_kwargs)  # [N, L]
        return EncodedWeights(id, latents, stats, tok.layout, positions, layer_types, tok if keep_tokens else None)

    def decode_tokens(self, latents: torch.Tensor, prompt: EncodedWeights) -> torch.Tensor:
        """``decode_long``: latents ``[N, L]`` -> tokens ``[N, T]`` in the model's token space (CPU float32)."""
        decoded = self.model.decode_long(latents, prompt.positions, prompt.layer_types, **self.long_kwargs)
        return decoded.to("cpu", torch.float32)  # [N, T]

    def decode(
        self,
        latents: torch.Tensor,
        prompt: EncodedWeights,
        *,
        stats: LayerStats | None = None,
        base: EncodedWeights | None = None,
    ) -> torch.Tensor:
        """Decodes latents ``[N, L]`` on the prompt's tokens to weight-space tokens ``[N, T]`` (CPU float32).

        Args:
            latents: ``[N, L]``.
            prompt: The encoded prompt (its layout gives the positions and layer types).
            stats: Statistics to map decoded tokens back with (default: the prompt's; ignored unless the model
                was trained on per-layer standardised tokens).
            base: Residual decoding around this anchor: ``base_tokens + dec(latents) - dec(base.latents)`` in the
                model's token space (the anchor needs its raw tokens and the prompt's layout). None: plain.

        Returns:
            ``[N, T]`` tokens; only the real values matter (detokenize reads nothing else).
        """
        decoded = self.decode_tokens(latents, prompt)  # [N, T]
        if base is not None:
            decoded = decoded + self._residual_base(base, prompt)
        stats = prompt.stats if stats is None else stats
        if self.per_layer and stats is not None:
            decoded = destandardize(decoded, torch.ones((), dtype=torch.bool), stats)
        return decoded

    def _residual_base(self, base: EncodedWeights, prompt: EncodedWeights) -> torch.Tensor:
        """``base_tokens - dec(z_base)`` ``[N, T]`` in the model's token space (cached per base id)."""
        if base.tokens is None or base.aligned or base.layout.fingerprint != prompt.layout.fingerprint:
            raise GenerationError(
                f"expected residual decoding around an anchor with the prompt's layout and its raw tokens kept, got "
                f"{base.id!r} ({'aligned from another layout' if base.aligned else 'no tokens kept'}); set "
                "keeps_tokens = True on the sampler and choose a same-architecture anchor"
            )
        if base.id not in self._base_decoded:
            tokens = base.tokens.tokens.float()
            if self.per_layer and base.stats is not None:
                tokens = standardize(tokens, base.tokens.mask, base.stats)
            self._base_decoded[base.id] = tokens - self.decode_tokens(base.latents, prompt)
        return self._base_decoded[base.id]


# ------------------------------------------------------------------------------------------------------ coverage


def _nearest_hint(collection: Sequence[str]) -> str:
    return (
        " Architectures in the model's collection: " + ", ".join(collection[:5])
        if collection
        else " Pass a collection to list covered architectures, or choose a smaller prompt of the same family."
    )


def check_coverage(
    model: nn.Module, tokenized: TokenizedWeights, tokenizer: WeightTokenizer, known: Sequence[str] = ()
) -> None:
    """Raises :class:`GenerationError` when the model cannot encode the prompt's tokens (size, layer types, length).

    Args:
        model: The GeoSANE model.
        tokenized: The prompt's tokens.
        tokenizer: The tokenizer that made them.
        known: Collection members (``"id (architecture)"``) named in the error as alternatives.
    """
    config = model.config
    if tokenizer.token_size != config.token_size:
        raise GenerationError(
            f"expected the prompt tokenized with token_size = the model's {config.token_size}, got "
            f"{tokenizer.token_size}; use WeightTokenizer(token_size={config.token_size})"
        )
    kinds = getattr(config, "num_layer_types", 0) or 0
    if kinds > 0 and tokenized.layer_types.numel() and int(tokenized.layer_types.max()) >= kinds:
        unknown = sorted({LayerType(int(t)).name for t in tokenized.layer_types.unique().tolist() if t >= kinds})
        raise GenerationError(
            f"expected layer types the model was trained on (ids < {kinds}: "
            f"{[t.name for t in LayerType if t < kinds]}), got {unknown} in the prompt; tokenizer mode 'geosane' "
            "tokenizes weights only, which may avoid them." + _nearest_hint(known)
        )
    if getattr(config, "position_encoding", "") == "learned":
        sizes = config.max_position_embeddings
        largest = tokenized.positions.long().amax(0).tolist()
        if any(found >= size for found, size in zip(largest, sizes, strict=True)):
            raise GenerationError(
                f"expected positions below the model's learned tables {sizes}, got maxima {largest} "
                f"({tokenized.num_tokens} tokens): the prompt is larger than anything the model covers."
                + _nearest_hint(known)
            )


# ------------------------------------------------------------------------------------------------------- anchors


def same_body(source: WeightLayout, target: WeightLayout) -> bool:
    """True when two layouts are one architecture up to the stem and the head (input bands, number of classes).

    Same tokenized layers (keys) in the same order, and only the first and the last of them may differ in shape: a
    population member fine-tuned for another task (other bands, other classes) of the prompt's architecture.

    >>> import timm
    >>> from geosane_hf.tokenizer import WeightTokenizer
    >>> tok = WeightTokenizer(230, mode="full")
    >>> a = tok.tokenize(timm.create_model("test_resnet", in_chans=4, num_classes=6).state_dict()).layout
    >>> b = tok.tokenize(timm.create_model("test_resnet", in_chans=1, num_classes=2).state_dict()).layout
    >>> c = tok.tokenize(timm.create_model("test_vit", num_classes=6).state_dict()).layout
    >>> same_body(a, b), same_body(a, c)
    (True, False)
    """
    if [e.key for e in source.entries] != [e.key for e in target.entries]:
        return False
    pairs = enumerate(zip(source.entries, target.entries, strict=True))
    last = len(target.entries) - 1
    return all(i in (0, last) for i, (s, t) in pairs if s.shape != t.shape)


def align_index(source: WeightLayout, target: WeightLayout) -> torch.Tensor:
    """``[N_target]`` source token index for every target token (anchors of another architecture).

    Each target layer takes the source layer of the same layer type at the nearest relative depth (index /
    number of layers; any type if the source has none of that type), and each of its tokens the source token at the
    same relative position inside that layer. This keeps "a conv token near the stem" close to the anchor's conv
    tokens near its stem; it is an approximation for anchors whose layout differs, never used when an anchor
    of the same architecture exists.
    """
    if not source.entries or not target.entries:
        raise ValueError("expected layouts with tokenized layers, got an empty one")
    depth_s = max(len(source.entries) - 1, 1)
    depth_t = max(len(target.entries) - 1, 1)
    by_type: dict[int, list[tuple[float, int]]] = {}
    for i, entry in enumerate(source.entries):
        by_type.setdefault(entry.layer_type, []).append((i / depth_s, i))
    everything = [(i / depth_s, i) for i in range(len(source.entries))]
    index = torch.empty(target.num_tokens, dtype=torch.long)
    for t, entry in enumerate(target.entries):
        candidates = by_type.get(entry.layer_type, everything)
        rel = t / depth_t
        _, s = min(candidates, key=lambda c: abs(c[0] - rel))
        src = source.entries[s]
        steps = torch.arange(entry.token_count, dtype=torch.float64)
        frac = steps / max(entry.token_count - 1, 1)
        picked = src.token_offset + torch.round(frac * (src.token_count - 1)).long()
        index[entry.token_offset : entry.token_offset + entry.token_count] = picked
    return index


def _tokenized_anchors(
    collection: str | Path, tokenizer: WeightTokenizer, layout: WeightLayout, layer_types: torch.Tensor, limit: int
) -> tuple[list[TokenizedWeights], list[str], str]:
    """Tokenized anchors: same fingerprint when any, else the nearest layouts (token count, then layer types)."""
    from geosane_hf.checkpoints import load_checkpoint
    from geosane_hf.collection.collector import read_collection_index

    root = Path(collection)
    records = read_collection_index(root)
    if not records:
        raise GenerationError(f"expected a collection folder with collection.jsonl and models/, got {root}")
    same, other = [], []
    types = torch.bincount(layer_types.long(), minlength=len(LayerType)).float()
    types = types / types.sum()
    for record in records:
        tok = tokenizer.tokenize(load_checkpoint(root / record.file).state_dict)
        if tok.layout.fingerprint == layout.fingerprint:
            same.append((record.id, tok))
        else:
            hist = torch.bincount(tok.layer_types.long(), minlength=len(LayerType)).float()
            distance = abs(math.log(tok.num_tokens / layout.num_tokens)) + float(
                (hist / hist.sum() - types).abs().sum()
            )
            other.append((distance, record.id, tok))
    if same:
        chosen = same[:limit]
        return [t for _, t in chosen], [i for i, _ in chosen], "same architecture (layout fingerprint)"
    other.sort(key=lambda item: item[0])
    chosen = other[:limit]
    how = "nearest layouts (|log token-count ratio| + layer-type histogram L1), aligned per layer type and depth"
    return [t for _, _, t in chosen], [i for _, i, _ in chosen], how


def load_anchors(
    collection: str | Path,
    prompt: EncodedWeights,
    tokenizer: WeightTokenizer,
    codec: LatentCodec,
    *,
    limit: int,
    keep_tokens: bool = False,
) -> AnchorSet:
    """The anchor-loading step: the prompt plus up to ``limit`` collection models, encoded on the prompt's tokens.

    Models of the prompt's architecture (same layout fingerprint) are preferred; otherwise the nearest layouts are
    aligned per layer type and depth (:func:`align_index`), their statistics too.

    Args:
        collection: Collector output folder (``collection.jsonl`` + ``models/``).
        prompt: The encoded prompt (first anchor).
        tokenizer: The prompt's tokenizer.
        codec: The encode step.
        limit: Collection anchors at most.
        keep_tokens: Keep each anchor's raw tokens (residual decoding needs them).

    Raises:
        GenerationError: An empty or missing collection.
    """
    toks, ids, match = _tokenized_anchors(collection, tokenizer, prompt.layout, prompt.layer_types.cpu(), limit)
    members = [prompt]
    for tok, anchor_id in zip(toks, ids, strict=True):
        encoded = codec.encode(tok, anchor_id, keep_tokens=keep_tokens)
        if tok.layout.fingerprint != prompt.layout.fingerprint:
            index = align_index(tok.layout, prompt.layout)
            encoded.latents = encoded.latents[index.to(encoded.latents.device)]
            if encoded.stats is not None:
                encoded.stats = LayerStats(encoded.stats.mean[index], encoded.stats.std[index])
            encoded.aligned = True
            encoded.same_body = same_body(tok.layout, prompt.layout)
        members.append(encoded)
    del toks
    latents = prompt.latents[None]  # [1, N, L]
    if ids:
        latents = torch.cat([latents, torch.stack([m.latents for m in members[1:]])])  # [A, N, L]
    return AnchorSet(["prompt", *ids], latents, members, match)
