"""Non-contextual bandits: per-action reward statistics, the state is used only for its size.

Every bandit here keeps weighted per-action sums (a row with importance weight ``w`` counts
``w`` times) and gives every row of a state batch the same action distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from supportrl.agents.bandits._base import Bandit, check_int, check_real
from supportrl.agents.base import States, batch_size, epsilon_mix, greedy_probs


def _rows(probs: np.ndarray, n: int) -> np.ndarray:
    """One action distribution (K,) repeated for ``n`` rows; shape (n, K)."""
    return np.tile(probs, (n, 1))


@dataclass(eq=False)
class _MeanRewardBandit(Bandit):
    """Keeps ``weight_sum`` (K,) and ``reward_sum`` (K,): the weighted count and reward total."""

    def reset(self) -> None:
        self._weight_sum = np.zeros(self.n_actions)
        self._reward_sum = np.zeros(self.n_actions)

    def _update(
        self, states: States, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        k = self.n_actions
        self._weight_sum += np.bincount(actions, weights=weights, minlength=k)
        self._reward_sum += np.bincount(actions, weights=weights * rewards, minlength=k)

    def mean_rewards(self, default: float = 0.0) -> np.ndarray:
        """Weighted mean reward per action, shape (K,); ``default`` where never updated."""
        seen = self._weight_sum > 0
        out = np.full(self.n_actions, default, dtype=np.float64)
        out[seen] = self._reward_sum[seen] / self._weight_sum[seen]
        return out

    @property
    def counts(self) -> np.ndarray:
        """Weighted number of updates per action, shape (K,)."""
        return self._weight_sum.copy()

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"weight_sum": self._weight_sum, "reward_sum": self._reward_sum}

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight_sum": (self.n_actions,), "reward_sum": (self.n_actions,)}

    def _set_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        if (arrays["weight_sum"] < 0).any():
            raise ValueError("weight_sum: must be >= 0")
        self._weight_sum = arrays["weight_sum"]
        self._reward_sum = arrays["reward_sum"]


@dataclass(eq=False, kw_only=True)
class EpsilonGreedy(_MeanRewardBandit):
    """Greedy on the weighted mean reward, uniformly random with probability ``epsilon``.

    ``action_probs = (1 - epsilon) * greedy + epsilon / K``, where ``greedy`` puts equal mass
    on every action with the highest mean (actions never updated have ``initial_value``).
    """

    kind = "epsilon_greedy"

    epsilon: float = 0.1
    """Probability of a uniformly random action, in [0, 1]."""
    initial_value: float = 0.0
    """Mean reward assumed for an action that has no data yet."""

    def _validate(self) -> None:
        self.epsilon = check_real(self.epsilon, "epsilon", low=0.0, high=1.0)
        self.initial_value = check_real(self.initial_value, "initial_value")

    def action_probs(self, states: States) -> np.ndarray:
        """Shape (n, K); every row ``(1 - epsilon) * greedy + epsilon / K``."""
        greedy = greedy_probs(self.mean_rewards(self.initial_value)[None, :])
        return _rows(epsilon_mix(greedy, self.epsilon)[0], batch_size(states))


@dataclass(eq=False, kw_only=True)
class Softmax(_MeanRewardBandit):
    """Boltzmann exploration: ``P(a) = exp(mean_a / temperature) / sum_b exp(mean_b / temperature)``."""

    kind = "softmax"

    temperature: float = 0.1
    """Boltzmann temperature (> 0): small is greedy, large is uniform; in reward units."""
    initial_value: float = 0.0
    """Mean reward assumed for an action that has no data yet."""

    def _validate(self) -> None:
        self.temperature = check_real(self.temperature, "temperature", low=0.0, low_open=True)
        self.initial_value = check_real(self.initial_value, "initial_value")

    def action_probs(self, states: States) -> np.ndarray:
        """Shape (n, K); every row the softmax of the mean rewards over ``temperature``."""
        z = self.mean_rewards(self.initial_value) / self.temperature
        p = np.exp(z - z.max())
        return _rows(p / p.sum(), batch_size(states))


@dataclass(eq=False, kw_only=True)
class UCB1(_MeanRewardBandit):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): argmax of ``mean_a + c * sqrt(ln N / n_a)``.

    ``n_a`` is the weighted count of action ``a`` and ``N = sum_a n_a``; ``ln N`` is taken
    as 0 while ``N < 1`` (fractional weights). An action with ``n_a = 0`` scores ``+inf``,
    so every action is tried first; ties are split evenly in :meth:`action_probs`.
    """

    kind = "ucb1"

    c: float = math.sqrt(2.0)
    """Exploration coefficient (>= 0); sqrt(2) is the textbook value for rewards in [0, 1]."""

    def _validate(self) -> None:
        self.c = check_real(self.c, "c", low=0.0)

    def bonus(self) -> np.ndarray:
        """Exploration bonus ``c * sqrt(max(ln N, 0) / n_a)``, shape (K,); inf where n_a = 0."""
        n_a = self._weight_sum
        log_total = max(math.log(n_a.sum()), 0.0) if n_a.sum() > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = self.c * np.sqrt(log_total / n_a)
        return np.where(n_a > 0, bonus, np.inf)

    def scores(self) -> np.ndarray:
        """Upper confidence bounds, shape (K,); inf for actions never updated."""
        return self.mean_rewards() + self.bonus()

    def action_probs(self, states: States) -> np.ndarray:
        """Shape (n, K); every row the argmax distribution of :meth:`scores` (ties split)."""
        return _rows(greedy_probs(self.scores()[None, :])[0], batch_size(states))


@dataclass(eq=False, kw_only=True)
class _Thompson(Bandit):
    """Thompson sampling: :meth:`act` draws one posterior sample per row and takes the argmax.

    :meth:`action_probs` estimates ``P(a is the argmax of a posterior draw)`` from
    ``n_prob_samples`` draws of a generator seeded from :attr:`seed` afresh on every call, so
    it is a pure function of the posterior (same answer on every call and after a reload).
    """

    n_prob_samples: int = 200
    """Posterior draws behind the Monte Carlo estimate in :meth:`action_probs`."""

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` posterior draws of the mean reward of every action, shape (size, K)."""
        raise NotImplementedError

    def action_probs(self, states: States) -> np.ndarray:
        """Shape (n, K); Monte Carlo probability that each action wins a posterior draw."""
        wins = self._draw(self._prob_rng(), self.n_prob_samples).argmax(axis=1)
        probs = np.bincount(wins, minlength=self.n_actions) / self.n_prob_samples
        return _rows(probs, batch_size(states))

    def act(self, states: States, rng: np.random.Generator) -> np.ndarray:
        """One posterior draw per row; returns the argmax, shape (n,), int64."""
        return self._draw(rng, batch_size(states)).argmax(axis=1).astype(np.int64)


@dataclass(eq=False, kw_only=True)
class BernoulliThompson(_Thompson):
    """Beta-Bernoulli Thompson sampling (Agrawal & Goyal 2012) on rewards rescaled to [0, 1].

    A reward ``r`` is rescaled to ``y = (r - lo) / (hi - lo)`` with ``(lo, hi) =
    reward_range`` (an ``r`` outside the range is an error); then a Bernoulli trial with
    success probability ``y`` (drawn from the bandit's own generator) updates the posterior:
    ``alpha_a += w * success``, ``beta_a += w * (1 - success)``. Rewards already in {0, 1}
    make the trials deterministic. The posterior of the mean is
    ``Beta(prior_alpha + successes_a, prior_beta + failures_a)``.
    """

    kind = "thompson_bernoulli"

    prior_alpha: float = 1.0
    """Beta prior alpha (> 0): pseudo-count of successes."""
    prior_beta: float = 1.0
    """Beta prior beta (> 0): pseudo-count of failures."""
    reward_range: tuple[float, float] = (0.0, 1.0)
    """(lo, hi): rewards are rescaled from this range to [0, 1] before the Bernoulli trial."""

    def _validate(self) -> None:
        self.prior_alpha = check_real(self.prior_alpha, "prior_alpha", low=0.0, low_open=True)
        self.prior_beta = check_real(self.prior_beta, "prior_beta", low=0.0, low_open=True)
        self.n_prob_samples = check_int(self.n_prob_samples, "n_prob_samples", low=1)
        try:
            lo, hi = self.reward_range
        except (TypeError, ValueError) as exc:
            raise ValueError(f"reward_range: expected (lo, hi), got {self.reward_range!r}") from exc
        lo = check_real(lo, "reward_range[0]")
        hi = check_real(hi, "reward_range[1]")
        if not lo < hi:
            raise ValueError(f"reward_range: lo must be < hi, got {(lo, hi)}")
        self.reward_range = (lo, hi)

    def reset(self) -> None:
        self._successes = np.zeros(self.n_actions)
        self._failures = np.zeros(self.n_actions)

    def _update(
        self, states: States, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        lo, hi = self.reward_range
        y = (rewards - lo) / (hi - lo)
        bad = np.flatnonzero((y < 0) | (y > 1))
        if bad.size:
            raise ValueError(
                f"rewards: must lie in reward_range {self.reward_range}; "
                f"first offending rows {bad[:5].tolist()}"
            )
        success = (self._rng.random(len(y)) < y).astype(np.float64)
        k = self.n_actions
        self._successes += np.bincount(actions, weights=weights * success, minlength=k)
        self._failures += np.bincount(actions, weights=weights * (1.0 - success), minlength=k)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Beta posterior parameters (alpha, beta) of every action, each shape (K,)."""
        return self.prior_alpha + self._successes, self.prior_beta + self._failures

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        a, b = self.posterior()
        return rng.beta(a, b, size=(size, self.n_actions))

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {"successes": self._successes, "failures": self._failures}

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"successes": (self.n_actions,), "failures": (self.n_actions,)}

    def _set_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        if (arrays["successes"] < 0).any() or (arrays["failures"] < 0).any():
            raise ValueError("successes/failures: must be >= 0")
        self._successes = arrays["successes"]
        self._failures = arrays["failures"]


@dataclass(eq=False, kw_only=True)
class GaussianThompson(_Thompson, _MeanRewardBandit):
    """Gaussian Thompson sampling: Normal prior on each mean, Normal rewards of known variance.

    With ``n_a = sum w`` and ``s_a = sum w r`` over the rows of action ``a``, the posterior of
    the mean reward is Normal with precision ``1 / prior_std**2 + n_a / noise_std**2`` and
    mean ``(prior_mean / prior_std**2 + s_a / noise_std**2) / precision``.
    """

    kind = "thompson_gaussian"

    prior_mean: float = 0.0
    """Prior mean of every action's mean reward."""
    prior_std: float = 1.0
    """Prior standard deviation of every action's mean reward (> 0)."""
    noise_std: float = 1.0
    """Known standard deviation of one reward around its action's mean (> 0)."""

    def _validate(self) -> None:
        self.prior_mean = check_real(self.prior_mean, "prior_mean")
        self.prior_std = check_real(self.prior_std, "prior_std", low=0.0, low_open=True)
        self.noise_std = check_real(self.noise_std, "noise_std", low=0.0, low_open=True)
        self.n_prob_samples = check_int(self.n_prob_samples, "n_prob_samples", low=1)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of every action's mean reward, each (K,)."""
        prior_prec = 1.0 / self.prior_std**2
        noise_prec = 1.0 / self.noise_std**2
        precision = prior_prec + self._weight_sum * noise_prec
        mean = (self.prior_mean * prior_prec + self._reward_sum * noise_prec) / precision
        return mean, 1.0 / np.sqrt(precision)

    def _draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        mean, std = self.posterior()
        return mean + std * rng.standard_normal((size, self.n_actions))
