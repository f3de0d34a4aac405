"""DQN hyperparameters (:class:`DQNConfig`) and what one gradient update reports (:class:`DQNUpdateStats`).

One config drives both backends: the native learner (:mod:`agents.dqn.learner`) reads it
directly and :mod:`agents.rllib` translates it to RLlib's ``DQNConfig``. Step counts are
*env steps*: single decisions (turns), summed over the vector env's conversations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class DQNConfig:
    """Hyperparameters of Double/Dueling/n-step DQN with optional prioritized replay."""

    total_steps: int = 200_000
    """Env steps (decisions) to train for; also the horizon of the epsilon and beta schedules."""
    num_envs: int = 64
    """Conversations stepped together by the vector env (one vector step = num_envs env steps)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the ReLU hidden layers of the Q-network."""
    dueling: bool = True
    """Dueling head: Q = V + A - mean(A) (Wang et al. 2016)."""
    double_q: bool = True
    """Double DQN target: the online network picks the next action, the target net scores it."""
    learning_rate: float = 1e-3
    """Adam step size."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    gamma: float = 0.99
    """Discount per turn."""
    n_step: int = 3
    """Rewards summed before bootstrapping (stops early at the end of a conversation)."""
    batch_size: int = 256
    """Transitions per gradient update."""
    buffer_size: int = 100_000
    """Replay capacity in env steps (rounded down to a multiple of num_envs)."""
    learning_starts: int = 2_000
    """Env steps collected before the first gradient update."""
    updates_per_step: float = 1.0
    """Gradient updates per vector step (fractions accumulate: 0.5 = one update every 2 steps)."""
    target_update_interval: int = 500
    """Env steps between target-network updates."""
    tau: float = 1.0
    """Target update target <- tau * online + (1 - tau) * target; 1.0 is a hard copy."""
    start_epsilon: float = 1.0
    """Exploration rate at step 0."""
    end_epsilon: float = 0.05
    """Exploration rate after the linear decay."""
    exploration_fraction: float = 0.25
    """Share of total_steps over which epsilon decays linearly."""
    max_grad_norm: float | None = 10.0
    """Clip the global gradient norm to this; None disables clipping."""
    huber_delta: float = 1.0
    """Huber loss threshold between the quadratic and the linear part."""
    prioritized: bool = False
    """Proportional prioritized replay (Schaul et al. 2016) with importance-sampling weights."""
    per_alpha: float = 0.6
    """Priority exponent: P(i) ~ (|td_i| + per_eps) ** per_alpha."""
    per_beta: float = 0.4
    """Importance-sampling exponent at step 0, annealed linearly to 1 at total_steps."""
    per_eps: float = 1e-6
    """Added to |td| so that no transition gets priority 0."""
    bootstrap_on_truncation: bool = True
    """Bootstrap from ``final_obs`` when a conversation hits max_turns (a time limit, not an end)."""
    log_interval: int = 5_000
    """Env steps between metric rows (charts/episodic_return, losses/td_loss, charts/SPS)."""

    def __post_init__(self) -> None:
        for name in (
            "total_steps",
            "num_envs",
            "n_step",
            "batch_size",
            "buffer_size",
            "learning_starts",
            "target_update_interval",
            "log_interval",
        ):
            low = 0 if name == "learning_starts" else 1
            object.__setattr__(self, name, _check_int(getattr(self, name), name, low=low))
        sizes = self.hidden_sizes
        if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
            raise ValueError(f"hidden_sizes: expected a sequence of widths, got {sizes!r}")
        sizes = tuple(sizes)
        for i, h in enumerate(sizes):
            _check_int(h, f"hidden_sizes[{i}]", low=1)
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in sizes))
        for name in ("dueling", "double_q", "prioritized", "bootstrap_on_truncation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        _check_real(self.learning_rate, "learning_rate", low=0.0, low_open=True)
        _check_real(self.adam_eps, "adam_eps", low=0.0, low_open=True)
        _check_real(self.gamma, "gamma", low=0.0, high=1.0)
        _check_real(self.updates_per_step, "updates_per_step", low=0.0, low_open=True)
        _check_real(self.tau, "tau", low=0.0, low_open=True, high=1.0)
        _check_real(self.start_epsilon, "start_epsilon", low=0.0, high=1.0)
        _check_real(self.end_epsilon, "end_epsilon", low=0.0, high=1.0)
        _check_real(self.exploration_fraction, "exploration_fraction", low=0.0, high=1.0)
        if self.max_grad_norm is not None:
            _check_real(self.max_grad_norm, "max_grad_norm", low=0.0, low_open=True)
        _check_real(self.huber_delta, "huber_delta", low=0.0, low_open=True)
        _check_real(self.per_alpha, "per_alpha", low=0.0)
        _check_real(self.per_beta, "per_beta", low=0.0, high=1.0)
        _check_real(self.per_eps, "per_eps", low=0.0, low_open=True)
        if self.buffer_size < self.num_envs * (self.n_step + 1):
            raise ValueError(
                f"buffer_size: must hold at least num_envs * (n_step + 1) = "
                f"{self.num_envs * (self.n_step + 1)} env steps, got {self.buffer_size}"
            )

    @property
    def updates_per_env_step(self) -> float:
        """Gradient updates per env step (decision): updates_per_step / num_envs."""
        return self.updates_per_step / self.num_envs

    def epsilon(self, env_steps: int) -> float:
        """Linear schedule from start_epsilon to end_epsilon over exploration_fraction * total_steps."""
        horizon = self.exploration_fraction * self.total_steps
        if horizon <= 0:
            return self.end_epsilon
        frac = min(1.0, env_steps / horizon)
        return self.start_epsilon + frac * (self.end_epsilon - self.start_epsilon)

    def beta(self, env_steps: int) -> float:
        """Importance-sampling exponent, linear from per_beta to 1 over total_steps."""
        frac = min(1.0, env_steps / self.total_steps)
        return self.per_beta + frac * (1.0 - self.per_beta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        out = asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DQNConfig:
        """Build from a mapping; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"DQN config: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        return cls(**dict(data))


@dataclass(frozen=True)
class DQNUpdateStats:
    """What one gradient update of the Q-network measured."""

    td_loss: float
    """Mean (importance-weighted) Huber loss of the TD errors (``losses/td_loss``)."""
    q_mean: float
    """Mean Q-value of the taken actions (``losses/q_values``)."""
    target_mean: float
    """Mean n-step target."""
    td_abs_mean: float
    """Mean absolute TD error."""
    grad_norm: float
    """Global gradient norm before clipping (NaN when clipping is off)."""


def _check_int(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    return int(value)


def _check_real(
    value: Any, name: str, *, low: float, low_open: bool = False, high: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    if value < low or (low_open and value == low):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high}, got {value}")
    return float(value)
