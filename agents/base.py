"""Shared parts of policies: the `Policy` protocol (defined in :mod:`supportrl.policy`, below
every package, and importable from here), a base class, greedy and epsilon-mixed
probabilities, and the uniform and constant policies.

A *state batch* is a mapping from state-variable name to a 1-D array of length ``n``: the
raw named state of ``n`` decisions (``turn``, ``previous_action``, ``intent``,
``sentiment`` and every declared context feature). Categorical values are strings,
numeric values are numbers. OPE, the env, reports and export all talk to policies
through :class:`Policy` only (docs/policy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supportrl.policy import Policy, States, batch_size, sample_actions

TIE_RTOL = 1e-12
"""Scores within this relative distance of the row maximum count as tied (rounding noise)."""


def greedy_probs(scores: np.ndarray) -> np.ndarray:
    """Argmax distribution of ``scores`` (shape (n, K)), ties split evenly; shape (n, K).

    Scores within :data:`TIE_RTOL` (relative) of the row maximum count as tied, so rounding
    differences between two equal models never break a tie; ``+inf`` scores tie with each other.
    """
    top = scores.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        threshold = np.where(np.isfinite(top), top - TIE_RTOL * np.abs(top), top)
    best = scores >= threshold
    return best / best.sum(axis=1, keepdims=True)


def epsilon_mix(probs: np.ndarray, epsilon: float) -> np.ndarray:
    """Mix ``probs`` with the uniform distribution: (1 - epsilon) * probs + epsilon / n_actions."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if epsilon == 0.0:
        return probs
    return (1.0 - epsilon) * probs + epsilon / probs.shape[1]


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """Deterministic action probabilities from action indices, shape (n, n_actions)."""
    probs = np.zeros((len(actions), n_actions))
    probs[np.arange(len(actions)), actions] = 1.0
    return probs


class BasePolicy:
    """Convenience base: subclasses implement :meth:`action_probs`; :meth:`act` samples from it."""

    actions: tuple[str, ...]

    def action_probs(self, states: States) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def act(self, states: States, rng: np.random.Generator) -> np.ndarray:
        return sample_actions(self.action_probs(states), rng)


class UniformPolicy(BasePolicy):
    """Every action with probability 1 / n_actions."""

    def __init__(self, actions: Sequence[str]) -> None:
        self.actions = tuple(actions)

    def action_probs(self, states: States) -> np.ndarray:
        n = batch_size(states)
        return np.full((n, len(self.actions)), 1.0 / len(self.actions))


class ConstantPolicy(BasePolicy):
    """Always the same action (optionally with uniform epsilon exploration)."""

    def __init__(self, actions: Sequence[str], action: str, epsilon: float = 0.0) -> None:
        self.actions = tuple(actions)
        if action not in self.actions:
            raise ValueError(f"action: unknown action {action!r}; catalogue is {self.actions}")
        self.action = action
        self.epsilon = epsilon

    def action_probs(self, states: States) -> np.ndarray:
        n = batch_size(states)
        index = np.full(n, self.actions.index(self.action))
        return epsilon_mix(one_hot(index, len(self.actions)), self.epsilon)


__all__ = [
    "TIE_RTOL",
    "BasePolicy",
    "ConstantPolicy",
    "Policy",
    "States",
    "UniformPolicy",
    "batch_size",
    "epsilon_mix",
    "greedy_probs",
    "one_hot",
    "sample_actions",
]
