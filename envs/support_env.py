"""SupportEnv: one episode is one support conversation, on any customer model."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from supportrl.envs.features import FeatureSpec
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import CONTINUE, OUTCOMES, RewardSpec
from supportrl.envs.scalar import RandomStream, ScalarReward, ScalarSim

NUMERIC_BOUND = 1e6


def observation_bounds(spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Box bounds of encoded observations: one-hot columns in [0, 1], numerics in +-1e6.

    Numerics are centred and scaled, so the (finite) numeric bound is never reached in
    practice; it only keeps the space finite.
    """
    n_onehot = sum(len(levels) for levels in spec.categorical.values())
    low = np.concatenate([np.zeros(n_onehot), np.full(len(spec.numeric), -NUMERIC_BOUND)])
    high = np.concatenate([np.ones(n_onehot), np.full(len(spec.numeric), NUMERIC_BOUND)])
    return low.astype(np.float32), high.astype(np.float32)


def check_model(model: Any) -> None:
    """Raise TypeError unless ``model`` answers the :class:`CustomerModel` protocol."""
    if model is None:
        raise TypeError(
            "model: required (a CustomerModel: e.g. supportrl.simulators.synthetic.SyntheticWorld() "
            "or a fitted simulator); gymnasium.make('supportrl/SupportEnv-v1') gives the "
            "ground-truth world"
        )
    if not isinstance(model, CustomerModel):
        raise TypeError(f"model: {type(model).__name__} does not implement CustomerModel")


def encode_states(model: CustomerModel, state: Any) -> np.ndarray:
    """Observations of ``n`` conversations, float32 (n, dim); uses the model's fast path if any."""
    fast = getattr(model, "observation", None)
    if fast is not None:
        return fast(state)
    return model.feature_spec.encode(model.observe(state))


class SupportEnv(gym.Env[np.ndarray, np.int64]):
    """A customer-support conversation as a Gymnasium environment.

    ## Description

    The agent is the support bot. Each step it picks a response strategy; the customer
    model answers with an outcome (the conversation goes on, is resolved, is escalated to
    a human, or the customer abandons), a new sentiment, a handle time and, at the end, a
    CSAT score. The customer model is given by the caller: the ground-truth synthetic
    world (what ``gymnasium.make("supportrl/SupportEnv-v1")`` builds when no ``model`` is
    passed) or a simulator fitted from logs (:mod:`supportrl.simulators.fitted`).

    ## Action Space

    ``Discrete(n_actions)``: an index into the action catalogue, by default
    ``empathize, direct_answer, faq_link, clarify, offer_credit, escalate_human``.

    ## Observation Space

    A flat float32 ``Box`` built by the model's :class:`~envs.features.FeatureSpec`
    (``info["feature_names"]`` on reset names every column):

    | columns | variable | encoding |
    |---|---|---|
    | one-hot block | ``intent`` | detected intent (``other`` when unknown) |
    | one-hot block | ``previous_action`` | ``none`` at turn 0, else the last action |
    | one-hot blocks | categorical context (``tier``, ``channel``) | one column per level |
    | 1 | ``turn`` | turn / max_turns |
    | 1 | ``sentiment`` | in [-1, 1] |
    | 1 each | numeric context (``tenure_months``, ``prior_contacts_30d``) | (x - center) / scale |

    ## Rewards

    Reward contract v1 (:class:`~envs.rewards.RewardSpec`): a per-turn cost, a handle-time
    cost, action costs (``offer_credit``), the terminal reward of the outcome and a CSAT
    term on the terminal turn. A fitted simulator's pessimism penalty is subtracted
    (``penalized=True``).

    ## Starting State

    A new conversation drawn by the customer model (a new customer, intent and sentiment).

    ## Episode End

    Terminated when the outcome is ``resolved``, ``escalated`` or ``abandoned``; truncated
    after ``max_turns`` decisions.

    ## Arguments

    ``model`` (a :class:`~supportrl.envs.model.CustomerModel`, required),
    ``reward`` (a RewardSpec; default reward v1), ``max_turns`` (default the reward's),
    ``penalized`` (subtract the model's pessimism penalty, default True), ``scalar``
    (default True: step the model's scalar implementation when it has one, see below).

    ## Speed

    A model that offers ``scalar_sim(stream)`` (the synthetic world, a glm simulator) is
    stepped one conversation at a time in Python floats (:mod:`supportrl.envs.scalar`), a
    few microseconds a step; other models (the ensemble family, your own) go through their
    batched ``step`` on a 1-row state. Both paths simulate the same model (tests compare
    them in distribution) but draw their random numbers differently, so a seeded run
    gives other numbers with ``scalar=False``; each is deterministic for a seed.

    ``info`` carries ``state`` (the raw named state: what a `Policy` reads),
    ``action_mask`` (bool, actions the model supports in this state), and after a step
    ``outcome``, ``handle_time_s`` and ``csat`` (None before the terminal turn). The
    batched :class:`~supportrl.envs.vector.SupportVectorEnv` documents the same keys as arrays.

    ## Version History

    * v1: a model with a scalar sim (the world, glm simulators) is stepped through it
      (``scalar=True``): same dynamics, other random draws, so a seeded single env gives
      other numbers than v0; the vector env's numbers are unchanged.
    * v0: initial version (still registered, as ``scalar=False``: its seeded numbers).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        model: CustomerModel,
        reward: RewardSpec | None = None,
        max_turns: int | None = None,
        penalized: bool = True,
        scalar: bool = True,
    ) -> None:
        check_model(model)
        self.model = model
        self.reward = reward or RewardSpec()
        self.max_turns = int(max_turns or self.reward.max_turns)
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        self.penalized = penalized
        self.actions = tuple(model.actions)
        self._costs = self.reward.action_cost_vector(self.actions)
        low, high = observation_bounds(model.feature_spec)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(len(self.actions))
        self._state: Any = None
        self._turn = 0
        # the fast path (see supportrl.envs.scalar): built on the first reset, rebuilt when
        # np_random is replaced (a seeded reset)
        self._scalar_factory = getattr(model, "scalar_sim", None) if scalar else None
        self._sim: ScalarSim | None = None
        self._stream: RandomStream | None = None
        self._scalar_reward = ScalarReward(self.reward, self.actions)
        self._n_actions = len(self.actions)
        self._feature_names = model.feature_spec.names

    @property
    def uses_scalar_path(self) -> bool:
        """Whether steps go through the model's scalar implementation (known after reset)."""
        return self._sim is not None

    def _info(self) -> dict[str, Any]:
        raw = self.model.observe(self._state)
        return {
            "state": {k: v[0].item() for k, v in raw.items()},
            "action_mask": self.model.action_mask(self._state)[0],
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if self._scalar_factory is not None:
            sim = self._scalar_sim()
            if sim is not None:
                sim.reset()
                self._turn = 0
                info = {
                    "state": sim.state(),
                    "action_mask": sim.action_mask(),
                    "feature_names": self._feature_names,
                }
                return sim.observation(), info
        self._state = self.model.initial_state(1, self.np_random)
        self._turn = 0
        info = self._info()
        info["feature_names"] = self.model.feature_spec.names
        return encode_states(self.model, self._state)[0], info

    def step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._sim is not None:
            return self._scalar_step(action)
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action must be in [0, {self.action_space.n}), got {action!r}")
        a = np.array([int(action)])
        tr = self.model.step(self._state, a, self.np_random)
        outcome = int(tr.outcome[0])
        reward = self.reward.turn_rewards(
            actions=a,
            outcomes=tr.outcome,
            handle_time_s=tr.handle_time_s,
            csat=tr.csat,
            action_costs=self._costs,
        )[0]
        terminated = outcome != CONTINUE
        if self.penalized and tr.penalty is not None:
            reward -= float(tr.penalty[0])
        self._state = tr.next_state
        self._turn += 1
        truncated = not terminated and self._turn >= self.max_turns
        info = self._info()
        info.update(
            outcome=OUTCOMES[outcome],
            handle_time_s=float(tr.handle_time_s[0]),
            csat=float(tr.csat[0]) if terminated else None,
        )
        return encode_states(self.model, self._state)[0], float(reward), terminated, truncated, info

    def _scalar_sim(self) -> ScalarSim | None:
        """The model's scalar sim over a stream of ``np_random`` (None: the model has none)."""
        rng = self.np_random
        if self._stream is None or self._stream.rng is not rng:
            assert self._scalar_factory is not None
            self._stream = RandomStream(rng)
            self._sim = self._scalar_factory(self._stream)
        return self._sim

    def _scalar_step(
        self, action: int | np.integer
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """:meth:`step` through the scalar sim (reward v1 in Python floats)."""
        a = int(action)
        if not 0 <= a < self._n_actions:
            raise ValueError(f"action must be in [0, {self._n_actions}), got {action!r}")
        sim = self._sim
        assert sim is not None
        outcome, handle, csat, penalty = sim.step(a)
        terminated = outcome != CONTINUE
        reward = self._scalar_reward(a, outcome, handle, csat)
        if self.penalized:
            reward -= penalty
        self._turn += 1
        info = {
            "state": sim.state(),
            "action_mask": sim.action_mask(),
            "outcome": OUTCOMES[outcome],
            "handle_time_s": handle,
            "csat": csat if terminated else None,
        }
        truncated = not terminated and self._turn >= self.max_turns
        return sim.observation(), reward, terminated, truncated, info
