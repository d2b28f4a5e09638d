"""The model collection: architectures of our trained population and the population itself.

- :mod:`geosane_hf.collection.architectures`: named builders (``statlog_cnn``, ``tiny_resnet``,
  ``tiny_mobilenet``) so every member can be rebuilt and loaded strictly.
- :mod:`geosane_hf.collection.zoo`: `geosane zoo train`, the offline population trained on packaged RS data.
"""

from geosane_hf.collection.architectures import (
    ARCHITECTURES,
    ArchitectureError,
    ArchitectureInfo,
    build_architecture,
    count_parameters,
    list_architectures,
    register_architecture,
)
from geosane_hf.collection.collector import read_collection_index
from geosane_hf.collection.zoo import (
    RunSpec,
    TaskData,
    ZooConfig,
    ZooError,
    ZooResult,
    load_task_data,
    load_zoo_model,
    plan_population,
    read_zoo_index,
    summarize,
    train_run,
    train_zoo,
    zoo_metrics,
)

__all__ = [
    "ARCHITECTURES",
    "ArchitectureError",
    "ArchitectureInfo",
    "RunSpec",
    "TaskData",
    "ZooConfig",
    "ZooError",
    "ZooResult",
    "build_architecture",
    "count_parameters",
    "list_architectures",
    "load_task_data",
    "load_zoo_model",
    "plan_population",
    "read_collection_index",
    "read_zoo_index",
    "register_architecture",
    "summarize",
    "train_run",
    "train_zoo",
    "zoo_metrics",
]
