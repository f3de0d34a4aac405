"""Typed, validated array containers that the off-policy estimators read.

The loaders in ``simulators.logs`` turn schema-v1 logs (docs/log-schema.md) or generic
logged bandit feedback into these containers; the estimators never see a DataFrame.

Both containers are frozen dataclasses. ``__post_init__`` converts every array to its
canonical dtype (``int64`` for indices, ``float64`` for values) and raises ``ValueError``
naming the field and the first offending row when the data break a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["BanditFeedback", "SequentialFeedback"]


def _int_array(owner: str, name: str, values: object) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{owner}.{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{owner}.{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _float_array(owner: str, name: str, values: object, n: int) -> np.ndarray:
    array = np.asarray(values)
    if not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == np.bool_
    ):
        raise ValueError(f"{owner}.{name} must hold numbers, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if array.shape != (n,):
        raise ValueError(f"{owner}.{name} must have shape ({n},) like action, got {array.shape}")
    return array


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_decisions(
    owner: str, action: object, reward: object, propensity: object, n_actions: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Shared checks of the per-decision arrays; returns them in canonical dtypes."""
    if isinstance(n_actions, bool) or not isinstance(n_actions, int | np.integer):
        raise ValueError(f"{owner}.n_actions must be an int, got {n_actions!r}")
    n_actions = int(n_actions)
    if n_actions < 1:
        raise ValueError(f"{owner}.n_actions must be >= 1, got {n_actions}")

    action = _int_array(owner, "action", action)
    n = action.shape[0]
    if n == 0:
        raise ValueError(f"{owner}.action is empty: no logged decisions")
    bad = (action < 0) | (action >= n_actions)
    if bad.any():
        row = _first_row(bad)
        raise ValueError(
            f"{owner}.action must be in [0, n_actions={n_actions}); "
            f"row {row} has {action[row]} ({int(bad.sum())} rows out of range)"
        )

    reward = _float_array(owner, "reward", reward, n)
    bad = ~np.isfinite(reward)
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"{owner}.reward must be finite; row {row} has {reward[row]}")

    propensity = _float_array(owner, "propensity", propensity, n)
    # Written so that NaN fails too.
    bad = ~((propensity > 0.0) & (propensity <= 1.0))
    if bad.any():
        row = _first_row(bad)
        raise ValueError(
            f"{owner}.propensity must be in (0, 1]; row {row} has {propensity[row]} "
            f"({int(bad.sum())} rows out of range)"
        )
    return action, reward, propensity, n_actions


@dataclass(frozen=True)
class BanditFeedback:
    """Logged decisions of one-step (contextual bandit) form.

    Row ``i`` is one decision: the logging policy took ``action[i]`` with probability
    ``propensity[i]`` and observed ``reward[i]``. Contexts are not stored here: a target
    policy's probabilities and a reward model's predictions for the logged contexts are
    passed to the estimators as arrays with the same row order.
    """

    action: np.ndarray
    """Logged action indices, shape (n_rounds,), int64 in ``[0, n_actions)``."""
    reward: np.ndarray
    """Observed rewards, shape (n_rounds,), float64, finite."""
    propensity: np.ndarray
    """Logging policy's probability of the logged action, shape (n_rounds,), in (0, 1]."""
    n_actions: int
    """Size of the action catalogue."""
    group: np.ndarray | None = None
    """Cluster id of each row for the bootstrap, shape (n_rounds,), int64 (e.g. the
    conversation index). ``None``: every row is its own group."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        action, reward, propensity, n_actions = _check_decisions(
            owner, self.action, self.reward, self.propensity, self.n_actions
        )
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "propensity", propensity)
        object.__setattr__(self, "n_actions", n_actions)
        if self.group is not None:
            group = _int_array(owner, "group", self.group)
            if group.shape != action.shape:
                raise ValueError(
                    f"{owner}.group must have shape {action.shape} like action, got {group.shape}"
                )
            object.__setattr__(self, "group", group)

    @property
    def n_rounds(self) -> int:
        """Number of logged decisions."""
        return int(self.action.shape[0])

    @cached_property
    def flat_index(self) -> np.ndarray:
        """``i * n_actions + action[i]``, shape (n_rounds,): picks the logged action's
        entry out of a flattened (n_rounds, n_actions) array with one ``take``."""
        return np.arange(self.n_rounds, dtype=np.int64) * self.n_actions + self.action


@dataclass(frozen=True)
class SequentialFeedback:
    """Logged conversations: per-turn decisions of all conversations concatenated.

    Conversation ``c`` is rows ``offsets[c]:offsets[c + 1]``, in turn order. The value
    of a policy is the expected undiscounted sum of rewards over a conversation (reward
    contract v1, docs/reward.md); truncation at ``max_turns`` is the loader's job.
    """

    action: np.ndarray
    """Logged action per turn, shape (n_turns,), int64 in ``[0, n_actions)``."""
    reward: np.ndarray
    """Reward per turn, shape (n_turns,), float64, finite."""
    propensity: np.ndarray
    """Logging policy's probability of the logged action per turn, shape (n_turns,), in (0, 1]."""
    offsets: np.ndarray
    """Conversation boundaries, shape (n_conversations + 1,), int64: starts at 0, strictly
    increasing (every conversation has at least one turn), ends at n_turns."""
    n_actions: int
    """Size of the action catalogue."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        action, reward, propensity, n_actions = _check_decisions(
            owner, self.action, self.reward, self.propensity, self.n_actions
        )
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "propensity", propensity)
        object.__setattr__(self, "n_actions", n_actions)

        offsets = _int_array(owner, "offsets", self.offsets)
        n = action.shape[0]
        if offsets.shape[0] < 2:
            raise ValueError(
                f"{owner}.offsets must have n_conversations + 1 >= 2 entries, got {offsets.shape[0]}"
            )
        if offsets[0] != 0 or offsets[-1] != n:
            raise ValueError(
                f"{owner}.offsets must start at 0 and end at n_turns={n}, "
                f"got {offsets[0]} ... {offsets[-1]}"
            )
        empty = np.diff(offsets) <= 0
        if empty.any():
            c = _first_row(empty)
            raise ValueError(
                f"{owner}.offsets must be strictly increasing (no empty conversation); "
                f"conversation {c} spans rows {offsets[c]}:{offsets[c + 1]}"
            )
        object.__setattr__(self, "offsets", offsets)

    @property
    def n_turns(self) -> int:
        """Number of logged decisions over all conversations."""
        return int(self.action.shape[0])

    @property
    def n_conversations(self) -> int:
        """Number of conversations."""
        return int(self.offsets.shape[0] - 1)

    @cached_property
    def lengths(self) -> np.ndarray:
        """Turns per conversation, shape (n_conversations,)."""
        return np.diff(self.offsets)

    @cached_property
    def flat_index(self) -> np.ndarray:
        """``i * n_actions + action[i]``, shape (n_turns,): picks the logged action's
        entry out of a flattened (n_turns, n_actions) array with one ``take``."""
        return np.arange(self.n_turns, dtype=np.int64) * self.n_actions + self.action

    @property
    def max_length(self) -> int:
        """Turns in the longest conversation."""
        return int(self.lengths.max())

    @cached_property
    def conversation_index(self) -> np.ndarray:
        """Conversation of each row, shape (n_turns,), int64 in ``[0, n_conversations)``."""
        return np.repeat(np.arange(self.n_conversations, dtype=np.int64), self.lengths)

    @cached_property
    def turn_index(self) -> np.ndarray:
        """Position of each row within its conversation (0, 1, ...), shape (n_turns,)."""
        return np.arange(self.n_turns, dtype=np.int64) - self.offsets[self.conversation_index]

    def to_bandit(self) -> BanditFeedback:
        """Every turn as one bandit decision, grouped by conversation for the bootstrap.

        For per-decision estimators (``dm``, ``ips``, ``dr``, ...) on conversation logs:
        their intervals then resample conversations, not turns.
        """
        return BanditFeedback(
            action=self.action,
            reward=self.reward,
            propensity=self.propensity,
            n_actions=self.n_actions,
            group=self.conversation_index,
        )
