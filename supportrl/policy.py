"""The `Policy` protocol: what every policy (rules, bandits, DQN, RLlib, a loaded artifact)
answers, below every package that uses it.

A *state batch* is a mapping from state-variable name to a 1-D array of length ``n``: the
raw named state of ``n`` decisions (``turn``, ``previous_action``, ``intent``,
``sentiment`` and every declared context feature). Categorical values are strings,
numeric values are numbers. The env's collector, OPE, reports and export all talk to
policies through :class:`Policy` only (docs/policy.md); :mod:`supportrl.agents.base` adds
the shared implementations.
"""

from __future__ import annotations

from collections.abc import Mapping
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
