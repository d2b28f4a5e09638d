"""Compatibility shim (docs/architecture.md): task data moved down to :mod:`geosane_hf.task_data`, which the zoo
trainer and the evaluation share; the old import path keeps working."""

from geosane_hf.task_data import (  # noqa: F401
    BUILTIN_DATA,
    IGNORE_INDEX,
    BandMismatchError,
    EmptySplitError,
    EvaluationError,
    LabelRangeError,
    Split,
    TaskData,
    TaskKind,
    UnknownTaskError,
    data_from_arrays,
    data_from_dataset,
    data_from_folder,
    load_task_data,
    resize_images,
    sample_index,
)
