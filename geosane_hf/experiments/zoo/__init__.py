"""The zoo experiment: generated models of a population's own architecture vs matched-distance noise.

See :mod:`.run` (the experiment), :mod:`.config`, :mod:`.results`, :mod:`.report` and docs/zoo_experiment.md.
"""

from geosane_hf.experiments.zoo.config import FinetuneProtocol, ZooExperimentConfig, ZooExperimentError
from geosane_hf.experiments.zoo.results import (
    InterpolationPair,
    MethodSummary,
    NoveltyPoint,
    PopulationMember,
    ScoredModel,
    ZooExperimentResult,
)
from geosane_hf.experiments.zoo.run import finetune_zoo_model, read_holdout_ids, run_zoo_experiment

__all__ = [
    "FinetuneProtocol",
    "InterpolationPair",
    "MethodSummary",
    "NoveltyPoint",
    "PopulationMember",
    "ScoredModel",
    "ZooExperimentConfig",
    "ZooExperimentError",
    "ZooExperimentResult",
    "finetune_zoo_model",
    "read_holdout_ids",
    "run_zoo_experiment",
]
