"""Worker processes for independent pieces of work (e.g. OPE's resample refits).

A pool of ``n`` spawned processes, one BLAS and one torch thread each, started on first
use and kept for the life of this process, so each worker imports the libraries once. A
piece of work gives the same numbers in a worker as in this process: every random choice
comes from its arguments (seeds, resample counts), never from the worker.

The bottom layer of the package: standard library only at import (numpy, torch and
threadpoolctl are imported in the workers), so ``ope`` and ``simulators`` may use it.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, Literal

__all__ = ["WORKERS_AUTO", "map_calls", "n_workers"]

WORKERS_AUTO = "auto"
"""``workers: auto``: one worker per core this process may run on, or none with one core."""

_POOLS: dict[int, Any] = {}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def n_workers(workers: int | Literal["auto"]) -> int:
    """Worker processes that ``workers`` asks for: ``auto``, the cores available when there
    are more than one, else 0; an int as it is (0 or 1: run in this process).
    ValueError (naming the argument) for anything else."""
    if workers == WORKERS_AUTO:
        cores = available_cores()
        return cores if cores > 1 else 0
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be 'auto' or an int >= 0, got {workers!r}")
    return workers


def _init_worker() -> None:
    """One BLAS and one torch thread per worker (the cores are shared by the workers), and
    Ctrl-C left to the parent, which stops the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # the environment variables set at spawn already say 1
        pass
    import torch

    torch.set_num_threads(1)


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType:
    return MappingProxyType(items)


def _reduce_mapping_proxy(proxy: MappingProxyType) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mapping_proxy, (dict(proxy),)


def _pool(n: int) -> Any:
    """The pool of ``n`` workers, started on first use (spawned: a fresh interpreter, no
    inherited threads or locks) with one BLAS thread in each from the start."""
    pool = _POOLS.get(n)
    if pool is None:
        import multiprocessing
        from multiprocessing.reduction import ForkingPickler

        # read-only mappings (e.g. RewardSpec.action_costs) travel as a copy, read-only again
        ForkingPickler.register(MappingProxyType, _reduce_mapping_proxy)

        threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in threads}
        os.environ.update(dict.fromkeys(threads, "1"))  # read by numpy at import in the child
        try:
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(n, initializer=_init_worker)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _POOLS[n] = pool
    return pool


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.terminate()
    _POOLS.clear()


def map_calls(
    fn: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    shared: tuple[Any, ...] = (),
    *,
    workers: int,
) -> list[Any]:
    """``[fn(*shared, *a) for a in args]``, on ``workers`` worker processes when
    ``workers`` > 1 and there is more than one call, else in this process. ``fn`` and its
    arguments must pickle (``fn`` a module-level function); results in the order of
    ``args``."""
    if workers <= 1 or len(args) <= 1:
        return [fn(*shared, *a) for a in args]
    return _pool(workers).starmap(fn, [(*shared, *a) for a in args], chunksize=1)
