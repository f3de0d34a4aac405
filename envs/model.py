"""The customer-model protocol: what the envs (the batched vector env, and SupportEnv) need
from any model.

The ground-truth world (:mod:`supportrl.simulators.synthetic`) and the simulators fitted
from logs (:mod:`supportrl.simulators.fitted`) implement it, so agents train on either
and the fidelity report compares them policy by policy. Names used across the project:
the *world* is the ground truth, a *simulator* is a model fitted from logs, and a
*model* is any :class:`CustomerModel`.

A model keeps the state of ``n`` conversations in an object of its own (``state``) that
only it reads; everything outside sees the raw named state from :meth:`observe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from supportrl.envs.features import FeatureSpec


class ModelState(Protocol):
    """Opaque state of ``n`` conversations in progress."""

    def take(self, rows: np.ndarray) -> ModelState:
        """The conversations at ``rows`` (index array), in that order."""
        ...

    # Optional: ``put(rows, new)`` overwrites conversations ``rows`` in place (used by the
    # vector env's autoreset); without it every attribute must be an array over conversations.


@dataclass(frozen=True)
class Transition:
    """What happened after one action in each of ``n`` conversations (arrays of shape (n,))."""

    outcome: np.ndarray
    """Outcome code into ``envs.rewards.OUTCOMES``."""
    handle_time_s: np.ndarray
    """Seconds the turn took."""
    csat: np.ndarray
    """CSAT in [1, 5] on terminal turns (the model's full CSAT, never missing), NaN otherwise."""
    next_state: Any
    """The model's state after the action (meaningful for ``outcome == continue`` rows)."""
    penalty: np.ndarray | None = None
    """Pessimism penalty to subtract from the reward (fitted models), shape (n,), or None."""


@runtime_checkable
class CustomerModel(Protocol):
    """A simulator of customers answering the bot's actions."""

    actions: tuple[str, ...]
    """The action catalogue; action ``j`` is ``actions[j]``."""
    max_turns: int
    """Turns the model knows how to encode (``turn / max_turns`` in observations)."""
    feature_spec: FeatureSpec
    """Encoding of :meth:`observe` output into observations."""

    def initial_state(self, n: int, rng: np.random.Generator) -> Any:
        """Start ``n`` conversations."""
        ...

    def observe(self, state: Any, *, hidden: bool = False) -> dict[str, np.ndarray]:
        """Raw named state of each conversation: name -> array of shape (n,).

        At least ``turn``, ``previous_action`` (``"none"`` at turn 0), ``intent`` and
        ``sentiment`` (the schema-v1 state), plus context features: strings for
        categorical, numbers for numeric ones. With ``hidden`` also the model's hidden
        variables (the world's ``complexity``); a fitted simulator has none.
        """
        ...

    def step(self, state: Any, action: np.ndarray, rng: np.random.Generator) -> Transition:
        """Apply ``action`` (indices, shape (n,)) to ``n`` conversations."""
        ...

    def action_mask(self, state: Any) -> np.ndarray:
        """Actions allowed in each state, shape (n, n_actions) bool (support masks)."""
        ...
