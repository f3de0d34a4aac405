"""The one logging-policy model: fit time and objective value against the two it replaced.

    python -m benchmarks.bench_propensity [--conversations 30000] [--seed 0]

On generated logs (``generate_logs``), on both designs the callers use (OPE's observation
encoding ``x``; the fitted simulator's state basis ``phi``), it fits

* **ours**: :class:`supportrl.simulators.propensity.MultinomialLogit` (symmetric L2
  penalty, preconditioned L-BFGS);
* anchor **old OPE logit**: the same objective by scipy's L-BFGS on the raw weights (the
  previous ``ope.models.MultinomialLogit``, reproduced here);
* anchor **old behaviour clone**: ``simulators.fitted.glm.fit_softmax`` (the previous
  ``BehaviourPolicy`` fit: the first action as reference class, so its penalty differs);

and prints each one's seconds, its value of the symmetric objective (lower is better; the
reference-class fit is re-centred, which keeps its probabilities and lowers its penalty)
and how far its P(logged action) lies from ours. Last, how far the two designs' P(logged
action) lie apart under the one model (what still depends on who asks).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.optimize import minimize
from supportrl.envs.features import build_feature_spec
from supportrl.simulators.fitted.behaviour import logs_basis
from supportrl.simulators.fitted.glm import fit_softmax
from supportrl.simulators.propensity import MultinomialLogit
from supportrl.simulators.synthetic import generate_logs


def objective(weights: np.ndarray, x: np.ndarray, actions: np.ndarray, l2: float = 1.0) -> float:
    """The symmetric objective of :class:`MultinomialLogit` (mean NLL + L2 / n)."""
    z = x @ weights[:, :-1].T + weights[:, -1]
    logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    n = len(x)
    return float(-logp[np.arange(n), actions].mean() + 0.5 * l2 * (weights[:, :-1] ** 2).sum() / n)


def old_ope_logit(x: np.ndarray, actions: np.ndarray, k: int, l2: float = 1.0) -> np.ndarray:
    """The previous ``ope.models.MultinomialLogit.fit``: scipy L-BFGS on the raw weights."""
    xi = np.column_stack([x, np.ones(len(x))])
    n, d = xi.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), actions] = 1.0

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(k, d)
        logits = xi @ w.T
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        total_e = e.sum(axis=1, keepdims=True)
        value = (
            -(onehot * (logits - np.log(total_e))).sum() / n + 0.5 * l2 * (w[:, :-1] ** 2).sum() / n
        )
        grad = ((e / total_e) - onehot).T @ xi / n
        grad[:, :-1] += l2 * w[:, :-1] / n
        return value, grad.ravel()

    res = minimize(loss, np.zeros(k * d), jac=True, method="L-BFGS-B", options={"maxiter": 300})
    return res.x.reshape(k, d)


def old_behaviour_clone(x: np.ndarray, actions: np.ndarray, k: int) -> np.ndarray:
    """The previous ``BehaviourPolicy`` fit (``fit_softmax``), as centred full weights."""
    onehot = np.zeros((len(x), k))
    onehot[np.arange(len(x)), actions] = 1.0
    fit = fit_softmax(np.column_stack([np.ones(len(x)), x]), onehot, l2=1.0, max_iter=300)
    coef = fit.coef[0]  # (1 + d, k - 1): intercept first, action 0 the reference
    weights = np.zeros((k, x.shape[1] + 1))
    weights[1:, :-1], weights[1:, -1] = coef[1:].T, coef[0]
    weights[:, :-1] -= weights[:, :-1].mean(axis=0)  # same probabilities, least penalty
    return weights


def p_logged(weights: np.ndarray, x: np.ndarray, actions: np.ndarray) -> np.ndarray:
    z = x @ weights[:, :-1].T + weights[:, -1]
    logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    return np.exp(logp[np.arange(len(x)), actions])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logs = generate_logs(args.conversations, seed=args.seed).logs
    actions, k = logs.action, len(logs.actions)
    states = logs.states()
    spec = build_feature_spec(
        states, actions=logs.actions, categorical=logs.categorical, numeric=logs.numeric
    )
    basis = logs_basis(logs)
    designs = {
        "x (OPE)": spec.encode(states).astype(np.float64),
        "phi (simulator)": basis.phi(basis.state_from_named(states))[:, 1:],
    }
    print(
        f"{logs.n_turns:,} logged decisions ({args.conversations:,} conversations), {k} actions; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'design':<17}{'fit':<22}{'seconds':>9}{'objective':>14}{'|dP| mean':>11}{'max':>9}")
    ours_p = {}
    for name, x in designs.items():
        tick = time.perf_counter()
        ours = MultinomialLogit.fit(x, actions, k).weights
        fits = {"ours": (ours, time.perf_counter() - tick)}
        tick = time.perf_counter()
        fits["old OPE logit"] = (old_ope_logit(x, actions, k), time.perf_counter() - tick)
        tick = time.perf_counter()
        fits["old behaviour clone"] = (
            old_behaviour_clone(x, actions, k),
            time.perf_counter() - tick,
        )
        ours_p[name] = p_logged(ours, x, actions)
        for label, (weights, seconds) in fits.items():
            diff = np.abs(p_logged(weights, x, actions) - ours_p[name])
            print(
                f"{name:<17}{label:<22}{seconds:>9.2f}{objective(weights, x, actions):>14.8f}"
                f"{diff.mean():>11.2e}{diff.max():>9.2e}"
            )
        print(f"  load average {os.getloadavg()[0]:.2f}")
    gap = np.abs(ours_p["x (OPE)"] - ours_p["phi (simulator)"])
    print(f"P(logged) on x vs on phi, one model: |diff| mean {gap.mean():.3f}, max {gap.max():.3f}")


if __name__ == "__main__":
    main()
