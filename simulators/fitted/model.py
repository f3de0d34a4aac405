"""FittedCustomerModel: a customer simulator fitted from logs, as a CustomerModel.

Built by :func:`~supportrl.simulators.fitted.fit_customer_model` or
:func:`~supportrl.simulators.fitted.io.load_customer_model`; the module docstring of
:mod:`supportrl.simulators.fitted` describes what is fitted and the pessimism.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.agents.base import States
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.features import FeatureSpec
from supportrl.envs.model import Transition
from supportrl.envs.rewards import ABANDONED, CONTINUE
from supportrl.simulators.fitted.config import FamilyParams, FitConfig
from supportrl.simulators.fitted.csat import (
    CSAT_LEVELS,
    CsatModel,
    csat_design,
    impute_terminal_csat,
)
from supportrl.simulators.fitted.dynamics import Dynamics, Prediction
from supportrl.simulators.fitted.features import Basis, FittedState, effective_support

if TYPE_CHECKING:
    from supportrl.envs.scalar import RandomStream
    from supportrl.simulators.fitted.scalar import GLMScalarSim


@dataclass
class FittedCustomerModel:
    """A customer simulator fitted from logs; implements :class:`~supportrl.envs.model.CustomerModel`.

    Build it with :func:`fit_customer_model` or :func:`load_customer_model`.
    """

    actions: tuple[str, ...]
    config: FitConfig
    params: FamilyParams
    feature_spec: FeatureSpec
    dynamics: Dynamics
    csat: CsatModel
    intent_transition: np.ndarray
    """(n_intents, n_actions, n_intents): P(next detected intent | intent, action)."""
    pool: FittedState
    """Logged first turns the initial states are resampled from."""
    support: dict[str, np.ndarray]
    """Support key -> logged decisions per (cell, action), (n_cells, n_actions) int64."""
    handle_time_known: bool = True
    """False when the logs had no handle times: simulated handle time is 0."""
    warnings: list[str] = field(default_factory=list)
    """What the logs did not allow the model to learn."""
    info: dict[str, Any] = field(default_factory=dict)
    """Fit diagnostics (rows, weights, convergence, CSAT response rates)."""

    def __post_init__(self) -> None:
        self.basis = Basis(spec=self.feature_spec, actions=self.actions, max_turns=self.max_turns)

    # ------------------------------------------------------------------ protocol

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def max_turns(self) -> int:
        return self.config.max_turns

    @property
    def intents(self) -> tuple[str, ...]:
        return self.basis.intents

    def initial_state(self, n: int, rng: np.random.Generator) -> FittedState:
        """Start ``n`` conversations by resampling logged first turns uniformly."""
        return self.pool.take(rng.integers(0, len(self.pool), size=n))

    def observe(self, state: FittedState, *, hidden: bool = False) -> dict[str, np.ndarray]:
        """The raw named state (a fitted model has no hidden variables; ``hidden`` adds none)."""
        return self.basis.named(state)

    def observation(self, state: FittedState) -> np.ndarray:
        """``feature_spec.encode(observe(state))`` from the codes directly, float32 (n, dim).

        The env's fast path: no round trip through level strings.
        """
        spec = self.feature_spec
        n = len(state)
        out = np.zeros((n, spec.dim), dtype=np.float32)
        rows = np.arange(n)
        col = 0
        for name, levels in spec.categorical.items():
            if name == "intent":
                codes = state.intent
            elif name == "previous_action":
                codes = state.previous_action + 1  # level 0 is "none"
            else:
                codes = state.categorical[name]
            out[rows, col + codes] = 1.0
            col += len(levels)
        for name, (center, scale) in spec.numeric.items():
            if name in ("turn", "sentiment"):
                values = np.asarray(getattr(state, name), dtype=np.float64)
            else:
                values = state.numeric[name]
            out[:, col] = (values - center) / scale
            col += 1
        return out

    def support_count(self, state: FittedState) -> np.ndarray:
        """Logged decisions supporting each (state, action), shape (n, n_actions) int64."""
        return effective_support(self.basis, self.support, state)

    def action_mask(self, state: FittedState) -> np.ndarray:
        """Actions with at least ``min_support`` logged decisions, shape (n, n_actions) bool."""
        if self.config.min_support <= 0:
            return np.ones((len(state), len(self.actions)), dtype=bool)
        return self.support_count(state) >= self.config.min_support

    def scalar_sim(self, stream: RandomStream) -> GLMScalarSim | None:
        """One conversation stepped in Python floats (the single env's fast path); glm only.

        Same dynamics as :meth:`initial_state` and :meth:`step`, random numbers from
        ``stream``; None for the ensemble family (the env then steps the batched model).
        See :mod:`supportrl.simulators.fitted.scalar`.
        """
        from supportrl.simulators.fitted.scalar import glm_scalar_sim

        return glm_scalar_sim(self, stream)

    def predict(self, state: FittedState, action: np.ndarray) -> Prediction:
        """The response model for (state, action) pairs (``action`` indices, shape (n,))."""
        action = self._check_action(action, len(state))
        return self.dynamics.predict(self.basis.phi(state), action)

    def outcome_probs(self, state: FittedState, action: np.ndarray) -> np.ndarray:
        """P(outcome | state, action), shape (n, 4) in ``OUTCOMES`` order."""
        return self.predict(state, action).outcome_probs

    def uncertainty(self, state: FittedState, action: np.ndarray) -> np.ndarray:
        """The pessimism's ``u(s, a)`` (see module docstring), shape (n,)."""
        action = self._check_action(action, len(state))
        if self.family == "ensemble":
            pred = self.predict(state, action)
            assert pred.uncertainty is not None
            return pred.uncertainty
        n = self.support_count(state)[np.arange(len(action)), action]
        return 1.0 / np.sqrt(1.0 + n)

    def csat_probs(self, state: FittedState, action: np.ndarray, outcome: np.ndarray) -> np.ndarray:
        """P(csat = k | last state, action, terminal outcome), k = 1..5, shape (n, 5)."""
        psi = csat_design(
            self.basis.phi(state), state.sentiment, action, np.asarray(outcome), len(self.actions)
        )
        return self.csat.probs(psi)

    def step(self, state: FittedState, action: np.ndarray, rng: np.random.Generator) -> Transition:
        """Apply ``action`` (indices, shape (n,)) to ``n`` conversations."""
        n = len(state)
        action = self._check_action(action, n)
        # Fixed draws per step, whatever the branch taken, keep runs reproducible.
        u_outcome, u_csat, u_intent = rng.random(n), rng.random(n), rng.random(n)
        z_sentiment, z_handle = rng.standard_normal(n), rng.standard_normal(n)
        rows = np.arange(n)
        phi = self.basis.phi(state)
        pred = self.dynamics.predict(phi, action)
        cdf = np.cumsum(pred.outcome_probs, axis=1)
        outcome = np.minimum((u_outcome[:, None] * cdf[:, -1:] >= cdf).sum(axis=1), 3)
        supported = self.action_mask(state)[rows, action]
        outcome = np.where(supported, outcome, ABANDONED).astype(np.int64)
        if self.handle_time_known:
            handle = np.expm1(pred.log_handle_mean + pred.log_handle_sd * z_handle)
            handle = np.maximum(handle, 0.0)
        else:
            handle = np.zeros(n)
        sentiment = np.clip(pred.sentiment_mean + pred.sentiment_sd * z_sentiment, -1.0, 1.0)
        csat = np.full(n, np.nan)
        terminal = np.flatnonzero(outcome != CONTINUE)
        if len(terminal):
            psi = csat_design(
                phi[terminal],
                state.sentiment[terminal],
                action[terminal],
                outcome[terminal],
                len(self.actions),
            )
            probs = self.csat.probs(psi)
            pick = (u_csat[terminal, None] >= np.cumsum(probs, axis=1)).sum(axis=1)
            csat[terminal] = CSAT_LEVELS[np.minimum(pick, 4)]
            csat[terminal[~supported[terminal]]] = CSAT_LEVELS[0]
        trans = self.intent_transition[state.intent, action]
        new_intent = (u_intent[:, None] >= np.cumsum(trans, axis=1)).sum(axis=1)
        new_intent = np.minimum(new_intent, trans.shape[1] - 1).astype(np.int64)
        penalty = None
        if self.config.penalty > 0:
            u = (
                pred.uncertainty
                if self.family == "ensemble"
                else 1.0 / np.sqrt(1.0 + self.support_count(state)[rows, action])
            )
            assert u is not None
            penalty = self.config.penalty * u
        next_state = FittedState(
            turn=state.turn + 1,
            previous_action=action,
            intent=new_intent,
            sentiment=sentiment,
            categorical=state.categorical,
            numeric=state.numeric,
        )
        return Transition(
            outcome=outcome, handle_time_s=handle, csat=csat, next_state=next_state, penalty=penalty
        )

    def _check_action(self, action: np.ndarray, n: int) -> np.ndarray:
        action = np.asarray(action)
        if action.shape != (n,) or not np.issubdtype(action.dtype, np.integer):
            raise ValueError(
                f"action: expected {n} action indices, got shape {action.shape} {action.dtype}"
            )
        if n and (action.min() < 0 or action.max() >= len(self.actions)):
            raise ValueError(f"action: indices must be in [0, {len(self.actions)})")
        return action.astype(np.int64)

    # ------------------------------------------------------------------ logs

    def state_of(self, states: States) -> FittedState:
        """This model's state for a raw named state batch (e.g. from :meth:`observe`)."""
        return self.basis.state_from_named(states)

    def logged_states(self, logs: LoggedConversations) -> FittedState:
        """This model's state at every logged turn, length n_turns."""
        self._check_catalogue(logs)
        return self.state_of(logs.states())

    def csat_imputation(self, logs: LoggedConversations) -> tuple[np.ndarray, int]:
        """Logged CSAT with missing terminal scores imputed, and how many were imputed.

        A terminal turn (outcome resolved / escalated / abandoned) without a survey answer
        gets the expected CSAT *of a non-respondent* under the fitted selection model,
        ``sum_k k P(k|x)(1-g_k) / sum_k P(k|x)(1-g_k)`` -- never a neutral 3. Observed
        scores are kept; non-terminal turns (and cut-off last turns) stay NaN.

        Returns:
            csat: shape (n_turns,) float64; n_imputed: number of imputed turns.
        """
        self._check_catalogue(logs)
        return impute_terminal_csat(logs, self.basis, self.csat)

    def _check_catalogue(self, logs: LoggedConversations) -> None:
        if tuple(logs.actions) != self.actions:
            raise ValueError(
                f"logs: action catalogue {list(logs.actions)} differs from the model's {list(self.actions)}"
            )

    # ------------------------------------------------------------------ variants

    def with_pessimism(
        self, *, penalty: float | None = None, min_support: int | None = None
    ) -> FittedCustomerModel:
        """The same fitted model with other pessimism settings (no refit)."""
        changes: dict[str, Any] = {}
        if penalty is not None:
            changes["penalty"] = float(penalty)
        if min_support is not None:
            changes["min_support"] = int(min_support)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **changes))

    def hyperparameters(self) -> dict[str, Any]:
        """Every fit setting as plain values: the common config and the family's parameters."""
        return {**dataclasses.asdict(self.config), **dataclasses.asdict(self.params)}

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write ``simulator.json`` and ``params.npz`` into directory ``path`` (created).

        See :func:`~supportrl.simulators.fitted.io.save_customer_model`.
        """
        from supportrl.simulators.fitted.io import save_customer_model

        return save_customer_model(self, path)
