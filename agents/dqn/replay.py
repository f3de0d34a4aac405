"""Replay for a vector env: preallocated numpy arrays, n-step targets at sampling time.

Storage is time-major, shape ``(rows, num_envs, ...)``: row ``t`` holds the transition of
every conversation at vector step ``t``. Each transition keeps its own ``next_obs`` (the
env's ``final_obs`` where the conversation ended, since the same-step autoreset already
put the next conversation's first observation in ``obs``), so n-step targets can be
assembled when sampling by looking ahead along an env's column:

    G = r_t + gamma r_{t+1} + ... + gamma^{m-1} r_{t+m-1},   target = G + gamma^m (1 - terminal) max Q(next_obs_{t+m-1})

where ``m <= n`` stops at the first transition that ended its conversation. ``terminal``
marks transitions after which there is no bootstrap (termination, and truncation when
the learner does not bootstrap on truncation); ``ended`` marks every end of a column's
episode (also truncation, and a cut between two training calls). The newest ``n - 1``
rows are not sampled until their look-ahead is complete.

Prioritized replay (proportional, Schaul et al. 2016) keeps priorities in a
:class:`SumTree` over ``rows * num_envs`` leaves; rows still waiting for their
look-ahead have priority 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def n_step_returns(
    rewards: np.ndarray, ended: np.ndarray, terminal: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns along look-ahead windows.

    Args:
        rewards: shape (B, n), rewards of steps t, t+1, ..., t+n-1 of each sample's column.
        ended: shape (B, n) bool, the step ended its conversation (no later step counts).
        terminal: shape (B, n) bool, no bootstrap after this step (subset of ``ended``).
        gamma: discount per step.

    Returns:
        ``returns`` (B,) the discounted reward sum over the first ``m`` steps (``m`` stops
        at the first ended step, else n); ``discounts`` (B,) ``gamma**m``, or 0 when the
        last included step is terminal; ``last`` (B,) int64 index ``m - 1`` of the step
        whose ``next_obs`` to bootstrap from.
    """
    b, n = rewards.shape
    # step k counts while no earlier step of the window ended the conversation
    included = np.ones((b, n), dtype=bool)
    included[:, 1:] = np.cumsum(ended[:, :-1], axis=1) == 0
    returns = (rewards * gamma ** np.arange(n) * included).sum(axis=1)
    m = included.sum(axis=1)
    last = m - 1
    stop = terminal[np.arange(b), last]
    discounts = np.where(stop, 0.0, float(gamma) ** m)
    return returns.astype(np.float64), discounts, last.astype(np.int64)


class SumTree:
    """Binary sum tree over ``capacity`` non-negative leaves, updated and searched in batches."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.size = 1 << max(0, (self.capacity - 1).bit_length())  # leaves, a power of two
        self.tree = np.zeros(2 * self.size, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    @property
    def leaves(self) -> np.ndarray:
        """Leaf values, shape (capacity,) (a view)."""
        return self.tree[self.size : self.size + self.capacity]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Set leaves ``index`` (int array) to ``values`` and refresh their ancestors."""
        node = np.asarray(index, dtype=np.int64) + self.size
        self.tree[node] = values
        node = np.unique(node >> 1)
        while node[0] >= 1:
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]
            if node[0] == 1:
                break
            node = np.unique(node >> 1)

    def find(self, mass: np.ndarray) -> np.ndarray:
        """Leaf index holding each cumulative ``mass`` in [0, total), shape like ``mass``."""
        node = np.ones(len(mass), dtype=np.int64)
        mass = np.array(mass, dtype=np.float64)
        while node[0] < self.size:
            left = 2 * node
            go_right = mass >= self.tree[left]
            mass -= np.where(go_right, self.tree[left], 0.0)
            node = left + go_right
        return node - self.size


@dataclass(frozen=True)
class ReplaySample:
    """A training batch with n-step targets' ingredients (arrays of length B unless stated)."""

    obs: np.ndarray
    """Observations, float32 (B, obs_dim)."""
    actions: np.ndarray
    """Taken actions, int64."""
    returns: np.ndarray
    """n-step discounted reward sums, float32."""
    discounts: np.ndarray
    """Bootstrap factor gamma**m, or 0 after a terminal step, float32."""
    next_obs: np.ndarray
    """Observation to bootstrap from, float32 (B, obs_dim)."""
    next_mask: np.ndarray
    """Allowed actions in ``next_obs``, bool (B, n_actions)."""
    weights: np.ndarray
    """Importance-sampling weights (all 1 without prioritized replay), float32."""
    index: np.ndarray
    """Flat buffer index ``row * num_envs + env`` of each sample, for priority updates."""


class ReplayBuffer:
    """Preallocated transition storage for ``num_envs`` parallel conversations."""

    ARRAYS = ("obs", "next_obs", "action", "reward", "ended", "terminal", "next_mask")

    def __init__(
        self,
        *,
        capacity: int,
        num_envs: int,
        obs_dim: int,
        n_actions: int,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        eps: float = 1e-6,
    ) -> None:
        self.num_envs = int(num_envs)
        self.rows = int(capacity) // self.num_envs
        if self.rows < n_step + 1:
            raise ValueError(
                f"capacity: {capacity} holds fewer than n_step + 1 rows of {num_envs} envs"
            )
        self.n_step, self.gamma = int(n_step), float(gamma)
        self.prioritized, self.alpha, self.eps = bool(prioritized), float(alpha), float(eps)
        shape = (self.rows, self.num_envs)
        self.obs = np.zeros((*shape, obs_dim), dtype=np.float32)
        self.next_obs = np.zeros((*shape, obs_dim), dtype=np.float32)
        self.action = np.zeros(shape, dtype=np.int64)
        self.reward = np.zeros(shape, dtype=np.float32)
        self.ended = np.zeros(shape, dtype=bool)
        self.terminal = np.zeros(shape, dtype=bool)
        self.next_mask = np.ones((*shape, n_actions), dtype=bool)
        # Flat views (rows * num_envs, ...): one fancy index per gather when sampling.
        self._flat = {
            name: getattr(self, name).reshape(
                self.rows * self.num_envs, *getattr(self, name).shape[2:]
            )
            for name in self.ARRAYS
        }
        self.pos = 0
        """Next row to write."""
        self.filled = 0
        """Rows written so far, at most ``rows``."""
        self.max_priority = 1.0
        self.tree = SumTree(self.rows * self.num_envs) if self.prioritized else None

    def __len__(self) -> int:
        """Transitions available for sampling (look-ahead complete)."""
        return max(0, self.filled - (self.n_step - 1)) * self.num_envs

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        next_obs: np.ndarray,
        ended: np.ndarray,
        terminal: np.ndarray,
        next_mask: np.ndarray,
    ) -> None:
        """Write one vector step (arrays with num_envs rows) at the current row."""
        t = self.pos
        self.obs[t] = obs
        self.action[t] = action
        self.reward[t] = reward
        self.next_obs[t] = next_obs
        self.ended[t] = ended
        self.terminal[t] = terminal
        self.next_mask[t] = next_mask
        self.pos = (t + 1) % self.rows
        self.filled = min(self.filled + 1, self.rows)
        if self.tree is not None:
            cols = np.arange(self.num_envs)
            self.tree.set(t * self.num_envs + cols, np.zeros(self.num_envs))
            if self.filled >= self.n_step:  # row t - (n - 1) now has its full look-ahead
                ready = (t - (self.n_step - 1)) % self.rows
                self.tree.set(
                    ready * self.num_envs + cols,
                    np.full(self.num_envs, self.max_priority**self.alpha),
                )

    def mark_cut(self) -> None:
        """End every column at the newest row (training stops; the next call resets the env)."""
        if self.filled:
            self.ended[(self.pos - 1) % self.rows] = True

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 0.4) -> ReplaySample:
        """Draw ``batch_size`` transitions (uniformly, or by priority) with n-step targets."""
        available = len(self)
        if available == 0:
            raise ValueError("replay: nothing to sample yet")
        if self.tree is None:
            k = rng.integers(0, available, size=batch_size)
            oldest = (self.pos - self.filled) % self.rows
            row = (oldest + k // self.num_envs) % self.rows
            env = k % self.num_envs
            weights = np.ones(batch_size, dtype=np.float32)
        else:
            total = self.tree.total
            # Stratified: one draw per equal slice of the total mass.
            mass = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
            leaf = self.tree.find(np.minimum(mass, np.nextafter(total, 0.0)))
            probs = self.tree.leaves[leaf] / total
            if (probs <= 0).any():  # rounding at a boundary: take the leaf's nonzero neighbour
                leaf = np.where(probs > 0, leaf, np.argmax(self.tree.leaves))
                probs = self.tree.leaves[leaf] / total
            row, env = leaf // self.num_envs, leaf % self.num_envs
            w = (available * probs) ** (-beta)
            weights = (w / w.max()).astype(np.float32)
        flat = self._flat
        ahead = ((row[:, None] + np.arange(self.n_step)) % self.rows) * self.num_envs + env[:, None]
        returns, discounts, last = n_step_returns(
            flat["reward"][ahead], flat["ended"][ahead], flat["terminal"][ahead], self.gamma
        )
        index = row * self.num_envs + env
        boot = ahead[np.arange(batch_size), last]
        return ReplaySample(
            obs=flat["obs"][index],
            actions=flat["action"][index],
            returns=returns.astype(np.float32),
            discounts=discounts.astype(np.float32),
            next_obs=flat["next_obs"][boot],
            next_mask=flat["next_mask"][boot],
            weights=weights,
            index=index,
        )

    def update_priorities(self, index: np.ndarray, td_abs: np.ndarray) -> None:
        """Set the priority of sampled transitions ``index`` from their |TD error|."""
        if self.tree is None:
            return
        priority = np.abs(td_abs).astype(np.float64) + self.eps
        self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.set(index, priority**self.alpha)

    # -- checkpoints ---------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the buffer, as plain arrays."""
        out = {name: getattr(self, name) for name in self.ARRAYS}
        out["counters"] = np.array([self.pos, self.filled], dtype=np.int64)
        out["max_priority"] = np.array([self.max_priority])
        if self.tree is not None:
            out["priorities"] = self.tree.leaves.copy()
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray], *, where: str) -> None:
        """Restore from :meth:`state_arrays` output; ValueError naming ``where`` on mismatch."""
        for name in self.ARRAYS:
            ref = getattr(self, name)
            arr = arrays.get(name)
            if arr is None or arr.shape != ref.shape or arr.dtype != ref.dtype:
                raise ValueError(
                    f"{where}: replay array {name!r} missing or not {ref.dtype} {ref.shape}"
                )
            ref[...] = arr
        self.pos, self.filled = (int(x) for x in arrays["counters"])
        self.max_priority = float(arrays["max_priority"][0])
        if self.tree is not None:
            if "priorities" not in arrays:
                raise ValueError(f"{where}: prioritized replay without saved priorities")
            self.tree.set(np.arange(self.tree.capacity), arrays["priorities"])
