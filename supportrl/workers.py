"""Worker processes for independent pieces of work (e.g. OPE's resample refits).

A pool of ``n`` spawned processes, started on first use and kept for the life of this
process, so each worker imports the libraries once. A piece of work gives the same numbers
in a worker as in this process, bit for bit: every random choice comes from its arguments
(seeds, resample counts), never from the worker, and a worker runs with this process's
BLAS and torch thread counts (one each under the commands' default ``threads: 1``).

The bottom layer of the package: standard library only at import (numpy, torch and
threadpoolctl are imported in the workers), so ``ope`` and ``simulators`` may use it.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, Literal, Protocol

__all__ = [
    "AUTO_MIN_TURNS",
    "WORKERS_AUTO",
    "Pending",
    "map_calls",
    "n_workers",
    "submit",
    "worker_map",
]

WORKERS_AUTO = "auto"
"""``workers: auto``: one worker per core this process may run on, or none with one core."""

_POOLS: dict[tuple[int, int, int], Any] = {}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


AUTO_MIN_TURNS = 10_000
"""``workers: auto`` starts workers only for fits on logs of at least this many turns (the
refit subset's, for OPE's refits): on fewer the fits take seconds, about what starting the
workers costs (each imports numpy, scipy and torch)."""


def n_workers(workers: int | Literal["auto"], *, turns: int | None = None) -> int:
    """Worker processes that ``workers`` asks for, for fits on logs of ``turns`` turns:
    ``auto``, the cores available when there are more than one and ``turns`` is at least
    :data:`AUTO_MIN_TURNS` (None: whatever the size), else 0; an int as it is (0 or 1: run
    in this process). ValueError (naming the argument) for anything else."""
    if workers == WORKERS_AUTO:
        cores = available_cores()
        small = turns is not None and turns < AUTO_MIN_TURNS
        return cores if cores > 1 and not small else 0
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be 'auto' or an int >= 0, got {workers!r}")
    return workers


def _init_worker(blas: int, torch_threads: int) -> None:
    """The BLAS and torch threads of the parent (a reduction splits its sums by thread
    count, so other counts would move the last digits), and Ctrl-C left to the parent,
    which stops the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(blas)
    except ImportError:  # the environment variables set at spawn already say so
        pass
    import torch

    torch.set_num_threads(torch_threads)


def _parent_threads() -> tuple[int, int]:
    """(BLAS/OpenMP threads, torch threads) of this process as it runs now: the largest
    pool threadpoolctl sees (1 without it), and torch's (the same when torch is not loaded)."""
    import sys

    blas = 1
    try:
        from threadpoolctl import threadpool_info

        blas = max([int(p.get("num_threads", 1)) for p in threadpool_info()] or [1])
    except ImportError:
        blas = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    torch = sys.modules.get("torch")
    return blas, (torch.get_num_threads() if torch is not None else blas)


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType:
    return MappingProxyType(items)


def _reduce_mapping_proxy(proxy: MappingProxyType) -> tuple[Any, tuple[dict[Any, Any]]]:
    return _mapping_proxy, (dict(proxy),)


def _pool(n: int) -> Any:
    """The pool of ``n`` workers (a ``ProcessPoolExecutor``: a worker that dies, e.g. out
    of memory, fails the calls instead of hanging them), started on first use (spawned: a
    fresh interpreter, no inherited threads or locks) with this process's BLAS and torch
    thread counts (one each under the commands' default ``threads: 1``), so a piece of work
    gives the same bits in a worker as here. A new pool when those counts changed."""
    key = (n, *_parent_threads())
    pool = _POOLS.get(key)
    if pool is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing.reduction import ForkingPickler

        # read-only mappings (e.g. RewardSpec.action_costs) travel as a copy, read-only again
        ForkingPickler.register(MappingProxyType, _reduce_mapping_proxy)
        threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in threads}
        os.environ.update(dict.fromkeys(threads, str(key[1])))  # read by numpy at import
        try:
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(
                n, mp_context=ctx, initializer=_init_worker, initargs=key[1:]
            )
            for _ in range(n):  # a submit spawns a worker while none is idle: all n, now
                pool.submit(int)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        _POOLS[key] = pool
    return pool


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _POOLS.clear()


def _result(future: Any) -> Any:
    """``future.result()``; a dead worker (the whole pool is then unusable) as a
    RuntimeError that says what to do, and the pool dropped so that a later call starts a
    new one."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool as exc:
        for key, pool in list(_POOLS.items()):
            if getattr(pool, "_broken", False):
                del _POOLS[key]
        raise RuntimeError(
            "a worker process died (out of memory?); run again with fewer or no workers "
            "(ope.workers=0 fit.workers=0)"
        ) from exc


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
    pool = _pool(workers)
    return [_result(f) for f in [pool.submit(fn, *shared, *a) for a in args]]


def worker_map(
    workers: int | Literal["auto"], *, turns: int | None = None
) -> tuple[Callable[..., list[Any]] | None, int]:
    """``(map_fits, n_chunks)`` that spread the chunks of fits on logs of ``turns`` turns
    over the workers ``workers`` asks for (:func:`n_workers`):
    ``map_fits(fn, args, shared)`` is :func:`map_calls` on them; ``(None, 1)`` with at most
    one (in this process). The hook of ``ope.nuisance.fit_nuisance`` and
    ``ope.streaming.memory_sums``."""
    n = n_workers(workers, turns=turns)
    if n <= 1:
        return None, 1
    return functools.partial(map_calls, workers=n), n


class Pending(Protocol):
    """A call started by :func:`submit`; ``get()`` waits for its result (or raises its error)."""

    def get(self) -> Any: ...


class _Deferred:
    """:func:`submit` without workers: the call runs when its result is asked for."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args

    def get(self) -> Any:
        return self._fn(*self._args)


def submit(fn: Callable[..., Any], args: tuple[Any, ...], *, workers: int) -> Pending:
    """Start ``fn(*args)`` on one of ``workers`` worker processes (``workers`` > 1), so this
    process can do other work meanwhile; with fewer, it runs in this process at ``get()``.
    ``fn`` and ``args`` must pickle (``fn`` a module-level function)."""
    if workers <= 1:
        return _Deferred(fn, args)
    return _Started(_pool(workers).submit(fn, *args))


class _Started:
    """:func:`submit` on a worker: ``get()`` waits for it."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def get(self) -> Any:
        return _result(self._future)
