"""Nuisance models for OPE: reward / Q models and propensity models, cross-fitted.

All models work on encoded features ``x`` (float, shape (n, d); an intercept is added
here) and action indices. Cross-fitting: rows are split into ``k`` folds *by group*
(conversation), each fold is predicted by a model fitted on the other folds, so a row's
prediction never saw that row (Chernozhukov et al. 2018) — the doubly robust estimators
then keep their guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp


def add_intercept(x: np.ndarray) -> np.ndarray:
    """``[x, 1]``, shape (n, d + 1), float64."""
    return np.hstack([np.asarray(x, dtype=np.float64), np.ones((len(x), 1))])


def fold_ids(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold of every row, shape (n,), assigning whole groups to folds at random."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    k = max(1, min(k, len(uniq)))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return (perm % k)[inverse]


@dataclass(frozen=True)
class PerActionRidge:
    """One ridge regression per action: ``q(x, a) = [x, 1] @ weights[a]``.

    ``weights`` has shape (n_actions, d + 1). Actions never seen fall back to the pooled
    mean of ``y`` (their weight is the intercept only).
    """

    weights: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        actions: np.ndarray,
        y: np.ndarray,
        n_actions: int,
        *,
        ridge: float = 1.0,
        sample_weight: np.ndarray | None = None,
    ) -> PerActionRidge:
        """Fit on rows ``(x, actions, y)``; shapes (n, d), (n,), (n,)."""
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        xi = add_intercept(x)
        w = (
            np.ones(len(y))
            if sample_weight is None
            else np.asarray(sample_weight, dtype=np.float64)
        )
        d = xi.shape[1]
        weights = np.zeros((n_actions, d))
        pooled = float(np.average(y, weights=w)) if w.sum() > 0 else 0.0
        penalty = ridge * np.eye(d)
        penalty[-1, -1] = 1e-8  # do not shrink the intercept
        for a in range(n_actions):
            rows = actions == a
            if not rows.any():
                weights[a, -1] = pooled
                continue
            xa, ya, wa = xi[rows], y[rows], w[rows]
            gram = (xa * wa[:, None]).T @ xa + penalty
            weights[a] = np.linalg.solve(gram, (xa * wa[:, None]).T @ ya)
        return cls(weights=weights)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for every action, shape (n, n_actions)."""
        return add_intercept(x) @ self.weights.T


def cross_fit_reward(
    x: np.ndarray,
    actions: np.ndarray,
    y: np.ndarray,
    n_actions: int,
    *,
    groups: np.ndarray | None = None,
    k: int = 5,
    ridge: float = 1.0,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold reward predictions for every action, shape (n, n_actions)."""
    groups = np.arange(len(y)) if groups is None else groups
    folds = fold_ids(groups, k, seed)
    out = np.empty((len(y), n_actions))
    for f in np.unique(folds):
        test = folds == f
        train = ~test if (~test).any() else test
        sw = None if sample_weight is None else sample_weight[train]
        model = PerActionRidge.fit(
            x[train], actions[train], y[train], n_actions, ridge=ridge, sample_weight=sw
        )
        out[test] = model.predict(x[test])
    return out


@dataclass(frozen=True)
class MultinomialLogit:
    """P(a | x) = softmax([x, 1] @ weights.T), weights shape (n_actions, d + 1)."""

    weights: np.ndarray

    @classmethod
    def fit(
        cls, x: np.ndarray, actions: np.ndarray, n_actions: int, *, l2: float = 1.0
    ) -> MultinomialLogit:
        """L2-regularised maximum likelihood by L-BFGS."""
        xi = add_intercept(x)
        n, d = xi.shape
        onehot = np.zeros((n, n_actions))
        onehot[np.arange(n), actions] = 1.0

        def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
            w = flat.reshape(n_actions, d)
            logits = xi @ w.T
            logp = logits - logsumexp(logits, axis=1, keepdims=True)
            value = -(onehot * logp).sum() / n + 0.5 * l2 * (w[:, :-1] ** 2).sum() / n
            grad = (np.exp(logp) - onehot).T @ xi / n
            grad[:, :-1] += l2 * w[:, :-1] / n
            return value, grad.ravel()

        res = minimize(
            loss, np.zeros(n_actions * d), jac=True, method="L-BFGS-B", options={"maxiter": 300}
        )
        return cls(weights=res.x.reshape(n_actions, d))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Action probabilities, shape (n, n_actions)."""
        logits = add_intercept(x) @ self.weights.T
        return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))


def cross_fit_propensity(
    x: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    *,
    groups: np.ndarray | None = None,
    k: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    floor: float = 1e-3,
) -> np.ndarray:
    """Estimated propensity of each logged action (out of fold), shape (n,), floored at ``floor``."""
    groups = np.arange(len(actions)) if groups is None else groups
    folds = fold_ids(groups, k, seed)
    out = np.empty(len(actions))
    for f in np.unique(folds):
        test = folds == f
        train = ~test if (~test).any() else test
        model = MultinomialLogit.fit(x[train], actions[train], n_actions, l2=l2)
        out[test] = model.predict(x[test])[np.arange(test.sum()), actions[test]]
    return np.clip(out, floor, 1.0)


def fitted_q_evaluation(
    x: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    offsets: np.ndarray,
    target_probs: np.ndarray,
    *,
    n_iterations: int | None = None,
    ridge: float = 1.0,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Fitted Q evaluation (Le et al. 2019): Q^pi of the logged states, shape (n_turns, n_actions).

    Iterates ``Q <- regress(r + sum_a' pi(a'|s') Q(s', a'))`` with one ridge model per
    action, where ``s'`` is the next turn of the same conversation and the bootstrap
    target is 0 after a conversation's last row (terminal, or cut off at ``max_turns``).
    ``n_iterations`` defaults to the longest conversation, enough for an exact backup over
    the horizon. Arguments: ``x`` (n_turns, d), ``actions``/``rewards`` (n_turns,),
    ``offsets`` (n_conversations + 1,), ``target_probs`` (n_turns, n_actions),
    ``sample_weight`` (n_turns,) regression weights, e.g. stabilised inverse propensities
    (:func:`balancing_weights`) against confounding.
    """
    n, n_actions = target_probs.shape
    has_next = np.ones(n, dtype=bool)
    has_next[offsets[1:] - 1] = False
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    horizon = int(np.diff(offsets).max()) if len(offsets) > 1 else 1
    q = np.zeros((n, n_actions))
    for _ in range(n_iterations or horizon):
        v_next = (target_probs * q).sum(axis=1)[nxt]
        y = rewards + np.where(has_next, v_next, 0.0)
        q = PerActionRidge.fit(
            x, actions, y, n_actions, ridge=ridge, sample_weight=sample_weight
        ).predict(x)
    return q


def balancing_weights(
    propensity: np.ndarray, actions: np.ndarray, n_actions: int, *, clip: float = 20.0
) -> np.ndarray:
    """Stabilised, clipped inverse-propensity weights, shape (n,).

    ``w = P(a) / propensity``, with ``P(a)`` the action's share of the rows, clipped at
    ``clip`` and normalised to mean 1 within each action. A logger that saw something the
    logs do not (hidden case difficulty) picks actions by it; weighting each row by the
    inverse of its logged propensity rebalances those hidden variables across actions, so a
    per-action regression estimates the effect of *doing* the action (DESIGN.md section 10).
    """
    share = np.bincount(actions, minlength=n_actions) / len(actions)
    w = np.minimum(share[actions] / propensity, clip)
    means = np.bincount(actions, weights=w, minlength=n_actions) / np.maximum(
        np.bincount(actions, minlength=n_actions), 1
    )
    return w / np.where(means > 0, means, 1.0)[actions]
