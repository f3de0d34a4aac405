"""Behaviour cloning: the logging policy as it looks from the logged state alone."""

from __future__ import annotations

import numpy as np
from supportrl.agents.base import BasePolicy, States
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.features import build_feature_spec
from supportrl.envs.rewards import DEFAULT_MAX_TURNS
from supportrl.simulators.fitted.features import Basis
from supportrl.simulators.fitted.glm import SoftmaxFit, fit_softmax


class BehaviourPolicy(BasePolicy):
    """A behaviour-cloned logging policy: a multinomial logit of the logged action on ``phi(s)``.

    It sees only the logged state, so it reproduces the logger's action frequencies per
    observed state but none of its dependence on unlogged variables. Used to estimate
    missing propensities and to replay the logger in the fidelity report.
    """

    def __init__(self, basis: Basis, fit: SoftmaxFit) -> None:
        self.basis = basis
        self.fit = fit
        self.actions = basis.actions

    def action_probs(self, states: States) -> np.ndarray:
        return self.fit.probs(self.basis.phi(self.basis.state_from_named(states)))


def fit_behaviour_policy(
    logs: LoggedConversations,
    basis: Basis | None = None,
    *,
    l2: float = 1.0,
    max_iter: int = 300,
    threads: int = 1,
) -> BehaviourPolicy:
    """Clone the logging policy from ``logs`` (see :class:`BehaviourPolicy`)."""
    basis = basis or logs_basis(logs)
    phi = basis.phi(basis.state_from_named(logs.states()))
    n_actions = len(logs.actions)
    targets = np.zeros((logs.n_turns, n_actions))
    targets[np.arange(logs.n_turns), logs.action] = 1.0
    return BehaviourPolicy(
        basis, fit_softmax(phi, targets, l2=l2, max_iter=max_iter, threads=threads)
    )


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
