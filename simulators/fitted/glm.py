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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
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


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, then restore the previous setting.

    The losses below run in torch rather than numpy: numpy's and scipy's OpenBLAS thread
    pools contend on a small machine, making skinny matrix products many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def minimize_torch(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    theta0: np.ndarray,
    *,
    max_iter: int,
    threads: int = 1,
    gtol: float = 1e-5,
) -> tuple[np.ndarray, bool, int]:
    """Minimise a torch scalar function of a float64 vector with scipy's L-BFGS-B.

    Gradients come from autograd. Returns (argmin, converged, iterations).
    """

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t = torch.from_numpy(theta).requires_grad_(True)
        loss = loss_fn(t)
        (grad,) = torch.autograd.grad(loss, t)
        return float(loss.detach()), grad.numpy().astype(np.float64)

    return _lbfgs(fun, theta0, max_iter=max_iter, threads=threads, gtol=gtol)


def _lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta0: np.ndarray,
    *,
    max_iter: int,
    threads: int,
    gtol: float = 1e-5,
) -> tuple[np.ndarray, bool, int]:
    """scipy's L-BFGS-B on ``fun(theta) -> (loss, gradient)``; (argmin, converged, iterations)."""
    with torch_threads(threads):
        res = minimize(
            fun,
            theta0.astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "maxcor": 20, "ftol": 1e-9, "gtol": gtol},
        )
    return res.x, bool(res.success), int(res.nit)


def preconditioners(
    phi: np.ndarray, w: np.ndarray, slices: list[slice], ridge: float
) -> np.ndarray:
    """Per group ``L_g^-T`` for the Cholesky factor of ``phi_g' diag(w_g) phi_g + ridge I``.

    Shape (n_groups, p, p). With ``coef_g = T_g beta_g`` the data curvature of each group
    is roughly isotropic in ``beta_g``, which is what L-BFGS converges fast on.
    """
    p = phi.shape[1]
    out = np.zeros((len(slices), p, p))
    for g, sl in enumerate(slices):
        x = phi[sl]
        gram = x.T @ (x * w[sl, None]) if sl.stop > sl.start else np.zeros((p, p))
        gram[np.diag_indices(p)] += ridge
        out[g] = np.linalg.inv(np.linalg.cholesky(gram)).T
    return out


def _softmax_objective(
    x_t: torch.Tensor,
    wy_t: torch.Tensor,
    slices: list[slice],
    t_t: torch.Tensor,
    *,
    pen: np.ndarray,
    l2: float,
    l2_group: float,
    total: float,
    grouped: bool,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``beta -> (loss, gradient)`` of :func:`fit_softmax`'s objective, ``coef = T beta``.

    ``x_t`` (n, p) design rows and ``wy_t`` (n, k) weighted targets, rows grouped by
    ``slices``; ``t_t`` (n_groups, p, p) the preconditioners ``T``; ``pen`` (p, 1) 0 for
    the unpenalised intercept, else 1.
    """
    n_groups, p = t_t.shape[0], t_t.shape[1]
    k = wy_t.shape[1]
    pen_t = torch.from_numpy(pen)
    # min over M of l2 |pen M|^2 + l2g sum_g |B_g - M|^2  =>  M = l2g sum_g B_g / (l2 pen + G l2g)
    shrink = torch.from_numpy(l2_group / (l2 * pen + n_groups * l2_group))
    # The loss is linear in the targets: sum_i wy_i . log_softmax(z_i)
    # = sum_c <x'wy[:, c], b[:, c]> - sum_i (sum_c wy_ic) lse(z_i). The first term's
    # x'wy (p, k - 1) is computed once; each evaluation then costs one product for the
    # logits and one for the gradient, with the gradient written out (no autograd).
    parts = []
    for g, sl in enumerate(slices):
        if sl.stop > sl.start:
            x, wy = x_t[sl], wy_t[sl]
            xt = x.T.contiguous()  # a product with a transposed view is ~3x slower
            parts.append((g, x, xt, wy.sum(dim=1, keepdim=True), xt @ wy[:, 1:]))

    def loss_and_grad(beta_np: np.ndarray) -> tuple[float, np.ndarray]:
        beta = torch.from_numpy(beta_np).view(n_groups, p, k - 1)
        b = torch.matmul(t_t, beta)
        if grouped:
            m = shrink * b.sum(dim=0)
            loss = 0.5 / total * (l2 * (pen_t * m * m).sum() + l2_group * ((b - m) ** 2).sum())
            # M is profiled out (its minimiser): by the envelope theorem d/db_g = l2g (b_g - M).
            grad_b = l2_group / total * (b - m)
        else:
            loss = 0.5 / total * l2 * (pen_t * b[0] * b[0]).sum()
            grad_b = (l2 / total * pen_t * b[0]).unsqueeze(0)
        for g, x, xt, wsum, xwy in parts:
            z = x @ b[g]
            top = torch.clamp(z.max(dim=1, keepdim=True).values, min=0.0)
            e = torch.exp(z - top)
            denom = torch.exp(-top) + e.sum(dim=1, keepdim=True)
            lse = top + torch.log(denom)
            loss = loss + (wsum * lse).sum() - (xwy * b[g]).sum()
            grad_b[g] += xt @ (wsum * e / denom) - xwy
        grad = torch.matmul(t_t.transpose(1, 2), grad_b)
        return float(loss), grad.numpy().ravel().astype(np.float64)

    return loss_and_grad


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
    threads: int = 1,
) -> SoftmaxFit:
    """Weighted, L2-regularised multinomial logistic regression by L-BFGS.

    Minimises ``sum_i w_i * CE(targets_i, softmax(phi_i B[g_i])) + min_M (l2/2 |M|^2 +
    l2_group/2 sum_g |B[g] - M|^2)`` over the group coefficients ``B`` (intercept of
    ``M`` unpenalised): each group (action) has its own coefficients, shrunk towards
    shared ones ``M`` -- the same model as shared effects plus group deviations
    ``D[g] = B[g] - M`` with their own penalties. The shared ``M`` is profiled out in
    closed form, so no flat direction (``M + c``, ``D - c``) slows the optimiser.

    Args:
        phi: design rows, shape (n, p).
        targets: class probabilities per row (one-hot or soft labels), shape (n, k).
        weights: row weights, shape (n,); default 1.
        group: group (action) index per row, shape (n,); None for one shared model.
        n_groups: number of groups (coefficient blocks) when ``group`` is given.
        l2, l2_group: prior precisions of the shared and the group-specific coefficients.
        max_iter: L-BFGS iterations.
        init: warm start (same shapes).
        threads: torch threads for the loss.
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
    wn = w / total
    pen = np.ones((p, 1))
    pen[0] = 0.0
    prior = (l2_group if grouped else l2) / total
    ridge = prior + 1e-6 * max(float((phi**2 * wn[:, None]).sum()) / p, 1e-12)
    precond = preconditioners(phi, wn, slices, ridge)
    loss_and_grad = _softmax_objective(
        torch.from_numpy(np.ascontiguousarray(phi, dtype=np.float64)),
        # Targets pre-multiplied by the weights: the loss is then one sum.
        torch.from_numpy(np.ascontiguousarray(targets * wn[:, None])),
        slices,
        torch.from_numpy(precond),
        pen=pen,
        l2=l2,
        l2_group=l2_group,
        total=total,
        grouped=grouped,
    )
    if init is not None and init.coef.shape == (n_groups, p, k - 1):
        beta0 = np.linalg.solve(precond, init.coef).ravel()
    else:
        beta0 = np.zeros(n_groups * p * (k - 1))
    beta, converged, iterations = _lbfgs(loss_and_grad, beta0, max_iter=max_iter, threads=threads)
    coef = precond @ beta.reshape(n_groups, p, k - 1)
    return SoftmaxFit(coef=coef, converged=converged, iterations=iterations)


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
