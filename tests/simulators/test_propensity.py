"""The one logging-policy model: its fit reaches the optimum of its objective, treats the
actions alike, and is what both the behaviour clone and OPE's propensities use."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from supportrl.simulators.propensity import MultinomialLogit


def _data(n: int = 2_000, d: int = 4, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    logits = x @ rng.normal(size=(d, k)) + rng.normal(size=k)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    actions = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return x, actions, k


def _objective(flat: np.ndarray, x, actions, k, l2, sw):
    """The documented objective, written plainly (no preconditioning)."""
    xi = np.column_stack([x, np.ones(len(x))])
    w = flat.reshape(k, -1)
    z = xi @ w.T
    logp = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    total = sw.sum()
    return (
        -(sw * logp[np.arange(len(x)), actions]).sum() / total
        + 0.5 * l2 * (w[:, :-1] ** 2).sum() / total
    )


def test_the_fit_reaches_the_optimum_of_its_objective() -> None:
    x, actions, k = _data()
    sw = np.random.default_rng(1).poisson(1.0, len(x)).astype(float)  # bootstrap counts
    for l2, weights in ((1.0, None), (50.0, sw)):
        fit = MultinomialLogit.fit(x, actions, k, l2=l2, sample_weight=weights)
        row_w = np.ones(len(x)) if weights is None else weights
        reference = minimize(
            _objective,
            np.zeros(k * (x.shape[1] + 1)),
            args=(x, actions, k, l2, row_w),
            method="BFGS",
            options={"gtol": 1e-10, "maxiter": 5_000},
        )
        ours = _objective(fit.weights.ravel(), x, actions, k, l2, row_w)
        assert ours <= reference.fun + 1e-9, (ours, reference.fun)


def test_the_fit_does_not_depend_on_the_order_of_the_actions() -> None:
    x, actions, k = _data(seed=2)
    order = np.array([2, 0, 3, 1])  # action a is called order[a]
    fit = MultinomialLogit.fit(x, actions, k)
    renamed = MultinomialLogit.fit(x, order[actions], k)
    np.testing.assert_allclose(renamed.predict(x)[:, order], fit.predict(x), atol=1e-6)


def test_counts_are_repeated_rows() -> None:
    x, actions, k = _data(n=600, seed=3)
    counts = np.random.default_rng(4).integers(0, 3, len(x))
    weighted = MultinomialLogit.fit(x, actions, k, sample_weight=counts.astype(float))
    repeated = MultinomialLogit.fit(np.repeat(x, counts, 0), np.repeat(actions, counts), k)
    np.testing.assert_allclose(weighted.predict(x), repeated.predict(x), atol=1e-6)


def test_the_behaviour_clone_and_ope_use_the_one_model(small_generated) -> None:
    from supportrl.ope import models
    from supportrl.simulators.fitted import fit_behaviour_policy

    logs = small_generated.logs
    clone = fit_behaviour_policy(logs)
    assert models.MultinomialLogit is MultinomialLogit
    assert isinstance(clone.model, MultinomialLogit)
    probs = clone.action_probs(logs.states())
    assert probs.shape == (logs.n_turns, len(logs.actions))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
