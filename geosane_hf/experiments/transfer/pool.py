"""The process pool of a comparison of starts: jobs inline (``workers=1``) or in spawned processes, one thread each.

Nothing but dataclasses crosses processes: each spawned process builds its own :class:`_Worker` from the
:class:`_Context` (:func:`_init_worker`), and :func:`_do` runs one job there. Results are yielded as they finish,
with a tqdm bar.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch
from tqdm.auto import tqdm

from geosane_hf.experiments.transfer.planning import RunKey, _Context, _Prep
from geosane_hf.experiments.transfer.worker import _Worker

_WORKER: _Worker | None = None


def _init_worker(ctx: _Context, threads: int) -> None:
    global _WORKER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(threads)
    _WORKER = _Worker(ctx)


def _do(job: RunKey | _Prep) -> dict[str, Any]:
    if _WORKER is None:
        raise RuntimeError("expected _init_worker to run in this process first")
    return _WORKER.do(job)


class _Pool:
    """Runs jobs inline (workers=1) or in spawned processes, one torch thread each."""

    def __init__(self, ctx: _Context, workers: int, threads: int = 1) -> None:
        self.ctx, self.workers, self.threads = ctx, workers, threads
        self._executor: ProcessPoolExecutor | None = None
        self._inline: _Worker | None = None
        self._previous_threads = torch.get_num_threads()

    def __enter__(self) -> _Pool:
        if self.workers == 1:
            torch.set_num_threads(self.threads)
            self._inline = _Worker(self.ctx)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self._previous_threads)

    def map(self, jobs: Sequence[RunKey | _Prep], desc: str, progress: bool) -> Iterator[dict[str, Any]]:
        bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=not progress)
        try:
            if self._inline is not None:
                for job in jobs:
                    result = self._inline.do(job)
                    bar.update(1)
                    bar.set_postfix_str(_describe(result))
                    yield result
                return
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(self.ctx, self.threads),
                )
            futures = [self._executor.submit(_do, job) for job in jobs]
            for future in as_completed(futures):
                result = future.result()
                bar.update(1)
                bar.set_postfix_str(_describe(result))
                yield result
        finally:
            bar.close()


def _describe(result: dict[str, Any]) -> str:
    if "start" in result:
        score = f"{result['score']:.3f}" if result.get("status") == "ok" else result.get("status")
        return f"{result['task']}/{result['target']}/{result['start']}/seed{result['seed']}: {score}"
    return f"{result['kind']} {result['arch']} seed{result['seed']}"
