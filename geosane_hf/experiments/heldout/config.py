"""The settings of the leave-one-source-out experiment (:class:`HeldoutConfig`) and its error."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from geosane_hf.errors import GeoSANEError

__all__ = ["STATE_FILE", "HeldoutConfig", "HeldoutError"]

STATE_FILE = "experiment_state.json"


class HeldoutError(GeoSANEError, RuntimeError):
    """A stage of the experiment failed; the message names the stage, what was expected and how to resume."""


@dataclass(frozen=True)
class HeldoutConfig:
    """Settings of ``geosane experiment`` (the defaults are ``make experiment``).

    Attributes:
        out_dir: Everything goes here (zoo, members, one folder per fold, experiment.md / experiment.json).
        quick: The few-minute variant the tests run (quick zoo, 30 training steps, tiny members, one fold).
        experiment: The comparison each fold runs (a packaged name or a YAML path); its tasks define the folds
            (default ``heldout``; quick: ``heldout-quick``).
        member_architectures: Architectures fine-tuned on every task of the other sources (packaged ImageNet
            weights needed; default Lite0 and Lite2, quick: Lite0).
        member_max_train: Train samples per member, at most (default 1,000; quick: 16).
        member_epochs: Fine-tuning epochs per member (default 6; quick: 1).
        zoo_runs: Population training runs (ignored in quick mode).
        train_config: GeoSANE training YAML (file or packaged name), as the demo's.
        train_steps: Override of its ``num_steps`` (default: the config's; quick: 30).
        train_threads: Intra-op threads of the training process.
        workers: Processes for the zoo and the fine-tuning runs.
        resume: Skip stages (and runs) already done with the same settings.
        progress: tqdm bars.
    """

    out_dir: str | os.PathLike = "runs/experiment"
    quick: bool = False
    experiment: str | None = None
    member_architectures: tuple[str, ...] | None = None
    member_max_train: int | None = None
    member_epochs: int | None = None
    zoo_runs: int = 40
    train_config: str = "training/configs/small-demo.yaml"
    train_steps: int | None = None
    train_threads: int = 2
    workers: int = 2
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        # None: the mode's default (full run / quick); a value that is set is kept in both modes
        defaults = {
            "experiment": ("heldout", "heldout-quick"),
            "member_architectures": (("tf_efficientnet_lite0", "tf_efficientnet_lite2"), ("tf_efficientnet_lite0",)),
            "member_max_train": (1000, 16),
            "member_epochs": (6, 1),
            "train_steps": (None, 30),
        }
        for name, (full, quick) in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, quick if self.quick else full)
        object.__setattr__(self, "member_architectures", tuple(self.member_architectures))
        counts = {
            "workers": self.workers,
            "zoo_runs": self.zoo_runs,
            "member_epochs": self.member_epochs,
            "member_max_train": self.member_max_train,
            "train_steps": self.train_steps or 1,
        }
        bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise HeldoutError(f"expected integers >= 1 for {sorted(bad)}, got {bad}")
        if not self.member_architectures:
            raise HeldoutError("expected at least one member architecture (e.g. tf_efficientnet_lite0), got none")

    @property
    def root(self) -> Path:
        return Path(self.out_dir)

    def path(self, *names: str) -> Path:
        return self.root.joinpath(*names)
