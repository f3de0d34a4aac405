"""One training shape for every learner (SB3's ``learn(total_timesteps, callback)``).

Bandits (:class:`~supportrl.agents.training.BanditTrainer`), native DQN
(:class:`~supportrl.agents.dqn.DQNLearner`) and RLlib
(:class:`~supportrl.agents.rllib.RLlibTrainer`) train through
``train(total_steps, callback) -> TrainResult``: ``total_steps`` more env steps (decisions),
``callback(env_steps, metrics)`` after every learning-curve point (the trainer's env steps
so far and that point's metrics under the fixed names, ``charts/episodic_return``, ...);
a callback that returns ``False`` stops the training after that point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from supportrl.policy import Policy

TrainCallback = Callable[[int, Mapping[str, float]], "bool | None"]
"""``callback(env_steps, metrics) -> False to stop`` (anything else: go on)."""


@dataclass(frozen=True)
class TrainResult:
    """What one ``train`` call did, for every kind of learner.

    Fields after ``policy`` are filled by the trainers that have them (None otherwise).
    """

    env_steps: int
    """Env steps (decisions) collected in this call."""
    wall_s: float
    """Seconds of training in this call (callbacks and building an RLlib algorithm excluded)."""
    curve: Mapping[str, np.ndarray]
    """``env_steps`` and each metric (fixed names) -> its value per learning-curve point."""
    policy: Policy
    """The trained policy (a bandit is its own policy; DQN's greedy ``QPolicy``; RLlib's module)."""
    total_env_steps: int
    """Env steps of the trainer's whole life, after this call."""
    stopped: bool = False
    """Whether the callback stopped the training before ``total_steps``."""
    episodes: int | None = None
    """Conversations that ended (DQN) or were collected (bandits, whole rounds) in this call."""
    updates: int | None = None
    """Gradient updates in this call (DQN, RLlib)."""
    build_s: float | None = None
    """Seconds to build the RLlib algorithm (env runners, learner, replay buffer)."""

    @property
    def sps(self) -> float:
        """Env steps per second of training."""
        return self.env_steps / self.wall_s if self.wall_s > 0 else float("inf")


class Trainer(Protocol):
    """Anything that trains through the one shape (bandits, native DQN, RLlib)."""

    def train(
        self, total_steps: int | None = None, callback: TrainCallback | None = None
    ) -> TrainResult: ...


def go_on(callback: TrainCallback | None, env_steps: int, metrics: Mapping[str, float]) -> bool:
    """Call ``callback`` with one learning-curve point; False when it asks to stop."""
    return callback is None or callback(int(env_steps), metrics) is not False


def curve_arrays(rows: Mapping[str, list[float]]) -> dict[str, np.ndarray]:
    """Learning-curve rows (name -> values) as float64 arrays (``env_steps`` as int64)."""
    return {
        k: np.asarray(v, dtype=np.int64 if k == "env_steps" else np.float64)
        for k, v in rows.items()
    }
