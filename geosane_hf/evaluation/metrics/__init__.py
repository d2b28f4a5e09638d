"""Local `evaluate` metric modules (loaded by file path: no Hub access) and a loader for them."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from geosane_hf.errors import GeoSANEError

METRIC_MODULES: dict[str, str] = {
    "accuracy_f1": "accuracy_f1.py",
    "mean_iou": "mean_iou.py",
    "map50": "map50.py",
}


class UnknownMetricError(GeoSANEError, ValueError):
    """A metric name that has no local module."""


def metric_path(name: str) -> Path:
    """Path of the local metric module called `name` (one of `METRIC_MODULES`).

    >>> metric_path("mean_iou").name
    'mean_iou.py'
    """
    if name not in METRIC_MODULES:
        raise UnknownMetricError(f"expected a metric among {sorted(METRIC_MODULES)}, got {name!r}")
    return Path(str(files("geosane_hf.evaluation.metrics").joinpath(METRIC_MODULES[name])))


@cache
def load_metric(name: str):
    """`evaluate.load` of a local metric module by path, kept in memory (works with HF_HUB_OFFLINE=1).

    >>> load_metric("accuracy_f1").compute(predictions=[0, 1], references=[0, 0])["accuracy"]
    0.5
    """
    import evaluate

    return evaluate.load(str(metric_path(name)), keep_in_memory=True)
