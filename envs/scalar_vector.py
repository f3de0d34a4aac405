"""ScalarVectorEnv: a few conversations stepped through the model's scalar sims.

:class:`~supportrl.envs.vector.SupportVectorEnv` pays numpy's per-call overhead once per
vector step, whatever ``num_envs``: the right engine for hundreds of conversations, a
slow one for one (a 1-row step costs ~0.2 ms). This env steps ``num_envs`` scalar sims
(:mod:`supportrl.envs.scalar`) in a Python loop: tens of microseconds for a handful of
conversations. Same spaces, same info contract and same-step autoreset as
SupportVectorEnv, same dynamics in distribution, other random draws (a seeded run is
deterministic but its numbers differ from SupportVectorEnv's).

Use it where a learner steps few conversations at a time (e.g. DQN with ``num_envs=1``);
it needs a model with ``scalar_sim`` (the synthetic world, a glm simulator).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.envs.scalar import RandomStream, ScalarReward, ScalarSim
from supportrl.envs.vector import set_up_vector_env


class ScalarVectorEnv(VectorEnv):
    """``num_envs`` conversations over the model's scalar sims; SupportVectorEnv's info contract.

    Info keys (arrays over ``num_envs``, as :class:`~supportrl.envs.vector.SupportVectorEnv`
    documents them): ``action_mask``, ``state``; on reset ``actions`` and ``feature_spec``;
    on steps ``outcome``, ``handle_time_s``, ``csat`` (NaN unless terminal), ``penalty``, and
    when a conversation ended ``final_obs``, ``_final_obs``, ``final_action_mask``.
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
    ) -> None:
        set_up_vector_env(self, num_envs, model, reward, max_turns, penalized)
        if getattr(model, "scalar_sim", None) is None:
            raise TypeError(
                f"model: {type(model).__name__} has no scalar_sim; use SupportVectorEnv"
            )
        self._reward = ScalarReward(self.reward, self.actions)
        self._sims: list[ScalarSim] = []
        self._turns = [0] * self.num_envs

    def _infos(self, infos: dict[str, Any]) -> dict[str, Any]:
        states = [sim.state() for sim in self._sims]
        infos["state"] = {k: np.array([s[k] for s in states]) for k in states[0]}
        infos["action_mask"] = np.stack([sim.action_mask() for sim in self._sims])
        return infos

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        stream = RandomStream(self.np_random)
        sims = [self.model.scalar_sim(stream) for _ in range(self.num_envs)]  # type: ignore[attr-defined]
        if any(sim is None for sim in sims):
            raise TypeError(f"model: this {type(self.model).__name__} has no scalar sim")
        self._sims = sims
        for sim in sims:
            sim.reset()
        self._turns = [0] * self.num_envs
        infos = {"actions": self.actions, "feature_spec": self.model.feature_spec}
        return np.stack([sim.observation() for sim in sims]), self._infos(infos)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._sims:
            raise RuntimeError("call reset() before step()")
        acts = np.asarray(actions).reshape(self.num_envs).tolist()
        n_actions = len(self.actions)
        if any(not 0 <= a < n_actions for a in acts):
            raise ValueError(f"actions must be in [0, {n_actions})")
        n = self.num_envs
        obs = np.empty((n, self.single_observation_space.shape[0]), dtype=np.float32)
        rewards, handle, csat, penalty = np.empty(n), np.empty(n), np.full(n, np.nan), np.zeros(n)
        outcome = np.empty(n, dtype=np.int64)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        ended: list[int] = []
        final: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for i, (sim, a) in enumerate(zip(self._sims, acts, strict=True)):
            o, h, c, p = sim.step(int(a))
            r = self._reward(int(a), o, h, c)
            rewards[i] = r - p if self.penalized else r
            outcome[i], handle[i], penalty[i] = o, h, p
            self._turns[i] += 1
            if o != CONTINUE:
                csat[i] = c
                terminated[i] = True
            elif self._turns[i] >= self.max_turns:
                truncated[i] = True
            if terminated[i] or truncated[i]:
                ended.append(i)
                final[i] = (sim.observation(), sim.action_mask())
                sim.reset()
                self._turns[i] = 0
            obs[i] = sim.observation()
        infos: dict[str, Any] = {
            "outcome": outcome,
            "handle_time_s": handle,
            "csat": csat,
            "penalty": penalty,
        }
        self._infos(infos)
        if ended:
            final_obs = np.zeros_like(obs)
            final_mask = infos["action_mask"].copy()
            for i in ended:
                final_obs[i], final_mask[i] = final[i]
            flags = np.zeros(n, dtype=bool)
            flags[ended] = True
            infos["final_obs"], infos["_final_obs"] = final_obs, flags
            infos["final_action_mask"] = final_mask
        return obs, rewards, terminated, truncated, infos
