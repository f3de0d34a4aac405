"""The GLM fit's softmax regressions: hand-written gradient vs torch autograd, same data.

    python -m benchmarks.bench_fit [--conversations 100000]

Generates logs, builds the design rows the glm family fits on, and times the two
multinomial-logit fits of ``fit_customer_model`` (the behaviour policy: 6 actions, no
groups; the outcome model: 4 outcomes, one coefficient block per action, weighted) with
``fit_softmax`` beside the anchor: the same objective written the direct way in torch and
differentiated by autograd (what ``fit_softmax`` did before), both through scipy's
L-BFGS-B with the same preconditioning, tolerances and one thread. Prints the seconds,
iterations and how far apart the two fits land (coefficients and fitted probabilities),
then the whole ``fit_customer_model`` (default settings) once.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from supportrl.simulators.fitted import fit_customer_model
from supportrl.simulators.fitted import glm as fitted_glm
from supportrl.simulators.fitted.behaviour import logs_basis
from supportrl.simulators.fitted.glm import SoftmaxFit, fit_softmax, minimize_torch
from supportrl.simulators.synthetic import generate_logs
from threadpoolctl import threadpool_limits


def autograd_softmax(
    phi: np.ndarray,
    targets: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    group: np.ndarray | None = None,
    n_groups: int = 1,
    l2: float = 1.0,
    l2_group: float | None = None,
    max_iter: int = 500,
) -> SoftmaxFit:
    """The anchor: ``fit_softmax``'s objective as a torch expression, gradient by autograd."""
    n, p = phi.shape
    k = targets.shape[1]
    w = np.ones(n) if weights is None else weights
    total = float(w.sum())
    l2_group = l2 if l2_group is None else l2_group
    grouped = group is not None and n_groups > 1
    if grouped:
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
        slices = [slice(int(bounds[g]), int(bounds[g + 1])) for g in range(n_groups)]
        phi, targets, w = phi[order], targets[order], w[order]
    else:
        slices, n_groups = [slice(0, n)], 1
    wn = w / total
    pen = np.ones((p, 1))
    pen[0] = 0.0
    prior = (l2_group if grouped else l2) / total
    ridge = prior + 1e-6 * max(float((phi**2 * wn[:, None]).sum()) / p, 1e-12)
    precond = fitted_glm.preconditioners(phi, wn, slices, ridge)
    t_t, pen_t = torch.from_numpy(precond), torch.from_numpy(pen)
    x_t = torch.from_numpy(np.ascontiguousarray(phi))
    wy_t = torch.from_numpy(np.ascontiguousarray(targets * wn[:, None]))
    shrink = torch.from_numpy(l2_group / (l2 * pen + n_groups * l2_group))
    parts = [(g, x_t[sl], wy_t[sl]) for g, sl in enumerate(slices) if sl.stop > sl.start]

    def loss_fn(beta: torch.Tensor) -> torch.Tensor:
        b = torch.matmul(t_t, beta.view(n_groups, p, k - 1))
        if grouped:
            m = shrink * b.sum(dim=0)
            loss = 0.5 / total * (l2 * (pen_t * m * m).sum() + l2_group * ((b - m) ** 2).sum())
        else:
            loss = 0.5 / total * l2 * (pen_t * b[0] * b[0]).sum()
        for g, x, wy in parts:
            z = x @ b[g]
            logits = torch.cat([torch.zeros_like(z[:, :1]), z], dim=1)
            loss = loss - (wy * torch.log_softmax(logits, dim=1)).sum()
        return loss

    beta0 = np.zeros(n_groups * p * (k - 1))
    beta, converged, iterations = minimize_torch(loss_fn, beta0, max_iter=max_iter)
    coef = precond @ beta.reshape(n_groups, p, k - 1)
    return SoftmaxFit(coef=coef, converged=converged, iterations=iterations)


def timed(fn, *args, **kwargs) -> tuple[float, SoftmaxFit]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    threadpool_limits(1)
    torch.set_num_threads(1)

    logs = generate_logs(args.conversations, seed=0).logs
    basis = logs_basis(logs)
    phi = basis.phi(basis.state_from_named(logs.states()))
    rng = np.random.default_rng(0)
    problems = {
        "behaviour (6 actions)": ((phi, np.eye(len(logs.actions))[logs.action]), {}),
        "outcome (4 x 6 action blocks, weighted)": (
            (phi, np.eye(4)[logs.outcome]),
            {
                "weights": rng.uniform(0.5, 2.0, logs.n_turns),
                "group": logs.action,
                "n_groups": len(logs.actions),
                "l2": 1.0,
                "l2_group": 3.0,
            },
        ),
    }
    print(f"{args.conversations:,} conversations, {logs.n_turns:,} turns, design {phi.shape}")
    print(
        f"{'fit':<42}{'ours s':>8}{'iter':>6}{'autograd s':>12}{'iter':>6}{'ratio':>7}"
        f"{'max|dcoef|':>12}{'max|dprob|':>12}"
    )
    for name, (inputs, kwargs) in problems.items():
        anchor_s, anchor = timed(autograd_softmax, *inputs, **kwargs)
        ours_s, ours = timed(fit_softmax, *inputs, **kwargs)
        group = kwargs.get("group")
        dprob = np.abs(ours.probs(phi, group) - anchor.probs(phi, group)).max()
        print(
            f"{name:<42}{ours_s:>8.2f}{ours.iterations:>6}{anchor_s:>12.2f}"
            f"{anchor.iterations:>6}{anchor_s / ours_s:>6.1f}x"
            f"{np.abs(ours.coef - anchor.coef).max():>12.1e}{dprob:>12.1e}"
        )
    start = time.perf_counter()
    fit_customer_model(logs, "glm")
    print(
        f"fit_customer_model (glm, default settings, 1 thread): {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
