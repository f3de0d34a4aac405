"""fit_softmax minimises the weighted cross-entropy with a hand-written gradient.

The objective must be the one the autograd version minimised (same loss, same gradient,
to rounding), so the fit lands on the same optimum; only the cost per evaluation drops.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from supportrl.simulators.fitted import glm as fitted_glm
from supportrl.simulators.fitted.glm import fit_softmax


def autograd_loss(
    coef: torch.Tensor,
    phi: np.ndarray,
    wy: np.ndarray,
    group: np.ndarray | None,
    l2: float,
    l2_group: float,
    total: float,
) -> torch.Tensor:
    """The objective written the direct way: penalties minus sum w_i y_i . log_softmax."""
    n_groups, p, _ = coef.shape
    pen = torch.ones(p, 1, dtype=torch.float64)
    pen[0] = 0.0
    if group is None:
        loss = 0.5 / total * l2 * (pen * coef[0] ** 2).sum()
        group = np.zeros(len(phi), dtype=np.int64)
    else:
        m = l2_group / (l2 * pen + n_groups * l2_group) * coef.sum(dim=0)
        loss = 0.5 / total * (l2 * (pen * m * m).sum() + l2_group * ((coef - m) ** 2).sum())
    x = torch.from_numpy(phi)
    z = torch.einsum("np,npk->nk", x, coef[torch.from_numpy(group)])
    logits = torch.cat([torch.zeros(len(phi), 1, dtype=torch.float64), z], dim=1)
    return loss - (torch.from_numpy(wy) * torch.log_softmax(logits, dim=1)).sum()


@pytest.mark.parametrize("grouped", [False, True])
def test_softmax_objective_and_gradient_equal_autograd(monkeypatch, grouped: bool) -> None:
    rng = np.random.default_rng(0)
    n, p, k, n_groups = 500, 7, 4, 4
    phi = np.c_[np.ones(n), rng.normal(size=(n, p - 1))]
    targets = rng.dirichlet(np.ones(k), size=n)  # soft labels, as the CSAT fit passes
    weights = rng.uniform(0.2, 3.0, size=n)
    group = rng.integers(0, n_groups - 1, size=n) if grouped else None  # last group empty
    captured: dict[str, Any] = {}
    real_preconditioners = fitted_glm.preconditioners

    def spy_preconditioners(*args: Any, **kwargs: Any) -> np.ndarray:
        captured["precond"] = real_preconditioners(*args, **kwargs)
        return captured["precond"]

    def spy_lbfgs(fun: Any, theta0: np.ndarray, **_: Any) -> tuple[np.ndarray, bool, int]:
        captured["fun"] = fun
        return theta0, True, 0

    monkeypatch.setattr(fitted_glm, "preconditioners", spy_preconditioners)
    monkeypatch.setattr(fitted_glm, "_lbfgs", spy_lbfgs)
    l2, l2_group = 2.0, 5.0
    fit_softmax(
        phi,
        targets,
        weights=weights,
        group=group,
        n_groups=n_groups if grouped else 1,
        l2=l2,
        l2_group=l2_group,
    )
    precond = torch.from_numpy(captured["precond"])
    g = n_groups if grouped else 1
    order = np.argsort(group, kind="stable") if grouped else np.arange(n)
    total = weights.sum()
    wy = targets * (weights / total)[:, None]
    for scale in (0.0, 0.3, 3.0):
        beta = rng.normal(scale=scale, size=g * p * (k - 1))
        loss, grad = captured["fun"](beta)
        b = torch.tensor(beta, requires_grad=True)
        coef = torch.matmul(precond, b.view(g, p, k - 1))
        ref = autograd_loss(
            coef,
            phi[order],
            wy[order],
            None if group is None else group[order],
            l2,
            l2_group,
            total,
        )
        (ref_grad,) = torch.autograd.grad(ref, b)
        np.testing.assert_allclose(loss, float(ref.detach()), rtol=1e-11)
        np.testing.assert_allclose(grad, ref_grad.numpy(), rtol=1e-8, atol=1e-12)


def test_softmax_fit_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(1)
    n, p, k = 20_000, 4, 3
    phi = np.c_[np.ones(n), rng.normal(size=(n, p - 1))]
    true = rng.normal(scale=0.8, size=(p, k - 1))
    logits = np.c_[np.zeros(n), phi @ true]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    y = (probs.cumsum(axis=1) > rng.uniform(size=(n, 1))).argmax(axis=1)
    fit = fit_softmax(phi, np.eye(k)[y], l2=1e-3)
    assert fit.converged
    np.testing.assert_allclose(fit.coef[0], true, atol=0.08)
