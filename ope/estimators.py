"""Per-decision off-policy estimators on logged bandit feedback.

Notation (shapes in brackets; ``n`` logged decisions, ``K`` actions):

- ``a_i``, ``r_i``, ``p_i``: logged action, reward and propensity (``BanditFeedback``) [n]
- ``pi(a | x_i)``: the target policy's probabilities, ``target_probs`` [n, K]
- ``q(x_i, a)``: a reward model's predictions, ``reward_hat`` [n, K]
- ``w_i = pi(a_i | x_i) / p_i``: importance weight of the logged action,
  clipped at ``max_weight`` when that is set
- ``q_i = q(x_i, a_i)`` and ``q_pi_i = sum_a pi(a | x_i) q(x_i, a)``

Every estimator has the same signature (unlike Open Bandit Pipeline's ``**kwargs``)::

    estimator.estimate_rounds(feedback, target_probs, reward_hat) -> (n,)
    estimator.estimate(feedback, target_probs, reward_hat) -> float
    estimator.interval(feedback, target_probs, reward_hat, alpha=, n_bootstrap=, seed=)

``reward_hat`` may be ``None`` for estimators that do not use it (``ips``, ``snips``).
Intervals bootstrap over ``feedback.group`` (e.g. conversations) when it is set.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from supportrl.ope.data import BanditFeedback
from supportrl.ope.intervals import Interval, RatioStatistic, bootstrap_interval

__all__ = [
    "IPS",
    "SNIPS",
    "BanditEstimator",
    "DirectMethod",
    "DoublyRobust",
    "DROptimisticShrinkage",
    "SelfNormalizedDR",
    "SwitchDR",
    "check_action_values",
    "check_target_probs",
    "importance_weights",
]

PROB_ATOL = 1e-6
"""Tolerance on row sums of probability arrays."""


def check_target_probs(
    target_probs: np.ndarray, n_rows: int, n_actions: int, *, name: str = "target_probs"
) -> np.ndarray:
    """Validate a policy's action probabilities and return them as float64.

    Args:
        target_probs: shape (n_rows, n_actions); non-negative, finite, rows summing to 1
            within ``PROB_ATOL``.
        n_rows: expected number of rows (logged decisions or turns).
        n_actions: expected number of actions.
        name: argument name used in error messages.

    Raises:
        ValueError: naming ``name``, the problem and the first offending row.
    """
    probs = np.asarray(target_probs, dtype=np.float64)
    if probs.shape != (n_rows, n_actions):
        raise ValueError(
            f"{name} must have shape (n_rows, n_actions) = ({n_rows}, {n_actions}), "
            f"got {probs.shape}"
        )
    # One pass for the common case; the slow searches below run only on bad input. Row
    # sums by a matrix-vector product: numpy's sum over a short last axis is ~10x slower.
    row_sums = probs @ np.ones(n_actions)
    if not (probs.min() >= 0.0 and np.abs(row_sums - 1.0).max() <= PROB_ATOL):
        bad = ~np.isfinite(probs).all(axis=1)
        if bad.any():
            raise ValueError(f"{name} must be finite; row {int(np.flatnonzero(bad)[0])} is not")
        bad = (probs < 0).any(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must be non-negative; row {row} has {probs[row].min():.6g} "
                f"({int(bad.sum())} rows with negative entries)"
            )
        bad = np.abs(row_sums - 1.0) > PROB_ATOL
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} rows must sum to 1 (atol {PROB_ATOL:g}); row {row} sums to "
            f"{row_sums[row]:.9g} ({int(bad.sum())} rows off)"
        )
    return probs


def check_action_values(
    values: np.ndarray | None, n_rows: int, n_actions: int, *, name: str, needed_by: str
) -> np.ndarray:
    """Validate per-action predictions (``reward_hat``, ``q_hat``) and return float64.

    Raises:
        ValueError: when ``values`` is None (``needed_by`` needs them), has the wrong
            shape or holds non-finite numbers.
    """
    if values is None:
        raise ValueError(
            f"{needed_by} needs {name}, the model's predictions for every action, "
            f"shape ({n_rows}, {n_actions}); got None"
        )
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_rows, n_actions):
        raise ValueError(
            f"{name} must have shape (n_rows, n_actions) = ({n_rows}, {n_actions}), "
            f"got {array.shape}"
        )
    if not np.isfinite(array.sum()):  # cheap test first; the sum may also just overflow
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if bad.size:
            raise ValueError(f"{name} must be finite; row {int(bad[0])} is not")
    return array


def _check_max_weight(max_weight: float | None) -> None:
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be > 0 or None, got {max_weight}")


def importance_weights(
    feedback: BanditFeedback, target_probs: np.ndarray, *, max_weight: float | None = None
) -> np.ndarray:
    """``w_i = min(pi(a_i | x_i) / p_i, max_weight)``, shape (n_rounds,).

    ``target_probs`` has shape (n_rounds, n_actions) and is validated.
    """
    _check_max_weight(max_weight)
    probs = check_target_probs(target_probs, feedback.n_rounds, feedback.n_actions)
    return _weights(feedback, probs, max_weight)


def _weights(feedback: BanditFeedback, probs: np.ndarray, max_weight: float | None) -> np.ndarray:
    weights = probs.reshape(-1).take(feedback.flat_index) / feedback.propensity
    if max_weight is not None:
        np.minimum(weights, max_weight, out=weights)
    return weights


@dataclass(frozen=True)
class _Rounds:
    """Validated per-round quantities shared by the estimators, each shape (n_rounds,)."""

    reward: np.ndarray
    """``r_i``"""
    weight: np.ndarray
    """``w_i`` (clipped)"""
    q_logged: np.ndarray | None
    """``q(x_i, a_i)``; None when no reward model is given"""
    q_target: np.ndarray | None
    """``sum_a pi(a | x_i) q(x_i, a)``; None when no reward model is given"""


@dataclass(frozen=True, kw_only=True)
class BanditEstimator(ABC):
    """Base of the per-decision estimators: one signature for all of them.

    Subclasses set ``name`` (the key in ``ope.ESTIMATORS`` and in ``result.json``),
    ``needs_reward_hat``, and implement :meth:`_statistic`, which writes the estimate
    as a :class:`~ope.intervals.RatioStatistic` (sums of per-round numerators over sums
    of denominators), so that point estimates, per-round contributions and bootstrap
    intervals all come from one formula.
    """

    name: ClassVar[str]
    needs_reward_hat: ClassVar[bool] = False

    max_weight: float | None = None
    """Clip importance weights at this value (Ionides 2008; biased, lower variance).
    ``None``: no clipping. Ignored by :class:`DirectMethod`."""

    def __post_init__(self) -> None:
        _check_max_weight(self.max_weight)

    def statistic(
        self,
        feedback: BanditFeedback,
        target_probs: np.ndarray,
        reward_hat: np.ndarray | None = None,
    ) -> RatioStatistic:
        """Validate the inputs and return the estimate's numerators and denominators.

        Args:
            feedback: the logged decisions (n_rounds of them).
            target_probs: ``pi(a | x_i)``, shape (n_rounds, n_actions).
            reward_hat: ``q(x_i, a)``, shape (n_rounds, n_actions), or None when the
                estimator does not use a reward model.
        """
        probs = check_target_probs(target_probs, feedback.n_rounds, feedback.n_actions)
        q = None
        if reward_hat is not None or self.needs_reward_hat:
            q = check_action_values(
                reward_hat,
                feedback.n_rounds,
                feedback.n_actions,
                name="reward_hat",
                needed_by=f"{type(self).__name__} ({self.name!r})",
            )
        return self._validated_statistic(feedback, probs, q)

    def _validated_statistic(
        self, feedback: BanditFeedback, probs: np.ndarray, q: np.ndarray | None
    ) -> RatioStatistic:
        """:meth:`statistic` on inputs the caller has validated (``check_target_probs``,
        ``check_action_values``): for callers that validate each policy once and then run
        several estimators or bootstrap replicates on it (``OffPolicyEvaluation``)."""
        q_logged = q_target = None
        if q is not None:
            q_logged = q.reshape(-1).take(feedback.flat_index)
            q_target = np.einsum("ij,ij->i", probs, q)
        rounds = _Rounds(
            reward=feedback.reward,
            weight=_weights(feedback, probs, self.max_weight),
            q_logged=q_logged,
            q_target=q_target,
        )
        return self._statistic(rounds)

    @abstractmethod
    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        """The estimator's formula on validated per-round arrays."""

    def estimate_rounds(
        self,
        feedback: BanditFeedback,
        target_probs: np.ndarray,
        reward_hat: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-round contributions, shape (n_rounds,), whose mean is :meth:`estimate`.

        Self-normalised estimators scale them by ``n / sum_i w_i``.
        """
        return self.statistic(feedback, target_probs, reward_hat).contributions()

    def estimate(
        self,
        feedback: BanditFeedback,
        target_probs: np.ndarray,
        reward_hat: np.ndarray | None = None,
    ) -> float:
        """The estimated policy value (expected reward per decision)."""
        return self.statistic(feedback, target_probs, reward_hat).value()

    def interval(
        self,
        feedback: BanditFeedback,
        target_probs: np.ndarray,
        reward_hat: np.ndarray | None = None,
        *,
        alpha: float = 0.05,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> Interval:
        """Estimate with a ``1 - alpha`` bootstrap percentile interval.

        Resamples the groups of ``feedback.group`` (rows when it is None) and
        re-normalises self-normalised estimators within every resample; see
        :func:`ope.intervals.bootstrap_replicates`.
        """
        return bootstrap_interval(
            self.statistic(feedback, target_probs, reward_hat),
            group=feedback.group,
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )


def _reward_model(rounds: _Rounds) -> tuple[np.ndarray, np.ndarray]:
    # statistic() has already rejected a missing reward_hat for these estimators.
    assert rounds.q_logged is not None and rounds.q_target is not None
    return rounds.q_logged, rounds.q_target


@dataclass(frozen=True, kw_only=True)
class DirectMethod(BanditEstimator):
    """Direct method: the reward model's value of the target policy.

    ``V_DM = 1/n sum_i sum_a pi(a | x_i) q(x_i, a)``

    Unbiased only when the reward model is; no importance weights (Beygelzimer &
    Langford 2009; Dudík, Langford & Li 2011, "Doubly Robust Policy Evaluation and
    Learning", ICML).

    **Interval.** :meth:`interval` resamples decisions (groups) with ``reward_hat`` held
    fixed: sampling noise only. :class:`ope.meta.OffPolicyEvaluation` refits the reward
    model in every resample, so its interval also covers the model's estimation error;
    neither covers the model's bias where the logs lack support.
    """

    name: ClassVar[str] = "dm"
    needs_reward_hat: ClassVar[bool] = True

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        _, q_target = _reward_model(rounds)
        return RatioStatistic(q_target[None, :])


@dataclass(frozen=True, kw_only=True)
class IPS(BanditEstimator):
    """Inverse propensity scoring.

    ``V_IPS = 1/n sum_i w_i r_i``

    Unbiased when the logger gives every action the target policy uses a positive
    probability and weights are not clipped (Horvitz & Thompson 1952; Precup, Sutton &
    Singh 2000; Strehl et al. 2010, "Learning from Logged Implicit Exploration Data").

    **Interval.** Bootstrap over decisions (groups): sampling noise of the weighted
    rewards given the propensities; it does not cover propensity error, clipping bias, or
    actions the logger never takes (see ``ope.support``).
    """

    name: ClassVar[str] = "ips"

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        return RatioStatistic((rounds.weight * rounds.reward)[None, :])


@dataclass(frozen=True, kw_only=True)
class SNIPS(BanditEstimator):
    """Self-normalised inverse propensity scoring.

    ``V_SNIPS = sum_i w_i r_i / sum_i w_i``

    Biased but consistent, bounded by the reward range, usually much lower variance
    than IPS (Swaminathan & Joachims 2015, "The Self-Normalized Estimator for
    Counterfactual Learning", NeurIPS).

    **Interval.** Bootstrap over decisions (groups): sampling noise of the weighted
    rewards given the propensities; it does not cover propensity error, clipping bias, or
    actions the logger never takes (see ``ope.support``).
    """

    name: ClassVar[str] = "snips"

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        w = rounds.weight
        return RatioStatistic((w * rounds.reward)[None, :], w[None, :])


@dataclass(frozen=True, kw_only=True)
class DoublyRobust(BanditEstimator):
    """Doubly robust estimator.

    ``V_DR = 1/n sum_i [ q_pi_i + w_i (r_i - q_i) ]``

    Unbiased when either the propensities or the reward model are correct (Dudík,
    Langford & Li 2011, "Doubly Robust Policy Evaluation and Learning", ICML).

    **Interval.** :meth:`interval` resamples decisions (groups) with ``reward_hat`` held
    fixed: sampling noise only. :class:`ope.meta.OffPolicyEvaluation` refits the reward
    model in every resample, so its interval also covers the model's estimation error;
    neither covers the model's bias where the logs lack support.
    """

    name: ClassVar[str] = "dr"
    needs_reward_hat: ClassVar[bool] = True

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        q_logged, q_target = _reward_model(rounds)
        return RatioStatistic((q_target + rounds.weight * (rounds.reward - q_logged))[None, :])


@dataclass(frozen=True, kw_only=True)
class SelfNormalizedDR(BanditEstimator):
    """Self-normalised doubly robust estimator.

    ``V_SNDR = 1/n sum_i q_pi_i + sum_i w_i (r_i - q_i) / sum_i w_i``

    DR with the correction term self-normalised as in SNIPS (Swaminathan & Joachims
    2015; Kallus & Uehara 2019).

    **Interval.** :meth:`interval` resamples decisions (groups) with ``reward_hat`` held
    fixed: sampling noise only. :class:`ope.meta.OffPolicyEvaluation` refits the reward
    model in every resample, so its interval also covers the model's estimation error;
    neither covers the model's bias where the logs lack support.
    """

    name: ClassVar[str] = "sndr"
    needs_reward_hat: ClassVar[bool] = True

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        q_logged, q_target = _reward_model(rounds)
        w = rounds.weight
        numerators = np.stack([w * (rounds.reward - q_logged), q_target])
        denominators = np.stack([w, np.ones_like(w)])
        return RatioStatistic(numerators, denominators)


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class SwitchDR(BanditEstimator):
    """Switch doubly robust estimator.

    ``V_SwitchDR = 1/n sum_i [ q_pi_i + w_i (r_i - q_i) 1{w_i <= tau} ]``

    Uses DR where the importance weight is at most ``tau`` and the direct method
    where it is larger (Wang, Agarwal & Dudík 2017, "Optimal and Adaptive Off-policy
    Evaluation in Contextual Bandits", ICML). ``tau = inf`` is DR, ``tau = 0`` is DM
    on rounds with positive weight.

    **Interval.** :meth:`interval` resamples decisions (groups) with ``reward_hat`` held
    fixed: sampling noise only. :class:`ope.meta.OffPolicyEvaluation` refits the reward
    model in every resample, so its interval also covers the model's estimation error;
    neither covers the model's bias where the logs lack support.
    """

    name: ClassVar[str] = "switch_dr"
    needs_reward_hat: ClassVar[bool] = True

    tau: float = 100.0
    """Weight threshold above which the importance-weighted correction is dropped (>= 0)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative("tau", self.tau)

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        q_logged, q_target = _reward_model(rounds)
        w = np.where(rounds.weight <= self.tau, rounds.weight, 0.0)
        return RatioStatistic((q_target + w * (rounds.reward - q_logged))[None, :])


@dataclass(frozen=True, kw_only=True)
class DROptimisticShrinkage(BanditEstimator):
    """Doubly robust estimator with optimistic shrinkage.

    ``V_DRos = 1/n sum_i [ q_pi_i + w'_i (r_i - q_i) ]`` with
    ``w'_i = lambda_ w_i / (w_i^2 + lambda_)``

    Shrinks large weights towards 0 to minimise a bound on the MSE (Su, Dimakopoulou,
    Krishnamurthy & Dudík 2020, "Doubly Robust Off-policy Evaluation with Shrinkage",
    ICML). ``lambda_ = inf`` is DR, ``lambda_ = 0`` is DM.

    **Interval.** :meth:`interval` resamples decisions (groups) with ``reward_hat`` held
    fixed: sampling noise only. :class:`ope.meta.OffPolicyEvaluation` refits the reward
    model in every resample, so its interval also covers the model's estimation error;
    neither covers the model's bias where the logs lack support.
    """

    name: ClassVar[str] = "dr_os"
    needs_reward_hat: ClassVar[bool] = True

    lambda_: float = 100.0
    """Shrinkage strength (>= 0): weights well below ``sqrt(lambda_)`` are kept."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_non_negative("lambda_", self.lambda_)

    def _statistic(self, rounds: _Rounds) -> RatioStatistic:
        q_logged, q_target = _reward_model(rounds)
        w = rounds.weight
        if math.isinf(self.lambda_):
            shrunk = w
        elif self.lambda_ == 0:
            shrunk = np.zeros_like(w)
        else:
            shrunk = self.lambda_ * w / (w * w + self.lambda_)
        return RatioStatistic((q_target + shrunk * (rounds.reward - q_logged))[None, :])
