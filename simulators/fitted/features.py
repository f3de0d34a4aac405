"""State and basis functions shared by the fitted customer models (:mod:`simulators.fitted`).

A fitted model keeps conversations in progress as integer codes and floats
(:class:`FittedState`), so a simulation step never touches strings. :class:`Basis` turns
that state into the design row ``phi(s)`` the response models read: the one-hot blocks of
the feature spec, an intercept, turn indicators and a piecewise-linear sentiment basis.
The dynamics then combine ``phi(s)`` with the action (shared effects plus one block of
action-specific effects per action), which is what lets a linear model express
"direct_answer after clarify", "empathize twice" or "FAQ link to an angry customer".

Support cells (:meth:`Basis.support_keys`) discretise the state one variable at a time
for the support mask and the count-based penalty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.envs.features import NO_PREVIOUS_ACTION, FeatureSpec

SENTIMENT_KNOTS: tuple[float, ...] = (-0.6, -0.3, 0.0, 0.3, 0.6)
"""Knots of the hinge functions ``max(0, sentiment - knot)`` in the basis."""
TURN_INDICATORS = 5
"""The basis has an indicator for each of the turns 0 .. TURN_INDICATORS - 1."""
SUPPORT_TURN_BINS = 6
"""Support cells bin turns as 0, 1, ..., 5+."""
SUPPORT_SENTIMENT_EDGES: tuple[float, ...] = (-0.5, 0.0, 0.5)
"""Support cells bin sentiment at these edges (4 bins)."""
NUMERIC_CLIP = 5.0
"""Standardised numeric context features are clipped to +-NUMERIC_CLIP (outliers)."""


@dataclass
class FittedState:
    """State of ``n`` simulated conversations (arrays of shape (n,)).

    Categorical variables are codes into the levels of the model's feature spec;
    ``previous_action`` is -1 before the first action, else an action index.
    """

    turn: np.ndarray
    """int64."""
    previous_action: np.ndarray
    """int64, -1 at turn 0."""
    intent: np.ndarray
    """int64 code into ``feature_spec.categorical["intent"]``."""
    sentiment: np.ndarray
    """float64 in [-1, 1]."""
    categorical: dict[str, np.ndarray]
    """Context feature -> int64 codes."""
    numeric: dict[str, np.ndarray]
    """Context feature -> float64 values (raw units)."""

    def __len__(self) -> int:
        return len(self.turn)

    def put(self, rows: np.ndarray, new: FittedState) -> None:
        """Overwrite the conversations at ``rows`` in place with ``new`` (the vector env's autoreset)."""
        self.turn[rows] = new.turn
        self.previous_action[rows] = new.previous_action
        self.intent[rows] = new.intent
        self.sentiment[rows] = new.sentiment
        for name, values in self.categorical.items():
            values[rows] = new.categorical[name]
        for name, values in self.numeric.items():
            values[rows] = new.numeric[name]

    def take(self, rows: np.ndarray) -> FittedState:
        """The conversations at ``rows`` (index array), in that order."""
        return FittedState(
            turn=self.turn[rows],
            previous_action=self.previous_action[rows],
            intent=self.intent[rows],
            sentiment=self.sentiment[rows],
            categorical={k: v[rows] for k, v in self.categorical.items()},
            numeric={k: v[rows] for k, v in self.numeric.items()},
        )


@dataclass(frozen=True)
class Basis:
    """Design rows ``phi(s)`` of shape (n, dim) from a :class:`FittedState`.

    Columns, in order: intercept; one-hot ``intent``; one-hot ``previous_action``
    (``none`` first); one-hot of each categorical context feature; ``turn / max_turns``
    and indicators of turns 0..4; ``sentiment`` and hinges ``max(0, sentiment - k)`` for
    k in :data:`SENTIMENT_KNOTS`; each numeric context feature standardised by the
    feature spec and clipped to +-5; intent x (turn > 0) and intent x sentiment.
    """

    spec: FeatureSpec
    actions: tuple[str, ...]
    max_turns: int

    @property
    def context_categorical(self) -> tuple[str, ...]:
        return tuple(k for k in self.spec.categorical if k not in ("intent", "previous_action"))

    @property
    def context_numeric(self) -> tuple[str, ...]:
        return tuple(k for k in self.spec.numeric if k not in ("turn", "sentiment"))

    @property
    def intents(self) -> tuple[str, ...]:
        return tuple(self.spec.categorical["intent"])

    @property
    def n_turn_indicators(self) -> int:
        return min(TURN_INDICATORS, self.max_turns)

    @property
    def names(self) -> tuple[str, ...]:
        cols = ["intercept"]
        cols += [
            f"{name}={level}" for name, levels in self.spec.categorical.items() for level in levels
        ]
        cols += ["turn"] + [f"turn=={t}" for t in range(self.n_turn_indicators)]
        cols += ["sentiment"] + [f"max(0,sentiment-({k}))" for k in SENTIMENT_KNOTS]
        cols += list(self.context_numeric)
        cols += [f"intent={level}*turn>0" for level in self.intents]
        cols += [f"intent={level}*sentiment" for level in self.intents]
        return tuple(cols)

    @property
    def dim(self) -> int:
        return len(self.names)

    def phi(self, state: FittedState) -> np.ndarray:
        """Design rows, shape (n, dim) float64."""
        n = len(state.turn)
        out = np.zeros((n, self.dim))
        rows = np.arange(n)
        out[:, 0] = 1.0
        col = 1
        blocks: list[tuple[str, np.ndarray]] = [
            ("intent", state.intent),
            ("previous_action", state.previous_action + 1),
        ]
        blocks += [(name, state.categorical[name]) for name in self.context_categorical]
        for name, codes in blocks:
            out[rows, col + codes] = 1.0
            col += len(self.spec.categorical[name])
        turn = state.turn
        out[:, col] = turn / self.max_turns
        col += 1
        for t in range(self.n_turn_indicators):
            out[:, col] = turn == t
            col += 1
        s = state.sentiment
        out[:, col] = s
        col += 1
        for knot in SENTIMENT_KNOTS:
            out[:, col] = np.maximum(0.0, s - knot)
            col += 1
        for name in self.context_numeric:
            center, scale = self.spec.numeric[name]
            out[:, col] = np.clip(
                (state.numeric[name] - center) / scale, -NUMERIC_CLIP, NUMERIC_CLIP
            )
            col += 1
        return out

    # ------------------------------------------------------------------ conversions

    def state_from_named(self, states: Mapping[str, np.ndarray]) -> FittedState:
        """Codes of a raw named state batch (as :meth:`observe` or ``logs.states()`` give).

        Unknown categorical levels raise ValueError naming the variable.
        """
        missing = [name for name in self.spec.variables if name not in states]
        if missing:
            raise ValueError(f"states: missing state variable(s) {missing}")
        return FittedState(
            turn=np.asarray(states["turn"]).astype(np.int64),
            previous_action=self.spec.level_codes("previous_action", states["previous_action"]) - 1,
            intent=self.spec.level_codes("intent", states["intent"]),
            sentiment=np.asarray(states["sentiment"], dtype=np.float64),
            categorical={
                name: self.spec.level_codes(name, states[name]) for name in self.context_categorical
            },
            numeric={
                name: np.asarray(states[name], dtype=np.float64) for name in self.context_numeric
            },
        )

    def named(self, state: FittedState) -> dict[str, np.ndarray]:
        """The raw named state (strings for categorical variables), like ``logs.states()``."""
        prev_labels = np.asarray((NO_PREVIOUS_ACTION, *self.actions), dtype=str)
        out: dict[str, Any] = {
            "turn": state.turn,
            "previous_action": prev_labels[state.previous_action + 1],
            "intent": np.asarray(self.intents, dtype=str)[state.intent],
            "sentiment": state.sentiment,
        }
        for name in self.context_categorical:
            out[name] = np.asarray(self.spec.categorical[name], dtype=str)[state.categorical[name]]
        for name in self.context_numeric:
            out[name] = state.numeric[name]
        return out

    # ------------------------------------------------------------------ support cells

    def support_key_sizes(self) -> dict[str, int]:
        """Support key -> number of cells: every categorical variable, binned turn and sentiment."""
        sizes = {name: len(levels) for name, levels in self.spec.categorical.items()}
        sizes["turn_bin"] = SUPPORT_TURN_BINS
        sizes["sentiment_bin"] = len(SUPPORT_SENTIMENT_EDGES) + 1
        return sizes

    def support_keys(self, state: FittedState) -> dict[str, np.ndarray]:
        """Cell of each conversation under every support key, int64 arrays of shape (n,)."""
        keys = {
            "intent": state.intent,
            "previous_action": state.previous_action + 1,
        }
        keys.update({name: state.categorical[name] for name in self.context_categorical})
        keys["turn_bin"] = np.minimum(state.turn, SUPPORT_TURN_BINS - 1)
        keys["sentiment_bin"] = np.digitize(state.sentiment, SUPPORT_SENTIMENT_EDGES).astype(
            np.int64
        )
        return keys


def support_counts(
    basis: Basis, state: FittedState, action: np.ndarray, n_actions: int
) -> dict[str, np.ndarray]:
    """Logged decisions per (cell, action) under every support key, int64 (n_cells, n_actions)."""
    sizes = basis.support_key_sizes()
    counts = {}
    for name, cell in basis.support_keys(state).items():
        flat = np.bincount(cell * n_actions + action, minlength=sizes[name] * n_actions)
        counts[name] = flat.reshape(sizes[name], n_actions).astype(np.int64)
    return counts


def effective_support(
    basis: Basis, counts: Mapping[str, np.ndarray], state: FittedState
) -> np.ndarray:
    """Support of every (state, action): the fewest logged decisions over the support keys.

    A pair counts as supported by ``n`` decisions when, for every support key (each
    categorical variable, binned turn, binned sentiment), at least ``n`` logged decisions
    took that action in the state's cell. Shape (n, n_actions) int64.
    """
    keys = basis.support_keys(state)
    out = None
    for name, cell in keys.items():
        c = counts[name][cell]
        out = c if out is None else np.minimum(out, c)
    assert out is not None
    return out
