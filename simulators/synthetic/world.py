"""The ground-truth customer world: a parametric support world with hidden parameters.

It plays two roles: it *generates* schema-v1 logs (the embedded default data), and, since
its parameters are known, it gives the *true value* of any policy, against which the
fitted simulators (fidelity) and the off-policy estimators (accuracy, coverage) are
validated.

Per conversation the world draws a customer (``tier``, ``tenure_months``), the context
(``prior_contacts_30d``, ``channel``), a true intent (the *detected* intent is ``other``
for a share of conversations until the bot asks a clarifying question), an initial
sentiment, and a hidden **complexity** that the logs do not record. Each turn, the chosen
action moves sentiment and sets the hazards of the outcomes (resolved / escalated /
abandoned / continue) through a multinomial logit; handle time is log-normal by action.
At the end the customer has a true CSAT, which the logs reveal only for some
conversations, more often when it is extreme (missing not at random).

The logging policy (:class:`LoggingPolicy`, the "production bot") sees the hidden
complexity: with ``confounding > 0`` it escalates hard cases and answers easy ones
directly, which is what makes naive fitting and plain importance sampling go wrong.
``support_gaps`` removes actions in some states entirely
(deficient support): the logger never offers credit to free-tier customers and never
hands over to a human at turn 0.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.agents.base import BasePolicy, States, sample_actions
from supportrl.envs.features import NO_PREVIOUS_ACTION, FeatureSpec
from supportrl.envs.model import CustomerModel, Transition
from supportrl.envs.rewards import (
    ABANDONED,
    CONTINUE,
    DEFAULT_MAX_TURNS,
    ESCALATED,
    OUTCOMES,
    RESOLVED,
)
from supportrl.envs.support_env import SupportEnv
from supportrl.envs.vector import SupportVectorEnv
from supportrl.simulators.logs import DEFAULT_ACTIONS
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
    INTENTS,
    OFFER_CREDIT,
    TIERS,
    UNKNOWN_INTENT,
)

if TYPE_CHECKING:
    from supportrl.envs.scalar import RandomStream
    from supportrl.simulators.synthetic.scalar import WorldScalarSim


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the ground-truth world (the hidden parameters above are fixed)."""

    confounding: float = 1.0
    """How strongly the logging policy's choices follow the hidden complexity (0 = none)."""
    support_gaps: bool = True
    """Deficient support: the logger never offers credit to free tier, never escalates at turn 0."""
    logging_epsilon: float = 0.1
    """Uniform exploration of the logging policy over its allowed actions."""
    logging_temperature: float = 1.0
    """Softmax temperature of the logging policy's action scores."""
    unknown_intent_rate: float = 0.2
    """Share of conversations whose intent is detected as ``other`` until a clarify."""
    csat_response_rate: float = 0.35
    """Approximate share of conversations with a CSAT survey answer."""
    max_turns: int = DEFAULT_MAX_TURNS
    """Conversations are cut off (censored) after this many turns."""

    def __post_init__(self) -> None:
        if self.confounding < 0:
            raise ValueError(f"confounding must be >= 0, got {self.confounding}")
        if not 0 <= self.logging_epsilon <= 1:
            raise ValueError(f"logging_epsilon must be in [0, 1], got {self.logging_epsilon}")
        if self.logging_temperature <= 0:
            raise ValueError(f"logging_temperature must be > 0, got {self.logging_temperature}")
        if not 0 <= self.unknown_intent_rate < 1:
            raise ValueError(
                f"unknown_intent_rate must be in [0, 1), got {self.unknown_intent_rate}"
            )
        if not 0 < self.csat_response_rate <= 1:
            raise ValueError(f"csat_response_rate must be in (0, 1], got {self.csat_response_rate}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")


@dataclass
class WorldState:
    """State of ``n`` conversations in progress (arrays of shape (n,), codes where categorical)."""

    tier: np.ndarray
    tenure_months: np.ndarray
    prior_contacts_30d: np.ndarray
    channel: np.ndarray
    true_intent: np.ndarray
    intent: np.ndarray
    """Detected intent code into DETECTED_INTENTS."""
    complexity: np.ndarray
    sentiment: np.ndarray
    turn: np.ndarray
    previous_action: np.ndarray
    """-1 at turn 0, else the previous action index."""
    customer: np.ndarray
    """Index into the world's customer pool (-1 when the customer was drawn fresh)."""

    def take(self, rows: np.ndarray) -> WorldState:
        return WorldState(**{k: v[rows] for k, v in self.__dict__.items()})


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class SyntheticWorld:
    """The ground-truth customer model: draws conversations and answers actions."""

    config: WorldConfig = field(default_factory=WorldConfig)
    actions: tuple[str, ...] = DEFAULT_ACTIONS
    customer_pool: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)
    """Returning customers (:meth:`sample_customers` output): each conversation picks one
    uniformly; None draws a new customer for every conversation."""

    def __post_init__(self) -> None:
        if self.actions != DEFAULT_ACTIONS:
            raise ValueError(
                f"the synthetic world knows the default catalogue {DEFAULT_ACTIONS} only"
            )

    @property
    def max_turns(self) -> int:
        return self.config.max_turns

    @functools.cached_property
    def feature_spec(self) -> FeatureSpec:
        """Observation encoding with the world's known levels and typical scales."""
        return FeatureSpec(
            categorical={
                "intent": DETECTED_INTENTS,
                "previous_action": (NO_PREVIOUS_ACTION, *self.actions),
                "tier": TIERS,
                "channel": CHANNELS,
            },
            numeric={
                "turn": (0.0, float(self.config.max_turns)),
                "sentiment": (0.0, 1.0),
                "tenure_months": (30.0, 30.0),
                "prior_contacts_30d": (0.7, 1.0),
            },
        )

    def observation(self, state: WorldState) -> np.ndarray:
        """``feature_spec.encode(observe(state))`` computed from codes directly, float32 (n, dim)."""
        n = len(state.turn)
        out = np.zeros((n, self.feature_spec.dim), dtype=np.float32)
        rows = np.arange(n)
        col = 0
        for codes, width in (
            (state.intent, len(DETECTED_INTENTS)),
            (state.previous_action + 1, len(self.actions) + 1),
            (state.tier, len(TIERS)),
            (state.channel, len(CHANNELS)),
        ):
            out[rows, col + codes] = 1.0
            col += width
        out[:, col] = state.turn / self.config.max_turns
        out[:, col + 1] = state.sentiment
        out[:, col + 2] = (state.tenure_months - 30.0) / 30.0
        out[:, col + 3] = state.prior_contacts_30d - 0.7
        return out

    def action_mask(self, state: WorldState) -> np.ndarray:
        """Every action is possible in the real world, shape (n, n_actions)."""
        return np.ones((len(state.turn), len(self.actions)), dtype=bool)

    def scalar_sim(self, stream: RandomStream) -> WorldScalarSim:
        """One conversation of this world stepped in Python floats (the single env's fast path).

        Same dynamics as :meth:`initial_state` and :meth:`step`, random numbers from ``stream``
        (:class:`~supportrl.envs.scalar.RandomStream`); see :mod:`supportrl.simulators.synthetic.scalar`.
        """
        from supportrl.simulators.synthetic.scalar import WorldScalarSim

        return WorldScalarSim(self, stream)

    # ------------------------------------------------------------------ customers

    def sample_customers(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Customer attributes (``tier`` code, ``tenure_months``), shape (n,) each."""
        tier = rng.choice(len(TIERS), size=n, p=[0.6, 0.3, 0.1])
        mean_tenure = np.array([18.0, 36.0, 60.0])[tier]
        tenure = np.minimum(np.floor(rng.exponential(mean_tenure)), 240.0)
        return {"tier": tier.astype(np.int64), "tenure_months": tenure}

    def with_customers(self, pool: Mapping[str, np.ndarray]) -> SyntheticWorld:
        """This world with a pool of returning customers (:meth:`sample_customers` output)."""
        return dataclasses.replace(self, customer_pool=dict(pool))

    def initial_state(self, n: int, rng: np.random.Generator) -> WorldState:
        """Start ``n`` conversations (customers from the pool when the world has one)."""
        if self.customer_pool is None:
            customers = self.sample_customers(n, rng)
            who = np.full(n, -1, dtype=np.int64)
        else:
            who = rng.integers(0, len(self.customer_pool["tier"]), size=n)
            customers = {k: np.asarray(v)[who] for k, v in self.customer_pool.items()}
        tier = np.asarray(customers["tier"])
        tenure = np.asarray(customers["tenure_months"], dtype=np.float64)
        prior = rng.poisson(0.4 + 0.5 * (tier == 0)).astype(np.float64)
        channel = rng.choice(len(CHANNELS), size=n, p=[0.5, 0.3, 0.2])
        true_intent = rng.choice(len(INTENTS), size=n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
        unknown = rng.random(n) < self.config.unknown_intent_rate
        intent = np.where(unknown, DETECTED_INTENTS.index(UNKNOWN_INTENT), true_intent)
        complexity = (
            rng.normal(size=n)
            + 0.4 * (true_intent == 1)
            + 0.25 * np.minimum(prior, 4)
            - 0.2 * (tier == 2)
        )
        mood = (
            0.15
            - 0.12 * prior
            - 0.25 * (true_intent == 4)
            - 0.15 * (true_intent == 0)
            - 0.15 * complexity
            + 0.002 * np.minimum(tenure, 100)
        )
        sentiment = np.clip(mood + rng.normal(0.0, 0.3, size=n), -1.0, 1.0)
        return WorldState(
            tier=tier.astype(np.int64),
            tenure_months=tenure,
            prior_contacts_30d=prior,
            channel=channel.astype(np.int64),
            true_intent=true_intent.astype(np.int64),
            intent=intent.astype(np.int64),
            complexity=complexity,
            sentiment=sentiment,
            turn=np.zeros(n, dtype=np.int64),
            previous_action=np.full(n, -1, dtype=np.int64),
            customer=who,
        )

    def observe(self, state: WorldState, *, hidden: bool = False) -> dict[str, np.ndarray]:
        """The raw named state a policy sees (plus the hidden variables when ``hidden``)."""
        prev_labels = np.asarray((NO_PREVIOUS_ACTION, *self.actions), dtype=str)
        states = {
            "turn": state.turn,
            "previous_action": prev_labels[state.previous_action + 1],
            "intent": np.asarray(DETECTED_INTENTS, dtype=str)[state.intent],
            "sentiment": state.sentiment,
            "tier": np.asarray(TIERS, dtype=str)[state.tier],
            "channel": np.asarray(CHANNELS, dtype=str)[state.channel],
            "tenure_months": state.tenure_months,
            "prior_contacts_30d": state.prior_contacts_30d,
        }
        if hidden:
            states["complexity"] = state.complexity
            states["true_intent"] = np.asarray(INTENTS, dtype=str)[state.true_intent]
            states["customer"] = state.customer
        return states

    # ------------------------------------------------------------------ dynamics

    def outcome_probs(self, state: WorldState, action: np.ndarray) -> np.ndarray:
        """P(outcome | state, action), shape (n, 4) in ``OUTCOMES`` order."""
        s, c, t = state.sentiment, state.complexity, state.turn
        unknown = state.intent == DETECTED_INTENTS.index(UNKNOWN_INTENT)
        resolve = (
            _RESOLVE_BASE[action, state.true_intent]
            + 0.9 * s
            - _COMPLEXITY_SENSITIVITY[action] * c
            + 0.9 * ((action == DIRECT_ANSWER) & (state.previous_action == CLARIFY))
            - 1.6 * ((action == DIRECT_ANSWER) & unknown)
            - 0.8 * ((action == FAQ_LINK) & unknown)
            + 0.2 * (state.tier == 2)
        )
        demand_human = -3.6 - 1.0 * s + 0.15 * t + 0.4 * (state.tier == 2) + 0.2 * c
        abandon = (
            -3.0
            - 1.6 * s
            + 0.12 * t
            + 0.25 * c
            + 0.6 * ((action == FAQ_LINK) & (s < -0.3))
            + 0.4 * ((action == CLARIFY) & (state.previous_action == CLARIFY))
            + 0.6 * ((action == EMPATHIZE) & (state.previous_action == EMPATHIZE))
            - 0.3 * (state.tier == 2)
        )
        escalate = action == ESCALATE_HUMAN
        logits = np.stack(
            [
                np.zeros_like(s),
                np.where(escalate, -4.0, resolve),
                np.where(escalate, 3.5, demand_human),
                np.where(escalate, 0.2 - 0.8 * s, abandon),
            ],
            axis=1,
        )
        return _softmax(logits)

    def step(self, state: WorldState, action: np.ndarray, rng: np.random.Generator) -> Transition:
        """Apply ``action`` (shape (n,), indices) to ``n`` conversations."""
        action = np.asarray(action, dtype=np.int64)
        n = len(action)
        probs = self.outcome_probs(state, action)
        outcome = sample_actions(probs, rng)
        handle = _HANDLE_TIME_S[action] * np.exp(
            0.2 * state.complexity + rng.normal(-0.08, 0.4, size=n)
        )
        noise = rng.normal(0.0, 0.1, size=n)
        # Saying sorry twice in a row helps far less than the first time.
        repeated = (action == state.previous_action) & (action == EMPATHIZE)
        sentiment = np.clip(
            state.sentiment
            + _SENTIMENT_DELTA[action]
            * (1.0 + 0.5 * (state.sentiment < 0))
            * (1.0 - 0.8 * repeated)
            - 0.07
            - 0.05 * state.complexity
            + noise,
            -1.0,
            1.0,
        )
        terminal = outcome != CONTINUE
        csat_latent = (
            3.0
            + 1.3 * (outcome == RESOLVED)
            - 0.3 * (outcome == ESCALATED)
            - 1.4 * (outcome == ABANDONED)
            + 1.1 * sentiment
            - 0.15 * state.turn
            + rng.normal(0.0, 0.6, size=n)
        )
        csat = np.where(terminal, np.clip(np.round(csat_latent), 1.0, 5.0), np.nan)
        revealed = np.where(action == CLARIFY, state.true_intent, state.intent)
        next_state = WorldState(
            tier=state.tier,
            tenure_months=state.tenure_months,
            prior_contacts_30d=state.prior_contacts_30d,
            channel=state.channel,
            true_intent=state.true_intent,
            intent=revealed,
            complexity=state.complexity,
            sentiment=sentiment,
            turn=state.turn + 1,
            previous_action=action,
            customer=state.customer,
        )
        return Transition(outcome=outcome, handle_time_s=handle, csat=csat, next_state=next_state)

    def csat_observed(self, csat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Which terminal CSATs the logs reveal: extreme scores answer more often (MNAR)."""
        extremity = np.abs(np.nan_to_num(csat, nan=3.0) - 3.0)
        base = np.log(self.config.csat_response_rate / (1 - self.config.csat_response_rate + 1e-9))
        p = _sigmoid(base - 1.0 + 1.0 * extremity)
        return ~np.isnan(csat) & (rng.random(len(csat)) < p)

    @property
    def logging_policy(self) -> LoggingPolicy:
        return LoggingPolicy(config=self.config, actions=self.actions)


class LoggingPolicy(BasePolicy):
    """The production bot that wrote the logs; it sees the hidden ``complexity``.

    Softmax of hand-set action scores, mixed with ``logging_epsilon`` uniform exploration
    over the actions allowed in the state. Its :meth:`action_probs` needs the hidden
    state (``SyntheticWorld.observe(state, hidden=True)``), so it is not a policy that
    can be evaluated on the logs, only the one that produced them.
    """

    sees_hidden_state = True

    def __init__(self, config: WorldConfig, actions: tuple[str, ...] = DEFAULT_ACTIONS) -> None:
        self.config = config
        self.actions = actions

    def allowed(self, states: States) -> np.ndarray:
        """Actions the logger may take in each state, shape (n, n_actions) bool."""
        n = len(states["turn"])
        allowed = np.ones((n, len(self.actions)), dtype=bool)
        if self.config.support_gaps:
            allowed[:, OFFER_CREDIT] &= np.asarray(states["tier"]) != "free"
            allowed[:, ESCALATE_HUMAN] &= np.asarray(states["turn"]) > 0
        return allowed

    def action_probs(self, states: States) -> np.ndarray:
        if "complexity" not in states:
            raise ValueError("LoggingPolicy needs the hidden state (observe(..., hidden=True))")
        s = np.asarray(states["sentiment"], dtype=np.float64)
        t = np.asarray(states["turn"], dtype=np.float64)
        c = np.asarray(states["complexity"], dtype=np.float64) * self.config.confounding
        intent = np.asarray(states["intent"])
        prev = np.asarray(states["previous_action"])
        tier = np.asarray(states["tier"])
        n = len(s)
        scores = np.zeros((n, len(self.actions)))
        scores[:, EMPATHIZE] = -0.3 + 1.6 * (s < -0.3) - 0.8 * (prev == "empathize")
        scores[:, DIRECT_ANSWER] = 1.0 - 0.9 * c - 1.0 * (intent == UNKNOWN_INTENT)
        scores[:, FAQ_LINK] = 0.2 + 1.0 * np.isin(intent, ["account", "shipping"]) - 0.5 * c
        scores[:, CLARIFY] = -0.8 + 2.2 * (intent == UNKNOWN_INTENT) - 1.0 * (prev == "clarify")
        scores[:, OFFER_CREDIT] = (
            -1.2 + 1.4 * ((intent == "billing") & (s < 0)) + 0.5 * (tier == "enterprise")
        )
        scores[:, ESCALATE_HUMAN] = (
            -1.6 + 0.35 * t + 1.5 * c + 0.4 * (tier == "enterprise") - 0.8 * s
        )
        allowed = self.allowed(states)
        scores = np.where(allowed, scores / self.config.logging_temperature, -np.inf)
        probs = _softmax(scores)
        uniform = allowed / allowed.sum(axis=1, keepdims=True)
        eps = self.config.logging_epsilon
        return (1 - eps) * probs + eps * uniform


# ---------------------------------------------------------------------- values


# ---------------------------------------------------------------------- logs


# ---------------------------------------------------------------------- env ids


def world_from_config(**config: Any) -> SyntheticWorld:
    """The world from :class:`WorldConfig` fields as plain data (e.g. a Ray worker's env_config)."""
    return SyntheticWorld(config=WorldConfig(**config))


def make_env(model: CustomerModel | None = None, **kwargs: Any) -> SupportEnv:
    """Entry point of ``supportrl/SupportEnv-v1`` (and v0, with ``scalar=False``): a
    SupportEnv, over the world unless ``model``.

    The env classes take their customer model explicitly; the registered id is the place
    that names the ground-truth world as its default. ``kwargs`` go to SupportEnv.
    """
    return SupportEnv(model=SyntheticWorld() if model is None else model, **kwargs)


def make_vector_env(
    num_envs: int = 1, model: CustomerModel | None = None, scalar: bool = True, **kwargs: Any
) -> SupportVectorEnv:
    """Vector entry point of the env ids (``gymnasium.make_vec``); see :func:`make_env`.

    ``scalar`` (SupportEnv's, set by the v0 ids) does not apply: the vector env has one
    way to step, the same numbers under v0 and v1.
    """
    return SupportVectorEnv(num_envs, model=SyntheticWorld() if model is None else model, **kwargs)


__all__ = [
    "OUTCOMES",
    "LoggingPolicy",
    "SyntheticWorld",
    "WorldConfig",
    "WorldState",
    "make_env",
    "world_from_config",
    "make_vector_env",
]
