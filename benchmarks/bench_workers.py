"""Fits on worker processes (``ope.workers``, ``fit.workers``) beside the same fits in one process.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_workers [--conversations 30000]
        [--workers 2] [--repeats 2]

Generated logs of the synthetic world, four rule policies, the default estimators (as
``bench_ope_memory``). Times, alternating so both see the same machine load:

- ``OffPolicyEvaluation.evaluate`` with ``workers=N`` (the resamples' refits on the refit
  subset and their statistics split over N worker processes) and, as the anchor,
  ``workers=0`` (every fit in this process);
- ``fit_customer_model`` (glm) with ``workers=N`` (the CSAT model fitted on a worker while
  the response models are fitted here) and ``workers=0``.

Prints the wall and CPU seconds (this process, its workers) of each, an estimate of the
wall time on idle cores (this process's CPU plus the workers' shared over them: on a
shared machine the workers find no idle core) and whether every number is the same bit
for bit. The pool is started before the timings (once per command
in the pipeline, a few seconds).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.fitted import FitWarning, fit_customer_model

from benchmarks.bench_ope_memory import ope_inputs
from supportrl.workers import map_calls


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process and of its children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    # pool workers are reaped at exit only: read their time from /proc while they run
    children = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in _child_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            children += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return own.ru_utime + own.ru_stime, children


def _child_pids() -> list[int]:
    try:
        text = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(result, wall seconds, CPU seconds of this process, CPU seconds of its workers)."""
    wall, (own, workers) = time.perf_counter(), cpu_seconds()
    out = fn()
    own_after, workers_after = cpu_seconds()
    return out, time.perf_counter() - wall, own_after - own, workers_after - workers


def ope_numbers(results: dict[str, Any]) -> np.ndarray:
    rows = []
    for res in results.values():
        for e in [*res.conversation.values(), *res.decision.values(), res.selection]:
            rows.append([e.estimate, e.ci_low, e.ci_high, e.std_err])
    return np.array(rows)


def fit_numbers(model: Any) -> np.ndarray:
    d = model.dynamics
    parts = [model.csat.fit.coef, model.csat.response, d.outcome.coef, d.sentiment.coef]
    return np.concatenate([np.ravel(p) for p in parts])


def _square(x: float) -> float:
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FitWarning)  # what the logs cannot teach: the same both ways

    logs, prepared, probs = ope_inputs(args.conversations, args.seed)
    start_s = timed(lambda: map_calls(_square, [(1.0,), (2.0,)], workers=args.workers))[1]
    loads = [os.getloadavg()[0]]
    runs: dict[str, list[tuple[float, ...]]] = {}
    numbers: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for w in (args.workers, 0):
            ope = OffPolicyEvaluation(prepared=prepared, seed=args.seed, progress=False, workers=w)
            res, *seconds = timed(lambda ope=ope: ope.evaluate(probs))
            runs.setdefault(f"ope {w}", []).append(tuple(seconds))
            numbers[f"ope {w}"] = ope_numbers(res)
            model, *seconds = timed(
                lambda w=w: fit_customer_model(logs, "glm", seed=args.seed, workers=w)
            )
            runs.setdefault(f"fit {w}", []).append(tuple(seconds))
            numbers[f"fit {w}"] = fit_numbers(model)
            loads.append(os.getloadavg()[0])

    print(
        f"{logs.n_conversations:,} conversations, {logs.n_turns:,} turns; {args.workers} workers "
        f"(started in {start_s:.1f} s), {os.cpu_count()} cores; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; load average (1 min) "
        f"{min(loads):.2f}-{max(loads):.2f}; mean of {args.repeats}, alternating"
    )
    print(
        f"{'work':<36}{'wall s':>8}{'CPU here':>10}{'workers':>9}{'quiet est.':>11}"
        f"{'anchor wall':>13}{'CPU':>7}  same numbers"
    )
    for kind, what in (
        ("ope", "OPE evaluate (50 resample refits)"),
        ("fit", "simulator fit (glm)"),
    ):
        wall, own, work = np.mean(runs[f"{kind} {args.workers}"], axis=0)
        a_wall, a_own, _ = np.mean(runs[f"{kind} 0"], axis=0)
        same = np.array_equal(
            numbers[f"{kind} {args.workers}"], numbers[f"{kind} 0"], equal_nan=True
        )
        print(
            f"{what:<36}{wall:>8.1f}{own:>10.1f}{work:>9.1f}{own + work / args.workers:>11.1f}"
            f"{a_wall:>13.1f}{a_own:>7.1f}  {'yes' if same else 'NO'}"
        )
    print(
        "quiet est.: the wall time on idle cores, this process's CPU seconds plus the workers' "
        "shared over them (they run while this process waits); anchor: the same work with "
        "workers=0 (every fit in this process), same run (its wall on idle cores: its CPU)"
    )


if __name__ == "__main__":
    main()
