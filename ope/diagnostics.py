"""Diagnostics for importance-weighted estimates: effective sample size, weight
statistics, and warnings about actions the logs barely cover.

Report these next to every estimate: a value with a tight interval but an effective
sample size of a few dozen is not to be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from supportrl.ope.estimators import check_target_probs

__all__ = ["WeightStatistics", "effective_sample_size", "support_warning", "weight_statistics"]


def _weights_array(weights: np.ndarray) -> np.ndarray:
    array = np.asarray(weights, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"weights must be a non-empty 1-D array, got shape {array.shape}")
    if not (np.isfinite(array).all() and array.min() >= 0):
        raise ValueError("weights must be finite and non-negative")
    return array


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum_i w_i)^2 / sum_i w_i^2``.

    Equals ``n`` for equal weights and 1 when one weight dominates; 0 when all weights
    are 0. ``weights`` has shape (n,), non-negative (importance weights of decisions,
    or trajectory weights of conversations).
    """
    w = _weights_array(weights)
    sum_sq = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sum_sq if sum_sq > 0 else 0.0


@dataclass(frozen=True)
class WeightStatistics:
    """Summary of importance weights."""

    n: int
    """Number of weights."""
    mean: float
    """Mean weight; close to 1 when the propensities are right and the weights unclipped."""
    max: float
    """Largest weight."""
    quantiles: dict[float, float]
    """Weight quantiles, e.g. ``{0.5: .., 0.9: .., 0.99: ..}``."""
    share_zero: float
    """Share of rows with weight 0 (the target policy never takes the logged action)."""
    ess: float
    """Effective sample size, see :func:`effective_sample_size`."""

    @property
    def ess_share(self) -> float:
        """``ess / n``."""
        return self.ess / self.n


def weight_statistics(
    weights: np.ndarray, quantiles: Sequence[float] = (0.5, 0.9, 0.99)
) -> WeightStatistics:
    """Summarise importance weights, shape (n,), non-negative."""
    w = _weights_array(weights)
    levels = [float(q) for q in quantiles]
    if any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantiles must be in [0, 1], got {levels}")
    values = np.quantile(w, levels) if levels else np.empty(0)
    return WeightStatistics(
        n=int(w.shape[0]),
        mean=float(w.mean()),
        max=float(w.max()),
        quantiles={q: float(v) for q, v in zip(levels, values, strict=True)},
        share_zero=float(np.mean(w == 0)),
        ess=effective_sample_size(w),
    )


def _support_inputs(
    target_probs: np.ndarray, logged: np.ndarray, action_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`support_warning`'s arguments checked: the target probabilities (n, n_actions),
    the logged counts or probabilities as float64, and the actions' labels."""
    logged_array = np.asarray(logged, dtype=np.float64)
    n_actions = logged_array.shape[-1] if logged_array.ndim in (1, 2) else -1
    if n_actions < 1:
        raise ValueError(
            f"logged must be counts (n_actions,) or probabilities (n, n_actions), "
            f"got shape {logged_array.shape}"
        )
    probs = np.asarray(target_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"target_probs must be 2-D (n, n_actions), got shape {probs.shape}")
    probs = check_target_probs(probs, probs.shape[0], n_actions)
    if action_names is None:
        names = [f"action {a}" for a in range(n_actions)]
    elif len(action_names) != n_actions:
        raise ValueError(f"action_names must have {n_actions} names, got {len(action_names)}")
    else:
        names = [f"action {name!r}" for name in action_names]
    return probs, logged_array, names


def support_warning(
    target_probs: np.ndarray,
    logged: np.ndarray,
    *,
    action_names: Sequence[str] | None = None,
    min_target_share: float = 0.01,
    max_ratio: float = 10.0,
    min_count: int = 30,
) -> list[str]:
    """Warnings about actions the target policy uses but the logs rarely contain.

    An action is flagged when the target policy puts at least ``min_target_share`` of its
    probability mass on it (averaged over rows) and either the logger's share of it is
    more than ``max_ratio`` times smaller (importance weights of about ``max_ratio`` or
    more), or, with counts, it was logged fewer than ``min_count`` times. With per-row
    logging probabilities, rows where the target policy may take an action that the
    logger never takes (no support: every importance-weighted estimator is biased
    there) are flagged too.

    Args:
        target_probs: target policy probabilities, shape (n, n_actions).
        logged: either logged action counts, shape (n_actions,), or the logging policy's
            probabilities of every action on the same rows, shape (n, n_actions).
        action_names: labels for the messages; default ``action 0``, ``action 1``, ...
        min_target_share: ignore actions the target policy uses less than this.
        max_ratio: flag when target share / logged share exceeds this.
        min_count: with counts, flag actions logged fewer times than this.

    Returns:
        One readable sentence per problem; empty when the logs cover the target policy.
    """
    probs, logged_array, names = _support_inputs(target_probs, logged, action_names)
    n_actions = len(names)
    target_share = probs.mean(axis=0)
    counts: np.ndarray | None = None
    warnings: list[str] = []
    if logged_array.ndim == 1:
        if not (np.isfinite(logged_array).all() and logged_array.min() >= 0):
            raise ValueError("logged counts must be finite and non-negative")
        if logged_array.sum() == 0:
            raise ValueError("logged counts are all zero")
        counts = logged_array
        logged_share = counts / counts.sum()
        where = "of the logged decisions"
    else:
        logged_array = check_target_probs(logged_array, probs.shape[0], n_actions, name="logged")
        logged_share = logged_array.mean(axis=0)
        where = "of the logging policy's probability"
        unsupported = (probs > 0) & (logged_array == 0)
        for a in np.flatnonzero(unsupported.any(axis=0)):
            rows = unsupported[:, a]
            warnings.append(
                f"{names[a]}: the target policy may take it on {rows.mean():.1%} of rows "
                f"(mass {probs[rows, a].sum() / probs.shape[0]:.1%}) where the logging policy "
                f"never does; importance-weighted estimates miss that part of its value"
            )

    for a in range(n_actions):
        if target_share[a] < min_target_share:
            continue
        ratio = target_share[a] / logged_share[a] if logged_share[a] > 0 else np.inf
        few = counts is not None and counts[a] < min_count
        if ratio > max_ratio or few:
            count_text = f" ({int(counts[a])} times)" if counts is not None else ""
            warnings.append(
                f"{names[a]}: the target policy puts {target_share[a]:.1%} of its mass on it "
                f"but it makes up {logged_share[a]:.2%} {where}{count_text}; "
                + (
                    "there is no logged support for it"
                    if logged_share[a] == 0
                    else f"expect importance weights around {ratio:.0f}"
                )
            )
    return warnings
