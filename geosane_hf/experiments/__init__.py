"""Experiments: compose the rooms below (collection, generation, evaluation) and write reports.

- :mod:`.transfer`: every start x task x seed fine-tuned with one protocol (``geosane evaluate``);
- :mod:`.zoo`: the SANE-style zoo experiment (``geosane zoo-experiment``);
- :mod:`.demo`: the offline end-to-end demo (``geosane demo``, ``make demo``).

>>> from geosane_hf.experiments import bundled_experiment
>>> bundled_experiment("quick").name
'quick'
"""

from geosane_hf.experiments.transfer import (
    ExperimentConfig,
    ExperimentConfigError,
    ExperimentResult,
    bundled_experiment,
    load_experiment_config,
    packaged_experiments,
    run_experiment,
)
from geosane_hf.experiments.zoo import ZooExperimentConfig, ZooExperimentResult, run_zoo_experiment

__all__ = [
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "ZooExperimentConfig",
    "ZooExperimentResult",
    "bundled_experiment",
    "load_experiment_config",
    "packaged_experiments",
    "run_experiment",
    "run_zoo_experiment",
]
