"""The transfer experiment: every start x task x seed of a config, fine-tuned with one protocol, with its report.

See :mod:`.config` (the YAML schema), :mod:`.run` (planning, running, resuming) and :mod:`.report` (tables, plots).
"""

from geosane_hf.experiments.transfer.config import (
    DEFAULT_STARTS,
    START_KINDS,
    ExperimentConfig,
    ExperimentConfigError,
    GeoSANESpec,
    TargetSpec,
    TaskSpec,
    bundled_experiment,
    load_experiment_config,
    packaged_experiments,
    parse_start,
)
from geosane_hf.experiments.transfer.report import ExperimentResult
from geosane_hf.experiments.transfer.run import RunKey, load_task, plan_runs, run_experiment

__all__ = [
    "DEFAULT_STARTS",
    "START_KINDS",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "GeoSANESpec",
    "RunKey",
    "TargetSpec",
    "TaskSpec",
    "bundled_experiment",
    "load_experiment_config",
    "load_task",
    "packaged_experiments",
    "parse_start",
    "plan_runs",
    "run_experiment",
]
