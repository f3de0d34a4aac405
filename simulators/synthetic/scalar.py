"""The ground-truth world stepped one conversation at a time in Python floats.

:class:`WorldScalarSim` is the same world as :meth:`SyntheticWorld.initial_state` and
:meth:`SyntheticWorld.step` (same coefficients, same formulas, term for term), written
for one conversation so a step costs a few microseconds instead of numpy's per-call
overhead on 1-row arrays. It is what ``SupportEnv`` steps over the world; the batched
step stays the path of the vector env. The two agree in distribution, not draw for draw
(tests/envs/test_scalar_env.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.envs.features import NO_PREVIOUS_ACTION
from supportrl.envs.rewards import ABANDONED, CONTINUE, ESCALATED, RESOLVED
from supportrl.envs.scalar import RandomStream
from supportrl.simulators.synthetic.params import (
    _COMPLEXITY_SENSITIVITY,
    _HANDLE_TIME_S,
    _RESOLVE_BASE,
    _SENTIMENT_DELTA,
    CHANNELS,
    CLARIFY,
    DETECTED_INTENTS,
    DIRECT_ANSWER,
    EMPATHIZE,
    ESCALATE_HUMAN,
    FAQ_LINK,
    TIERS,
    UNKNOWN_INTENT,
)

if TYPE_CHECKING:
    from supportrl.simulators.synthetic.world import SyntheticWorld

# Python copies of the world's coefficient tables (indexing a tuple beats numpy scalars).
RESOLVE_BASE: tuple[tuple[float, ...], ...] = tuple(map(tuple, _RESOLVE_BASE.tolist()))
COMPLEXITY_SENSITIVITY: tuple[float, ...] = tuple(_COMPLEXITY_SENSITIVITY.tolist())
SENTIMENT_DELTA: tuple[float, ...] = tuple(_SENTIMENT_DELTA.tolist())
HANDLE_TIME_S: tuple[float, ...] = tuple(_HANDLE_TIME_S.tolist())
TIER_CDF = (0.6, 0.9, 1.0)
MEAN_TENURE = (18.0, 36.0, 60.0)
CHANNEL_CDF = (0.5, 0.8, 1.0)
INTENT_CDF = (0.3, 0.55, 0.75, 0.9, 1.0)
UNKNOWN = DETECTED_INTENTS.index(UNKNOWN_INTENT)


class WorldScalarSim:
    """One conversation of a :class:`SyntheticWorld`; implements :class:`~supportrl.envs.scalar.ScalarSim`."""

    def __init__(self, world: SyntheticWorld, stream: RandomStream) -> None:
        self.world = world
        self.stream = stream
        self.max_turns = float(world.config.max_turns)
        self.unknown_rate = float(world.config.unknown_intent_rate)
        pool = world.customer_pool
        self.pool = (
            None
            if pool is None
            else (np.asarray(pool["tier"]).tolist(), np.asarray(pool["tenure_months"]).tolist())
        )
        self.prev_labels = (NO_PREVIOUS_ACTION, *world.actions)
        spec = world.feature_spec
        self.dim = spec.dim
        names = spec.names
        self.col_intent = names.index(f"intent={DETECTED_INTENTS[0]}")
        self.col_prev = names.index(f"previous_action={NO_PREVIOUS_ACTION}")
        self.col_tier = names.index(f"tier={TIERS[0]}")
        self.col_channel = names.index(f"channel={CHANNELS[0]}")
        self.col_turn = names.index("turn")
        self.col_sentiment = names.index("sentiment")
        self.col_tenure = names.index("tenure_months")
        self.col_prior = names.index("prior_contacts_30d")
        self.n_actions = len(world.actions)
        self._template = np.zeros(self.dim, dtype=np.float32)
        self.tier = self.channel = 0  # the template's one-hots start cleared
        self._mask = np.ones(self.n_actions, dtype=bool)

    def reset(self) -> None:
        """A new conversation, drawn as :meth:`SyntheticWorld.initial_state` draws one."""
        st = self.stream
        uniform = st.uniform
        if self.pool is None:
            # bisect on a CDF ending at 1.0: the index Generator.choice draws
            tier = bisect_right(TIER_CDF, uniform())
            tenure = min(math.floor(-math.log(1.0 - uniform()) * MEAN_TENURE[tier]), 240.0)
            self.customer = -1
        else:
            tiers, tenures = self.pool
            who = min(int(uniform() * len(tiers)), len(tiers) - 1)
            tier, tenure = int(tiers[who]), float(tenures[who])
            self.customer = who
        prior = float(st.poisson(0.9 if tier == 0 else 0.4))
        channel = bisect_right(CHANNEL_CDF, uniform())
        true_intent = bisect_right(INTENT_CDF, uniform())
        unknown = uniform() < self.unknown_rate
        complexity = (
            st.normal() + 0.4 * (true_intent == 1) + 0.25 * min(prior, 4.0) - 0.2 * (tier == 2)
        )
        mood = (
            0.15
            - 0.12 * prior
            - 0.25 * (true_intent == 4)
            - 0.15 * (true_intent == 0)
            - 0.15 * complexity
            + 0.002 * min(tenure, 100.0)
        )
        self.sentiment = min(max(mood + 0.3 * st.normal(), -1.0), 1.0)
        # the columns that stay fixed for the whole conversation (observation() copies them)
        tpl = self._template
        tpl[self.col_tier + self.tier] = 0.0
        tpl[self.col_channel + self.channel] = 0.0
        tpl[self.col_tier + tier] = 1.0
        tpl[self.col_channel + channel] = 1.0
        self.tier, self.tenure, self.prior, self.channel = tier, float(tenure), prior, channel
        tpl[self.col_tenure] = (self.tenure - 30.0) / 30.0
        tpl[self.col_prior] = prior - 0.7
        self.true_intent = true_intent
        self.intent = UNKNOWN if unknown else true_intent
        self.complexity = complexity
        self.turn = 0
        self.previous_action = -1

    def step(self, action: int) -> tuple[int, float, float, float]:
        """One turn of :meth:`SyntheticWorld.step` (outcome, handle time, CSAT or NaN, 0.0)."""
        st = self.stream
        a, s, c, t = action, self.sentiment, self.complexity, self.turn
        prev, tier2 = self.previous_action, self.tier == 2
        if a == ESCALATE_HUMAN:
            resolve, human, abandon = -4.0, 3.5, 0.2 - 0.8 * s
        else:
            unknown = self.intent == UNKNOWN
            resolve = (
                RESOLVE_BASE[a][self.true_intent]
                + 0.9 * s
                - COMPLEXITY_SENSITIVITY[a] * c
                + 0.9 * (a == DIRECT_ANSWER and prev == CLARIFY)
                - 1.6 * (a == DIRECT_ANSWER and unknown)
                - 0.8 * (a == FAQ_LINK and unknown)
                + 0.2 * tier2
            )
            human = -3.6 - 1.0 * s + 0.15 * t + 0.4 * tier2 + 0.2 * c
            abandon = (
                -3.0
                - 1.6 * s
                + 0.12 * t
                + 0.25 * c
                + 0.6 * (a == FAQ_LINK and s < -0.3)
                + 0.4 * (a == CLARIFY and prev == CLARIFY)
                + 0.6 * (a == EMPATHIZE and prev == EMPATHIZE)
                - 0.3 * tier2
            )
        e1, e2, e3 = math.exp(resolve), math.exp(human), math.exp(abandon)
        x = st.uniform() * (1.0 + e1 + e2 + e3)
        if x < 1.0:
            outcome = CONTINUE
        elif x < 1.0 + e1:
            outcome = RESOLVED
        elif x < 1.0 + e1 + e2:
            outcome = ESCALATED
        else:
            outcome = ABANDONED
        handle = HANDLE_TIME_S[a] * math.exp(0.2 * c + (-0.08 + 0.4 * st.normal()))
        repeated = a == prev and a == EMPATHIZE
        sentiment = (
            s
            + SENTIMENT_DELTA[a] * (1.0 + 0.5 * (s < 0)) * (1.0 - 0.8 * repeated)
            - 0.07
            - 0.05 * c
            + 0.1 * st.normal()
        )
        sentiment = min(max(sentiment, -1.0), 1.0)
        csat = math.nan
        if outcome != CONTINUE:
            latent = (
                3.0
                + 1.3 * (outcome == RESOLVED)
                - 0.3 * (outcome == ESCALATED)
                - 1.4 * (outcome == ABANDONED)
                + 1.1 * sentiment
                - 0.15 * t
                + 0.6 * st.normal()
            )
            csat = min(max(float(round(latent)), 1.0), 5.0)
        if a == CLARIFY:
            self.intent = self.true_intent
        self.sentiment = sentiment
        self.turn = t + 1
        self.previous_action = a
        return outcome, handle, csat, 0.0

    def observation(self) -> np.ndarray:
        """``SyntheticWorld.observation`` of the current state, float32 (dim,)."""
        out = self._template.copy()
        out[self.col_intent + self.intent] = 1.0
        out[self.col_prev + self.previous_action + 1] = 1.0
        out[self.col_turn] = self.turn / self.max_turns
        out[self.col_sentiment] = self.sentiment
        return out

    def state(self) -> dict[str, Any]:
        """``SyntheticWorld.observe`` of the current state, as Python scalars."""
        return {
            "turn": self.turn,
            "previous_action": self.prev_labels[self.previous_action + 1],
            "intent": DETECTED_INTENTS[self.intent],
            "sentiment": self.sentiment,
            "tier": TIERS[self.tier],
            "channel": CHANNELS[self.channel],
            "tenure_months": self.tenure,
            "prior_contacts_30d": self.prior,
        }

    def action_mask(self) -> np.ndarray:
        """Every action is possible in the world, bool (n_actions,)."""
        return self._mask.copy()
