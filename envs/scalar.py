"""The single env's fast path: one conversation stepped in plain Python floats.

A numpy step over a 1-row batch costs 100-175 us in per-call overhead, most of it for
arrays of one element; a conversation lasts ~2.6 turns, so the reset costs as much
again. A model that can step *one* conversation cheaply offers a :class:`ScalarSim`
through ``model.scalar_sim(stream)``; :class:`~supportrl.envs.support_env.SupportEnv`
uses it when present and falls back to the batched ``model.step`` on a 1-row state
otherwise.

A scalar sim implements the same dynamics as the model's batched ``step`` and
``initial_state`` (tests compare the two in distribution: outcome shares, episode lengths
and returns, several policies), but consumes random numbers differently: it draws them in
blocks from the env's ``np_random`` through a :class:`RandomStream`, so a seeded run is
reproducible yet its numbers differ from the batched path's.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
from supportrl.envs.rewards import CONTINUE, RewardSpec

BLOCK = 1024
"""Random numbers drawn per block (one numpy call refills a block)."""


def _blocks(draw: Any, block: int) -> Iterator[float]:
    """Endless draws, ``block`` per call of ``draw``."""
    while True:
        yield from draw(block).tolist()


class RandomStream:
    """Uniforms and standard normals from a generator, drawn ``block`` at a time.

    :attr:`uniform` and :attr:`normal` return Python floats; the generator is touched once
    per ``block`` draws of each kind. The stream is a function of the generator's state:
    two streams over equally seeded generators give the same numbers.
    """

    __slots__ = ("block", "normal", "rng", "uniform")

    def __init__(self, rng: np.random.Generator, block: int = BLOCK) -> None:
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.rng = rng
        self.block = int(block)
        # a generator's __next__ is a C call: no Python frame per draw
        self.uniform: Callable[[], float] = _blocks(rng.random, self.block).__next__
        """A draw from U[0, 1)."""
        self.normal: Callable[[], float] = _blocks(rng.standard_normal, self.block).__next__
        """A draw from N(0, 1)."""

    def categorical(self, cdf: tuple[float, ...]) -> int:
        """Index ``k`` with probability ``cdf[k] - cdf[k-1]`` (``cdf`` ends at the total mass).

        The first ``k`` with ``u * cdf[-1] < cdf[k]``, as ``Generator.choice`` picks.
        """
        return min(bisect_right(cdf, self.uniform() * cdf[-1]), len(cdf) - 1)

    def poisson(self, lam: float) -> int:
        """A Poisson(``lam``) count by inverse CDF (small ``lam``: a few terms)."""
        u = self.uniform()
        k, p = 0, math.exp(-lam)
        cum = p
        while u >= cum and p > 0.0:
            k += 1
            p *= lam / k
            cum += p
        return k


@runtime_checkable
class ScalarSim(Protocol):
    """One conversation of a customer model, stepped in Python scalars.

    Built by ``model.scalar_sim(stream)``; every random number comes from ``stream``.
    """

    def reset(self) -> None:
        """Start a new conversation (as ``model.initial_state(1, rng)`` would)."""
        ...

    def step(self, action: int) -> tuple[int, float, float, float]:
        """Apply ``action``: (outcome code, handle time s, CSAT or NaN, pessimism penalty).

        The CSAT is the model's full CSAT on terminal outcomes, NaN when the conversation
        goes on; the penalty is 0.0 for a model without one.
        """
        ...

    def observation(self) -> np.ndarray:
        """The current observation, float32 (dim,), as ``model.observation`` encodes it."""
        ...

    def state(self) -> dict[str, Any]:
        """The raw named state (``model.observe`` of the current state, Python scalars)."""
        ...

    def action_mask(self) -> np.ndarray:
        """Actions the model supports in the current state, bool (n_actions,)."""
        ...


def cumulative(weights: Any) -> tuple[float, ...]:
    """Running sums of ``weights`` as a tuple of floats (a CDF for :meth:`RandomStream.categorical`)."""
    return tuple(np.cumsum(np.asarray(weights, dtype=np.float64)).tolist())


class ScalarReward:
    """Reward v1 of one turn in Python floats: :meth:`RewardSpec.turn_rewards`' formula and
    term order (so both paths round alike), for the scalar paths."""

    __slots__ = ("costs", "csat_weight", "per_minute", "per_turn", "terminal")

    def __init__(self, reward: RewardSpec, actions: tuple[str, ...]) -> None:
        self.per_turn = reward.per_turn
        self.per_minute = reward.per_minute
        self.costs = tuple(reward.action_cost_vector(actions).tolist())
        self.terminal = tuple(reward.terminal_vector().tolist())
        self.csat_weight = reward.csat_weight

    def __call__(self, action: int, outcome: int, handle_time_s: float, csat: float) -> float:
        """The reward of a turn (``csat`` is read on terminal outcomes only)."""
        r = self.per_turn + self.per_minute * handle_time_s / 60.0
        r = r + self.costs[action] + self.terminal[outcome]
        return r + self.csat_weight * ((csat if outcome != CONTINUE else 3.0) - 3.0) / 2.0
