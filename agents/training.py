"""Online training of bandits in the support env, in rounds of batched conversations.

Each round collects ``conversations_per_round`` whole conversations under the current
bandit from a vector env over the customer model (the collector of
:mod:`supportrl.envs.collect`: ``conversations_per_round`` conversations stepped together,
the ones still running at the end of a round carry on into the next), then updates the
bandit with every turn of the round: with the reward-to-go of the conversation from that
turn (``reward_mode="return"``, the default) or with the immediate per-turn reward
(``"immediate"``). Learning curves record the mean conversation return per round and, when
the best known policy value is given, cumulative regret.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.agents.bandits import Bandit
from supportrl.envs.collect import Collector
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import RewardSpec
from supportrl.envs.vector import SupportVectorEnv
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
    reward_mode: str = "return",
    penalized: bool = True,
    seed: int = 0,
    best_value: float | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``bandit`` online for at least ``total_steps`` decisions (whole rounds).

    ``reward_mode``: learn from the conversation's reward-to-go (``"return"``, what a
    policy's value sums) or from the turn's reward alone (``"immediate"``). ``penalized``:
    subtract a fitted simulator's pessimism penalty from the rewards (setting ``env.penalized``;
    the synthetic world has none). ``callback(env_steps, metrics)`` runs after every round
    with that round's learning-curve point (``charts/episodic_return``, and
    ``charts/cumulative_regret`` with ``best_value``), e.g. to stream it to TensorBoard or to
    a Ray Tune trial.
    """
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
    if total_steps < 1 or conversations_per_round < 1:
        raise ValueError("total_steps and conversations_per_round must be >= 1")
    env_seed, policy_seed = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(policy_seed)
    env = SupportVectorEnv(conversations_per_round, model=model, reward=reward, penalized=penalized)
    collector = Collector(env)
    collector.reset(seed=int(env_seed.generate_state(1)[0]))
    steps, conversations = 0, 0
    env_steps, returns, regret = [], [], []
    regret_sum = 0.0
    start = time.perf_counter()
    bar = tqdm(
        total=total_steps, desc=f"train {type(bandit).__name__}", unit="step", disable=not progress
    )
    while steps < total_steps:
        sim = collector.collect(bandit, conversations_per_round, rng)
        r = sim.reward
        target = r if reward_mode == "immediate" else reward_to_go(r, sim.logs.offsets)
        bandit.update(sim.logs.states(), sim.logs.action, target)
        conv_returns = sim.returns()
        steps += sim.logs.n_turns
        conversations += conversations_per_round
        env_steps.append(steps)
        returns.append(float(conv_returns.mean()))
        if best_value is not None:
            regret_sum += float((best_value - conv_returns).sum())
            regret.append(regret_sum)
        bar.update(sim.logs.n_turns)
        if callback is not None:
            point = {"charts/episodic_return": returns[-1]}
            if best_value is not None:
                point["charts/cumulative_regret"] = regret_sum
            callback(steps, point)
    bar.close()
    wall = time.perf_counter() - start
    curve = LearningCurve(
        env_steps=np.asarray(env_steps),
        episodic_return=np.asarray(returns),
        cumulative_regret=np.asarray(regret) if best_value is not None else None,
    )
    return TrainResult(env_steps=steps, conversations=conversations, wall_s=wall, curve=curve)
