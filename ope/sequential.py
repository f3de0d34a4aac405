"""Per-conversation off-policy estimators on logged conversations.

The value of a policy is the expected undiscounted return of a conversation,
``E_pi[ sum_t r_t ]`` (reward contract v1, docs/reward.md).

Notation (``c`` a conversation, ``t`` its turn; per-turn arrays have shape [n_turns]):

- ``w_ct = pi(a_ct | s_ct) / p_ct``: per-turn importance weight
- ``rho_ct = prod_{t' <= t} w_ct'``: cumulative weight, clipped at ``max_weight`` when
  that is set, ``rho_c,-1 = 1``
- ``q_ct = q(s_ct, a_ct)`` and ``v_ct = sum_a pi(a | s_ct) q(s_ct, a)`` from ``q_hat``
  [n_turns, n_actions], a model of the expected return from turn ``t`` on

**Conversations of different lengths.** A conversation that ended before turn ``t`` is
treated as sitting in an absorbing state with reward 0 where the target and logging
policies agree: its reward, ``q`` and ``v`` are 0 after the end and its cumulative
weight stays at its last value (Thomas 2015, PhD thesis, section 3.9). So at every
turn ``t`` all conversations stay in the normalisation of the weighted estimators,
``E_mu[rho_t] = 1`` holds for every ``t``, and WPDIS and WDR stay consistent. (Putting
weight 0 on ended conversations instead would normalise by the probability of still
being in a conversation and over-weight late rewards.)

Every estimator has the same signature::

    estimator.estimate_conversations(feedback, target_probs, q_hat) -> (n_conversations,)
    estimator.estimate(feedback, target_probs, q_hat) -> float
    estimator.interval(feedback, target_probs, q_hat, alpha=, n_bootstrap=, seed=)

Intervals bootstrap conversations, never turns. The work is vectorised over a dense
(n_conversations, max_length) layout; the loader truncates conversations at
``max_turns`` so that the layout stays small.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from supportrl.ope.data import SequentialFeedback
from supportrl.ope.estimators import check_action_values, check_target_probs
from supportrl.ope.intervals import Interval, RatioStatistic, bootstrap_interval

__all__ = [
    "FQE",
    "PDIS",
    "WPDIS",
    "SequentialDR",
    "SequentialEstimator",
    "WeightedDR",
    "cumulative_weights",
]


def _dense(feedback: SequentialFeedback, values: np.ndarray, fill: float) -> np.ndarray:
    """Per-turn ``values`` (n_turns,) laid out as (n_conversations, max_length)."""
    out = np.full((feedback.n_conversations, feedback.max_length), fill)
    out[feedback.conversation_index, feedback.turn_index] = values
    return out


def _dense_rho(
    feedback: SequentialFeedback, probs: np.ndarray, max_weight: float | None
) -> np.ndarray:
    """Cumulative weights ``rho`` as (n_conversations, max_length), carried past the end."""
    weights = probs.reshape(-1).take(feedback.flat_index) / feedback.propensity
    # Padding with weight 1 carries rho forward after a conversation ends.
    rho = np.cumprod(_dense(feedback, weights, 1.0), axis=1)
    if max_weight is not None:
        np.minimum(rho, max_weight, out=rho)
    return rho


def cumulative_weights(
    feedback: SequentialFeedback, target_probs: np.ndarray, *, max_weight: float | None = None
) -> np.ndarray:
    """``rho_ct`` for every logged turn, shape (n_turns,).

    ``rho`` at a conversation's last turn is its trajectory weight; feed those to
    :func:`ope.diagnostics.weight_statistics` to see how heavy the tail is.
    """
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be > 0 or None, got {max_weight}")
    probs = check_target_probs(target_probs, feedback.n_turns, feedback.n_actions)
    rho = _dense_rho(feedback, probs, max_weight)
    return rho[feedback.conversation_index, feedback.turn_index]


@dataclass(frozen=True)
class _Turns:
    """Validated quantities in the dense layout, each shape (n_conversations, max_length)."""

    rho: np.ndarray
    """``rho_ct``, carried forward after the end"""
    reward: np.ndarray
    """``r_ct``, 0 after the end"""
    q_logged: np.ndarray | None
    """``q_ct``, 0 after the end; None without ``q_hat``"""
    v_target: np.ndarray | None
    """``v_ct``, 0 after the end; None without ``q_hat``"""

    @property
    def rho_prev(self) -> np.ndarray:
        """``rho_c,t-1`` with ``rho_c,-1 = 1``."""
        return np.concatenate([np.ones_like(self.rho[:, :1]), self.rho[:, :-1]], axis=1)


@dataclass(frozen=True, kw_only=True)
class SequentialEstimator(ABC):
    """Base of the per-conversation estimators: one signature for all of them.

    Subclasses set ``name`` and ``needs_q_hat`` and implement :meth:`_statistic`,
    which writes the estimate as a :class:`~ope.intervals.RatioStatistic` over
    conversations.
    """

    name: ClassVar[str]
    needs_q_hat: ClassVar[bool] = False

    max_weight: float | None = None
    """Clip cumulative weights ``rho`` at this value; ``None``: no clipping."""

    def __post_init__(self) -> None:
        if self.max_weight is not None and not self.max_weight > 0:
            raise ValueError(f"max_weight must be > 0 or None, got {self.max_weight}")

    def statistic(
        self,
        feedback: SequentialFeedback,
        target_probs: np.ndarray,
        q_hat: np.ndarray | None = None,
    ) -> RatioStatistic:
        """Validate the inputs and return the estimate's numerators and denominators.

        Args:
            feedback: the logged conversations.
            target_probs: ``pi(a | s_t)`` at every logged turn, shape (n_turns, n_actions).
            q_hat: ``q(s_t, a)``, expected return from turn ``t`` on (this turn's reward
                included) when taking ``a`` and following the target policy after,
                shape (n_turns, n_actions); None when the estimator does not use it.
        """
        probs = check_target_probs(target_probs, feedback.n_turns, feedback.n_actions)
        q = None
        if q_hat is not None or self.needs_q_hat:
            q = check_action_values(
                q_hat,
                feedback.n_turns,
                feedback.n_actions,
                name="q_hat",
                needed_by=f"{type(self).__name__} ({self.name!r})",
            )
        return self._validated_statistic(feedback, probs, q)

    def _validated_statistic(
        self, feedback: SequentialFeedback, probs: np.ndarray, q: np.ndarray | None
    ) -> RatioStatistic:
        """:meth:`statistic` on inputs the caller has validated (``check_target_probs``,
        ``check_action_values``): for callers that validate each policy once and then run
        several estimators or bootstrap replicates on it (``OffPolicyEvaluation``)."""
        q_logged = v_target = None
        if q is not None:
            q_logged = _dense(feedback, q.reshape(-1).take(feedback.flat_index), 0.0)
            v_target = _dense(feedback, np.einsum("ij,ij->i", probs, q), 0.0)
        turns = _Turns(
            rho=_dense_rho(feedback, probs, self.max_weight),
            reward=_dense(feedback, feedback.reward, 0.0),
            q_logged=q_logged,
            v_target=v_target,
        )
        return self._statistic(turns)

    @abstractmethod
    def _statistic(self, turns: _Turns) -> RatioStatistic:
        """The estimator's formula on validated dense arrays."""

    def estimate_conversations(
        self,
        feedback: SequentialFeedback,
        target_probs: np.ndarray,
        q_hat: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-conversation contributions, shape (n_conversations,), whose mean is
        :meth:`estimate` (weighted estimators scale them by their normalisers)."""
        return self.statistic(feedback, target_probs, q_hat).contributions()

    def estimate(
        self,
        feedback: SequentialFeedback,
        target_probs: np.ndarray,
        q_hat: np.ndarray | None = None,
    ) -> float:
        """The estimated policy value (expected return per conversation)."""
        return self.statistic(feedback, target_probs, q_hat).value()

    def interval(
        self,
        feedback: SequentialFeedback,
        target_probs: np.ndarray,
        q_hat: np.ndarray | None = None,
        *,
        alpha: float = 0.05,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> Interval:
        """Estimate with a ``1 - alpha`` percentile interval from resampling conversations."""
        return bootstrap_interval(
            self.statistic(feedback, target_probs, q_hat),
            alpha=alpha,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )


def _q_model(turns: _Turns) -> tuple[np.ndarray, np.ndarray]:
    # statistic() has already rejected a missing q_hat for these estimators.
    assert turns.q_logged is not None and turns.v_target is not None
    return turns.q_logged, turns.v_target


@dataclass(frozen=True, kw_only=True)
class PDIS(SequentialEstimator):
    """Per-decision importance sampling.

    ``V_PDIS = 1/n sum_c sum_t rho_ct r_ct``

    Unbiased; each reward is weighted only by the decisions before it (Precup, Sutton &
    Singh 2000, "Eligibility Traces for Off-Policy Policy Evaluation", ICML). With
    deterministic target policies and long conversations the weights are heavy-tailed:
    the estimate is then usually too low, with too small a standard error.

    **Interval.** Bootstrap over conversations: sampling noise given the propensities
    (and, for the doubly robust ones, a fixed ``q_hat``). :class:`ope.meta.OffPolicyEvaluation`
    refits ``q_hat`` (FQE), the balancing weights and the CSAT model in every resample.
    No interval covers the target mass the sample misses (heavy tails, clipping, no
    support): :func:`ope.support.deficit_bounds` does.
    """

    name: ClassVar[str] = "pdis"

    def _statistic(self, turns: _Turns) -> RatioStatistic:
        return RatioStatistic((turns.rho * turns.reward).sum(axis=1)[None, :])


@dataclass(frozen=True, kw_only=True)
class WPDIS(SequentialEstimator):
    """Weighted (self-normalised) per-decision importance sampling.

    ``V_WPDIS = sum_t ( sum_c rho_ct r_ct ) / ( sum_c rho_ct )``

    Each turn's weights are normalised by their sum over *all* conversations; those
    that already ended keep their last ``rho`` and add reward 0 (see the module
    docstring). Biased, consistent, much lower variance than PDIS (Precup, Sutton &
    Singh 2000; Thomas 2015, PhD thesis).

    **Interval.** Bootstrap over conversations: sampling noise given the propensities
    (and, for the doubly robust ones, a fixed ``q_hat``). :class:`ope.meta.OffPolicyEvaluation`
    refits ``q_hat`` (FQE), the balancing weights and the CSAT model in every resample.
    No interval covers the target mass the sample misses (heavy tails, clipping, no
    support): :func:`ope.support.deficit_bounds` does.
    """

    name: ClassVar[str] = "wpdis"

    def _statistic(self, turns: _Turns) -> RatioStatistic:
        return RatioStatistic((turns.rho * turns.reward).T, turns.rho.T)


@dataclass(frozen=True, kw_only=True)
class SequentialDR(SequentialEstimator):
    """Doubly robust estimator for sequential decisions.

    Recursively, backwards over the turns of a conversation of length ``T``, with
    ``V_DR^(T) = 0``:

    ``V_DR^(t) = v_t + w_t ( r_t + V_DR^(t+1) - q_t )``

    and the estimate is ``1/n sum_c V_DR^(0)``. Unrolled, which is how it is computed:

    ``V_DR = 1/n sum_c sum_t [ rho_ct (r_ct - q_ct) + rho_c,t-1 v_ct ]``

    Unbiased when the propensities are right; low variance when ``q_hat`` is good
    (Jiang & Li 2016, "Doubly Robust Off-policy Value Evaluation for Reinforcement
    Learning", ICML).

    **Interval.** Bootstrap over conversations: sampling noise given the propensities
    (and, for the doubly robust ones, a fixed ``q_hat``). :class:`ope.meta.OffPolicyEvaluation`
    refits ``q_hat`` (FQE), the balancing weights and the CSAT model in every resample.
    No interval covers the target mass the sample misses (heavy tails, clipping, no
    support): :func:`ope.support.deficit_bounds` does.
    """

    name: ClassVar[str] = "seq_dr"
    needs_q_hat: ClassVar[bool] = True

    def _statistic(self, turns: _Turns) -> RatioStatistic:
        q_logged, v_target = _q_model(turns)
        per_turn = turns.rho * (turns.reward - q_logged) + turns.rho_prev * v_target
        return RatioStatistic(per_turn.sum(axis=1)[None, :])


@dataclass(frozen=True, kw_only=True)
class WeightedDR(SequentialEstimator):
    """Weighted doubly robust estimator.

    ``V_WDR = sum_t [ sum_c rho_ct (r_ct - q_ct) / sum_c rho_ct
                     + sum_c rho_c,t-1 v_ct / sum_c rho_c,t-1 ]``

    :class:`SequentialDR` with the cumulative weights of every turn normalised over
    conversations as in WPDIS (``rho_c,-1 = 1``, so the first ``v`` term is a plain
    mean). Grouped by shared denominator, term ``t = -1 .. T-1`` is
    ``sum_c rho_ct (r_ct - q_ct + v_c,t+1) / sum_c rho_ct`` (Thomas & Brunskill 2016,
    "Data-Efficient Off-Policy Policy Evaluation for Reinforcement Learning", ICML).

    **Interval.** Bootstrap over conversations: sampling noise given the propensities
    (and, for the doubly robust ones, a fixed ``q_hat``). :class:`ope.meta.OffPolicyEvaluation`
    refits ``q_hat`` (FQE), the balancing weights and the CSAT model in every resample.
    No interval covers the target mass the sample misses (heavy tails, clipping, no
    support): :func:`ope.support.deficit_bounds` does.
    """

    name: ClassVar[str] = "wdr"
    needs_q_hat: ClassVar[bool] = True

    def _statistic(self, turns: _Turns) -> RatioStatistic:
        q_logged, v_target = _q_model(turns)
        n_conversations = turns.rho.shape[0]
        v_next = np.concatenate([v_target[:, 1:], np.zeros((n_conversations, 1))], axis=1)
        numerators = np.concatenate(
            [v_target[:, :1], turns.rho * (turns.reward - q_logged + v_next)], axis=1
        )
        denominators = np.concatenate([np.ones((n_conversations, 1)), turns.rho], axis=1)
        return RatioStatistic(numerators.T, denominators.T)


@dataclass(frozen=True, kw_only=True)
class FQE(SequentialEstimator):
    """Fitted Q evaluation read off at the first turn (the direct method for conversations).

    ``V_FQE = 1/n sum_c v_c0 = 1/n sum_c sum_a pi(a | s_c0) q(s_c0, a)``

    with ``q_hat`` the Q-function of the target policy fitted by iterating the Bellman
    equation on the logs (:func:`ope.models.fitted_q_evaluation`; Le, Voloshin & Yue
    2019, "Batch Policy Learning under Constraints", ICML). No importance weights, so
    low variance; biased wherever the Q-model is (confounding through variables the logs
    do not record, extrapolation to actions the logs do not take). ``max_weight`` is
    ignored.

    **Interval.** :meth:`interval` resamples conversations with ``q_hat`` held fixed: it
    covers the sampling noise of the first-turn states only, not the error of the fitted
    Q-model, and is far too narrow. :class:`ope.meta.OffPolicyEvaluation` refits the
    Q-model (and its balancing weights) in every resample, which is the interval to
    report.
    """

    name: ClassVar[str] = "fqe"
    needs_q_hat: ClassVar[bool] = True

    def _statistic(self, turns: _Turns) -> RatioStatistic:
        _, v_target = _q_model(turns)
        return RatioStatistic(v_target[:, :1].T.copy())
