"""Run a comparison of starts: every (task, target, start, seed) fine-tuned with one protocol, resumable, in parallel.

:func:`run_experiment` takes an :class:`ExperimentConfig` (see :mod:`.config`, YAML files in
``geosane_hf/resources/experiments``) and an output folder:

- every run writes ``out/runs/<task>/<target>/<start>/seed<k>.json`` atomically (status "ok", "n/a" with the reason,
  or "failed" with the error; the score, the test-metric curve, the distance to the prompt, seconds, the provenance
  and the full fine-tuning record). With ``resume=True`` a run file made from the same inputs (a fingerprint of the
  task slice, target, start, seed, protocol and, where the start depends on them, the GeoSANE model's weights,
  the generation options and the collection) is reused, so re-running a finished experiment is instant;
- before the runs, the GeoSANE starts are generated and published into the store (``store/<task>/<arch>-<sampler>-
  seed<k>``, reused when made from the same request) and the distillation teachers are trained once per (task,
  teacher, seed) with the same budget (``out/teachers/``), so no two processes do the same work;
- ``workers=N`` runs independent jobs in N spawned processes with one torch thread each (the starts are built inside
  the worker from the config; nothing but dataclasses crosses processes). ``workers=1`` runs in this process, also
  with one thread, and gives the same numbers (tested);
- ``out/results.json``, ``out/results.md`` (per task and target: mean ± sample std of the primary metric over
  seeds, per-seed values, distance to the prompt, seconds per run, notes; a verdict per GeoSANE sampler against
  scratch, the matched prompt + noise and weight selection) and ``out/plots/<task>__<target>.png`` (test metric per
  epoch, mean ± std band per start).

The pieces: :mod:`.planning` (run keys, task loading, fingerprints), :mod:`.preparation` (the inputs' checks, the
preparation jobs, the teachers), :mod:`.worker` (builds and fine-tunes the starts), :mod:`.pool` (the processes) and
:mod:`.report` (tables, verdicts, plots); their public names stay importable from here.

Example:
    >>> import tempfile
    >>> cfg = ExperimentConfig.from_dict({
    ...     "tasks": [{"name": "statlog-classification", "max_train": 16, "max_test": 16}],
    ...     "targets": ["test_resnet"], "starts": ["scratch"], "seeds": [0], "finetune": {"epochs": 1}})
    >>> result = run_experiment(cfg, tempfile.mkdtemp(), progress=False)
    >>> [row.start for row in result.tables[0].rows], result.tables[0].rows[0].status
    (['scratch'], 'ok')
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

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
from geosane_hf.experiments.transfer.planning import RECORD_VERSION as RECORD_VERSION  # re-exported
from geosane_hf.experiments.transfer.planning import RunKey, _Context, load_task, plan_runs, run_fingerprint
from geosane_hf.experiments.transfer.pool import _Pool
from geosane_hf.experiments.transfer.preparation import _check_inputs, _preparation
from geosane_hf.experiments.transfer.report import ExperimentResult, StartRow, TargetTable, build_report
from geosane_hf.experiments.transfer.worker import MSS_BANDS as MSS_BANDS  # re-exported

__all__ = [
    "DEFAULT_STARTS",
    "START_KINDS",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentResult",
    "GeoSANESpec",
    "RunKey",
    "StartRow",
    "TargetSpec",
    "TargetTable",
    "TaskSpec",
    "bundled_experiment",
    "load_experiment_config",
    "load_task",
    "packaged_experiments",
    "parse_start",
    "plan_runs",
    "run_experiment",
]


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Runs every (task, target, start, seed) of `config` and writes run files, results.json/.md and plots.

    Args:
        config: the experiment.
        out_dir: output folder (created); run files under ``runs/``, teachers under ``teachers/``, the GeoSANE
            store under ``store/`` unless ``config.geosane.store`` is set.
        resume: reuse run files, teachers and published GeoSANE starts made from the same inputs.
        workers: processes (default: ``config.workers``); each uses one torch thread; results do not depend on it.
        progress: tqdm bars over the preparation jobs and the runs.

    Returns:
        An :class:`ExperimentResult` (tables, verdicts, run records, paths of the written files).

    Raises:
        ExperimentConfigError: an invalid config, a missing GeoSANE model folder or collection.
    """
    began = time.perf_counter()
    config.validate()
    workers = config.workers if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ExperimentConfigError(f"expected workers to be an integer >= 1, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_fp, collection_fp = _check_inputs(config)
    store = Path(config.geosane.store) if config.geosane.store else out / "store"
    ctx = _Context(config, str(out), str(store), resume, model_fp, collection_fp)
    keys = plan_runs(config)
    records: dict[RunKey, dict[str, Any]] = {}
    pending = []
    for key in keys:
        path = key.path(out)
        if resume and path.is_file():
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                record = {}
            if record.get("fingerprint") == run_fingerprint(ctx, key) and record.get("status") in ("ok", "n/a"):
                records[key] = record
                continue
        pending.append(key)
    prep_results: list[dict[str, Any]] = []
    phases = {"prepare": 0.0, "runs": 0.0}
    if pending:
        jobs = _preparation(ctx, pending)
        with _Pool(ctx, min(workers, max(len(pending), 1))) as pool:
            mark = time.perf_counter()
            if jobs:
                prep_results = list(pool.map(jobs, "prepare (GeoSANE starts, teachers)", progress))
            phases["prepare"] = time.perf_counter() - mark
            mark = time.perf_counter()
            for record in pool.map(pending, "runs", progress):
                records[RunKey(record["task"], record["target"], record["start"], record["seed"])] = record
            phases["runs"] = time.perf_counter() - mark
    ordered = [records[k] for k in keys]
    result = build_report(
        config,
        out,
        ordered,
        preparation=prep_results,
        seconds=time.perf_counter() - began,
        phase_seconds=phases,
        workers=workers,
        reused=len(keys) - len(pending),
    )
    result.write()
    return result
