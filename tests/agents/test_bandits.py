"""Bandit agents: closed-form equality, hand-computed probabilities, checkpoints, learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.bandits import (
    BANDITS,
    UCB1,
    BernoulliThompson,
    EpsilonGreedy,
    GaussianThompson,
    LinTS,
    LinUCB,
    Softmax,
    fit_offline,
    load_bandit,
    make_bandit,
)
from supportrl.agents.base import Policy
from supportrl.envs.features import FeatureSpec, build_feature_spec

from supportrl.outputs import write_complete

ACTIONS = ("empathize", "direct_answer", "faq_link", "clarify", "offer_credit", "escalate_human")
K = len(ACTIONS)


def numeric_spec(d: int) -> FeatureSpec:
    """A spec whose encoding is the identity on numeric columns x0..x{d-1}."""
    return FeatureSpec(categorical={}, numeric={f"x{i}": (0.0, 1.0) for i in range(d)})


def numeric_states(x: np.ndarray) -> dict[str, np.ndarray]:
    return {f"x{i}": x[:, i] for i in range(x.shape[1])}


def support_states(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "turn": rng.integers(0, 6, n),
        "sentiment": rng.uniform(-1, 1, n),
        "intent": rng.choice(["billing", "tech", "account"], n),
        "previous_action": rng.choice(["none", *ACTIONS], n),
        "tier": rng.choice(["free", "pro", "enterprise"], n),
    }


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return build_feature_spec(support_states(200), actions=ACTIONS, categorical=["tier"])


def closed_form(x, actions, rewards, weights, ridge, k):
    """Ridge solution per action with np.linalg: (A^-1, theta), shapes (K, d, d), (K, d)."""
    d = x.shape[1]
    a_inv, theta = np.empty((k, d, d)), np.empty((k, d))
    for a in range(k):
        m = actions == a
        A = ridge * np.eye(d) + (x[m] * weights[m, None]).T @ x[m]
        b = (x[m] * (weights[m] * rewards[m])[:, None]).sum(axis=0)
        a_inv[a] = np.linalg.inv(A)
        theta[a] = np.linalg.solve(A, b)
    return a_inv, theta


# -- linear bandits: closed form ---------------------------------------------------------


@pytest.mark.parametrize("cls", [LinUCB, LinTS])
@pytest.mark.parametrize("mode", ["batched", "one_at_a_time", "mixed"])
def test_linear_matches_closed_form_ridge(cls, mode):
    rng = np.random.default_rng(1)
    d, n, ridge = 4, 2600, 0.7  # n > 2 * 1024: crosses the rank-one buffer flushes
    feats = rng.normal(size=(n, d))
    actions = rng.integers(0, 3, n)
    rewards = feats @ rng.normal(size=d) + rng.normal(size=n)
    weights = rng.uniform(0.2, 3.0, n)
    bandit = cls(("a", "b", "c"), numeric_spec(d), ridge=ridge)
    if mode == "batched":
        bandit.update(numeric_states(feats), actions, rewards, weights)
    elif mode == "one_at_a_time":
        for i in range(n):
            bandit.update_one(feats[i], int(actions[i]), rewards[i], weights[i])
    else:
        half = n // 2
        for i in range(half):
            bandit.update_one(feats[i], int(actions[i]), rewards[i], weights[i])
        bandit.update_encoded(feats[half:], actions[half:], rewards[half:], weights[half:])
        bandit.update(numeric_states(feats[:1]), actions[:1], rewards[:1], weights[:1])
        actions, rewards, weights = (np.r_[v, v[:1]] for v in (actions, rewards, weights))
        feats = np.r_[feats, feats[:1]]
    x = np.c_[feats, np.ones(len(feats))]
    a_inv, theta = closed_form(x, actions, rewards, weights, ridge, 3)
    np.testing.assert_allclose(bandit.a_inv, a_inv, rtol=0, atol=1e-8)
    np.testing.assert_allclose(bandit.theta, theta, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.linalg.inv(bandit.a), a_inv, rtol=0, atol=1e-8)


def test_rank_one_update_matches_closed_form_after_every_row():
    rng = np.random.default_rng(2)
    d, n = 3, 40
    feats = rng.normal(size=(n, d))
    rewards = rng.normal(size=n)
    bandit = LinUCB(("a", "b"), numeric_spec(d), ridge=2.0)
    actions = np.zeros(n, dtype=np.int64)
    for i in range(n):
        bandit.update_one(feats[i], 0, rewards[i])
        x = np.c_[feats[: i + 1], np.ones(i + 1)]
        a_inv, theta = closed_form(x, actions[: i + 1], rewards[: i + 1], np.ones(i + 1), 2.0, 2)
        np.testing.assert_allclose(bandit.a_inv[0], a_inv[0], atol=1e-12)
        np.testing.assert_allclose(bandit.theta[0], theta[0], atol=1e-12)


def test_linucb_scores_match_hand_formula(spec):
    states = support_states(30, seed=3)
    rng = np.random.default_rng(3)
    bandit = LinUCB(ACTIONS, spec, alpha=0.8)
    bandit.update(states, rng.integers(0, K, 30), rng.normal(size=30))
    x = bandit.encode(states)
    expected = np.stack(
        [
            x @ bandit.theta[a] + 0.8 * np.sqrt(np.einsum("ni,ij,nj->n", x, bandit.a_inv[a], x))
            for a in range(K)
        ],
        axis=1,
    )
    np.testing.assert_allclose(bandit.ucb(x), expected, atol=1e-12)
    probs = bandit.action_probs(states)
    np.testing.assert_array_equal(probs.argmax(axis=1), expected.argmax(axis=1))
    # act_one on each encoded row picks the same argmax
    feats = spec.encode(states)
    picks = [bandit.act_one(feats[i], rng) for i in range(30)]
    np.testing.assert_array_equal(picks, expected.argmax(axis=1))


def test_untrained_linear_bandit_is_uniform(spec):
    states = support_states(10)
    np.testing.assert_allclose(LinUCB(ACTIONS, spec).action_probs(states), 1.0 / K)
    rng = np.random.default_rng(0)
    picks = [LinUCB(ACTIONS, spec).act_one(spec.encode(states)[0], rng) for _ in range(600)]
    assert set(picks) == set(range(K))


# -- non-contextual: hand computation ----------------------------------------------------


def test_ucb1_bonus_by_hand():
    bandit = UCB1(("a", "b", "c"), c=2.0)
    states = {"turn": np.zeros(6)}
    bandit.update(states, np.array([0, 0, 0, 1, 1, 2]), np.array([1.0, 0, 0, 1, 1, 0]))
    n_total = 6
    bonus = 2.0 * np.sqrt(np.log(n_total) / np.array([3, 2, 1]))
    np.testing.assert_allclose(bandit.bonus(), bonus)
    np.testing.assert_allclose(bandit.scores(), np.array([1 / 3, 1.0, 0.0]) + bonus)
    expected = np.eye(3)[np.argmax(np.array([1 / 3, 1.0, 0.0]) + bonus)]
    np.testing.assert_allclose(bandit.action_probs({"turn": np.zeros(2)}), [expected] * 2)


def test_ucb1_tries_unplayed_actions_first_split_evenly():
    bandit = UCB1(("a", "b", "c", "d"))
    bandit.update({"turn": np.zeros(1)}, np.array([2]), np.array([5.0]))
    assert np.isinf(bandit.bonus()[[0, 1, 3]]).all()
    np.testing.assert_allclose(
        bandit.action_probs({"turn": np.zeros(1)}), [[1 / 3, 1 / 3, 0, 1 / 3]]
    )


def test_epsilon_greedy_probs_by_hand():
    bandit = EpsilonGreedy(("a", "b", "c", "d"), epsilon=0.2)
    states = {"turn": np.zeros(4)}
    # means: a 0.5, b 0.5, c 0.1, d unseen -> initial_value 0
    bandit.update(states, np.array([0, 1, 2, 1]), np.array([0.5, 0.7, 0.1, 0.3]))
    expected = np.array([0.8 / 2 + 0.05, 0.8 / 2 + 0.05, 0.05, 0.05])
    np.testing.assert_allclose(bandit.action_probs({"turn": np.zeros(3)}), [expected] * 3)


def test_weighted_update_counts_rows_w_times():
    once = EpsilonGreedy(("a", "b"))
    twice = EpsilonGreedy(("a", "b"))
    once.update({"t": np.zeros(2)}, np.array([0, 1]), np.array([1.0, 2.0]), np.array([2.0, 0.5]))
    twice.update({"t": np.zeros(3)}, np.array([0, 0, 1]), np.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(once.mean_rewards(), twice.mean_rewards())
    np.testing.assert_allclose(once.counts, [2.0, 0.5])


def test_softmax_probs_by_hand():
    bandit = Softmax(("a", "b", "c"), temperature=0.5)
    bandit.update({"t": np.zeros(3)}, np.array(["a", "b", "c"]), np.array([1.0, 0.0, 0.5]))
    z = np.exp(np.array([1.0, 0.0, 0.5]) / 0.5)
    np.testing.assert_allclose(bandit.action_probs({"t": np.zeros(1)}), [z / z.sum()])


def test_bernoulli_thompson_rescales_rewards():
    bandit = BernoulliThompson(("a", "b"), reward_range=(-1.0, 1.0))
    states = {"t": np.zeros(4)}
    bandit.update(states, np.array([0, 0, 1, 1]), np.array([1.0, 1.0, -1.0, 1.0]))
    alpha, beta = bandit.posterior()
    np.testing.assert_allclose(alpha, [3.0, 2.0])
    np.testing.assert_allclose(beta, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"rewards: must lie in reward_range.*rows \[1\]"):
        bandit.update({"t": np.zeros(2)}, np.array([0, 0]), np.array([0.0, 1.5]))


# -- Thompson: probabilities match sampling ----------------------------------------------


def _trained(kind: str, spec: FeatureSpec, n_prob_samples: int):
    rng = np.random.default_rng(5)
    states = support_states(60, seed=5)
    bandit = make_bandit(kind, ACTIONS, spec, n_prob_samples=n_prob_samples, seed=3)
    actions = rng.integers(0, K, 60)
    rewards = (rng.random(60) < 0.3 + 0.08 * actions).astype(float)
    bandit.update(states, actions, rewards)
    return bandit


@pytest.mark.parametrize("kind", ["thompson_bernoulli", "thompson_gaussian", "lints"])
def test_thompson_action_probs_match_act_frequencies(kind, spec):
    bandit = _trained(kind, spec, n_prob_samples=20_000)
    one = {k: v[:1] for k, v in support_states(1, seed=9).items()}
    probs = bandit.action_probs(one)[0]
    n = 20_000
    many = {k: np.repeat(v, n) for k, v in one.items()}
    freq = np.bincount(bandit.act(many, np.random.default_rng(11)), minlength=K) / n
    np.testing.assert_allclose(freq, probs, atol=0.02)
    assert probs.max() < 0.99  # the check is not vacuous


def test_lints_act_one_matches_action_probs(spec):
    bandit = _trained("lints", spec, n_prob_samples=20_000)
    one = support_states(1, seed=9)
    feats = spec.encode(one)[0]
    rng = np.random.default_rng(12)
    picks = np.bincount([bandit.act_one(feats, rng) for _ in range(8000)], minlength=K)
    np.testing.assert_allclose(picks / 8000, bandit.action_probs(one)[0], atol=0.03)


@pytest.mark.parametrize("kind", ["thompson_bernoulli", "thompson_gaussian", "lints"])
def test_monte_carlo_action_probs_are_pure(kind, spec):
    bandit = _trained(kind, spec, n_prob_samples=200)
    states = support_states(7, seed=2)
    first = bandit.action_probs(states)
    bandit.act(states, np.random.default_rng(0))
    np.testing.assert_array_equal(bandit.action_probs(states), first)
    np.testing.assert_allclose(first.sum(axis=1), 1.0)
    # a row's probabilities do not depend on the other rows in the batch
    np.testing.assert_array_equal(
        bandit.action_probs({k: v[3:4] for k, v in states.items()}), first[3:4]
    )


# -- every registered kind -----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BANDITS))
def test_save_load_round_trip(kind, spec, tmp_path):
    rng = np.random.default_rng(7)
    states = support_states(40, seed=7)
    bandit = make_bandit(kind, ACTIONS, spec, seed=4)
    assert isinstance(bandit, Policy)
    for _ in range(3):
        bandit.update(states, bandit.act(states, rng), rng.uniform(0, 1, 40))
    bandit.save(tmp_path / "ckpt")
    loaded = load_bandit(tmp_path / "ckpt")
    assert type(loaded) is type(bandit)
    assert loaded.hyperparameters() == bandit.hyperparameters()
    assert loaded.actions == bandit.actions and loaded.feature_spec == bandit.feature_spec
    np.testing.assert_array_equal(loaded.action_probs(states), bandit.action_probs(states))
    # and they keep learning identically (Bernoulli trials use the saved generator state)
    actions, rewards = rng.integers(0, K, 40), rng.uniform(0, 1, 40)
    bandit.update(states, actions, rewards)
    loaded.update(states, actions, rewards)
    np.testing.assert_array_equal(loaded.action_probs(states), bandit.action_probs(states))
    meta = json.loads((tmp_path / "ckpt" / "bandit.json").read_text())
    assert meta["kind"] == kind and meta["format_version"] == 1
    with np.load(tmp_path / "ckpt" / "params.npz", allow_pickle=False) as npz:
        assert all(npz[name].dtype == np.float64 for name in npz.files)


@pytest.mark.parametrize("kind", sorted(BANDITS))
def test_probs_are_distributions_and_act_is_in_range(kind, spec):
    states = support_states(25, seed=1)
    bandit = make_bandit(kind, ACTIONS, spec)
    bandit.update(states, np.arange(25) % K, np.linspace(0, 1, 25))
    probs = bandit.action_probs(states)
    assert probs.shape == (25, K)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    actions = bandit.act(states, np.random.default_rng(0))
    assert actions.shape == (25,) and actions.dtype == np.int64
    assert ((actions >= 0) & (actions < K)).all()


def _corrupt(path: Path, how: str) -> None:
    meta_file, params_file = path / "bandit.json", path / "params.npz"
    meta = json.loads(meta_file.read_text())
    if how == "json":
        meta_file.write_text("{not json")
    elif how == "version":
        meta["format_version"] = 99
        meta_file.write_text(json.dumps(meta))
    elif how == "kind":
        meta["kind"] = "os.system"
        meta_file.write_text(json.dumps(meta))
    elif how == "hyper":
        meta["hyperparameters"]["alpha"] = -1.0
        meta_file.write_text(json.dumps(meta))
    elif how == "npz":
        params_file.write_bytes(b"garbage")
    elif how == "pickle":
        np.savez(params_file, a=np.array([object()], dtype=object))
    elif how == "shape":
        np.savez(params_file, a=np.zeros(3), b=np.zeros(3), a_inv=np.zeros(3), theta=np.zeros(3))


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("json", "bandit.json: not valid JSON"),
        ("version", "unsupported format_version 99"),
        ("kind", "unknown bandit kind 'os.system'"),
        ("hyper", "alpha: must be >= 0"),
        ("npz", r"params.npz: not a valid \.npz archive"),
        ("pickle", "array 'a' has dtype |O; expected kind"),
        ("shape", r"array 'a' has shape \(3,\); expected \(6, 16, 16\)"),
    ],
)
def test_load_rejects_corrupt_checkpoints(how, match, spec, tmp_path):
    LinUCB(ACTIONS, spec).save(tmp_path)
    _corrupt(tmp_path, how)
    write_complete(tmp_path, "bandit")  # a tampered directory may carry a valid marker
    with pytest.raises(ValueError, match=match):
        load_bandit(tmp_path)


# -- learning ------------------------------------------------------------------------------


def test_linucb_beats_uniform_on_synthetic_linear_bandit():
    rng = np.random.default_rng(0)
    k, d, rounds = 6, 5, 3000
    true_theta = rng.normal(size=(k, d))
    contexts = rng.normal(size=(rounds, d))
    noise = rng.normal(scale=0.5, size=rounds)
    bandit = LinUCB(tuple(f"a{i}" for i in range(k)), numeric_spec(d), alpha=0.5)
    act_rng = np.random.default_rng(1)
    total = 0.0
    for t in range(rounds):
        a = bandit.act_one(contexts[t], act_rng)
        reward = contexts[t] @ true_theta[a] + noise[t]
        bandit.update_one(contexts[t], a, reward)
        total += reward
    uniform = (contexts @ true_theta.T).mean(axis=1).sum()
    best = (contexts @ true_theta.T).max(axis=1).sum()
    assert total > uniform + 0.8 * (best - uniform)


def _logged_uniform(n: int, seed: int):
    """Uniformly logged decisions; the best action depends on intent."""
    rng = np.random.default_rng(seed)
    states = support_states(n, seed=seed)
    actions = rng.integers(0, K, n)
    best = np.where(states["intent"] == "billing", 4, 1)
    rewards = (actions == best) * 1.0 + 0.1 * actions + rng.normal(scale=0.3, size=n)
    return states, actions, rewards, np.full(n, 1.0 / K), best


@pytest.mark.parametrize("target", ["ips", "dr"])
def test_offline_fit_recovers_best_action(target, spec):
    states, actions, rewards, propensity, best = _logged_uniform(3000, seed=8)
    bandit = LinUCB(ACTIONS, spec, alpha=0.0)
    # DR's reward model: per-action mean reward, blind to intent (right on average only)
    action_means = np.bincount(actions, weights=rewards, minlength=K) / np.bincount(actions)
    reward_hat = np.tile(action_means, (3000, 1)) if target == "dr" else None
    stats = fit_offline(
        bandit, states, actions, rewards, propensity, target=target, reward_hat=reward_hat
    )
    assert stats.n_rows == 3000 and stats.n_clipped == 0
    assert math.isclose(stats.effective_sample_size, 3000)
    test_states, *_, test_best = _logged_uniform(500, seed=9)
    chosen = bandit.action_probs(test_states).argmax(axis=1)
    assert (chosen == test_best).mean() > 0.95


def test_offline_ips_non_contextual_and_clipping():
    rng = np.random.default_rng(3)
    n = 4000
    actions = rng.integers(0, 3, n)
    propensity = np.where(actions == 2, 0.01, 0.495)
    rewards = np.array([0.2, 0.8, 0.5])[actions] + rng.normal(scale=0.1, size=n)
    bandit = EpsilonGreedy(("a", "b", "c"), epsilon=0.0)
    stats = fit_offline(bandit, {"t": np.zeros(n)}, actions, rewards, propensity, clip=20.0)
    assert stats.n_clipped == (actions == 2).sum() and stats.max_weight == 20.0
    assert bandit.action_probs({"t": np.zeros(1)})[0].argmax() == 1


# -- bad input -----------------------------------------------------------------------------

_STATES = {"x0": np.zeros(3)}


def _bad_calls():
    """(name, call, error, message regex)."""
    spec1 = numeric_spec(1)
    rows = [
        (
            "unknown kind",
            lambda: make_bandit("lin_ucb", ACTIONS, None),
            r"kind: unknown .*valid kinds are \['epsilon_greedy'",
        ),
        (
            "unknown hyperparameter",
            lambda: make_bandit("ucb1", ACTIONS, alpha=1.0),
            r"ucb1: unknown hyperparameter\(s\) \['alpha'\]",
        ),
        ("negative alpha", lambda: LinUCB(ACTIONS, spec1, alpha=-0.1), r"alpha: must be >= 0"),
        ("epsilon > 1", lambda: EpsilonGreedy(ACTIONS, epsilon=1.5), r"epsilon: must be <= 1"),
        ("zero temperature", lambda: Softmax(ACTIONS, temperature=0), r"temperature: must be > 0"),
        (
            "bad reward_range",
            lambda: BernoulliThompson(ACTIONS, reward_range=(1, 0)),
            r"reward_range: lo must be < hi",
        ),
        (
            "zero prior_std",
            lambda: GaussianThompson(ACTIONS, prior_std=0.0),
            r"prior_std: must be > 0",
        ),
        ("zero ridge", lambda: LinTS(ACTIONS, spec1, ridge=0.0), r"ridge: must be > 0"),
        (
            "missing feature_spec linucb",
            lambda: LinUCB(ACTIONS),
            r"feature_spec: LinUCB .*needs a FeatureSpec",
        ),
        (
            "missing feature_spec lints",
            lambda: make_bandit("lints", ACTIONS),
            r"feature_spec: LinTS .*needs a FeatureSpec",
        ),
        ("duplicate actions", lambda: UCB1(("a", "a")), r"actions: must be non-empty and unique"),
        (
            "non-positive propensity",
            lambda: fit_offline(UCB1(ACTIONS), _STATES, [0, 1, 2], [1.0, 1, 1], [0.5, 0.0, -1]),
            r"propensity: must be in \(0, 1\].*rows \[1, 2\]",
        ),
        (
            "NaN propensity",
            lambda: fit_offline(UCB1(ACTIONS), _STATES, [0, 1, 2], [1.0, 1, 1], [np.nan, 0.5, 1.2]),
            r"propensity: .*rows \[0, 2\]",
        ),
        (
            "dr without reward_hat",
            lambda: fit_offline(
                UCB1(ACTIONS), _STATES, [0, 1, 2], [1.0, 1, 1], [0.5] * 3, target="dr"
            ),
            r"reward_hat: required",
        ),
        (
            "unknown target",
            lambda: fit_offline(
                UCB1(ACTIONS), _STATES, [0, 1, 2], [1.0, 1, 1], [0.5] * 3, target="snips"
            ),
            r"target: must be one of",
        ),
        (
            "actions shape",
            lambda: UCB1(ACTIONS).update(_STATES, np.array([0, 1]), np.zeros(3)),
            r"actions: expected shape \(3,\), got \(2,\)",
        ),
        (
            "rewards shape",
            lambda: UCB1(ACTIONS).update(_STATES, np.array([0, 1, 2]), np.zeros(4)),
            r"rewards: expected shape \(3,\), got \(4,\)",
        ),
        (
            "weights shape",
            lambda: LinUCB(ACTIONS, spec1).update(
                _STATES, np.array([0, 1, 2]), np.zeros(3), np.ones(2)
            ),
            r"weights: expected shape \(3,\)",
        ),
        (
            "negative weight",
            lambda: UCB1(ACTIONS).update(
                _STATES, np.array([0, 1, 2]), np.zeros(3), np.array([1, -1, 1])
            ),
            r"weights: values must be finite and >= 0; first offending rows \[1\]",
        ),
        (
            "action out of range",
            lambda: UCB1(ACTIONS).update(_STATES, np.array([0, 9, 2]), np.zeros(3)),
            r"actions: indices must be in \[0, 6\); first offending rows \[1\]",
        ),
        (
            "unknown action label",
            lambda: UCB1(ACTIONS).update(_STATES, np.array(["clarify", "nope", "x"]), np.zeros(3)),
            r"actions: unknown action label\(s\) at rows \[1, 2\]",
        ),
        (
            "NaN reward",
            lambda: UCB1(ACTIONS).update(_STATES, np.array([0, 1, 2]), np.array([0, np.nan, 0])),
            r"rewards: values must be finite; first offending rows \[1\]",
        ),
        (
            "encoded feature width",
            lambda: LinUCB(ACTIONS, numeric_spec(2)).update_encoded(
                np.zeros((3, 3)), [0, 1, 2], np.zeros(3)
            ),
            r"features: expected shape \(n, 2\)",
        ),
        (
            "act_one feature width",
            lambda: LinUCB(ACTIONS, numeric_spec(2)).act_one(np.zeros(3), np.random.default_rng()),
            r"features: expected shape \(2,\)",
        ),
        (
            "update_one bad action",
            lambda: LinTS(ACTIONS, numeric_spec(2)).update_one(np.zeros(2), 6, 1.0),
            r"action: must be in \[0, 6\)",
        ),
    ]
    return [(name, call, ValueError, match) for name, call, match in rows]


@pytest.mark.parametrize(
    ("name", "call", "error", "match"), _bad_calls(), ids=[c[0] for c in _bad_calls()]
)
def test_bad_input(name, call, error, match):
    with pytest.raises(error, match=match):
        call()
