"""The demo's settings (:class:`DemoConfig`), its stage type and its error."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geosane_hf.errors import GeoSANEError

STATE_FILE = "demo_state.json"


class DemoError(GeoSANEError, RuntimeError):
    """A demo stage failed; the message names the stage, what was expected and how to resume."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the end-to-end demo (the defaults are ``make demo``).

    Attributes:
        out_dir: Everything goes here (zoo, collection, dataset, train, store, evaluation, results.md).
        quick: The few-minute variant used by the tests (quick zoo, short training, quick experiment).
        zoo_runs: Population training runs (2 checkpoints each); ignored in quick mode (the quick zoo).
        train_config: Training YAML (a file, relative to the repository root or absolute) or a packaged name.
        train_steps: Override of the config's ``num_steps`` (None: the config's).
        train_threads: Intra-op threads of the training process.
        experiment: ``geosane evaluate`` config: a bundled name (``demo``, ``quick``) or a YAML path.
        prompts: Prompt architectures of the generate stage (a larger one and a MobileNet-size one).
        in_chans / num_classes: Target of the generate stage (4 Landsat bands; Statlog's 6 classes).
        repo_id: Name under which the trained GeoSANE model is published.
        cache_dir: Hub cache to publish into (None: ``$HF_HOME/hub``).
        push_to_hub: Also push the trained model to this repo on ``HF_ENDPOINT`` (needs a token).
        workers: Processes for population training and fine-tuning (each with one thread).
        resume: Skip stages (and runs) already done with the same settings.
        progress: tqdm bars.
    """

    out_dir: str | os.PathLike = "runs/demo"
    quick: bool = False
    zoo_runs: int = 40
    train_config: str = "training/configs/small-demo.yaml"  # the packaged small-demo (see package_data)
    train_steps: int | None = None
    train_threads: int = 2
    experiment: str = "demo"
    prompts: tuple[str, ...] = ("tf_efficientnet_lite2", "tf_efficientnet_lite0")
    in_chans: int = 4
    num_classes: int = 6
    repo_id: str = "geosane/base"
    cache_dir: str | None = None
    push_to_hub: str | None = None
    workers: int = 2
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.quick:
            if self.train_steps is None:
                object.__setattr__(self, "train_steps", 30)
            if self.experiment == "demo":
                object.__setattr__(self, "experiment", "quick")
        if self.workers < 1 or self.zoo_runs < 1:
            raise DemoError(f"expected workers >= 1 and zoo_runs >= 1, got {self.workers}, {self.zoo_runs}")

    @property
    def root(self) -> Path:
        return Path(self.out_dir)

    def path(self, name: str) -> Path:
        return self.root / name


@dataclass
class DemoStage:
    """One resumable step of the demo: ``run(config)`` returns a JSON-able summary for ``demo_state.json``."""

    name: str
    description: str
    run: Callable[[DemoConfig], dict[str, Any]]
    settings: Callable[[DemoConfig], dict[str, Any]] = field(default=lambda config: {})

    def fingerprint(self, config: DemoConfig) -> str:
        payload = json.dumps({"stage": self.name, "quick": config.quick, **self.settings(config)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]
