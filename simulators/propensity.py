"""The one model of the logging policy: a multinomial logit of the logged action on a design.

Every estimate of a missing or hidden propensity in supportrl comes from :class:`MultinomialLogit`:
the behaviour clone that weights a simulator's fit and replays the logger in the fidelity
report (:mod:`supportrl.simulators.fitted.behaviour`, on the simulator's state basis), and
off-policy evaluation's propensity and behaviour models (:mod:`supportrl.ope.models`, on the
observation encoding); estimated propensities are floored at
:data:`~supportrl.simulators.logs.PROPENSITY_FLOOR`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp


@dataclass(frozen=True)
class MultinomialLogit:
    """P(a | x) = softmax([x, 1] @ weights.T), ``weights`` shape (n_actions, d + 1).

    Fitted by L2-penalised maximum likelihood: minimises
    ``-sum_i w_i log P(a_i | x_i) / W + l2 / (2 W) * sum_a |weights[a, :d]|^2``
    (``W = sum_i w_i``; intercepts unpenalised). Every action has its own coefficients
    and the penalty treats them alike, so the fit does not depend on the order of the
    action catalogue (a reference-class parameterisation would shrink towards its first
    action).
    """

    weights: np.ndarray

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        actions: np.ndarray,
        n_actions: int,
        *,
        l2: float = 1.0,
        sample_weight: np.ndarray | None = None,
        max_iter: int = 300,
    ) -> MultinomialLogit:
        """Fit on design rows ``x`` (n, d) and logged action indices ``actions`` (n,);
        ``sample_weight`` (n,) row weights (e.g. bootstrap counts).

        L-BFGS (the tolerances of :func:`~supportrl.simulators.fitted.glm.fit_softmax`) in
        preconditioned coordinates: ``weights[a] = T @ beta[a]`` with ``T`` the inverse
        Cholesky factor of the weighted Gram matrix, where the curvature is roughly
        isotropic: it reaches a lower objective than L-BFGS on the raw weights in 5-10x
        less time (``benchmarks/bench_propensity.py``).
        """
        xi = np.column_stack([np.asarray(x, dtype=np.float64), np.ones(len(x))])
        n, d = xi.shape
        sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        total = max(float(sw.sum()), 1e-300)
        wn = sw / total
        onehot = np.zeros((n, n_actions))
        onehot[np.arange(n), actions] = 1.0
        wy = onehot * wn[:, None]
        xwy = xi.T @ wy  # (d, k): the likelihood's linear term, computed once
        pen = np.ones(d)
        pen[-1] = 0.0  # intercept
        prior = l2 / total
        gram = xi.T @ (xi * wn[:, None])
        gram[np.diag_indices(d)] += prior + 1e-6 * max(float(np.trace(gram)) / d, 1e-12)
        t = np.linalg.inv(np.linalg.cholesky(gram)).T  # (d, d): coef = t @ beta
        xt = xi @ t  # rows in the preconditioned coordinates
        xtwy = t.T @ xwy

        def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
            beta = flat.reshape(d, n_actions)
            coef = t @ beta
            z = xt @ beta
            top = z.max(axis=1, keepdims=True)
            e = np.exp(z - top)
            s = e.sum(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(s[:, 0])
            value = float(wn @ lse - (xtwy * beta).sum())
            value += 0.5 * prior * float((pen[:, None] * coef * coef).sum())
            grad = xt.T @ (e * (wn[:, None] / s)) - xtwy + t.T @ (prior * pen[:, None] * coef)
            return value, grad.ravel()

        res = minimize(
            loss,
            np.zeros(d * n_actions),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "maxcor": 20, "ftol": 1e-9, "gtol": 1e-5},
        )
        coef = t @ res.x.reshape(d, n_actions)
        return cls(weights=np.ascontiguousarray(coef.T))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Action probabilities, shape (n, n_actions)."""
        logits = np.asarray(x, dtype=np.float64) @ self.weights[:, :-1].T + self.weights[:, -1]
        return np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
