"""Task data: the one definition of train/test splits that the zoo trainer, the evaluation and the experiments use.

- :mod:`~geosane_hf.task_data.splits`: :class:`Split`, :class:`TaskData` (validated on construction), the errors.
- :mod:`~geosane_hf.task_data.sources`: task data from arrays, `datasets.Dataset` splits and folders of patches.
- :mod:`~geosane_hf.task_data.builtin`: the built-in data sets (packaged imagery) and :func:`load_task_data`.
"""

from geosane_hf.task_data.builtin import BUILTIN_DATA, CLOUD_BANDS, CLOUD_TILES, load_task_data
from geosane_hf.task_data.sources import data_from_arrays, data_from_dataset, data_from_folder
from geosane_hf.task_data.splits import (
    IGNORE_INDEX,
    BandMismatchError,
    EmptySplitError,
    EvaluationError,
    LabelRangeError,
    Split,
    TaskData,
    TaskKind,
    UnknownTaskError,
    resize_images,
    sample_index,
)

__all__ = [
    "BUILTIN_DATA",
    "CLOUD_BANDS",
    "CLOUD_TILES",
    "IGNORE_INDEX",
    "BandMismatchError",
    "EmptySplitError",
    "EvaluationError",
    "LabelRangeError",
    "Split",
    "TaskData",
    "TaskKind",
    "UnknownTaskError",
    "data_from_arrays",
    "data_from_dataset",
    "data_from_folder",
    "load_task_data",
    "resize_images",
    "sample_index",
]
