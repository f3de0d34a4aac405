"""Online training of bandits in the support env, in rounds of batched conversations
(:class:`BanditTrainer`, the one training shape of :mod:`supportrl.agents.trainer`).

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
from typing import Any

import numpy as np
from supportrl.agents.bandits import Bandit
from supportrl.agents.trainer import TrainCallback, TrainResult, curve_arrays, go_on
from supportrl.envs.collect import Collector
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import RewardSpec
from supportrl.envs.vector import SupportVectorEnv
from tqdm.auto import tqdm

REWARD_MODES = ("immediate", "return")


def reward_to_go(rewards: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of rewards from each turn to the end of its conversation, shape (n_turns,)."""
    total = np.cumsum(rewards[::-1])[::-1]
    ends = offsets[1:]
    after = np.append(total, 0.0)[ends]  # reward after each conversation's end
    lengths = np.diff(offsets)
    return total - np.repeat(after, lengths)


class BanditTrainer:
    """Trains a bandit online in rounds of whole conversations (the module's docstring).

    ``reward_mode``: learn from the conversation's reward-to-go (``"return"``, what a
    policy's value sums) or from the turn's reward alone (``"immediate"``). ``penalized``:
    subtract a fitted simulator's pessimism penalty from the rewards (setting
    ``env.penalized``; the synthetic world has none). ``best_value`` (the best known policy
    value) adds ``charts/cumulative_regret`` to the curve. All randomness comes from
    ``seed``; conversations still running at the end of a :meth:`train` call carry on into
    the next call.
    """

    def __init__(
        self,
        bandit: Bandit,
        model: CustomerModel,
        reward: RewardSpec,
        *,
        conversations_per_round: int = 256,
        reward_mode: str = "return",
        penalized: bool = True,
        seed: int = 0,
        best_value: float | None = None,
        progress: bool = True,
    ) -> None:
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if conversations_per_round < 1:
            raise ValueError("conversations_per_round must be >= 1")
        self.bandit = bandit
        self.conversations_per_round = conversations_per_round
        self.reward_mode = reward_mode
        self.best_value = best_value
        self.progress = progress
        env_seed, policy_seed = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(policy_seed)
        env = SupportVectorEnv(
            conversations_per_round, model=model, reward=reward, penalized=penalized
        )
        self.collector = Collector(env)
        self.collector.reset(seed=int(env_seed.generate_state(1)[0]))
        self.env_steps = 0
        """Decisions collected over the trainer's life."""
        self.regret = 0.0
        """Sum over conversations so far of (best known value - return)."""

    def train(
        self, total_steps: int | None = None, callback: TrainCallback | None = None
    ) -> TrainResult:
        """Train for at least ``total_steps`` more decisions (whole rounds).

        ``callback(env_steps, metrics)`` runs after every round with that round's
        learning-curve point (``charts/episodic_return``, and ``charts/cumulative_regret``
        with ``best_value``), e.g. to stream it to TensorBoard or a Ray Tune trial; it
        stops the training by returning False.
        """
        if total_steps is None or total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        bandit, n = self.bandit, self.conversations_per_round
        start_steps, conversations, stopped = self.env_steps, 0, False
        rows: dict[str, list[float]] = {"env_steps": [], "charts/episodic_return": []}
        if self.best_value is not None:
            rows["charts/cumulative_regret"] = []
        start = time.perf_counter()
        bar = tqdm(
            total=total_steps,
            desc=f"train {type(bandit).__name__}",
            unit="step",
            disable=not self.progress,
        )
        while self.env_steps - start_steps < total_steps:
            sim = self.collector.collect(bandit, n, self.rng)
            r = sim.reward
            target = r if self.reward_mode == "immediate" else reward_to_go(r, sim.logs.offsets)
            bandit.update(sim.logs.states(), sim.logs.action, target)
            conv_returns = sim.returns()
            self.env_steps += sim.logs.n_turns
            conversations += n
            point = {"charts/episodic_return": float(conv_returns.mean())}
            if self.best_value is not None:
                self.regret += float((self.best_value - conv_returns).sum())
                point["charts/cumulative_regret"] = self.regret
            rows["env_steps"].append(self.env_steps)
            for name, value in point.items():
                rows[name].append(value)
            bar.update(sim.logs.n_turns)
            if not go_on(callback, self.env_steps, point):
                stopped = self.env_steps - start_steps < total_steps
                break
        bar.close()
        return TrainResult(
            env_steps=self.env_steps - start_steps,
            wall_s=time.perf_counter() - start,
            curve=curve_arrays(rows),
            policy=bandit,
            total_env_steps=self.env_steps,
            stopped=stopped,
            episodes=conversations,
        )


def train_bandit(
    bandit: Bandit,
    model: CustomerModel,
    reward: RewardSpec,
    *,
    total_steps: int,
    callback: TrainCallback | None = None,
    **settings: Any,
) -> TrainResult:
    """``BanditTrainer(bandit, model, reward, **settings).train(total_steps, callback)`` in
    one call (``settings``: :class:`BanditTrainer`'s keywords)."""
    return BanditTrainer(bandit, model, reward, **settings).train(total_steps, callback)
