"""Reward v1 (docs/reward.md), applied batched by the env and by OPE on logged rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

OUTCOMES: tuple[str, ...] = ("continue", "resolved", "escalated", "abandoned")
"""Outcome labels; their index is the outcome code used in arrays."""
CONTINUE, RESOLVED, ESCALATED, ABANDONED = range(4)

REWARD_VERSION = 1

DEFAULT_MAX_TURNS = 10
"""Decisions after which a conversation is cut off (reward v1's truncation): the one
default every ``max_turns`` in the library (reward, world, fitted simulators) starts from."""


@dataclass(frozen=True)
class RewardSpec:
    """Per-turn reward of a support conversation, reward contract v1.

    ``r_t = per_turn + per_minute * handle_time_s / 60 + action_costs[action]``
    ``+ terminal[outcome] + csat_weight * (csat - 3) / 2`` (the last two on the terminal turn).

    The value of a policy is the expected undiscounted sum of ``r_t`` over a conversation,
    truncated at ``max_turns``.
    """

    per_turn: float = -0.05
    """Reward added on every turn."""
    per_minute: float = -0.02
    """Reward per minute of handle time."""
    action_costs: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"offer_credit": -0.2})
    )
    """Extra reward (a cost when negative) by action label; unlisted actions cost 0."""
    resolved: float = 1.0
    """Terminal reward when the conversation is resolved."""
    escalated: float = -0.3
    """Terminal reward when the conversation is handed to a human."""
    abandoned: float = -1.0
    """Terminal reward when the customer leaves."""
    csat_weight: float = 0.5
    """Weight of the centred CSAT term ``(csat - 3) / 2`` on the terminal turn."""
    max_turns: int = DEFAULT_MAX_TURNS
    """Conversations are truncated after this many decisions."""
    version: int = REWARD_VERSION

    def __post_init__(self) -> None:
        if self.version != REWARD_VERSION:
            raise ValueError(
                f"reward version {self.version} unsupported; this is v{REWARD_VERSION}"
            )
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        for name in ("per_turn", "per_minute", "resolved", "escalated", "abandoned", "csat_weight"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        object.__setattr__(self, "action_costs", MappingProxyType(dict(self.action_costs)))

    def action_cost_vector(self, actions: Sequence[str]) -> np.ndarray:
        """Cost of each catalogue action, shape (n_actions,); unknown names raise ValueError."""
        unknown = sorted(set(self.action_costs) - set(actions))
        if unknown:
            raise ValueError(
                f"reward.action_costs: unknown action(s) {unknown}; catalogue is {list(actions)}"
            )
        return np.array([float(self.action_costs.get(a, 0.0)) for a in actions])

    def terminal_vector(self) -> np.ndarray:
        """Terminal reward by outcome code, shape (4,) in :data:`OUTCOMES` order."""
        return np.array([0.0, self.resolved, self.escalated, self.abandoned])

    def rewards(
        self,
        *,
        actions: np.ndarray,
        outcomes: np.ndarray,
        handle_time_s: np.ndarray,
        csat: np.ndarray,
        catalogue: Sequence[str],
    ) -> np.ndarray:
        """Per-turn rewards, shape (n,).

        Arguments are arrays of shape (n,): action index into ``catalogue``, outcome code
        (:data:`OUTCOMES`), handle time in seconds, and CSAT in [1, 5] (read on terminal
        turns only). A missing CSAT on a terminal turn or a missing handle time raises
        ValueError: impute them first, never count them as neutral silently.
        """
        outcomes = np.asarray(outcomes)
        handle_time_s = np.asarray(handle_time_s, dtype=np.float64)
        csat = np.asarray(csat, dtype=np.float64)
        terminal = outcomes != CONTINUE
        if np.isnan(handle_time_s).any():
            raise ValueError(
                f"handle_time_s: {int(np.isnan(handle_time_s).sum())} missing value(s); impute first"
            )
        missing_csat = terminal & np.isnan(csat)
        if missing_csat.any() and self.csat_weight != 0:
            raise ValueError(
                f"csat: {int(missing_csat.sum())} terminal turn(s) without CSAT; impute first"
            )
        return self.turn_rewards(
            actions=np.asarray(actions),
            outcomes=outcomes,
            handle_time_s=handle_time_s,
            csat=csat,
            action_costs=self.action_cost_vector(catalogue),
        )

    def turn_rewards(
        self,
        *,
        actions: np.ndarray,
        outcomes: np.ndarray,
        handle_time_s: np.ndarray,
        csat: np.ndarray,
        action_costs: np.ndarray,
    ) -> np.ndarray:
        """The reward v1 formula on complete arrays, shape (n,); no missing-value checks.

        ``action_costs`` is :meth:`action_cost_vector` (precomputed by hot loops such as
        the env). CSAT is read on terminal turns only.
        """
        terminal = outcomes != CONTINUE
        r = self.per_turn + self.per_minute * handle_time_s / 60.0
        r = r + action_costs[actions] + self.terminal_vector()[outcomes]
        csat_term = self.csat_weight * (np.where(terminal, csat, 3.0) - 3.0) / 2.0
        return r + csat_term
