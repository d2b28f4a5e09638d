"""The zoo's population plan: which networks to train, with hyperparameters drawn from fixed grids (:data:`PRESETS`).

A *run* trains one network; its hyperparameters are drawn with a seed derived from the population seed and the run
index, so the plan for run ``i`` never depends on how many runs are requested (:func:`plan_population`). Each run
saves ``checkpoints_per_run`` checkpoints at evenly spaced epochs (:func:`checkpoint_epochs`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from geosane_hf.errors import GeoSANEError
from geosane_hf.imagery import CLOUD_CLASS_NAMES, STATLOG_CLASS_NAMES
from geosane_hf.task_data import CLOUD_BANDS

DEFAULT_NUM_MODELS = 150
DEFAULT_CHECKPOINTS_PER_RUN = 2
QUICK_NUM_MODELS = 6


class ZooError(GeoSANEError, ValueError):
    """Bad zoo settings or an output folder that holds another population."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of the population (it saves one model per entry of `save_epochs`)."""

    run_id: str  # "<architecture>-<index:04d>"
    index: int  # position in the plan
    dataset: str  # key of load_task_data
    architecture: str  # name in geosane_hf.collection.architectures
    architecture_kwargs: dict[str, Any]  # builder kwargs (in_chans and num_classes included)
    lr: float  # peak learning rate of AdamW, cosine-annealed to 0 over `epochs`
    weight_decay: float
    batch_size: int
    epochs: int  # length of the run
    save_epochs: tuple[int, ...]  # epochs after which a checkpoint is saved (the last one is `epochs`)
    seed: int  # torch seed for the initialisation, batch order and augmentation

    def model_id(self, epoch: int) -> str:
        return f"{self.run_id}-e{epoch:03d}"

    @property
    def model_ids(self) -> list[str]:
        return [self.model_id(epoch) for epoch in self.save_epochs]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["save_epochs"] = list(self.save_epochs)
        return out


# The families, in the order the plan cycles through them (2/3 Statlog, 1/6 each cloud family).
_FAMILY_CYCLE: tuple[str, ...] = (
    "statlog_cnn",
    "statlog_cnn",
    "tiny_resnet",
    "statlog_cnn",
    "statlog_cnn",
    "tiny_mobilenet",
)
_GRIDS: dict[str, dict[str, tuple]] = {
    "statlog_cnn": {
        "width": (8, 8, 8, 4, 12, 16),  # half the runs share one shape (width 8): a same-architecture sub-zoo
        "lr": (1e-3, 3e-3, 1e-2, 3e-2),
        "epochs": (4, 8, 12, 16),
        "weight_decay": (0.0, 1e-4, 1e-3),
        "batch_size": (64,),
    },
    "tiny_resnet": {
        "width": (8, 12, 16),
        "depth": (1, 2),
        "lr": (1e-3, 3e-3, 1e-2),
        "epochs": (4, 6, 8),
        "weight_decay": (0.0, 1e-4),
        "batch_size": (32,),
    },
    "tiny_mobilenet": {
        "width": (8, 12, 16),
        "depth": (1, 2),
        "expand_ratio": (2, 3),
        "lr": (3e-3, 1e-2, 3e-2),
        "epochs": (4, 6, 8),
        "weight_decay": (0.0, 1e-4),
        "batch_size": (32,),
    },
}
# --quick: the same families with short runs (the whole population in well under a minute on 2 cores).
_QUICK_OVERRIDES: dict[str, dict[str, tuple]] = {
    "statlog_cnn": {"width": (8, 12), "lr": (1e-2,), "epochs": (3,)},
    "tiny_resnet": {"width": (8,), "depth": (1,), "lr": (1e-2,), "epochs": (2,)},
    "tiny_mobilenet": {"width": (8,), "depth": (1,), "lr": (3e-2,), "epochs": (2,)},
}
#: Population presets: which families the plan cycles through and grid values that replace the defaults.
#: ``"mixed"`` (default): every family. ``"statlog-w8"``: one layout only (statlog_cnn, width 8; 2 checkpoints
#: per run), the zoo experiment's population: SANE's zoos hold hundreds of runs of one layout, which a generator
#: of that layout needs (9 runs per layout let the autoencoder memorise; docs/zoo_experiment.md).
PRESETS: dict[str, tuple[tuple[str, ...], dict[str, dict[str, tuple]]]] = {
    "mixed": (_FAMILY_CYCLE, {}),
    "statlog-w8": (
        ("statlog_cnn",),
        {"statlog_cnn": {"width": (8,), "lr": (3e-3, 1e-2, 3e-2), "epochs": (4, 6, 8)}},
    ),
}
_DATASET_OF = {"statlog_cnn": "statlog-landsat", "tiny_resnet": "landsat8-cloud", "tiny_mobilenet": "landsat8-cloud"}
_IN_CHANS = {"statlog-landsat": 4, "landsat8-cloud": len(CLOUD_BANDS)}
_NUM_CLASSES = {"statlog-landsat": len(STATLOG_CLASS_NAMES), "landsat8-cloud": len(CLOUD_CLASS_NAMES)}


def checkpoint_epochs(epochs: int, checkpoints_per_run: int) -> tuple[int, ...]:
    """Evenly spaced save epochs ending with the last one.

    Example:
        >>> checkpoint_epochs(12, 3), checkpoint_epochs(2, 4)
        ((4, 8, 12), (1, 2))
    """
    if epochs < 1 or checkpoints_per_run < 1:
        raise ZooError(f"expected epochs >= 1 and checkpoints_per_run >= 1, got {epochs} and {checkpoints_per_run}")
    return tuple(sorted({max(1, round(epochs * (k + 1) / checkpoints_per_run)) for k in range(checkpoints_per_run)}))


def plan_population(
    num_models: int | None = None,
    seed: int = 0,
    quick: bool = False,
    checkpoints_per_run: int = DEFAULT_CHECKPOINTS_PER_RUN,
    preset: str = "mixed",
) -> list[RunSpec]:
    """Plans the runs of the population; run ``i`` depends only on (`preset`, `seed`, `quick`, `checkpoints_per_run`,
    i).

    Args:
        num_models: number of runs (default 150, or 6 with `quick`); each run saves `checkpoints_per_run` models.
        seed: population seed.
        quick: short runs of small models (tests, demo quick mode).
        checkpoints_per_run: checkpoints saved per run at evenly spaced epochs (the last is the final model).
        preset: a key of :data:`PRESETS` (families and grid values).

    Example:
        >>> plan = plan_population(6, seed=0, quick=True)
        >>> [spec.architecture for spec in plan][:3], plan[0].run_id
        (['statlog_cnn', 'statlog_cnn', 'tiny_resnet'], 'statlog_cnn-0000')
        >>> {spec.architecture_kwargs["width"] for spec in plan_population(20, preset="statlog-w8")}
        {8}
    """
    if preset not in PRESETS:
        raise ZooError(f"expected a population preset among {sorted(PRESETS)}, got {preset!r}")
    families, preset_grids = PRESETS[preset]
    num_models = (QUICK_NUM_MODELS if quick else DEFAULT_NUM_MODELS) if num_models is None else num_models
    if num_models < 1:
        raise ZooError(f"expected at least one model, got num_models={num_models}")
    plan = []
    for index in range(num_models):
        architecture = families[index % len(families)]
        grid = {
            **_GRIDS[architecture],
            **preset_grids.get(architecture, {}),
            **(_QUICK_OVERRIDES[architecture] if quick else {}),
        }
        tag = "" if preset == "mixed" else f"{preset}:"  # the default plan keeps its historical seeds
        rng = random.Random(f"geosane-zoo:{tag}{seed}:{int(quick)}:{index}")  # str seeds are hashed stably
        drawn = {name: rng.choice(values) for name, values in sorted(grid.items())}
        dataset = _DATASET_OF[architecture]
        kwargs: dict[str, Any] = {"in_chans": _IN_CHANS[dataset], "num_classes": _NUM_CLASSES[dataset]}
        kwargs.update({k: drawn[k] for k in ("width", "depth", "expand_ratio") if k in drawn})
        plan.append(
            RunSpec(
                run_id=f"{architecture}-{index:04d}",
                index=index,
                dataset=dataset,
                architecture=architecture,
                architecture_kwargs=kwargs,
                lr=float(drawn["lr"]),
                weight_decay=float(drawn["weight_decay"]),
                batch_size=int(drawn["batch_size"]),
                epochs=int(drawn["epochs"]),
                save_epochs=checkpoint_epochs(int(drawn["epochs"]), checkpoints_per_run),
                seed=rng.randrange(2**31),
            )
        )
    return plan
