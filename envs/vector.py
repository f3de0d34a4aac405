"""SupportVectorEnv: N conversations stepped at once in numpy, with same-step autoreset.

Every command steps it: DQN trains on it, and the collector (:mod:`supportrl.envs.collect`)
drives it for bandit training, true and simulated policy values, the fidelity report and
log generation. (The single :class:`~supportrl.envs.support_env.SupportEnv` is the other way
to step a model, for Gymnasium users, Stable-Baselines3 and RLlib.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.envs.support_env import check_model, encode_states, observation_bounds


def assign_rows(state: Any, rows: np.ndarray, new: Any) -> None:
    """Overwrite conversations ``rows`` of ``state`` in place with ``new`` (same type, len(rows)).

    A model state is an object whose attributes are arrays with the conversation on the
    first axis; models with another layout provide ``state.put(rows, new)``.
    """
    put = getattr(state, "put", None)
    if put is not None:
        put(rows, new)
        return
    for name, values in vars(state).items():
        values[rows] = getattr(new, name)


def set_up_vector_env(
    env: VectorEnv,
    num_envs: int,
    model: CustomerModel,
    reward: RewardSpec | None,
    max_turns: int | None,
    penalized: bool,
) -> None:
    """The settings and spaces every vector env over a customer model shares (checked):
    ``model``, ``num_envs``, ``reward``, ``max_turns``, ``penalized``, ``actions`` and the
    single and batched observation / action spaces."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    check_model(model)
    env.model = model
    env.num_envs = int(num_envs)
    env.reward = reward or RewardSpec()
    env.max_turns = int(max_turns or env.reward.max_turns)
    if env.max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {env.max_turns}")
    env.penalized = penalized
    env.actions = tuple(model.actions)
    low, high = observation_bounds(model.feature_spec)
    env.single_observation_space = spaces.Box(low, high, dtype=np.float32)
    env.single_action_space = spaces.Discrete(len(env.actions))
    env.observation_space = batch_space(env.single_observation_space, env.num_envs)
    env.action_space = batch_space(env.single_action_space, env.num_envs)


class SupportVectorEnv(VectorEnv):
    """``num_envs`` SupportEnv conversations, batched: one numpy step for all of them.

    Same observations, actions and rewards as :class:`~supportrl.envs.support_env.SupportEnv`
    over the same customer ``model`` (required: the ground-truth world, a fitted simulator
    or any :class:`~supportrl.envs.model.CustomerModel`). Autoreset is *same-step*
    (``metadata["autoreset_mode"]``): when a conversation ends, the returned observation
    is already the next conversation's first one.

    **Info contract** (the keys learners and the collector read; a Gymnasium wrapper in
    front passes them through):

    | key | when | value |
    |---|---|---|
    | ``action_mask`` | reset, step | bool (num_envs, n_actions): actions the model supports |
    | ``state`` | reset, step | raw named state of the next decision: name -> (num_envs,) |
    | ``hidden_state`` | reset, step, with ``hidden_state=True`` | the model's hidden variables, same layout |
    | ``actions`` | reset | the action catalogue (tuple of labels; action ``j`` is ``actions[j]``) |
    | ``feature_spec`` | reset | the :class:`~supportrl.envs.features.FeatureSpec` encoding ``state`` into observations |
    | ``outcome`` | step | int64 (num_envs,) outcome codes into ``envs.rewards.OUTCOMES`` |
    | ``handle_time_s`` | step | float64 (num_envs,) seconds the turn took |
    | ``csat`` | step | float64 (num_envs,) the model's CSAT on terminal turns, NaN elsewhere |
    | ``penalty`` | step | float64 (num_envs,) pessimism penalty (0 when the model has none) |
    | ``final_obs``, ``_final_obs`` | step, when a conversation ended | last observation of the ended ones, and which rows |
    | ``final_action_mask`` | step, when a conversation ended | their action masks |

    ``state`` and ``action_mask`` after a step belong to the *returned* observation, so on
    rows that ended they describe the next conversation's first decision.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        model: CustomerModel,
        reward: RewardSpec | None = None,
        max_turns: int | None = None,
        penalized: bool = True,
        hidden_state: bool = False,
    ) -> None:
        set_up_vector_env(self, num_envs, model, reward, max_turns, penalized)
        self.hidden_state = hidden_state
        self._costs = self.reward.action_cost_vector(self.actions)
        self._state: Any = None
        self._turns = np.zeros(self.num_envs, dtype=np.int64)
        self._hidden_names: tuple[str, ...] | None = None

    def _state_infos(self, infos: dict[str, Any]) -> dict[str, Any]:
        """Add the raw named state (and hidden variables when asked) of the current rows."""
        if self.hidden_state:
            full = self.model.observe(self._state, hidden=True)
            if self._hidden_names is None:
                seen = self.model.observe(self._state)
                self._hidden_names = tuple(k for k in full if k not in seen)
            infos["state"] = {k: v for k, v in full.items() if k not in self._hidden_names}
            infos["hidden_state"] = {k: full[k] for k in self._hidden_names}
        else:
            infos["state"] = self.model.observe(self._state)
        infos["action_mask"] = self.model.action_mask(self._state)
        return infos

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._state = self.model.initial_state(self.num_envs, self.np_random)
        self._turns[:] = 0
        infos = {"actions": self.actions, "feature_spec": self.model.feature_spec}
        return encode_states(self.model, self._state), self._state_infos(infos)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        # a copy: the model keeps the actions as the next state's previous action, and the
        # autoreset below overwrites rows of that state
        actions = np.array(actions, dtype=np.int64).reshape(self.num_envs)
        if ((actions < 0) | (actions >= len(self.actions))).any():
            raise ValueError(f"actions must be in [0, {len(self.actions)})")
        tr = self.model.step(self._state, actions, self.np_random)
        rewards = self.reward.turn_rewards(
            actions=actions,
            outcomes=tr.outcome,
            handle_time_s=tr.handle_time_s,
            csat=tr.csat,
            action_costs=self._costs,
        )
        penalty = np.zeros(self.num_envs) if tr.penalty is None else np.asarray(tr.penalty)
        if self.penalized and tr.penalty is not None:
            rewards = rewards - penalty
        self._state = tr.next_state
        self._turns += 1
        terminated = tr.outcome != CONTINUE
        truncated = ~terminated & (self._turns >= self.max_turns)
        obs = encode_states(self.model, self._state)
        infos: dict[str, Any] = {
            "outcome": tr.outcome,
            "handle_time_s": tr.handle_time_s,
            "csat": tr.csat,
            "penalty": penalty,
        }
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final_obs = np.zeros_like(obs)
            final_obs[done] = obs[done]
            flags = np.zeros(self.num_envs, dtype=bool)
            flags[done] = True
            infos["final_obs"], infos["_final_obs"] = final_obs, flags
            infos["final_action_mask"] = self.model.action_mask(self._state)
            fresh = self.model.initial_state(len(done), self.np_random)
            assign_rows(self._state, done, fresh)
            self._turns[done] = 0
            obs[done] = encode_states(self.model, fresh)
        return obs, rewards, terminated, truncated, self._state_infos(infos)
