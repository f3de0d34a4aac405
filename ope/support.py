"""Support of a target policy in the logs, and bounds where the logs cannot tell.

Where a target policy takes actions that the logger (almost) never took in similar
states, the logs carry no information about what follows: importance weights there are
zero or huge, and a Q-model can only extrapolate. The honest answer is a range: the value
is *partially identified* (Manski 1990, "Nonparametric Bounds on Treatment Effects";
for off-policy evaluation, Kallus & Zhou 2020, "Confounding-Robust Policy Evaluation in
Infinite-Horizon Reinforcement Learning").

* :func:`behaviour_probs` / :func:`support_mask` / :func:`unsupported_statistic`: how
  much of a policy's probability mass falls on actions the logger barely or never takes
  in that state, per decision and per conversation (reported for every policy).
* :func:`support_bounds`: partial-identification bounds for the unsupported part: the
  supported part is estimated (doubly robust), the return after the first unsupported
  action gets the worst and best values the reward allows.
* :func:`deficit_bounds`: bounds that need no model. With cumulative weights carried past
  a conversation's end, ``E_mu[rho_t] = 1`` at every turn when the logs support the
  policy; the sample mean falls short of 1 by the target mass the sample does not
  represent (no support, heavy tails, clipping). That mass is given the worst and the
  best return reward v1 allows from that turn on (:class:`ReturnRange`), so the interval
  widens instead of lying.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.data import SequentialFeedback
from supportrl.ope.intervals import RatioStatistic
from supportrl.ope.models import MultinomialLogit

__all__ = [
    "DeficitBounds",
    "ReturnRange",
    "behaviour_probs",
    "deficit_bounds",
    "support_bounds",
    "support_mask",
    "unsupported_mass",
    "unsupported_statistic",
]


@dataclass(frozen=True)
class ReturnRange:
    """Worst and best conversation return reward v1 allows from each turn on.

    ``low[t]`` / ``high[t]`` (shape (max_turns,)) bound the return from turn ``t`` to the end
    of the conversation: between 1 and ``max_turns - t`` more turns, each earning a step
    reward in ``[step_low, step_high]`` (per-turn and per-minute costs over the logged
    handle-time range, action costs), and, when the conversation ends before the cut-off, a
    terminal outcome reward plus CSAT term in ``[end_low, end_high]``.
    """

    low: np.ndarray
    high: np.ndarray
    step_low: float
    step_high: float
    end_low: float
    end_high: float

    @classmethod
    def from_reward(
        cls, reward: RewardSpec, actions: Sequence[str], handle_time_s: np.ndarray
    ) -> ReturnRange:
        """Bounds under ``reward`` with handle times (seconds) in the range of ``handle_time_s``."""
        costs = reward.action_cost_vector(actions)
        minutes = np.array([np.min(handle_time_s), np.max(handle_time_s)]) / 60.0
        per_minute = reward.per_minute * minutes
        step_low = reward.per_turn + float(per_minute.min()) + float(costs.min())
        step_high = reward.per_turn + float(per_minute.max()) + float(costs.max())
        terminal = reward.terminal_vector()[1:]
        csat = reward.csat_weight * np.array([-1.0, 1.0])  # (csat - 3) / 2 in [-1, 1]
        end_low = float(terminal.min() + csat.min())
        end_high = float(terminal.max() + csat.max())
        horizon = reward.max_turns
        low, high = np.zeros(horizon), np.zeros(horizon)
        for t in range(horizon):
            left = np.arange(1, horizon - t + 1, dtype=np.float64)
            ended_low = left * step_low + end_low
            ended_high = left * step_high + end_high
            # cut off at max_turns: all turns used, no terminal reward
            low[t] = min(ended_low.min(), (horizon - t) * step_low)
            high[t] = max(ended_high.max(), (horizon - t) * step_high)
        return cls(
            low=low,
            high=high,
            step_low=step_low,
            step_high=step_high,
            end_low=end_low,
            end_high=end_high,
        )

    @property
    def value_low(self) -> float:
        """Lowest possible policy value (return from turn 0)."""
        return float(self.low[0])

    @property
    def value_high(self) -> float:
        """Highest possible policy value."""
        return float(self.high[0])


def behaviour_probs(
    x: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    *,
    max_rows: int = 50_000,
    seed: int = 0,
) -> np.ndarray:
    """The logger's probability of every action in every logged state, shape (n, n_actions).

    A multinomial logit on the encoded states ``x`` (n, d), fitted on at most ``max_rows``
    rows drawn at random (``seed``). Logs record the propensity of the logged action only;
    this model says how often the logger takes *each* action in states like this one,
    which is what support is about.
    """
    n = len(actions)
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    model = MultinomialLogit.fit(x[rows], actions[rows], n_actions, l2=1.0)
    return model.predict(x)


def support_mask(
    behaviour: np.ndarray, actions: np.ndarray, *, min_probability: float = 0.005
) -> np.ndarray:
    """Which actions the logs support in each logged state, shape (n, n_actions) bool.

    An action is supported where the behaviour model gives it at least
    ``min_probability``; the logged action is supported in its own state (it was taken).
    """
    mask = behaviour >= min_probability
    mask[np.arange(len(actions)), actions] = True
    return mask


def unsupported_mass(target_probs: np.ndarray, supported: np.ndarray) -> np.ndarray:
    """Target probability mass on unsupported actions per logged turn, shape (n,)."""
    return np.where(supported, 0.0, target_probs).sum(axis=1)


def _dense(feedback: SequentialFeedback, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full((feedback.n_conversations, feedback.max_length), fill)
    out[feedback.conversation_index, feedback.turn_index] = values
    return out


def _supported_weights(
    feedback: SequentialFeedback,
    target_probs: np.ndarray,
    supported: np.ndarray,
    max_weight: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pi_s = pi * supported`` (n_turns, n_actions) and its cumulative weights ``rho_s,t``
    and ``rho_s,t-1`` (n_conversations, horizon; clipped at ``max_weight``)."""
    probs_s = np.where(supported, target_probs, 0.0)
    w = probs_s.reshape(-1).take(feedback.flat_index) / feedback.propensity
    rho = np.cumprod(_dense(feedback, w, 1.0), axis=1)
    if max_weight is not None:
        np.minimum(rho, max_weight, out=rho)
    rho_prev = np.concatenate([np.ones_like(rho[:, :1]), rho[:, :-1]], axis=1)
    return probs_s, rho, rho_prev


def unsupported_statistic(
    feedback: SequentialFeedback,
    target_probs: np.ndarray,
    supported: np.ndarray,
    *,
    max_weight: float | None = None,
) -> RatioStatistic:
    """Per-conversation ``sum_t rho_s,t-1 u_t`` (plain mean): the probability that the target
    policy takes an unsupported action at some turn of a conversation.

    ``rho_s`` are the cumulative weights of the supported part ``pi_s = pi * supported``
    (clipped at ``max_weight``), ``u_t`` the target's unsupported mass at turn ``t``
    (:func:`unsupported_mass`). Shapes: (n_turns, n_actions) for the arrays.
    """
    _, rho, rho_prev = _supported_weights(feedback, target_probs, supported, max_weight)
    u = _dense(feedback, unsupported_mass(target_probs, supported), 0.0)
    return RatioStatistic((rho_prev * u).sum(axis=1)[None, :])


@dataclass(frozen=True)
class DeficitBounds:
    """Per-conversation pieces of the weight-deficit bounds; see :func:`deficit_bounds`."""

    pdis: np.ndarray
    """``sum_t rho_ct r_ct``, shape (n_conversations,)."""
    drop: np.ndarray
    """``rho_c,t-1 - rho_ct``, shape (n_conversations, horizon)."""
    low: np.ndarray
    """Worst return from each turn on, shape (horizon,), at most 0."""
    high: np.ndarray
    """Best return from each turn on, shape (horizon,), at least 0."""

    def deficit(self, counts: np.ndarray | None = None) -> float:
        """``sum_t Delta_t``: the target probability mass the (re)sample does not represent."""
        c = np.ones(len(self.pdis)) if counts is None else np.asarray(counts, dtype=np.float64)
        return float((c @ self.drop).sum() / max(float(c.sum()), 1e-300))

    def value(self, counts: np.ndarray | None = None) -> tuple[float, float]:
        """(lower, upper) bound on a resample counting conversation ``c`` ``counts[c]`` times."""
        c = np.ones(len(self.pdis)) if counts is None else np.asarray(counts, dtype=np.float64)
        total = max(float(c.sum()), 1e-300)
        base = float(c @ self.pdis) / total
        delta = (c @ self.drop) / total  # mass of the target's trajectories lost at turn t
        lower = base + float(np.minimum(delta * self.low, delta * self.high).sum())
        upper = base + float(np.maximum(delta * self.low, delta * self.high).sum())
        return lower, upper


def deficit_bounds(
    feedback: SequentialFeedback,
    target_probs: np.ndarray,
    returns: ReturnRange,
    *,
    max_weight: float | None = None,
) -> DeficitBounds:
    """Bounds on the value from the target trajectories the sample does not represent.

    With the cumulative weights carried past a conversation's end, ``E_mu[rho_t] = 1`` at
    every turn *when the logs support the target policy*. In a sample, ``mean_c rho_ct``
    falls short of 1 by the target probability mass that the logs miss: trajectories
    through actions the logger never takes (no support), trajectories too rare to be
    drawn (heavy-tailed weights; the sample mean of a heavy-tailed weight is usually
    below its expectation), and what ``max_weight`` clipped off. PDIS (clipped) counts
    that mass as earning 0; here the mass lost at turn ``t``, ``Delta_t = mean_c (rho_c,t-1
    - rho_ct)``, earns instead anything between the worst and the best return that reward
    v1 allows from turn ``t`` on (``returns``; 0 included, for conversations that had
    already ended):

        ``V in PDIS + sum_t Delta_t [G_low(t), G_high(t)]``

    (interval arithmetic; a negative ``Delta_t``, over-represented mass, flips the ends).
    No model is involved, so neither confounding nor extrapolation biases the bounds; they
    are wide exactly where the data cannot tell.
    """
    probs = np.asarray(target_probs, dtype=np.float64)
    w = probs.reshape(-1).take(feedback.flat_index) / feedback.propensity
    rho = np.cumprod(_dense(feedback, w, 1.0), axis=1)
    if max_weight is not None:
        np.minimum(rho, max_weight, out=rho)
    rho_prev = np.concatenate([np.ones_like(rho[:, :1]), rho[:, :-1]], axis=1)
    horizon = min(feedback.max_length, len(returns.low))
    reward = _dense(feedback, feedback.reward, 0.0)
    return DeficitBounds(
        pdis=(rho * reward).sum(axis=1),
        drop=(rho_prev - rho)[:, :horizon],
        low=np.minimum(returns.low[:horizon], 0.0),
        high=np.maximum(returns.high[:horizon], 0.0),
    )


def support_bounds(
    feedback: SequentialFeedback,
    target_probs: np.ndarray,
    supported: np.ndarray,
    q_supported: np.ndarray,
    returns: ReturnRange,
    *,
    max_weight: float | None = None,
) -> tuple[RatioStatistic, RatioStatistic]:
    """Partial-identification bounds for the unsupported part of a policy only.

    With ``T*`` the first turn at which the target policy ``pi`` takes an unsupported
    action, ``V(pi) = E_pi[sum_{t < T*} r_t] + sum_t P_pi(T* = t) E[G_t | T* = t]``. The
    first part is the value of the sub-stochastic policy ``pi_s = pi * supported`` (it
    stops, earning 0, with the missing mass), estimated doubly robustly with ``pi_s``'s
    own fitted Q-model ``q_supported`` (n_turns, n_actions); ``P_pi(T* = t) = E_mu[
    rho_s,t-1 u_t]`` is identified too. Only ``G_t``, the return from the first
    unsupported action on, is unknown: it gets the worst and the best return of
    ``returns``. Returns per-conversation statistics (plain means) of the lower and the
    upper bound. Arrays: ``target_probs``/``supported`` (n_turns, n_actions).
    """
    probs_s, rho, rho_prev = _supported_weights(feedback, target_probs, supported, max_weight)
    reward = _dense(feedback, feedback.reward, 0.0)
    q_logged = _dense(feedback, q_supported.reshape(-1).take(feedback.flat_index), 0.0)
    v = _dense(feedback, np.einsum("ij,ij->i", probs_s, q_supported), 0.0)
    identified = (rho * (reward - q_logged) + rho_prev * v).sum(axis=1)
    mass = rho_prev * _dense(feedback, unsupported_mass(target_probs, supported), 0.0)
    horizon = min(feedback.max_length, len(returns.low))
    low = identified + mass[:, :horizon] @ returns.low[:horizon]
    high = identified + mass[:, :horizon] @ returns.high[:horizon]
    return RatioStatistic(low[None, :]), RatioStatistic(high[None, :])
