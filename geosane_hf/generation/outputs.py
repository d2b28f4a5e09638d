"""What the pipeline returns: :class:`WeightGenerationOutput` with a typed :class:`GenerationProvenance`.

``out.save_pretrained(dir)`` writes a timm repo (timm's ``save_for_hf``: ``model.safetensors`` + ``config.json``,
plus the model card and ``geosane_generation.json``) through :func:`geosane_hf.hub.save_timm_repo`;
``out.push_to_hub("org/name")`` writes it to a temporary folder and publishes it in one commit
(:func:`geosane_hf.hub.publish_folder`).

Example:
    >>> timer = StepTimer()
    >>> with timer("outer"):
    ...     with timer("inner"):
    ...         pass
    >>> sorted(timer.seconds)  # "outer" does not count "inner" again
    ['inner', 'outer']
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["GenerationOutput", "GenerationProvenance", "StepTimer", "WeightGenerationOutput"]


class StepTimer:
    """Seconds per named step; a step's time excludes the steps timed inside it (no double counting)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._inner: list[float] = []  # time spent in nested steps, per open step

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.seconds.setdefault(name, 0.0)  # steps are listed in the order they start
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self._inner:
                self._inner[-1] += elapsed


@dataclass(eq=False)
class GenerationProvenance(Mapping):
    """The generation record: typed fields, readable as a mapping (``prov["sampler"]``, ``dict(prov)``).

    ``dict(prov)`` / :meth:`to_dict` is the JSON record written to ``geosane_generation.json`` and the card; the
    sampler's own entries (``sampler_record``, e.g. ``"bootstrap"``) are top-level keys of it.

    Attributes:
        geosane_model / geosane_revision / geosane_config: The GeoSANE model (id or folder, Hub revision, sizes).
        prompt / prompt_source: The prompt as given and where its weights came from.
        architecture / in_chans / num_classes / bands: The target.
        band_adaptation / head: What was changed in the stem and the head.
        sampler / seed / noise_scale / num_samples: The sampling request.
        tokenizer: ``{"mode", "token_size", "num_tokens"}``.
        inherited_from_prompt: Tensors the model does not generate (``"geosane"`` tokenizer mode).
        anchors: ``{"ids", "match", "collection"}``.
        calibration: What BatchNorm calibration used (or why it was skipped).
        scores: Selection scores of the returned samples, when scored.
        sampler_record: The sampler's own entries (:meth:`Sampler.record`).
        preprocessing: Per-band standardisation of the calibration images (the timm config's mean/std).
    """

    geosane_model: str
    geosane_revision: str | None
    geosane_config: dict[str, Any]
    prompt: str
    prompt_source: str
    architecture: str
    in_chans: int
    num_classes: int
    bands: list[str] | None
    band_adaptation: dict[str, Any]
    head: str
    sampler: str
    seed: int
    noise_scale: float | None
    num_samples: int
    tokenizer: dict[str, Any]
    inherited_from_prompt: list[str]
    anchors: dict[str, Any]
    calibration: dict[str, Any]
    scores: list[float] | None = None
    sampler_record: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (the sampler's entries after ``scores``, as written since the first release)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sampler_record"}
        preprocessing = out.pop("preprocessing")
        return {**out, **self.sampler_record, "preprocessing": preprocessing}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class WeightGenerationOutput:
    """Output of :class:`~geosane_hf.generation.GeoSANEPipeline` (and of :func:`generate_weights`).

    Attributes:
        state_dicts: One complete state_dict per sample (best first when scored); copies, so training the models
            leaves them unchanged.
        models: The same weights as ready timm models (eval mode, BatchNorm calibrated).
        provenance: The typed generation record (a mapping too: ``out.provenance["sampler"]``).
        timings: Seconds per step (prompt, tokenize, encode, anchors, sample, decode, detokenize, calibrate, score).
        scores: Selection score per sample (``"bootstrap"``), else None.
        samples: Per-sample provenance (decode mode, statistics, anchors and mixing weights, round, score).
    """

    state_dicts: list[dict[str, torch.Tensor]]
    models: list[nn.Module]
    provenance: GenerationProvenance
    timings: dict[str, float]
    scores: list[float] | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)

    def record(self, index: int = 0) -> dict[str, Any]:
        """The JSON record of sample ``index``: the generation record plus that sample's own entries."""
        record = dict(self.provenance)
        if index < len(self.samples):
            record["sample"] = {"index": index, **self.samples[index]}
        return record

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        index: int = 0,
        overwrite: bool = False,
        repo_id: str | None = None,
        license: str = "other",
        license_name: str | None = None,
        license_link: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Writes sample ``index`` as a timm repo (atomically; see :func:`geosane_hf.hub.save_timm_repo`).

        Args:
            save_directory: The folder (must not exist unless ``overwrite``).
            index: Which sample.
            overwrite: Replace an existing folder.
            repo_id: The Hub repo the card's usage snippet names.
            license / license_name / license_link: The card's licence (:func:`geosane_hf.cards.license_metadata`).
            extra: More entries for ``geosane_generation.json``.

        Returns:
            The folder; ``timm.create_model(f"local-dir:{folder}", pretrained=True)`` loads it.
        """
        from geosane_hf.hub import save_timm_repo

        if not 0 <= index < len(self.models):
            raise IndexError(f"expected a sample index in [0, {len(self.models)}), got {index}")
        return save_timm_repo(
            self.models[index],
            save_directory,
            {**self.record(index), **(extra or {})},
            overwrite=overwrite,
            repo_id=repo_id,
            license=license,
            license_name=license_name,
            license_link=license_link,
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        index: int = 0,
        private: bool = False,
        token: str | None = None,
        license: str = "other",
        license_name: str | None = None,
        license_link: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Publishes sample ``index`` to ``repo_id`` in one commit; returns the commit URL.

        Raises:
            HubPublishError: The card was refused or the upload failed (see :func:`geosane_hf.hub.publish_folder`).
        """
        from geosane_hf.hub import publish_folder

        with tempfile.TemporaryDirectory(prefix="geosane-push-") as tmp:
            folder = self.save_pretrained(
                Path(tmp) / "repo",
                index=index,
                repo_id=repo_id,
                license=license,
                license_name=license_name,
                license_link=license_link,
                extra=extra,
            )
            return publish_folder(folder, repo_id, private=private, token=token)


@dataclass
class GenerationOutput(WeightGenerationOutput):
    """What :func:`~geosane_hf.generation.generate_weights` returns: the pipeline's output with the provenance as
    its plain JSON dict (``json.dumps(out.provenance)`` works), as it was before the pipeline existed."""

    provenance: dict[str, Any]

    @classmethod
    def from_output(cls, output: WeightGenerationOutput) -> GenerationOutput:
        return cls(
            output.state_dicts, output.models, dict(output.provenance), output.timings, output.scores, output.samples
        )
