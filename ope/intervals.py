"""Point estimates as sums of ratios, and a vectorised bootstrap for their intervals.

Every estimator in :mod:`ope.estimators` and :mod:`ope.sequential` reduces the data to a
:class:`RatioStatistic`: per-unit numerator and denominator terms whose estimate is

    V = sum_k ( sum_i u[k, i] ) / ( sum_i d[k, i] )

Plain means (IPS, DR, PDIS, ...) have one term with ``d = 1``; self-normalised
estimators (SNIPS, SNDR, WPDIS, WDR) have denominators that are importance weights.
Bootstrapping the sums jointly, then taking the ratios per resample, re-normalises
self-normalised estimators within every resample, as it must.

The bootstrap (:func:`bootstrap_replicates`) resamples *groups* (e.g. conversations):
rows of one group stay together, so that correlated turns do not make intervals too
narrow.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = [
    "Interval",
    "RatioStatistic",
    "bootstrap_interval",
    "bootstrap_replicates",
    "default_n_threads",
]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a bootstrap percentile interval."""

    estimate: float
    """The estimate on the full data."""
    ci_low: float
    """Lower end of the ``1 - alpha`` percentile interval."""
    ci_high: float
    """Upper end of the ``1 - alpha`` percentile interval."""
    std_err: float
    """Standard deviation of the bootstrap replicates."""

    def as_dict(self) -> dict[str, float]:
        """The fields as a plain dict (the ``evaluate`` command's ``result.json`` entry)."""
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_err": self.std_err,
        }


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    # A zero denominator only happens when every weight of a term is zero, and then its
    # numerator (weight times something) is zero too: the term contributes 0.
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    return np.divide(numerator, denominator, out=out, where=denominator != 0)


@dataclass(frozen=True)
class RatioStatistic:
    """An estimate of the form ``V = sum_k sum_i u[k, i] / sum_i d[k, i]``.

    Index ``i`` runs over units (decisions or conversations), ``k`` over terms. A term
    whose denominator sums to zero contributes 0 (its numerator is zero too for every
    estimator here, since both carry the same importance weights).
    """

    numerators: np.ndarray
    """``u``, shape (n_terms, n_units), float64."""
    denominators: np.ndarray | None = None
    """``d``, shape (n_terms, n_units), float64; ``None``: every term is a plain mean
    (``d = 1``)."""

    def __post_init__(self) -> None:
        numerators = np.asarray(self.numerators, dtype=np.float64)
        if numerators.ndim != 2 or numerators.shape[1] == 0:
            raise ValueError(
                f"numerators must have shape (n_terms, n_units), got {numerators.shape}"
            )
        object.__setattr__(self, "numerators", numerators)
        if self.denominators is not None:
            denominators = np.asarray(self.denominators, dtype=np.float64)
            if denominators.shape != numerators.shape:
                raise ValueError(
                    f"denominators must have the numerators' shape {numerators.shape}, "
                    f"got {denominators.shape}"
                )
            object.__setattr__(self, "denominators", denominators)

    @property
    def n_units(self) -> int:
        """Number of units (columns)."""
        return int(self.numerators.shape[1])

    @cached_property
    def _denominator_sums(self) -> np.ndarray:
        if self.denominators is None:
            return np.full(self.numerators.shape[0], float(self.n_units))
        return self.denominators.sum(axis=1)

    def value(self) -> float:
        """The estimate ``V``."""
        return float(_safe_ratio(self.numerators.sum(axis=1), self._denominator_sums).sum())

    def resampled_value(self, counts: np.ndarray) -> float:
        """``V`` on a resample that counts unit ``i`` ``counts[i]`` times, shape (n_units,).

        ``sum_k (sum_i c_i u[k, i]) / (sum_i c_i d[k, i])``: used by bootstraps that refit
        the nuisance models in every resample and so recompute the statistic each time.
        """
        c = np.asarray(counts, dtype=np.float64)
        num = self.numerators @ c
        den = np.full_like(num, c.sum()) if self.denominators is None else self.denominators @ c
        return float(_safe_ratio(num, den).sum())

    def contributions(self) -> np.ndarray:
        """Per-unit contributions ``n * sum_k u[k, i] / sum_j d[k, j]``, shape (n_units,).

        Their mean is :meth:`value`; for plain means they are just ``sum_k u[k, i]``.
        """
        if self.denominators is None:
            return self.numerators.sum(axis=0)
        scale = _safe_ratio(np.float64(self.n_units), self._denominator_sums)
        return scale @ self.numerators


# Bootstrap weights: iid counts c with P(c = j) = _COUNT_FREQ[j] / 256 for j = 0..5, drawn
# from one random byte each by comparing it with the thresholds below. They match the
# Poisson(1) counts of the Poisson bootstrap to within 1/256 (Poisson: 94.2, 94.2, 47.1,
# 15.7, 3.9 and 0.9 for 5 or more, in 256), with mean and variance exactly 1 and third central
# moment 0.98 (Poisson: 1), so skewed importance weights still give skewed replicates.
_COUNT_FREQ = np.array([94, 95, 46, 16, 4, 1])
_THRESHOLDS = tuple(int(t) for t in np.cumsum(_COUNT_FREQ)[:-1])  # 94, 189, 235, 251, 255
_RESAMPLES_PER_TASK = 64
_UNITS_PER_CHUNK = 8192  # below 10,000: OpenBLAS then keeps each dot product on one thread
_EXACT_LIMIT = 1 << 22  # resample-group pairs below which the bootstrap works in float64


def default_n_threads() -> int:
    """Threads for the bootstrap: the CPUs this process may use, capped by
    ``OMP_NUM_THREADS`` when it is set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        n = min(n or 1, int(env))
    return max(1, n or 1)


def _group_sums(columns: np.ndarray, group: np.ndarray | None) -> np.ndarray:
    """Sum the rows of ``columns`` (n_units, m) within groups -> (n_groups, m)."""
    if group is None:
        return columns
    group = np.asarray(group)
    if group.shape != (columns.shape[0],):
        raise ValueError(f"group must have shape ({columns.shape[0]},), got {group.shape}")
    _, codes = np.unique(group, return_inverse=True)
    n_groups = int(codes.max()) + 1
    return np.stack(
        [np.bincount(codes, weights=col, minlength=n_groups) for col in columns.T], axis=1
    )


def _resample_sums(
    columns_t: np.ndarray, generator: np.random.Generator, n_resamples: int
) -> np.ndarray:
    """``sum_g c[b, g] * columns_t[:, g]`` for ``n_resamples`` fresh count vectors ``c``.

    ``columns_t`` is (m, n_groups), C-contiguous, float32 or float64. Returns
    (n_resamples, m) float64. Works in blocks of ``_UNITS_PER_CHUNK`` groups so that the
    counts stay in cache.
    """
    m, n_groups = columns_t.shape
    out = np.zeros((n_resamples, m))
    block = min(_UNITS_PER_CHUNK, n_groups)
    counts = np.empty(n_resamples * block, dtype=np.uint8)
    step = np.empty(n_resamples * block, dtype=np.bool_)
    weights = np.empty(n_resamples * block, dtype=columns_t.dtype)
    for start in range(0, n_groups, block):
        width = min(block, n_groups - start)
        size = n_resamples * width
        byte = generator.bit_generator.random_raw(-(-size // 8)).view(np.uint8)[:size]
        count = counts[:size]
        np.greater_equal(byte, _THRESHOLDS[0], out=count.view(np.bool_))
        for threshold in _THRESHOLDS[1:]:
            np.greater_equal(byte, threshold, out=step[:size])
            np.add(count, step[:size].view(np.uint8), out=count)
        block_weights = weights[:size].reshape(n_resamples, width)
        block_weights[...] = count.reshape(n_resamples, width)
        # (n_resamples, 1, width) . (1, m, width) -> (n_resamples, m): one dot product
        # per pair, which runs in parallel threads (unlike a matrix product, which BLAS
        # libraries serialise across threads or spread over threads of their own).
        out += np.vecdot(block_weights[:, None, :], columns_t[None, :, start : start + width])
    return out


def _all_resample_sums(
    columns_t: np.ndarray, n_bootstrap: int, seed: int, n_threads: int | None
) -> np.ndarray:
    """:func:`_resample_sums` of ``n_bootstrap`` resamples, shape (n_bootstrap, n_columns),
    in blocks of :data:`_RESAMPLES_PER_TASK` on ``n_threads`` threads, each block with its
    own random stream spawned from ``seed`` (the result does not depend on the threads)."""
    n_tasks = -(-n_bootstrap // _RESAMPLES_PER_TASK)
    streams = np.random.SeedSequence(seed).spawn(n_tasks)

    def task(t: int) -> np.ndarray:
        size = min(_RESAMPLES_PER_TASK, n_bootstrap - t * _RESAMPLES_PER_TASK)
        return _resample_sums(columns_t, np.random.default_rng(streams[t]), size)

    n_threads = default_n_threads() if n_threads is None else max(1, int(n_threads))
    if n_threads == 1 or n_tasks == 1:
        parts = [task(t) for t in range(n_tasks)]
    else:
        with ThreadPoolExecutor(max_workers=min(n_threads, n_tasks)) as pool:
            parts = list(pool.map(task, range(n_tasks)))
    return np.concatenate(parts)


def bootstrap_replicates(
    statistic: RatioStatistic,
    *,
    group: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_threads: int | None = None,
) -> np.ndarray:
    """Bootstrap replicates of ``statistic.value()``, shape (n_bootstrap,).

    Resampling (Poisson bootstrap over groups; Hanley & MacGibbon 2006, Chamandy et al.
    2012): each resample ``b`` gives group ``g`` an iid count ``c[b, g]`` (mean 1,
    variance 1, distributed like Poisson(1), see ``_COUNT_FREQ``) and recomputes

        V_b = sum_k ( sum_g c[b, g] U[k, g] ) / ( sum_g c[b, g] D[k, g] )

    where ``U``, ``D`` are the numerator and denominator sums within each group (``D``
    counts the group's units for plain means). All replicates come from one pass over
    blocks of (64 resamples, 8,192 groups): the counts are drawn as random bytes and
    dotted with the group sums. For large data this runs in float32 on group sums
    centred by their mean (float64 below ~4 million resample-group pairs); blocks are
    added up in float64. Blocks of resamples run on ``n_threads`` threads, each with its
    own random stream spawned from ``seed``, so the result does not depend on the
    thread count.

    Replicates whose denominators are all zero (possible only for tiny data) are NaN.

    Args:
        statistic: numerators and denominators per unit.
        group: cluster id of each unit, shape (n_units,); ``None``: units are independent.
        n_bootstrap: number of resamples, >= 2.
        seed: seed of the resampling.
        n_threads: worker threads; default :func:`default_n_threads`.
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer):
        raise ValueError(f"n_bootstrap must be an int, got {n_bootstrap!r}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    n_terms = statistic.numerators.shape[0]
    denominators = (
        np.ones((1, statistic.n_units))
        if statistic.denominators is None
        else statistic.denominators
    )
    sums = _group_sums(np.concatenate([statistic.numerators, denominators]).T, group)
    n_groups = sums.shape[0]

    # sum_g c S = sum_g c (S - shift) + shift * sum_g c. Columns that are constant over
    # groups (e.g. the 1s of a plain mean) need only sum_g c, which the appended column
    # of 1s gives; the others are shifted by their mean so that float32 products only
    # see small centred values. Small data stay in float64, unshifted, so that an
    # all-zero denominator sums to exactly 0.
    constant = sums.min(axis=0) == sums.max(axis=0)
    exact = n_groups * n_bootstrap <= _EXACT_LIMIT
    shift = np.where(constant, sums[0], 0.0 if exact else sums.mean(axis=0))
    varying = np.flatnonzero(~constant)
    columns_t = np.empty((varying.shape[0] + 1, n_groups), np.float64 if exact else np.float32)
    columns_t[:-1] = (sums[:, varying] - shift[varying]).T
    columns_t[-1] = 1.0

    raw = _all_resample_sums(columns_t, n_bootstrap, seed, n_threads)

    resampled = raw[:, -1:] * shift  # sum_g c[b, g] S[g, :], shape (n_bootstrap, m)
    resampled[:, varying] += raw[:, :-1]
    num = resampled[:, :n_terms]
    den = resampled[:, n_terms:]  # one column, broadcast over terms, for plain means
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(den != 0, num / den, np.where(num == 0, 0.0, np.nan))
    return ratios.sum(axis=1)


def bootstrap_interval(
    statistic: RatioStatistic,
    *,
    group: np.ndarray | None = None,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    n_threads: int | None = None,
) -> Interval:
    """Percentile bootstrap interval of ``statistic.value()`` at level ``1 - alpha``.

    ``ci_low``/``ci_high`` are the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the
    replicates of :func:`bootstrap_replicates`; ``std_err`` is their standard deviation.
    Replicates that are NaN (all denominators zero) are left out.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    replicates = bootstrap_replicates(
        statistic, group=group, n_bootstrap=n_bootstrap, seed=seed, n_threads=n_threads
    )
    replicates = replicates[np.isfinite(replicates)]
    if replicates.shape[0] < 2:
        raise ValueError("fewer than 2 bootstrap replicates are defined; the data are too small")
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return Interval(
        estimate=statistic.value(),
        ci_low=float(low),
        ci_high=float(high),
        std_err=float(replicates.std(ddof=1)),
    )
