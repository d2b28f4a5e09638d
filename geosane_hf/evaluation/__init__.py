"""Downstream evaluation: tasks on real RS imagery, local `evaluate` metrics, baseline starts, one fine-tuning loop.

>>> from geosane_hf.evaluation import FinetuneConfig, Task, compare_starts, scratch
>>> task = Task.from_name("statlog-classification", max_train=16, max_test=16)
>>> cmp = compare_starts(task, {"scratch": lambda s: scratch(task.target_for("test_resnet"), s)}, seeds=(0,),
...                      config=FinetuneConfig(epochs=1, progress=False))
>>> cmp.metric
'f1_macro'
"""

from geosane_hf.evaluation.finetune import (
    CPU_DEMO,
    PAPER_RECIPE,
    EpochRecord,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    kd_loss,
)
from geosane_hf.evaluation.geosane_start import fitted_prompt, geosane_start, matched_prompt_noise
from geosane_hf.evaluation.metrics import load_metric, metric_path
from geosane_hf.evaluation.models import TargetArch, build_classifier, build_detector, build_segmenter
from geosane_hf.evaluation.runner import (
    Comparison,
    RunResult,
    StartSummary,
    compare_starts,
    run_start,
    summarize,
    train_teacher,
)
from geosane_hf.evaluation.starts import (
    IMAGENET_PROMPTS,
    Start,
    StartError,
    adapt_bands,
    checkpoint_average,
    checkpoint_plus_noise,
    distillation,
    imagenet_prompt,
    imagenet_state_dict,
    magnitude_pruning,
    map_by_order,
    matched_noise,
    matching_sparsity,
    prompt_plus_noise,
    reinit_head,
    scratch,
    weight_distance,
    weight_selection,
)
from geosane_hf.evaluation.tasks import TASKS, Task, TaskConfig, evaluate_model, get_task_config
from geosane_hf.task_data import (
    BUILTIN_DATA,
    IGNORE_INDEX,
    BandMismatchError,
    EmptySplitError,
    EvaluationError,
    LabelRangeError,
    Split,
    TaskData,
    UnknownTaskError,
    data_from_arrays,
    data_from_dataset,
    data_from_folder,
    load_task_data,
)

# Compatibility shim (docs/architecture.md): the transfer experiment moved up to geosane_hf.experiments; its names
# stay importable from here, loaded on first access so that evaluation never imports the room above it at import.
_MOVED_TO_EXPERIMENTS = (
    "START_KINDS",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "GeoSANESpec",
    "TargetSpec",
    "TaskSpec",
    "bundled_experiment",
    "load_experiment_config",
    "packaged_experiments",
    "run_experiment",
)


def __getattr__(name: str):
    if name in _MOVED_TO_EXPERIMENTS:
        import importlib

        return getattr(importlib.import_module("geosane_hf.experiments.transfer"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_DATA",
    "CPU_DEMO",
    "IGNORE_INDEX",
    "IMAGENET_PROMPTS",
    "PAPER_RECIPE",
    "START_KINDS",
    "TASKS",
    "BandMismatchError",
    "Comparison",
    "EmptySplitError",
    "EpochRecord",
    "EvaluationError",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "FinetuneConfig",
    "FinetuneResult",
    "GeoSANESpec",
    "LabelRangeError",
    "RunResult",
    "Split",
    "Start",
    "StartError",
    "StartSummary",
    "TargetArch",
    "TargetSpec",
    "Task",
    "TaskConfig",
    "TaskData",
    "TaskSpec",
    "UnknownTaskError",
    "adapt_bands",
    "build_classifier",
    "build_detector",
    "build_segmenter",
    "bundled_experiment",
    "checkpoint_average",
    "checkpoint_plus_noise",
    "compare_starts",
    "data_from_arrays",
    "data_from_dataset",
    "data_from_folder",
    "distillation",
    "evaluate_model",
    "finetune",
    "fitted_prompt",
    "geosane_start",
    "get_task_config",
    "imagenet_prompt",
    "imagenet_state_dict",
    "kd_loss",
    "load_experiment_config",
    "load_metric",
    "load_task_data",
    "magnitude_pruning",
    "map_by_order",
    "matched_noise",
    "matched_prompt_noise",
    "matching_sparsity",
    "metric_path",
    "packaged_experiments",
    "prompt_plus_noise",
    "reinit_head",
    "run_experiment",
    "run_start",
    "scratch",
    "summarize",
    "train_teacher",
    "weight_distance",
    "weight_selection",
]
