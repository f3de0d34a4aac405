"""Linear contextual bandits with disjoint models: LinUCB and linear Thompson sampling.

Each action ``a`` has its own ridge regression of reward on the design row
``x = [feature_spec.encode(state), 1]`` (the encoded features plus an intercept, ``d =
feature_spec.dim + 1`` columns; the intercept is penalised like the rest)::

    A_a = ridge * I + sum_i w_i x_i x_i^T        shape (d, d)
    b_a = sum_i w_i r_i x_i                      shape (d,)
    theta_a = A_a^-1 b_a                         shape (d,)

summed over the rows ``i`` where action ``a`` was taken, with importance weights ``w_i``
(1 when not given). The bandit keeps ``A``, ``b``, ``A^-1`` and ``theta`` for every action
(arrays of shape (K, d, d) and (K, d)).

Updates:

* one row at a time (:meth:`update_one`, or :meth:`update` with a single row):
  Sherman-Morrison, ``A^-1 <- A^-1 - w u u^T / (1 + w x^T u)`` with ``u = A^-1 x``, and the
  matching recursive-least-squares step ``theta <- theta + w u (r - x^T theta) / (1 + w x^T
  u)``, both in place. The rows are also buffered and folded into ``A`` and ``b`` in one
  matrix product every 1024 rows; at that point ``A^-1`` and ``theta`` of the touched actions
  are re-derived from ``A`` and ``b`` (below), so Sherman-Morrison rounding cannot drift.
* a batch of rows (:meth:`update` / :meth:`update_encoded` with n > 1): ``A`` and ``b`` are
  accumulated with one matrix product per action, then ``A^-1`` of each touched action is
  recomputed from its Cholesky factor (``A = L L^T``, ``A^-1 = L^-T L^-1``, batched over
  the touched actions) and ``theta = A^-1 b``. This is a re-inversion, not a Woodbury update: it
  costs O(d^3) per action whatever the batch size and resets any rounding drift. Both
  routes equal the closed-form ridge solution up to rounding (tested to 1e-8).

Scoring a batch is vectorised: ``mean[n, a] = x_n . theta_a`` and ``width[n, a] =
sqrt(x_n^T A_a^-1 x_n)`` come from one matrix product of the (n, d) rows with all K
inverses laid side by side (the ``einsum('ni,aij,nj->na')`` contraction done as a GEMM),
in chunks of 8192 rows to bound memory.

Fast paths: :meth:`act_one` / :meth:`update_one` take one encoded row (shape
(feature_spec.dim,)) and reuse preallocated buffers; the ``*_encoded`` methods take rows
already encoded by ``feature_spec.encode``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from supportrl.agents.bandits._base import Bandit, BanditUpdateStats, check_int, check_real
from supportrl.agents.base import TIE_RTOL, States, greedy_probs, sample_actions

_PENDING_ROWS = 1024
"""Rank-one updates buffered before they are folded into A and b (and A^-1 re-derived)."""
_CHUNK_ROWS = 8192
"""Rows scored per matrix product; bounds the (rows, K, d) temporary."""
_MC_ELEMENTS = 2_000_000
"""Upper bound on (samples * rows * K) held at once by the Monte Carlo probabilities."""


def support_mask(x: np.ndarray, weights: np.ndarray, threshold: float) -> np.ndarray:
    """Actions whose estimated logging probability ``softmax(x @ weights.T)`` is at least
    ``threshold`` (the most likely one always), bool (n, K), for design rows x (n, d)."""
    logits = x @ weights.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return (p >= threshold) | (p >= p.max(axis=1, keepdims=True))


def _argmax_one(scores: list[float], rng: np.random.Generator) -> int:
    """Index of the largest score, ties (within TIE_RTOL) broken uniformly with ``rng``."""
    top = max(scores)
    threshold = top - TIE_RTOL * abs(top)
    tied = [i for i, s in enumerate(scores) if s >= threshold]
    if len(tied) == 1:
        return tied[0]
    return tied[int(rng.integers(len(tied)))]


@dataclass(eq=False, kw_only=True)
class _LinearBandit(Bandit):
    """Disjoint ridge regressions, one per action; see the module docstring."""

    requires_features = True

    ridge: float = 1.0
    """Ridge penalty lambda (> 0): every A_a starts as lambda * I."""
    support_threshold: float = 0.0
    """Above 0, each state's actions are restricted to those the logs support: estimated
    logging probability ``softmax([x, 1] @ support.T)`` at least this (the logger's most
    likely action is always allowed); the weights come from :meth:`set_support`."""

    def _validate(self) -> None:
        self.ridge = check_real(self.ridge, "ridge", low=0.0, low_open=True)
        self.support_threshold = check_real(self.support_threshold, "support_threshold", low=0.0)
        if self.support_threshold >= 1.0:
            raise ValueError(f"support_threshold must be in [0, 1), got {self.support_threshold}")

    # -- support restriction ----------------------------------------------------------------
    def set_support(self, weights: np.ndarray) -> None:
        """The logging policy's multinomial logit on design rows, shape (K, d)."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (self.n_actions, self.dim) or not np.isfinite(weights).all():
            raise ValueError(
                f"support weights: expected finite ({self.n_actions}, {self.dim}), got {weights.shape}"
            )
        self._support[...] = weights

    def supported(self, x: np.ndarray) -> np.ndarray | None:
        """Allowed actions for design rows x (n, d), bool (n, K); None when unrestricted."""
        if self.support_threshold <= 0.0:
            return None
        return support_mask(x, self._support, self.support_threshold)

    def _restrict(self, x: np.ndarray, scores: np.ndarray) -> np.ndarray:
        allowed = self.supported(x)
        return scores if allowed is None else np.where(allowed, scores, -np.inf)

    # -- state ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Columns of a design row: ``feature_spec.dim`` features plus the intercept."""
        return self._dim

    def reset(self) -> None:
        assert self.feature_spec is not None
        self._dim = self.feature_spec.dim + 1
        k, d = self.n_actions, self._dim
        eye = np.eye(d)
        self._A = np.tile(eye * self.ridge, (k, 1, 1))
        self._b = np.zeros((k, d))
        self._a_inv = np.tile(eye / self.ridge, (k, 1, 1))
        self._theta = np.zeros((k, d))
        self._support = np.zeros((k, d))
        # Views into the arrays above; the arrays are only ever written in place.
        self._a_inv_rows = self._a_inv.reshape(k * d, d)
        self._feature_shape = (d - 1,)
        self._x = np.ones(d)
        self._outer = np.empty((d, d))
        self._pending_x = np.empty((_PENDING_ROWS, d))
        self._pending_a = np.empty(_PENDING_ROWS, dtype=np.int64)
        self._pending_w = np.empty(_PENDING_ROWS)
        self._pending_r = np.empty(_PENDING_ROWS)
        self._n_pending = 0

    def _read_only(self, arr: np.ndarray) -> np.ndarray:
        out = arr.copy()
        out.flags.writeable = False
        return out

    @property
    def a(self) -> np.ndarray:
        """``A_a = ridge * I + sum w x x^T`` for every action, shape (K, d, d) (a copy)."""
        self._flush(refactor=False)
        return self._read_only(self._A)

    @property
    def b(self) -> np.ndarray:
        """``b_a = sum w r x`` for every action, shape (K, d) (a copy)."""
        self._flush(refactor=False)
        return self._read_only(self._b)

    @property
    def a_inv(self) -> np.ndarray:
        """``A_a^-1`` for every action, shape (K, d, d) (a copy)."""
        return self._read_only(self._a_inv)

    @property
    def theta(self) -> np.ndarray:
        """Ridge coefficients ``A_a^-1 b_a``, shape (K, d); the last column is the intercept."""
        return self._read_only(self._theta)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """What a serving artifact needs to reproduce :meth:`action_probs`: ``theta`` (K, d)
        and ``a_inv`` (K, d, d), float64 copies (LinTS adds its probability draws ``z``)."""
        out = {"theta": self._theta.copy(), "a_inv": self._a_inv.copy()}
        if self.support_threshold > 0:
            out["support"] = self._support.copy()
        return out

    def _state_arrays(self) -> dict[str, np.ndarray]:
        self._flush(refactor=False)
        out = {"a": self._A, "b": self._b, "a_inv": self._a_inv, "theta": self._theta}
        if self.support_threshold > 0:
            out["support"] = self._support
        return out

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        k, d = self.n_actions, self.dim
        out = {"a": (k, d, d), "b": (k, d), "a_inv": (k, d, d), "theta": (k, d)}
        if self.support_threshold > 0:
            out["support"] = (k, d)
        return out

    def _set_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._A[...] = arrays["a"]
        self._b[...] = arrays["b"]
        self._a_inv[...] = arrays["a_inv"]
        self._theta[...] = arrays["theta"]
        if "support" in arrays:
            self._support[...] = arrays["support"]
        self._n_pending = 0

    # -- design rows ----------------------------------------------------------------------
    def design(self, features: np.ndarray) -> np.ndarray:
        """Encoded features (n, feature_spec.dim) -> float64 design rows (n, d) with intercept."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim - 1:
            raise ValueError(
                f"features: expected shape (n, {self.dim - 1}) (feature_spec.dim), "
                f"got {features.shape}"
            )
        if not np.isfinite(features).all():
            rows = np.flatnonzero(~np.isfinite(features).all(axis=1))[:5].tolist()
            raise ValueError(f"features: non-finite values in rows {rows}")
        x = np.empty((features.shape[0], self.dim))
        x[:, :-1] = features
        x[:, -1] = 1.0
        return x

    def encode(self, states: States) -> np.ndarray:
        """Raw named states -> design rows, shape (n, d) float64."""
        assert self.feature_spec is not None
        return self.design(self.feature_spec.encode(states))

    def mean_and_width(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted reward ``x . theta_a`` and ``sqrt(x^T A_a^-1 x)`` for design rows x (n, d).

        Returns two arrays of shape (n, K). The width is the posterior standard deviation of
        the mean reward in units of the noise scale.
        """
        k, d = self.n_actions, self.dim
        n = x.shape[0]
        mean = x @ self._theta.T
        width = np.empty((n, k))
        # Column block a of this (d, K*d) view is (A_a^-1)^T, so x @ it stacks A_a^-1 x.
        stacked = self._a_inv_rows.T
        for start in range(0, n, _CHUNK_ROWS):
            rows = x[start : start + _CHUNK_ROWS]
            z = (rows @ stacked).reshape(len(rows), k, d)
            width[start : start + _CHUNK_ROWS] = np.matmul(z, rows[:, :, None])[:, :, 0]
        np.maximum(width, 0.0, out=width)
        np.sqrt(width, out=width)
        return mean, width

    # -- Policy ---------------------------------------------------------------------------
    def action_probs(self, states: States) -> np.ndarray:
        """Probabilities of every action for raw states, shape (n, K)."""
        return self._probs(self.encode(states))

    def act(self, states: States, rng: np.random.Generator) -> np.ndarray:
        """Sampled action indices for raw states, shape (n,), int64."""
        return self._act(self.encode(states), rng)

    def action_probs_encoded(self, features: np.ndarray) -> np.ndarray:
        """:meth:`action_probs` for rows already encoded by ``feature_spec.encode``."""
        return self._probs(self.design(features))

    def act_encoded(self, features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:meth:`act` for rows already encoded by ``feature_spec.encode``, shape (n,)."""
        return self._act(self.design(features), rng)

    def _probs(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _act(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _scores_one(self, x: np.ndarray, rng: np.random.Generator) -> list[float]:
        raise NotImplementedError

    def act_one(self, features: np.ndarray, rng: np.random.Generator) -> int:
        """Choose an action for one encoded row (shape (feature_spec.dim,)); the hot path.

        Same distribution as :meth:`act` on that row; no per-call allocation beyond a few
        (K*d,)-sized temporaries.
        """
        features = np.asarray(features)
        if features.shape != self._feature_shape:
            raise ValueError(
                f"features: expected shape {self._feature_shape}, got {features.shape}"
            )
        x = self._x
        x[:-1] = features
        return _argmax_one(self._scores_one(x, rng), rng)

    # -- learning -------------------------------------------------------------------------
    def _update(
        self, states: States, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        self._update_design(self.encode(states), actions, rewards, weights)

    def update_encoded(
        self,
        features: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> BanditUpdateStats:
        """:meth:`update` for rows already encoded by ``feature_spec.encode`` (n, feature_spec.dim)."""
        x = self.design(features)
        idx, r, w = self._check_batch(x.shape[0], actions, rewards, weights)
        self._update_design(x, idx, r, w)
        return self._stats(idx, w)

    def update_one(
        self, features: np.ndarray, action: int, reward: float, weight: float = 1.0
    ) -> None:
        """Sherman-Morrison update with one encoded row (shape (feature_spec.dim,)); the hot path."""
        features = np.asarray(features)
        if features.shape != self._feature_shape:
            raise ValueError(
                f"features: expected shape {self._feature_shape}, got {features.shape}"
            )
        action = operator.index(action)
        if not 0 <= action < self.n_actions:
            raise ValueError(f"action: must be in [0, {self.n_actions}), got {action}")
        reward = float(reward)
        weight = float(weight)
        if not math.isfinite(reward):
            raise ValueError(f"reward: must be finite, got {reward}")
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight: must be finite and >= 0, got {weight}")
        x = self._x
        x[:-1] = features
        self._rank_one(x, action, reward, weight)

    def _update_design(
        self, x: np.ndarray, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        if x.shape[0] == 1:
            self._rank_one(x[0], int(actions[0]), float(rewards[0]), float(weights[0]))
            return
        self._flush(refactor=False)
        touched = self._accumulate(x, actions, rewards, weights)
        self._refactor(touched)

    def _rank_one(self, x: np.ndarray, action: int, reward: float, weight: float) -> None:
        """In-place Sherman-Morrison / recursive least squares with design row x (d,)."""
        if weight == 0.0:
            return
        a_inv = self._a_inv[action]
        theta = self._theta[action]
        u = a_inv @ x
        q = float(u @ x)
        if not math.isfinite(q):
            raise ValueError("features: non-finite values")
        den = 1.0 + weight * q
        theta += u * (weight * (reward - float(theta @ x)) / den)
        # Scaling u before the outer product keeps A^-1 exactly symmetric.
        u *= math.sqrt(weight / den)
        np.multiply(u[:, None], u, out=self._outer)
        a_inv -= self._outer
        k = self._n_pending
        self._pending_x[k] = x
        self._pending_a[k] = action
        self._pending_w[k] = weight
        self._pending_r[k] = reward
        self._n_pending = k + 1
        if k + 1 == _PENDING_ROWS:
            self._flush(refactor=True)

    def _accumulate(
        self, x: np.ndarray, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Add the rows to A and b, one matrix product per action; returns touched actions."""
        order = np.argsort(actions, kind="stable")
        sorted_actions = actions[order]
        xs = x[order]
        xw = xs * weights[order][:, None]
        rs = rewards[order]
        bounds = np.searchsorted(sorted_actions, np.arange(self.n_actions + 1)).tolist()
        touched = []
        for a in range(self.n_actions):
            lo, hi = bounds[a], bounds[a + 1]
            if hi > lo:
                self._A[a] += xs[lo:hi].T @ xw[lo:hi]
                self._b[a] += rs[lo:hi] @ xw[lo:hi]
                touched.append(a)
        return np.array(touched, dtype=np.int64)

    def _flush(self, *, refactor: bool) -> None:
        """Fold the buffered rank-one rows into A and b (A^-1 and theta already include them)."""
        k = self._n_pending
        if k == 0:
            return
        self._n_pending = 0
        touched = self._accumulate(
            self._pending_x[:k], self._pending_a[:k], self._pending_r[:k], self._pending_w[:k]
        )
        if refactor:
            self._refactor(touched)

    def _refactor(self, touched: np.ndarray) -> None:
        """``A^-1 = L^-T L^-1`` from ``A = L L^T`` and ``theta = A^-1 b``, touched actions.

        Batched over actions with numpy's LAPACK only: scipy's LAPACK brings a second
        OpenBLAS thread pool, and the two pools fought over two cores under
        OMP_NUM_THREADS=2 (batched updates up to 50x slower in our measurements).
        """
        if touched.size == 0:
            return
        try:
            chol = np.linalg.cholesky(self._A[touched])
        except np.linalg.LinAlgError as exc:
            raise np.linalg.LinAlgError(f"A of an action is not positive definite ({exc})") from exc
        l_inv = np.linalg.inv(chol)
        a_inv = l_inv.transpose(0, 2, 1) @ l_inv
        a_inv += a_inv.transpose(0, 2, 1)
        a_inv *= 0.5
        self._a_inv[touched] = a_inv
        self._theta[touched] = (a_inv @ self._b[touched][:, :, None])[:, :, 0]


@dataclass(eq=False, kw_only=True)
class LinUCB(_LinearBandit):
    """LinUCB with disjoint models (Li, Chu, Langford & Schapire 2010, algorithm 1).

    Score ``ucb[n, a] = x_n . theta_a + alpha * sqrt(x_n^T A_a^-1 x_n)``; the policy is the
    argmax, ties split evenly in :meth:`action_probs` (which is what :meth:`act` samples).
    """

    kind = "linucb"

    alpha: float = 1.0
    """Width of the upper confidence bound (>= 0); 0 is greedy ridge regression."""

    def _validate(self) -> None:
        super()._validate()
        self.alpha = check_real(self.alpha, "alpha", low=0.0)

    def ucb(self, x: np.ndarray) -> np.ndarray:
        """Upper confidence bounds for design rows x (n, d), shape (n, K)."""
        mean, width = self.mean_and_width(x)
        width *= self.alpha
        width += mean
        return width

    def _probs(self, x: np.ndarray) -> np.ndarray:
        return greedy_probs(self._restrict(x, self.ucb(x)))

    def _act(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sample_actions(self._probs(x), rng)

    def _scores_one(self, x: np.ndarray, rng: np.random.Generator) -> list[float]:
        z = self._a_inv_rows @ x
        q = z.reshape(self.n_actions, -1) @ x
        np.sqrt(q, out=q)
        q *= self.alpha
        q += self._theta @ x
        if self.support_threshold > 0:
            q = self._restrict(x[None, :], q[None, :])[0]
        return q.tolist()


@dataclass(eq=False, kw_only=True)
class LinTS(_LinearBandit):
    """Linear Thompson sampling with disjoint models (Agrawal & Goyal 2013).

    Posterior ``theta_a ~ N(theta_hat_a, v**2 A_a^-1)``, independent across actions. For one
    row ``x`` only ``x . theta_a`` matters, and it is ``N(x . theta_hat_a, v**2 x^T A_a^-1
    x)``; so :meth:`act` draws ``z[n, a] ~ N(0, 1)`` and takes the argmax of ``x_n .
    theta_hat_a + v * sqrt(x_n^T A_a^-1 x_n) * z[n, a]``. This is exactly the distribution
    of a full posterior draw per row, at O(K d^2) per row instead of a Cholesky per draw.

    :meth:`action_probs` estimates the probability that each action wins from
    ``n_prob_samples`` draws of ``z`` (shape (n_prob_samples, K)), the same draws for every
    row, from a generator seeded afresh from :attr:`seed`: a pure function of the model.
    """

    kind = "lints"

    v: float = 0.5
    """Posterior scale v (> 0): theta_a is drawn from N(theta_hat_a, v**2 A_a^-1)."""
    n_prob_samples: int = 200
    """Posterior draws behind the Monte Carlo estimate in :meth:`action_probs`."""

    def _validate(self) -> None:
        super()._validate()
        self.v = check_real(self.v, "v", low=0.0, low_open=True)
        self.n_prob_samples = check_int(self.n_prob_samples, "n_prob_samples", low=1)

    def export_arrays(self) -> dict[str, np.ndarray]:
        """``theta``, ``a_inv`` and ``z`` (n_prob_samples, K): the standard-normal draws behind
        :meth:`action_probs`, so an artifact reproduces its Monte Carlo probabilities exactly."""
        arrays = super().export_arrays()
        arrays["z"] = self._prob_rng().standard_normal((self.n_prob_samples, self.n_actions))
        return arrays

    def _probs(self, x: np.ndarray) -> np.ndarray:
        mean, width = self.mean_and_width(x)
        width *= self.v
        n, k = mean.shape
        s = self.n_prob_samples
        z = self._prob_rng().standard_normal((s, k))
        allowed = self.supported(x)
        probs = np.empty((n, k))
        labels = np.arange(k)
        step = max(1, _MC_ELEMENTS // (s * k))
        for start in range(0, n, step):
            sl = slice(start, start + step)
            draws = mean[None, sl, :] + width[None, sl, :] * z[:, None, :]  # (S, rows, K)
            if allowed is not None:
                draws = np.where(allowed[None, sl, :], draws, -np.inf)
            wins = draws.argmax(axis=2)
            probs[sl] = (wins[:, :, None] == labels).mean(axis=0)
        return probs

    def _act(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mean, width = self.mean_and_width(x)
        width *= self.v
        width *= rng.standard_normal(width.shape)
        width += mean
        return self._restrict(x, width).argmax(axis=1).astype(np.int64)

    def _scores_one(self, x: np.ndarray, rng: np.random.Generator) -> list[float]:
        z = self._a_inv_rows @ x
        q = z.reshape(self.n_actions, -1) @ x
        np.sqrt(q, out=q)
        q *= self.v
        q *= rng.standard_normal(self.n_actions)
        q += self._theta @ x
        if self.support_threshold > 0:
            q = self._restrict(x[None, :], q[None, :])[0]
        return q.tolist()
