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
        experiment: The comparison each fold runs (a packaged name or a YAML path); its tasks define the folds.
        member_architectures: Architectures fine-tuned on every task of the other sources (packaged ImageNet
            weights needed).
        member_max_train: Train samples per member (None: the whole train split).
        member_epochs: Fine-tuning epochs per member.
        zoo_runs: Population training runs (ignored in quick mode).
        train_config: GeoSANE training YAML (file or packaged name), as the demo's.
        train_steps: Override of its ``num_steps`` (None: the config's; quick: 30).
        train_threads: Intra-op threads of the training process.
        workers: Processes for the zoo and the fine-tuning runs.
        resume: Skip stages (and runs) already done with the same settings.
        progress: tqdm bars.
    """

    out_dir: str | os.PathLike = "runs/experiment"
    quick: bool = False
    experiment: str = "heldout"
    member_architectures: tuple[str, ...] = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")
    member_max_train: int | None = 1000
    member_epochs: int = 6
    zoo_runs: int = 40
    train_config: str = "training/configs/small-demo.yaml"
    train_steps: int | None = None
    train_threads: int = 2
    workers: int = 2
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.quick:
            defaults = {
                "experiment": ("heldout", "heldout-quick"),
                "member_epochs": (6, 1),
                "member_max_train": (1000, 16),
            }
            for name, (full, quick) in defaults.items():
                if getattr(self, name) == full:
                    object.__setattr__(self, name, quick)
            if self.member_architectures == ("tf_efficientnet_lite0", "tf_efficientnet_lite2"):
                object.__setattr__(self, "member_architectures", ("tf_efficientnet_lite0",))
            if self.train_steps is None:
                object.__setattr__(self, "train_steps", 30)
        if self.workers < 1 or self.zoo_runs < 1 or self.member_epochs < 1:
            raise HeldoutError(
                f"expected workers, zoo_runs and member_epochs >= 1, got {self.workers}, {self.zoo_runs}, "
                f"{self.member_epochs}"
            )
        if not self.member_architectures:
            raise HeldoutError("expected at least one member architecture (e.g. tf_efficientnet_lite0), got none")

    @property
    def root(self) -> Path:
        return Path(self.out_dir)

    def path(self, *names: str) -> Path:
        return self.root.joinpath(*names)
