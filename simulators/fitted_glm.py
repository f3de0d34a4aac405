"""Regularised GLM solvers for the fitted customer models (numpy + scipy L-BFGS).

Both solvers take design rows ``phi`` of shape (n, p) and, optionally, a *group* per row
(the action). With groups, row ``i`` uses the coefficients ``M + D[group_i]``: effects
shared by every action plus action-specific deviations. That is the same model as
regressing on ``[phi, one_hot(action) (x) phi]``, but never builds the (n, p * (1 +
n_groups)) matrix. L2 penalties are on the sum of weighted losses (a Gaussian prior of
precision ``l2``), so more data means relatively less shrinkage; the intercept (column
0) of ``M`` is not penalised. A group without rows gets ``D = 0``, i.e. the shared model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


def _group_slices(group: np.ndarray, n_groups: int) -> tuple[np.ndarray, list[slice]]:
    """Order that makes groups contiguous, and each group's slice in that order."""
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    return order, [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(n_groups)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, shape (n, k)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shape (n, k)."""
    return np.exp(log_softmax(logits))


@dataclass(frozen=True)
class SoftmaxFit:
    """A fitted multinomial logit; class 0 is the reference (logit 0)."""

    coef: np.ndarray
    """(n_groups, p, k - 1) effective coefficients ``M + D[g]`` (n_groups = 1 without groups)."""
    converged: bool
    iterations: int

    def logits(self, phi: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
        """Logits of every class, shape (n, k), for design rows ``phi`` (n, p)."""
        n = phi.shape[0]
        k = self.coef.shape[2] + 1
        out = np.zeros((n, k))
        if group is None:
            out[:, 1:] = phi @ self.coef[0]
            return out
        for g in range(self.coef.shape[0]):
            rows = group == g
            if rows.any():
                out[rows, 1:] = phi[rows] @ self.coef[g]
        return out

    def probs(self, phi: np.ndarray, group: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities, shape (n, k)."""
        return softmax(self.logits(phi, group))


def fit_softmax(
    phi: np.ndarray,
    targets: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    group: np.ndarray | None = None,
    n_groups: int = 1,
    l2: float = 1.0,
    l2_group: float | None = None,
    max_iter: int = 500,
    init: SoftmaxFit | None = None,
) -> SoftmaxFit:
    """Weighted, L2-regularised multinomial logistic regression by L-BFGS.

    Minimises ``sum_i w_i * CE(targets_i, softmax(phi_i (M + D[g_i]))) + l2/2 |M|^2 +
    l2_group/2 |D|^2`` (intercept unpenalised).

    Args:
        phi: design rows, shape (n, p).
        targets: class probabilities per row (one-hot or soft labels), shape (n, k).
        weights: row weights, shape (n,); default 1.
        group: group (action) index per row, shape (n,); None for one shared model.
        n_groups: number of groups (coefficient blocks) when ``group`` is given.
        l2, l2_group: prior precisions of the shared and the group-specific coefficients.
        max_iter: L-BFGS iterations.
        init: warm start (same shapes).
    """
    n, p = phi.shape
    k = targets.shape[1]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("fit_softmax: weights sum to zero")
    l2_group = l2 if l2_group is None else l2_group
    grouped = group is not None and n_groups > 1
    if grouped:
        assert group is not None
        order, slices = _group_slices(group, n_groups)
        phi, targets, w = phi[order], targets[order], w[order]
    else:
        slices = [slice(0, n)]
        n_groups = 1
    pen = np.ones((p, 1))
    pen[0] = 0.0
    size_m = p * (k - 1)
    n_blocks = n_groups if grouped else 0
    # Scale by the total weight so the optimiser sees O(1) numbers.
    scale = 1.0 / total

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = theta[:size_m].reshape(p, k - 1)
        d = theta[size_m:].reshape(n_blocks, p, k - 1)
        return m, d

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        m, d = unpack(theta)
        loss = 0.0
        gm = np.zeros_like(m)
        gd = np.zeros_like(d)
        for g, sl in enumerate(slices):
            if sl.stop == sl.start:
                continue
            x = phi[sl]
            coef = m + d[g] if grouped else m
            logits = np.zeros((x.shape[0], k))
            logits[:, 1:] = x @ coef
            logp = log_softmax(logits)
            wg = w[sl]
            loss -= float((wg[:, None] * targets[sl] * logp).sum())
            resid = (np.exp(logp) - targets[sl])[:, 1:] * wg[:, None]
            grad = x.T @ resid
            gm += grad
            if grouped:
                gd[g] = grad
        loss = loss * scale + 0.5 * scale * (l2 * float((pen * m * m).sum()))
        gm = gm * scale + scale * l2 * pen * m
        if grouped:
            loss += 0.5 * scale * l2_group * float((d * d).sum())
            gd = gd * scale + scale * l2_group * d
        return loss, np.concatenate([gm.ravel(), gd.ravel()])

    if init is not None and init.coef.shape == (max(n_groups, 1), p, k - 1):
        if grouped:
            m0 = init.coef.mean(axis=0)
            theta0 = np.concatenate([m0.ravel(), (init.coef - m0).ravel()])
        else:
            theta0 = init.coef[0].ravel().copy()
    else:
        theta0 = np.zeros(size_m + n_blocks * size_m)
    res = minimize(
        loss_grad,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxcor": 20, "ftol": 1e-12, "gtol": 1e-7},
    )
    m, d = unpack(res.x)
    coef = (m[None] + d) if grouped else m[None]
    return SoftmaxFit(coef=coef, converged=bool(res.success), iterations=int(res.nit))


@dataclass(frozen=True)
class GaussianFit:
    """A fitted linear-Gaussian regression per group: ``y ~ N(phi @ coef[g], sd[g]^2)``."""

    coef: np.ndarray
    """(n_groups, p)."""
    sd: np.ndarray
    """(n_groups,) residual standard deviation."""

    def mean(self, phi: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Predicted mean, shape (n,)."""
        return np.einsum("np,np->n", phi, self.coef[group])


def fit_gaussian(
    phi: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    *,
    weights: np.ndarray | None = None,
    l2: float = 1.0,
    min_rows_for_sd: int = 20,
) -> GaussianFit:
    """Weighted ridge regression with shared + group-specific coefficients, in closed form.

    Solves the normal equations of ``y ~ phi (M + D[g])`` (size p * (1 + n_groups)),
    assembled from per-group Gram matrices. Residual sd is estimated per group (groups
    with fewer than ``min_rows_for_sd`` rows get the pooled sd).

    Args:
        phi: (n, p); y: (n,); group: (n,) int; weights: (n,), default 1.
    """
    n, p = phi.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    size = p * (1 + n_groups)
    a = np.zeros((size, size))
    b = np.zeros(size)
    for g in range(n_groups):
        rows = group == g
        x = phi[rows]
        wx = x * w[rows, None]
        gram = x.T @ wx
        rhs = wx.T @ y[rows]
        blk = slice(p * (1 + g), p * (2 + g))
        a[:p, :p] += gram
        a[:p, blk] += gram
        a[blk, :p] += gram
        a[blk, blk] += gram
        b[:p] += rhs
        b[blk] += rhs
    reg = np.full(size, l2)
    reg[0] = 1e-8  # intercept: (nearly) unpenalised
    a[np.diag_indices(size)] += reg
    theta = np.linalg.solve(a, b)
    coef = theta[:p][None, :] + theta[p:].reshape(n_groups, p)
    resid = y - np.einsum("np,np->n", phi, coef[group])
    wsum = np.bincount(group, weights=w, minlength=n_groups)
    ssq = np.bincount(group, weights=w * resid**2, minlength=n_groups)
    pooled = float(np.sqrt(ssq.sum() / max(wsum.sum(), 1e-12))) if n else 1.0
    rows_per = np.bincount(group, minlength=n_groups)
    sd = np.where(rows_per >= min_rows_for_sd, np.sqrt(ssq / np.maximum(wsum, 1e-12)), pooled)
    return GaussianFit(coef=coef, sd=np.maximum(sd, 1e-6))
