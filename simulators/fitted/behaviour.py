"""Behaviour cloning: the logging policy as it looks from the logged state alone."""

from __future__ import annotations

import numpy as np
from supportrl.agents.base import BasePolicy, States
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.features import build_feature_spec
from supportrl.envs.rewards import DEFAULT_MAX_TURNS
from supportrl.simulators.fitted.features import Basis
from supportrl.simulators.propensity import MultinomialLogit


class BehaviourPolicy(BasePolicy):
    """A behaviour-cloned logging policy: the one logging-policy model
    (:class:`~supportrl.simulators.propensity.MultinomialLogit`) of the logged action on
    the simulator's state basis ``phi(s)``.

    It sees only the logged state, so it reproduces the logger's action frequencies per
    observed state but none of its dependence on unlogged variables. Used to estimate
    missing propensities and to replay the logger in the fidelity report.
    """

    def __init__(self, basis: Basis, model: MultinomialLogit) -> None:
        self.basis = basis
        self.model = model
        self.actions = basis.actions

    def probs_of_design(self, phi: np.ndarray) -> np.ndarray:
        """Action probabilities of design rows ``phi`` (n, basis.dim), shape (n, n_actions)."""
        return self.model.predict(phi[:, 1:])  # phi's column 0 is its intercept

    def action_probs(self, states: States) -> np.ndarray:
        return self.probs_of_design(self.basis.phi(self.basis.state_from_named(states)))


def fit_behaviour_policy(
    logs: LoggedConversations,
    basis: Basis | None = None,
    *,
    l2: float = 1.0,
    max_iter: int = 300,
) -> BehaviourPolicy:
    """Clone the logging policy from ``logs`` (see :class:`BehaviourPolicy`)."""
    basis = basis or logs_basis(logs)
    phi = basis.phi(basis.state_from_named(logs.states()))
    model = MultinomialLogit.fit(
        phi[:, 1:], logs.action, len(logs.actions), l2=l2, max_iter=max_iter
    )
    return BehaviourPolicy(basis, model)


def logs_basis(logs: LoggedConversations, max_turns: int = DEFAULT_MAX_TURNS) -> Basis:
    """The state basis fitted to ``logs`` (feature spec from their states and declared features)."""
    spec = build_feature_spec(
        logs.states(),
        actions=logs.actions,
        categorical=logs.categorical,
        numeric=logs.numeric,
        max_turns=max_turns,
    )
    return Basis(spec=spec, actions=tuple(logs.actions), max_turns=max_turns)
