"""The `Policy` protocol shared by rules, bandits, DQN, RLlib and loaded artifacts.

A *state batch* is a mapping from state-variable name to a 1-D array of length ``n``: the
raw named state of ``n`` decisions (``turn``, ``previous_action``, ``intent``,
``sentiment`` and every declared context feature). Categorical values are strings,
numeric values are numbers. OPE, the env, reports and export all talk to policies
through :class:`Policy` only (docs/policy.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

States = Mapping[str, np.ndarray]
"""A batch of raw named states: name -> array of shape (n,)."""


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a batch of raw named states to action probabilities."""

    actions: tuple[str, ...]
    """The action catalogue; column ``j`` of :meth:`action_probs` is ``actions[j]``."""

    def action_probs(self, states: States) -> np.ndarray:
        """Probabilities of every action, shape (n, n_actions), rows summing to 1."""
        ...

    def act(self, states: States, rng: np.random.Generator) -> np.ndarray:
        """Sampled action indices, shape (n,), dtype int64."""
        ...


def batch_size(states: States) -> int:
    """Number of states in a batch; every array must have the same length."""
    if not states:
        raise ValueError("states: empty state batch (no state variables)")
    sizes = {name: len(values) for name, values in states.items()}
    n = next(iter(sizes.values()))
    if any(size != n for size in sizes.values()):
        raise ValueError(f"states: arrays of different lengths {sizes}")
    return n


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one action per row of ``probs`` (shape (n, n_actions)) by inverse CDF, vectorised."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    actions = (u >= cdf).sum(axis=1)
    return np.minimum(actions, probs.shape[1] - 1).astype(np.int64)


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
