"""Nuisance models for OPE: reward / Q models and propensity models, cross-fitted.

All models work on encoded features ``x`` (float, shape (n, d); an intercept is added
here) and action indices. Cross-fitting: rows are split into ``k`` folds *by group*
(conversation), each fold is predicted by a model fitted on the other folds, so a row's
prediction never saw that row (Chernozhukov et al. 2018) — the doubly robust estimators
then keep their guarantees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from supportrl.simulators.logs import PROPENSITY_FLOOR
from supportrl.simulators.propensity import MultinomialLogit


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


def cross_fit_propensity(
    x: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    *,
    groups: np.ndarray | None = None,
    k: int = 5,
    l2: float = 1.0,
    seed: int = 0,
    floor: float = PROPENSITY_FLOOR,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Estimated propensity of each logged action (out of fold), shape (n,), floored at ``floor``.

    ``sample_weight`` (n,): row weights of the fits (a bootstrap resample's counts).
    """
    groups = np.arange(len(actions)) if groups is None else groups
    folds = fold_ids(groups, k, seed)
    models = propensity_models(x, actions, n_actions, folds, l2=l2, sample_weight=sample_weight)
    return np.clip(logged_action_probs(models, x, actions, folds), floor, 1.0)


def logged_action_probs(
    models: Sequence[MultinomialLogit], x: np.ndarray, actions: np.ndarray, model_of: np.ndarray
) -> np.ndarray:
    """P(logged action | x) of each row under the model ``models[model_of[row]]``, (n,)."""
    out = np.empty(len(actions))
    for f in np.unique(model_of):
        rows = model_of == f
        out[rows] = models[f].predict(x[rows])[np.arange(rows.sum()), actions[rows]]
    return out


def propensity_models(
    x: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    folds: np.ndarray,
    *,
    l2: float = 1.0,
    sample_weight: np.ndarray | None = None,
) -> tuple[MultinomialLogit, ...]:
    """The logit of each fold ``f`` (0 .. folds.max()) fitted on the other folds' rows (on
    all rows when there is a single fold): the models behind :func:`cross_fit_propensity`."""
    models = []
    for f in range(int(folds.max()) + 1):
        test = folds == f
        train = ~test if (~test).any() else test
        sw = None if sample_weight is None else sample_weight[train]
        models.append(
            MultinomialLogit.fit(x[train], actions[train], n_actions, l2=l2, sample_weight=sw)
        )
    return tuple(models)


def _ridge_penalty(d: int, ridge: float) -> np.ndarray:
    penalty = ridge * np.eye(d)
    penalty[-1, -1] = 1e-8  # do not shrink the intercept
    return penalty


@dataclass(frozen=True)
class RidgeSystem:
    """Per-action weighted Gram matrices of one design, factorised once, for many targets.

    The Gram matrix ``X_a' W X_a + ridge`` of action ``a`` depends on the rows, the
    actions and the weights only, not on the regression target, so fitted Q evaluation
    (one target per iteration and per policy) and bootstrap refits solve against one
    factorisation per action. ``inverse`` has shape (n_actions, d + 1, d + 1).
    """

    xi: np.ndarray
    """``[x, 1]``, shape (n, d + 1)."""
    actions: np.ndarray
    weights: np.ndarray
    """Row weights, shape (n,)."""
    inverse: np.ndarray
    pooled: np.ndarray
    """Per-action flag, shape (n_actions,): True where the action has no row of positive weight."""
    order: np.ndarray | None = None
    """Row order that groups the rows by action (stable), shape (n,)."""
    sorted_xi: np.ndarray | None = None
    """``xi[order]``: each action's rows one contiguous block (no copy per solve)."""
    bounds: np.ndarray | None = None
    """Block of action ``a`` in ``sorted_xi``: rows ``bounds[a]:bounds[a + 1]``."""

    @classmethod
    def build(
        cls,
        x: np.ndarray,
        actions: np.ndarray,
        n_actions: int,
        *,
        ridge: float = 1.0,
        sample_weight: np.ndarray | None = None,
    ) -> RidgeSystem:
        """Factorise the per-action Gram matrices of rows ``x`` (n, d) with ``actions`` (n,)."""
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        xi = add_intercept(x)
        n, d = xi.shape
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        inverse = np.zeros((n_actions, d, d))
        pooled = np.zeros(n_actions, dtype=bool)
        penalty = _ridge_penalty(d, ridge)
        for a in range(n_actions):
            rows = (actions == a) & (w > 0)
            if not rows.any():
                pooled[a] = True
                continue
            xa = xi[rows]
            inverse[a] = np.linalg.inv((xa * w[rows, None]).T @ xa + penalty)
        actions = np.asarray(actions)
        order = np.argsort(actions, kind="stable")
        bounds = np.searchsorted(actions[order], np.arange(n_actions + 1))
        return cls(
            xi=xi, actions=actions, weights=w, inverse=inverse, pooled=pooled,
            order=order, sorted_xi=xi[order], bounds=bounds,
        )  # fmt: skip

    def solve(self, y: np.ndarray) -> np.ndarray:
        """Coefficients for targets ``y`` (n, m): shape (n_actions, d + 1, m).

        An action without rows gets the weighted mean of each target as its intercept.
        """
        wy = y * self.weights[:, None]
        n_actions, d, _ = self.inverse.shape
        coef = np.zeros((n_actions, d, y.shape[1]))
        total = self.weights.sum()
        sorted_wy = wy[self.order] if self.order is not None else None
        for a in range(n_actions):
            if self.pooled[a]:
                coef[a, -1] = wy.sum(axis=0) / total if total > 0 else 0.0
                continue
            if self.sorted_xi is not None and self.bounds is not None and sorted_wy is not None:
                # the same rows in the same order as a mask would pick, without copying them
                lo, hi = self.bounds[a], self.bounds[a + 1]
                coef[a] = self.inverse[a] @ (self.sorted_xi[lo:hi].T @ sorted_wy[lo:hi])
                continue
            rows = self.actions == a
            coef[a] = self.inverse[a] @ (self.xi[rows].T @ wy[rows])
        return coef

    def predict(self, coef: np.ndarray) -> np.ndarray:
        """Predictions of every action for every row and target: shape (m, n, n_actions)."""
        n_actions, d, m = coef.shape
        # one BLAS product (n, d) @ (d, n_actions * m), then (m, n, n_actions)
        flat = self.xi @ coef.transpose(1, 0, 2).reshape(d, n_actions * m)
        return flat.reshape(-1, n_actions, m).transpose(2, 0, 1)


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
    system = RidgeSystem.build(
        x, actions, target_probs.shape[1], ridge=ridge, sample_weight=sample_weight
    )
    return fitted_q_many(system, rewards, offsets, target_probs[None], n_iterations=n_iterations)[0]


def fitted_q_many(
    system: RidgeSystem,
    rewards: np.ndarray,
    offsets: np.ndarray,
    target_probs: np.ndarray,
    *,
    n_iterations: int | None = None,
) -> np.ndarray:
    """:func:`fitted_q_evaluation` of ``m`` policies at once on one factorised design.

    ``target_probs`` has shape (m, n_turns, n_actions) (rows may sum to less than 1: a
    sub-stochastic policy that stops, earning 0, with the missing mass); returns Q of
    shape (m, n_turns, n_actions).
    """
    m, n, n_actions = target_probs.shape
    has_next = np.ones(n, dtype=bool)
    has_next[offsets[1:] - 1] = False
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    horizon = int(np.diff(offsets).max()) if len(offsets) > 1 else 1
    q = np.zeros((m, n, n_actions))
    for _ in range(n_iterations or horizon):
        v_next = np.einsum("mna,mna->mn", target_probs, q)[:, nxt]
        y = rewards[None, :] + np.where(has_next[None, :], v_next, 0.0)
        q = system.predict(system.solve(y.T))
    return q


def balancing_weights(
    propensity: np.ndarray,
    actions: np.ndarray,
    n_actions: int,
    *,
    clip: float = 20.0,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Stabilised, clipped inverse-propensity weights, shape (n,).

    ``w = P(a) / propensity``, with ``P(a)`` the action's share of the rows, clipped at
    ``clip`` and normalised to mean 1 within each action. A logger that saw something the
    logs do not (hidden case difficulty) picks actions by it; weighting each row by the
    inverse of its logged propensity rebalances those hidden variables across actions, so a
    per-action regression estimates the effect of *doing* the action.
    ``counts`` (n,): how often each row is counted (a bootstrap resample's counts); shares
    and means are then taken over the resample. The returned weights do not include them.
    """
    c = np.ones(len(actions)) if counts is None else np.asarray(counts, dtype=np.float64)
    share = np.bincount(actions, weights=c, minlength=n_actions) / max(c.sum(), 1e-300)
    w = np.minimum(share[actions] / propensity, clip)
    sums = np.bincount(actions, weights=c, minlength=n_actions)
    means = np.bincount(actions, weights=w * c, minlength=n_actions) / np.maximum(sums, 1e-300)
    return w / np.where(means > 0, means, 1.0)[actions]
