"""SupportVectorEnv: N conversations stepped at once in numpy, with same-step autoreset."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.envs.support_env import encode_states, observation_bounds
from supportrl.simulators.base import CustomerModel


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


class SupportVectorEnv(VectorEnv):
    """``num_envs`` SupportEnv conversations, batched: one numpy step for all of them.

    Same observations, actions and rewards as :class:`~envs.support_env.SupportEnv`.
    Autoreset is *same-step* (``metadata["autoreset_mode"]``): when a conversation ends,
    the returned observation is already the next conversation's first one, and the last
    observation of the finished one is in ``infos["final_obs"]`` (rows flagged by
    ``infos["_final_obs"]``, their action masks in ``infos["final_action_mask"]``).
    ``infos["action_mask"]`` (num_envs, n_actions) is always there; ``infos["outcome"]`` holds the outcome codes of the step.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        model: CustomerModel | None = None,
        reward: RewardSpec | None = None,
        max_turns: int | None = None,
        penalized: bool = True,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if model is None:
            from supportrl.simulators.synthetic import SyntheticWorld

            model = SyntheticWorld()
        self.model = model
        self.num_envs = int(num_envs)
        self.reward = reward or RewardSpec()
        self.max_turns = int(max_turns or self.reward.max_turns)
        self.penalized = penalized
        self.actions = tuple(model.actions)
        self._costs = self.reward.action_cost_vector(self.actions)
        low, high = observation_bounds(model.feature_spec)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Discrete(len(self.actions))
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state: Any = None
        self._turns = np.zeros(self.num_envs, dtype=np.int64)
        self._rng = np.random.default_rng()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._np_random_seed = seed
        self._state = self.model.initial_state(self.num_envs, self._rng)
        self._turns[:] = 0
        return encode_states(self.model, self._state), {
            "action_mask": self.model.action_mask(self._state)
        }

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
        tr = self.model.step(self._state, actions, self._rng)
        rewards = self.reward.turn_rewards(
            actions=actions,
            outcomes=tr.outcome,
            handle_time_s=tr.handle_time_s,
            csat=tr.csat,
            action_costs=self._costs,
        )
        if self.penalized and tr.penalty is not None:
            rewards = rewards - tr.penalty
        self._state = tr.next_state
        self._turns += 1
        terminated = tr.outcome != CONTINUE
        truncated = ~terminated & (self._turns >= self.max_turns)
        obs = encode_states(self.model, self._state)
        infos: dict[str, Any] = {"outcome": tr.outcome}
        done = np.flatnonzero(terminated | truncated)
        if len(done):
            final_obs = np.zeros_like(obs)
            final_obs[done] = obs[done]
            flags = np.zeros(self.num_envs, dtype=bool)
            flags[done] = True
            infos["final_obs"], infos["_final_obs"] = final_obs, flags
            infos["final_action_mask"] = self.model.action_mask(self._state)
            fresh = self.model.initial_state(len(done), self._rng)
            assign_rows(self._state, done, fresh)
            self._turns[done] = 0
            obs[done] = encode_states(self.model, fresh)
        infos["action_mask"] = self.model.action_mask(self._state)
        return obs, rewards, terminated, truncated, infos
