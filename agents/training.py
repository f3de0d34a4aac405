"""Online training of bandits in the support env, in rounds of batched conversations.

Each round simulates ``conversations_per_round`` whole conversations under the current
bandit (the customer model and reward v1 of SupportEnv, all conversations stepped
together), then updates the bandit with every turn of the round: with the immediate
per-turn reward, or with the reward-to-go of the conversation from that turn
(``reward_mode="return"``). Learning curves record the mean conversation return per
round and, when the best known policy value is given, cumulative regret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.agents.bandits import Bandit
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.base import CustomerModel
from supportrl.simulators.synthetic import rollout
from tqdm.auto import tqdm

REWARD_MODES = ("immediate", "return")


@dataclass(frozen=True)
class LearningCurve:
    """Per-round metrics of a training run, each of shape (n_rounds,)."""

    env_steps: np.ndarray
    """Cumulative decisions (turns) after each round."""
    episodic_return: np.ndarray
    """Mean conversation return in the round (``charts/episodic_return``)."""
    cumulative_regret: np.ndarray | None
    """Sum over conversations so far of (best known value - return); None without one."""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "env_steps": self.env_steps.tolist(),
            "episodic_return": self.episodic_return.tolist(),
        }
        if self.cumulative_regret is not None:
            out["cumulative_regret"] = self.cumulative_regret.tolist()
        return out


@dataclass(frozen=True)
class TrainResult:
    env_steps: int
    conversations: int
    wall_s: float
    curve: LearningCurve

    @property
    def sps(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s > 0 else float("inf")


def reward_to_go(rewards: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of rewards from each turn to the end of its conversation, shape (n_turns,)."""
    total = np.cumsum(rewards[::-1])[::-1]
    ends = offsets[1:]
    after = np.append(total, 0.0)[ends]  # reward after each conversation's end
    lengths = np.diff(offsets)
    return total - np.repeat(after, lengths)


def train_bandit(
    bandit: Bandit,
    model: CustomerModel,
    reward: RewardSpec,
    *,
    total_steps: int,
    conversations_per_round: int = 256,
    reward_mode: str = "immediate",
    seed: int = 0,
    best_value: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``bandit`` online for at least ``total_steps`` decisions (whole rounds)."""
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if total_steps < 1 or conversations_per_round < 1:
        raise ValueError("total_steps and conversations_per_round must be >= 1")
    rng = np.random.default_rng(seed)
    steps, conversations = 0, 0
    env_steps, returns, regret = [], [], []
    regret_sum = 0.0
    start = time.perf_counter()
    bar = tqdm(
        total=total_steps, desc=f"train {type(bandit).__name__}", unit="step", disable=not progress
    )
    while steps < total_steps:
        ro = rollout(model, bandit, conversations_per_round, rng, max_turns=reward.max_turns)
        r = ro.rewards(reward, model.actions, penalized=True)
        target = r if reward_mode == "immediate" else reward_to_go(r, ro.offsets)
        bandit.update(ro.observed_states, ro.action, target)
        conv_returns = np.bincount(ro.conversation, weights=r, minlength=conversations_per_round)
        steps += len(ro.action)
        conversations += conversations_per_round
        env_steps.append(steps)
        returns.append(float(conv_returns.mean()))
        if best_value is not None:
            regret_sum += float((best_value - conv_returns).sum())
            regret.append(regret_sum)
        bar.update(len(ro.action))
    bar.close()
    wall = time.perf_counter() - start
    curve = LearningCurve(
        env_steps=np.asarray(env_steps),
        episodic_return=np.asarray(returns),
        cumulative_regret=np.asarray(regret) if best_value is not None else None,
    )
    return TrainResult(env_steps=steps, conversations=conversations, wall_s=wall, curve=curve)
