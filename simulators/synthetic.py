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
directly, which is what makes naive fitting and plain importance sampling go wrong
(DESIGN.md section 10). ``support_gaps`` removes actions in some states entirely
(deficient support): the logger never offers credit to free-tier customers and never
hands over to a human at turn 0.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.agents.base import BasePolicy, Policy, States, sample_actions
from supportrl.envs.features import NO_PREVIOUS_ACTION, FeatureSpec
from supportrl.envs.rewards import ABANDONED, CONTINUE, ESCALATED, OUTCOMES, RESOLVED, RewardSpec
from supportrl.simulators.base import CustomerModel, Transition
from supportrl.simulators.logs import DEFAULT_ACTIONS, LoggedConversations

from supportrl.files import CREATED

INTENTS: tuple[str, ...] = ("billing", "technical", "account", "shipping", "cancel")
UNKNOWN_INTENT = "other"
DETECTED_INTENTS: tuple[str, ...] = (*INTENTS, UNKNOWN_INTENT)
TIERS: tuple[str, ...] = ("free", "pro", "enterprise")
CHANNELS: tuple[str, ...] = ("chat", "web", "mobile")
CATEGORICAL_FEATURES: tuple[str, ...] = ("tier", "channel")
NUMERIC_FEATURES: tuple[str, ...] = ("tenure_months", "prior_contacts_30d")
CUSTOMER_FEATURES: tuple[str, ...] = ("tier", "tenure_months")
"""Features that belong to the customer (the customers table), not the conversation."""

EMPATHIZE, DIRECT_ANSWER, FAQ_LINK, CLARIFY, OFFER_CREDIT, ESCALATE_HUMAN = range(6)

# Resolution logit by (action, true intent) before state effects; rows follow
# DEFAULT_ACTIONS, columns INTENTS.
_RESOLVE_BASE = np.array(
    [
        [-2.6, -2.8, -2.6, -2.6, -2.2],  # empathize: rarely resolves by itself
        [-0.6, -0.9, -0.7, -0.5, -1.4],  # direct_answer
        [-1.8, -1.6, -0.6, -0.4, -2.4],  # faq_link: good for account and shipping
        [-4.0, -4.0, -4.0, -4.0, -4.0],  # clarify: never resolves, reveals the intent
        [-0.3, -2.2, -2.0, -1.0, -0.4],  # offer_credit: billing and cancellations
        [-9.0, -9.0, -9.0, -9.0, -9.0],  # escalate_human: handled by the escalation row
    ]
)
# How strongly complexity lowers the chance that an action resolves the case.
_COMPLEXITY_SENSITIVITY = np.array([0.3, 1.2, 1.0, 0.0, 0.6, 0.0])
# Mean sentiment change when the conversation goes on, by action.
_SENTIMENT_DELTA = np.array([0.22, 0.0, -0.08, -0.04, 0.3, 0.0])
# Mean handle time in seconds by action.
_HANDLE_TIME_S = np.array([40.0, 65.0, 20.0, 35.0, 55.0, 240.0])


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
    max_turns: int = 10
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

    # ------------------------------------------------------------------ customers

    def sample_customers(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Customer attributes (``tier`` code, ``tenure_months``), shape (n,) each."""
        tier = rng.choice(len(TIERS), size=n, p=[0.6, 0.3, 0.1])
        mean_tenure = np.array([18.0, 36.0, 60.0])[tier]
        tenure = np.minimum(np.floor(rng.exponential(mean_tenure)), 240.0)
        return {"tier": tier.astype(np.int64), "tenure_months": tenure}

    def initial_state(
        self,
        n: int,
        rng: np.random.Generator,
        customers: Mapping[str, np.ndarray] | None = None,
    ) -> WorldState:
        """Start ``n`` conversations; ``customers`` (from :meth:`sample_customers`) may be given."""
        if customers is None:
            customers = self.sample_customers(n, rng)
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


# ---------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class Rollout:
    """Conversations simulated under a policy: per-turn arrays plus offsets, conversation-major."""

    offsets: np.ndarray
    """(n_conversations + 1,)."""
    states: dict[str, np.ndarray]
    """Raw named state per turn, hidden variables included."""
    action: np.ndarray
    propensity: np.ndarray
    """Probability the acting policy gave the chosen action, per turn."""
    outcome: np.ndarray
    handle_time_s: np.ndarray
    csat: np.ndarray
    """True CSAT on terminal turns, NaN elsewhere."""
    conversation: np.ndarray
    """Conversation index of each turn."""
    penalty: np.ndarray
    """Pessimism penalty per turn (0 for the ground-truth world)."""
    hidden: tuple[str, ...] = ()
    """Names in ``states`` that policies do not see (the model's hidden variables)."""

    @property
    def observed_states(self) -> dict[str, np.ndarray]:
        """``states`` without the hidden variables: what a policy saw at each turn."""
        return {k: v for k, v in self.states.items() if k not in self.hidden}

    def rewards(
        self, reward: RewardSpec, actions: tuple[str, ...], *, penalized: bool = False
    ) -> np.ndarray:
        """Reward of every turn under ``reward``, shape (n_turns,).

        With ``penalized`` the model's pessimism penalty is subtracted.
        """
        r = reward.rewards(
            actions=self.action,
            outcomes=self.outcome,
            handle_time_s=self.handle_time_s,
            csat=self.csat,
            catalogue=actions,
        )
        return r - self.penalty if penalized else r

    def returns(
        self, reward: RewardSpec, actions: tuple[str, ...], *, penalized: bool = False
    ) -> np.ndarray:
        """Undiscounted return of every conversation, shape (n_conversations,); see :meth:`rewards`."""
        r = self.rewards(reward, actions, penalized=penalized)
        return np.bincount(self.conversation, weights=r, minlength=len(self.offsets) - 1)


def rollout(
    world: CustomerModel,
    policy: Policy,
    n: int,
    rng: np.random.Generator,
    *,
    customers: Mapping[str, np.ndarray] | None = None,
    max_turns: int | None = None,
) -> Rollout:
    """Simulate ``n`` conversations under ``policy``, all turns of all conversations batched.

    Works on any :class:`~simulators.base.CustomerModel`. The policy sees the observable
    named state only, unless it declares ``sees_hidden_state = True`` (the logging policy).
    Recorded states include the model's hidden variables.
    """
    max_turns = max_turns or world.config.max_turns
    sees_hidden = bool(getattr(policy, "sees_hidden_state", False))
    if customers is not None:
        state = world.initial_state(n, rng, customers=customers)
    else:
        state = world.initial_state(n, rng)
    active = np.arange(n)
    chunks: list[dict[str, Any]] = []
    hidden_names: tuple[str, ...] = ()
    for _ in range(max_turns):
        if len(active) == 0:
            break
        obs = world.observe(state, hidden=True)
        if not chunks:  # the model's hidden variables: what observe() leaves out
            hidden_names = tuple(k for k in obs if k not in world.observe(state))
        view = obs if sees_hidden else {k: v for k, v in obs.items() if k not in hidden_names}
        probs = policy.action_probs(view)
        action = sample_actions(probs, rng)
        tr = world.step(state, action, rng)
        chunks.append(
            {
                "conversation": active,
                "states": obs,
                "action": action,
                "propensity": probs[np.arange(len(action)), action],
                "outcome": tr.outcome,
                "handle_time_s": tr.handle_time_s,
                "csat": tr.csat,
                "penalty": tr.penalty if tr.penalty is not None else np.zeros(len(action)),
            }
        )
        going = tr.outcome == CONTINUE
        active = active[going]
        state = tr.next_state.take(np.flatnonzero(going))

    conversation = np.concatenate([c["conversation"] for c in chunks])
    turn = np.concatenate([c["states"]["turn"] for c in chunks])
    order = np.lexsort((turn, conversation))  # conversation-major, turns in order
    lengths = np.bincount(conversation, minlength=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def cat(key: str) -> np.ndarray:
        return np.concatenate([c[key] for c in chunks])[order]

    states = {
        k: np.concatenate([c["states"][k] for c in chunks])[order] for k in chunks[0]["states"]
    }
    return Rollout(
        offsets=offsets,
        states=states,
        action=cat("action"),
        propensity=cat("propensity"),
        outcome=cat("outcome"),
        handle_time_s=cat("handle_time_s"),
        csat=cat("csat"),
        conversation=conversation[order],
        penalty=cat("penalty"),
        hidden=hidden_names,
    )


@dataclass(frozen=True)
class TrueValue:
    """Monte Carlo value of a policy in the ground-truth world (reward units)."""

    value: float
    std_err: float
    n_conversations: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "value": self.value,
            "std_err": self.std_err,
            "n_conversations": self.n_conversations,
        }


def true_value(
    policy: Policy,
    n: int = 100_000,
    *,
    world: CustomerModel | None = None,
    reward: RewardSpec | None = None,
    seed: int = 0,
) -> TrueValue:
    """Value of ``policy`` (expected conversation return under ``reward``), by vectorised Monte Carlo.

    ``world`` may be any customer model: with a fitted simulator this is the *simulated*
    value of the policy.
    """
    world = world or SyntheticWorld()
    reward = reward or RewardSpec(max_turns=world.max_turns)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    ro = rollout(world, policy, n, np.random.default_rng(seed), max_turns=reward.max_turns)
    returns = ro.returns(reward, world.actions)
    return TrueValue(
        value=float(returns.mean()),
        std_err=float(returns.std(ddof=1) / np.sqrt(n)),
        n_conversations=n,
    )


# ---------------------------------------------------------------------- logs


@dataclass(frozen=True)
class GeneratedLogs:
    """Logs written by the logging policy, plus what the logs hide (for validation)."""

    logs: LoggedConversations
    customers: dict[str, np.ndarray]
    """Customers table: ``customer_id`` plus customer attributes, shape (n_customers,)."""
    true_csat: np.ndarray
    """(n_turns,) true CSAT on terminal turns (NaN elsewhere), before survey non-response."""
    complexity: np.ndarray
    """(n_conversations,) the hidden complexity."""

    def write(self, directory: str | Path, fmt: str = "parquet") -> tuple[Path, Path]:
        """Write ``turns.<fmt>`` and ``customers.<fmt>`` (schema v1) into a new ``directory``.

        Customer attributes go to the customers table only, joined back on load. Written
        to a uniquely named temporary directory beside ``directory`` first, then renamed,
        so a failure leaves nothing behind and two writers never share a temporary name.
        Both paths are recorded in :data:`supportrl.files.CREATED` as they are created.
        """
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
        directory = Path(directory)
        if os.path.lexists(directory):
            raise ValueError(f"{directory}: already exists; choose a new directory")
        tmp = CREATED.make_temp_dir(directory.parent, prefix=f".{directory.name}.")
        turns = self.logs.to_frame().drop(columns=list(CUSTOMER_FEATURES))
        customers = pd.DataFrame(self.customers)
        customers["customer_id"] = customers["customer_id"].astype(object)
        customers["tier"] = customers["tier"].astype(object)
        for name, frame in (("turns", turns), ("customers", customers)):
            if fmt == "parquet":
                frame.to_parquet(tmp / f"{name}.parquet", index=False)
            else:
                frame.to_csv(tmp / f"{name}.csv", index=False)
        try:
            # rename() refuses a non-empty target, so a directory filled meanwhile is kept
            tmp.rename(directory)
        except OSError:
            raise ValueError(f"{directory}: already exists; choose a new directory") from None
        CREATED.record(directory)
        CREATED.forget([tmp])
        return directory / f"turns.{fmt}", directory / f"customers.{fmt}"


def generate_logs(
    n_conversations: int,
    *,
    seed: int = 0,
    world: SyntheticWorld | None = None,
    customers_per_conversation: float = 0.7,
    start: str = "2026-01-01T00:00:00",
    days: float = 30.0,
) -> GeneratedLogs:
    """Simulate the logging policy and return schema-v1 logs (deterministic given ``seed``).

    Customers come back: the pool has ``customers_per_conversation * n`` customers and
    each conversation picks one uniformly. Timestamps spread conversation starts over
    ``days`` from ``start`` and advance by each turn's handle time.
    """
    if n_conversations < 1:
        raise ValueError(f"n_conversations must be >= 1, got {n_conversations}")
    world = world or SyntheticWorld()
    rng = np.random.default_rng(seed)
    n_customers = max(1, int(round(customers_per_conversation * n_conversations)))
    pool = world.sample_customers(n_customers, rng)
    who = rng.integers(0, n_customers, size=n_conversations)
    ro = rollout(
        world,
        world.logging_policy,
        n_conversations,
        rng,
        customers={k: v[who] for k, v in pool.items()},
    )
    observed = world.csat_observed(ro.csat, rng)
    width = len(str(n_conversations - 1))
    conversation_id = np.char.add("c", np.char.zfill(np.arange(n_conversations).astype(str), width))
    cwidth = len(str(n_customers - 1))
    customer_labels = np.char.add("u", np.char.zfill(np.arange(n_customers).astype(str), cwidth))
    starts = np.sort(rng.random(n_conversations)) * days * 86400.0
    elapsed = np.cumsum(ro.handle_time_s) - ro.handle_time_s
    elapsed = elapsed - elapsed[ro.offsets[:-1]][ro.conversation]
    seconds = starts[ro.conversation] + elapsed
    timestamp = np.datetime64(start, "ms") + np.round(seconds * 1000).astype("timedelta64[ms]")
    st = ro.states
    logs = LoggedConversations(
        actions=world.actions,
        conversation_id=conversation_id,
        offsets=ro.offsets,
        turn=st["turn"].astype(np.int64),
        intent=st["intent"],
        sentiment=np.round(st["sentiment"], 4),
        action=ro.action,
        outcome=ro.outcome.astype(np.int64),
        propensity=ro.propensity,
        csat=np.where(observed, ro.csat, np.nan),
        handle_time_s=np.round(ro.handle_time_s, 2),
        features={
            "tier": st["tier"],
            "channel": st["channel"],
            "tenure_months": st["tenure_months"].astype(np.float64),
            "prior_contacts_30d": st["prior_contacts_30d"].astype(np.float64),
        },
        categorical=CATEGORICAL_FEATURES,
        numeric=NUMERIC_FEATURES,
        customer_id=customer_labels[who][ro.conversation],
        timestamp=timestamp.astype("datetime64[ns]"),
        source="synthetic",
    )
    customers = {
        "customer_id": customer_labels,
        "tier": np.asarray(TIERS, dtype=str)[pool["tier"]],
        "tenure_months": pool["tenure_months"],
    }
    complexity = st["complexity"][ro.offsets[:-1]]
    return GeneratedLogs(logs=logs, customers=customers, true_csat=ro.csat, complexity=complexity)


__all__ = [
    "CATEGORICAL_FEATURES",
    "DETECTED_INTENTS",
    "INTENTS",
    "NUMERIC_FEATURES",
    "OUTCOMES",
    "GeneratedLogs",
    "LoggingPolicy",
    "Rollout",
    "SyntheticWorld",
    "TrueValue",
    "WorldConfig",
    "WorldState",
    "generate_logs",
    "rollout",
    "true_value",
]
