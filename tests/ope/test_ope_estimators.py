"""Array-level off-policy estimators: closed forms, hand examples, identities,
unbiasedness on a known world, sequential estimators, bootstrap and bad input."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from supportrl.ope import intervals
from supportrl.ope.data import BanditFeedback, SequentialFeedback

from supportrl import ope

BANDIT_NAMES = ["dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os"]
SEQUENTIAL_NAMES = ["pdis", "wpdis", "seq_dr", "wdr", "fqe"]


def random_bandit(
    n: int = 500, n_actions: int = 4, seed: int = 0
) -> tuple[BanditFeedback, np.ndarray, np.ndarray]:
    """Random logged feedback, target probabilities and reward predictions."""
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(n_actions), n)
    action = (logging.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    action = np.minimum(action, n_actions - 1)
    feedback = BanditFeedback(
        action=action,
        reward=rng.normal(size=n),
        propensity=logging[np.arange(n), action],
        n_actions=n_actions,
    )
    return feedback, rng.dirichlet(np.ones(n_actions), n), rng.normal(size=(n, n_actions))


# --- per-decision estimators -------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_weight", [None, 2.0])
def test_ips_and_snips_match_closed_forms(seed: int, max_weight: float | None) -> None:
    feedback, target, _ = random_bandit(seed=seed)
    w = target[np.arange(feedback.n_rounds), feedback.action] / feedback.propensity
    if max_weight is not None:
        w = np.minimum(w, max_weight)
    r = feedback.reward
    ips = ope.IPS(max_weight=max_weight)
    snips = ope.SNIPS(max_weight=max_weight)
    assert ips.estimate(feedback, target) == pytest.approx(np.mean(w * r), abs=1e-12)
    assert snips.estimate(feedback, target) == pytest.approx(np.sum(w * r) / np.sum(w), abs=1e-12)
    np.testing.assert_allclose(ips.estimate_rounds(feedback, target), w * r, atol=1e-12)
    np.testing.assert_allclose(
        ope.importance_weights(feedback, target, max_weight=max_weight), w, atol=1e-12
    )


def hand_example() -> tuple[BanditFeedback, np.ndarray, np.ndarray]:
    # w = (0.8 / 0.5, 0.6 / 0.3) = (1.6, 2); q_pi = (1.8, 0.9); q_logged = (2.0, 0.5)
    feedback = BanditFeedback(
        action=np.array([1, 0]),
        reward=np.array([3.0, 0.0]),
        propensity=np.array([0.5, 0.3]),
        n_actions=2,
    )
    target = np.array([[0.2, 0.8], [0.6, 0.4]])
    reward_hat = np.array([[1.0, 2.0], [0.5, 1.5]])
    return feedback, target, reward_hat


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        (ope.DirectMethod(), (1.8 + 0.9) / 2),
        (ope.IPS(), (1.6 * 3.0 + 0.0) / 2),
        (ope.SNIPS(), 1.6 * 3.0 / 3.6),
        (ope.DoublyRobust(), ((1.8 + 1.6 * 1.0) + (0.9 + 2.0 * -0.5)) / 2),
        (ope.SelfNormalizedDR(), (1.8 + 0.9) / 2 + (1.6 * 1.0 + 2.0 * -0.5) / 3.6),
        (ope.SwitchDR(tau=1.8), ((1.8 + 1.6 * 1.0) + 0.9) / 2),  # the weight 2 > tau is dropped
        (ope.DROptimisticShrinkage(lambda_=4.0), ((1.8 + 6.4 / 6.56) + (0.9 + 1.0 * -0.5)) / 2),
        (ope.DoublyRobust(max_weight=1.0), ((1.8 + 1.0) + (0.9 - 0.5)) / 2),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_hand_computed_small_example(estimator: ope.BanditEstimator, expected: float) -> None:
    feedback, target, reward_hat = hand_example()
    assert estimator.estimate(feedback, target, reward_hat) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", BANDIT_NAMES)
def test_contributions_average_to_the_estimate(name: str) -> None:
    feedback, target, reward_hat = random_bandit(seed=3)
    estimator = ope.make_estimator(name)
    rounds = estimator.estimate_rounds(feedback, target, reward_hat)
    assert rounds.shape == (feedback.n_rounds,)
    assert rounds.mean() == pytest.approx(estimator.estimate(feedback, target, reward_hat))


def test_identities_between_estimators() -> None:
    feedback, target, reward_hat = random_bandit(seed=4)
    zeros = np.zeros_like(reward_hat)
    est: Callable[..., float] = lambda e, q=reward_hat: e.estimate(feedback, target, q)  # noqa: E731
    # A zero reward model leaves only the importance-weighted part.
    assert est(ope.DoublyRobust(), zeros) == pytest.approx(est(ope.IPS()), abs=1e-12)
    assert est(ope.SelfNormalizedDR(), zeros) == pytest.approx(est(ope.SNIPS()), abs=1e-12)
    # Extreme hyperparameters recover DR and DM.
    dr, dm = est(ope.DoublyRobust()), est(ope.DirectMethod())
    assert est(ope.SwitchDR(tau=float("inf"))) == pytest.approx(dr, abs=1e-12)
    assert est(ope.SwitchDR(tau=0.0)) == pytest.approx(dm, abs=1e-12)  # all weights > 0 here
    assert est(ope.DROptimisticShrinkage(lambda_=float("inf"))) == pytest.approx(dr, abs=1e-12)
    assert est(ope.DROptimisticShrinkage(lambda_=0.0)) == pytest.approx(dm, abs=1e-12)
    # A reward model that is right on every logged reward makes the correction vanish.
    exact = reward_hat.copy()
    exact[np.arange(feedback.n_rounds), feedback.action] = feedback.reward
    assert est(ope.DoublyRobust(), exact) == pytest.approx(est(ope.DirectMethod(), exact))


def test_on_policy_weights_are_one() -> None:
    # Target policy = logging policy: IPS and SNIPS are the plain mean reward.
    rng = np.random.default_rng(5)
    n, k = 300, 3
    logging = rng.dirichlet(np.ones(k), n)
    action = rng.integers(0, k, n)
    feedback = BanditFeedback(
        action=action,
        reward=rng.normal(size=n),
        propensity=logging[np.arange(n), action],
        n_actions=k,
    )
    mean = feedback.reward.mean()
    assert ope.IPS().estimate(feedback, logging) == pytest.approx(mean, abs=1e-12)
    assert ope.SNIPS().estimate(feedback, logging) == pytest.approx(mean, abs=1e-12)


def test_unbiased_on_a_simulated_contextual_bandit() -> None:
    """5 contexts, 3 actions, known mean rewards: IPS and DR (with a wrong reward model)
    average to the true value over repeated logs; DM with that model does not."""
    rng = np.random.default_rng(6)
    n_contexts, k, n, reps = 5, 3, 400, 200
    mean_reward = rng.uniform(0, 1, (n_contexts, k))
    logging = rng.dirichlet(2 * np.ones(k), n_contexts)
    target = rng.dirichlet(np.ones(k), n_contexts)
    truth = float(np.mean((target * mean_reward).sum(axis=1)))
    wrong_model = mean_reward + 0.3

    estimates: dict[str, list[float]] = {"ips": [], "dr": [], "snips": [], "dm": []}
    for _ in range(reps):
        x = rng.integers(0, n_contexts, n)
        u = rng.random(n)[:, None]
        a = np.minimum((logging[x].cumsum(axis=1) < u).sum(axis=1), k - 1)
        feedback = BanditFeedback(
            action=a,
            reward=rng.binomial(1, mean_reward[x, a]).astype(float),
            propensity=logging[x, a],
            n_actions=k,
        )
        for name in estimates:
            estimates[name].append(
                ope.make_estimator(name).estimate(feedback, target[x], wrong_model[x])
            )
    for name in ("ips", "dr", "snips"):
        values = np.array(estimates[name])
        assert abs(values.mean() - truth) < 4 * values.std() / np.sqrt(reps) + 1e-3, name
    assert np.mean(estimates["dm"]) == pytest.approx(truth + 0.3, abs=0.01)  # the model's bias


# --- sequential estimators ---------------------------------------------------------------


def two_conversations() -> tuple[SequentialFeedback, np.ndarray]:
    """Conversation 0: weights 2, 0.5 (rho 2, 1), rewards 1, 2; conversation 1: weight 2,
    reward 4."""
    feedback = SequentialFeedback(
        action=np.array([0, 1, 1]),
        reward=np.array([1.0, 2.0, 4.0]),
        propensity=np.array([0.5, 0.5, 0.25]),
        offsets=np.array([0, 2, 3]),
        n_actions=2,
    )
    target = np.array([[1.0, 0.0], [0.75, 0.25], [0.5, 0.5]])
    return feedback, target


def test_pdis_and_wpdis_on_two_hand_built_conversations() -> None:
    feedback, target = two_conversations()
    np.testing.assert_allclose(
        ope.PDIS().estimate_conversations(feedback, target), [2 * 1 + 1 * 2, 2 * 4]
    )
    assert ope.PDIS().estimate(feedback, target) == pytest.approx(6.0)
    # Turn 0: (2*1 + 2*4) / (2 + 2); turn 1: conversation 1 has ended, keeps rho = 2 and
    # adds reward 0: (1*2 + 2*0) / (1 + 2).
    assert ope.WPDIS().estimate(feedback, target) == pytest.approx(10 / 4 + 2 / 3)
    np.testing.assert_allclose(
        ope.cumulative_weights(feedback, target), [2.0, 1.0, 2.0], atol=1e-12
    )


def chain_world() -> dict[str, np.ndarray]:
    """A deterministic 3-turn world: at turn t, action 1 ends the conversation with reward
    ``end[t]``, action 0 continues with reward ``cont[t]`` (and ends after turn 2)."""
    return {
        "cont": np.array([-0.1, -0.2, -0.3]),
        "end": np.array([1.0, 0.5, 0.2]),
        "target": np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]]),
        "logging": np.array([[0.6, 0.4], [0.5, 0.5], [0.2, 0.8]]),
    }


def chain_q(world: dict[str, np.ndarray]) -> np.ndarray:
    """Exact q of the target policy, shape (3 turns, 2 actions)."""
    q = np.zeros((3, 2))
    v_next = 0.0
    for t in (2, 1, 0):
        q[t] = [world["cont"][t] + v_next, world["end"][t]]
        v_next = float(world["target"][t] @ q[t])
    return q


def simulate_chain(
    world: dict[str, np.ndarray], n_conversations: int, seed: int
) -> tuple[SequentialFeedback, np.ndarray]:
    """Logged conversations of the chain world and the target probabilities per turn."""
    rng = np.random.default_rng(seed)
    actions, rewards, propensities, turns, lengths = [], [], [], [], []
    for _ in range(n_conversations):
        for t in range(3):
            a = int(rng.random() < world["logging"][t, 1])
            actions.append(a)
            propensities.append(world["logging"][t, a])
            rewards.append(world["end"][t] if a == 1 else world["cont"][t])
            turns.append(t)
            if a == 1 or t == 2:
                lengths.append(t + 1)
                break
    feedback = SequentialFeedback(
        action=np.array(actions),
        reward=np.array(rewards),
        propensity=np.array(propensities),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        n_actions=2,
    )
    return feedback, world["target"][np.array(turns)]


def test_doubly_robust_with_perfect_q_on_deterministic_rewards_is_exact() -> None:
    world = chain_world()
    q = chain_q(world)
    truth = float(world["target"][0] @ q[0])
    feedback, target = simulate_chain(world, 50, seed=7)
    q_hat = q[feedback.turn_index]
    for name in ("seq_dr", "wdr"):
        estimator = ope.make_estimator(name)
        assert estimator.estimate(feedback, target, q_hat) == pytest.approx(truth, abs=1e-12)
        np.testing.assert_allclose(
            estimator.estimate_conversations(feedback, target, q_hat), truth, atol=1e-12
        )


def test_sequential_estimators_are_close_to_the_truth() -> None:
    world = chain_world()
    q = chain_q(world)
    truth = float(world["target"][0] @ q[0])
    feedback, target = simulate_chain(world, 4000, seed=8)
    rough_q = q[feedback.turn_index] + 0.2  # a biased model: DR must still be consistent
    for name in [n for n in SEQUENTIAL_NAMES if n != "fqe"]:
        interval = ope.make_estimator(name).interval(feedback, target, rough_q, n_bootstrap=200)
        assert abs(interval.estimate - truth) < 4 * interval.std_err, name
    # FQE is the model's value: right with the right Q, off by the model's bias otherwise
    exact = ope.make_estimator("fqe").estimate(feedback, target, q[feedback.turn_index])
    assert exact == pytest.approx(truth, abs=1e-9)
    biased = ope.make_estimator("fqe").estimate(feedback, target, rough_q)
    assert biased == pytest.approx(truth + 0.2, abs=1e-9)


def reference_sequential(
    feedback: SequentialFeedback, target: np.ndarray, q_hat: np.ndarray
) -> dict[str, float]:
    """Loop-per-conversation reference: PDIS, WPDIS, seq_dr in its recursive form, WDR."""
    rows = np.arange(feedback.n_turns)
    w = target[rows, feedback.action] / feedback.propensity
    q = q_hat[rows, feedback.action]
    v = (target * q_hat).sum(axis=1)
    horizon = feedback.max_length
    rho = np.ones((feedback.n_conversations, horizon))
    pdis, dr = [], []
    num = np.zeros(horizon)
    wdr_num = np.zeros(horizon)
    v0 = []
    for c in range(feedback.n_conversations):
        s, e = feedback.offsets[c], feedback.offsets[c + 1]
        rho[c, : e - s] = np.cumprod(w[s:e])
        rho[c, e - s :] = rho[c, e - s - 1]
        pdis.append(float(np.sum(rho[c, : e - s] * feedback.reward[s:e])))
        num[: e - s] += rho[c, : e - s] * feedback.reward[s:e]
        value = 0.0
        for t in reversed(range(s, e)):  # V(t) = v_t + w_t (r_t + V(t+1) - q_t)
            value = v[t] + w[t] * (feedback.reward[t] + value - q[t])
        dr.append(value)
        v0.append(v[s])
        v_next = np.append(v[s + 1 : e], 0.0)
        wdr_num[: e - s] += rho[c, : e - s] * (feedback.reward[s:e] - q[s:e] + v_next)
    den = rho.sum(axis=0)
    return {
        "pdis": float(np.mean(pdis)),
        "wpdis": float(np.sum(num / den)),
        "seq_dr": float(np.mean(dr)),
        "wdr": float(np.mean(v0) + np.sum(wdr_num / den)),
        "fqe": float(np.mean(v0)),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_sequential_estimators_match_a_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, 40)
    n, k = int(lengths.sum()), 3
    feedback = SequentialFeedback(
        action=rng.integers(0, k, n),
        reward=rng.normal(size=n),
        propensity=rng.uniform(0.2, 1.0, n),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        n_actions=k,
    )
    target = rng.dirichlet(np.ones(k), n)
    q_hat = rng.normal(size=(n, k))
    reference = reference_sequential(feedback, target, q_hat)
    for name in SEQUENTIAL_NAMES:
        estimator = ope.make_estimator(name)
        value = estimator.estimate(feedback, target, q_hat)
        assert value == pytest.approx(reference[name], rel=1e-10, abs=1e-12), name
        contributions = estimator.estimate_conversations(feedback, target, q_hat)
        assert contributions.shape == (feedback.n_conversations,)
        assert contributions.mean() == pytest.approx(value, rel=1e-10, abs=1e-12), name


def test_one_turn_conversations_reduce_to_bandit_estimators() -> None:
    bandit, target, reward_hat = random_bandit(n=200, seed=9)
    sequential = SequentialFeedback(
        action=bandit.action,
        reward=bandit.reward,
        propensity=bandit.propensity,
        offsets=np.arange(bandit.n_rounds + 1),
        n_actions=bandit.n_actions,
    )
    pairs = {"pdis": "ips", "wpdis": "snips", "seq_dr": "dr", "wdr": "sndr"}
    for seq_name, bandit_name in pairs.items():
        seq_value = ope.make_estimator(seq_name).estimate(sequential, target, reward_hat)
        bandit_value = ope.make_estimator(bandit_name).estimate(bandit, target, reward_hat)
        assert seq_value == pytest.approx(bandit_value, abs=1e-12), seq_name


def test_deterministic_target_with_zero_weights_gives_finite_estimates() -> None:
    feedback, _ = two_conversations()
    never_logged = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # every weight is 0
    for name in ("pdis", "wpdis"):
        assert ope.make_estimator(name).estimate(feedback, never_logged) == 0.0


# --- bootstrap ---------------------------------------------------------------------------


def test_interval_contains_the_estimate_and_shrinks_with_n() -> None:
    widths = []
    for n in (2_000, 8_000):
        feedback, target, reward_hat = random_bandit(n=n, seed=10)
        interval = ope.DoublyRobust().interval(feedback, target, reward_hat, n_bootstrap=500)
        assert interval.ci_low < interval.estimate < interval.ci_high
        assert interval.estimate == ope.DoublyRobust().estimate(feedback, target, reward_hat)
        widths.append(interval.ci_high - interval.ci_low)
    assert 0.35 < widths[1] / widths[0] < 0.65  # about 1 / sqrt(4)


def test_bootstrap_standard_error_matches_the_analytic_one() -> None:
    x = np.random.default_rng(11).normal(size=5_000)
    interval = intervals.bootstrap_interval(intervals.RatioStatistic(x[None]), n_bootstrap=2000)
    assert interval.std_err == pytest.approx(x.std() / np.sqrt(x.size), rel=0.1)
    assert interval.estimate == pytest.approx(x.mean(), abs=1e-15)


def test_bootstrap_does_not_depend_on_threads_and_float32_matches_float64(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feedback, target, _ = random_bandit(n=3_000, seed=12)
    statistic = ope.SNIPS().statistic(feedback, target)
    one = intervals.bootstrap_replicates(statistic, n_bootstrap=300, seed=5, n_threads=1)
    two = intervals.bootstrap_replicates(statistic, n_bootstrap=300, seed=5, n_threads=2)
    np.testing.assert_array_equal(one, two)
    monkeypatch.setattr(intervals, "_EXACT_LIMIT", 0)  # force the float32 path
    single = intervals.bootstrap_replicates(statistic, n_bootstrap=300, seed=5, n_threads=2)
    np.testing.assert_allclose(single, one, rtol=0, atol=1e-6)
    assert not np.array_equal(one, intervals.bootstrap_replicates(statistic, n_bootstrap=300))


def test_bootstrap_resamples_groups_not_rows() -> None:
    feedback, target, _ = random_bandit(n=1_000, seed=13)
    doubled = BanditFeedback(
        action=np.repeat(feedback.action, 2),
        reward=np.repeat(feedback.reward, 2),
        propensity=np.repeat(feedback.propensity, 2),
        n_actions=feedback.n_actions,
        group=np.repeat(np.arange(feedback.n_rounds) * 7, 2),  # ids need not be 0..n-1
    )
    doubled_target = np.repeat(target, 2, axis=0)
    for estimator in (ope.IPS(), ope.SNIPS()):
        single = estimator.interval(feedback, target, n_bootstrap=200)
        grouped = estimator.interval(doubled, doubled_target, n_bootstrap=200)
        assert grouped.std_err == pytest.approx(single.std_err, rel=1e-9)
        ungrouped = BanditFeedback(
            action=doubled.action,
            reward=doubled.reward,
            propensity=doubled.propensity,
            n_actions=doubled.n_actions,
        )
        too_narrow = estimator.interval(ungrouped, doubled_target, n_bootstrap=200)
        assert too_narrow.std_err < 0.85 * single.std_err


def test_self_normalised_estimators_renormalise_within_each_resample() -> None:
    feedback, target, _ = random_bandit(n=500, seed=14)
    constant = BanditFeedback(
        action=feedback.action,
        reward=np.full(feedback.n_rounds, 0.7),
        propensity=feedback.propensity,
        n_actions=feedback.n_actions,
    )
    snips = ope.SNIPS().interval(constant, target, n_bootstrap=200)
    assert snips.ci_low == pytest.approx(0.7) and snips.ci_high == pytest.approx(0.7)
    assert ope.IPS().interval(constant, target, n_bootstrap=200).std_err > 0.01


def test_sequential_interval_resamples_conversations() -> None:
    world = chain_world()
    feedback, target = simulate_chain(world, 500, seed=15)
    interval = ope.WPDIS().interval(feedback, target, n_bootstrap=300)
    as_turns = ope.SNIPS().interval(feedback.to_bandit(), target, n_bootstrap=10)
    assert interval.ci_low < interval.estimate < interval.ci_high
    assert set(interval.as_dict()) == {"estimate", "ci_low", "ci_high", "std_err"}
    assert as_turns.estimate == pytest.approx(ope.SNIPS().estimate(feedback.to_bandit(), target))


# --- diagnostics and registry ------------------------------------------------------------


def test_effective_sample_size_and_weight_statistics() -> None:
    assert ope.effective_sample_size(np.ones(50)) == pytest.approx(50)
    assert ope.effective_sample_size(np.array([0.0, 0.0, 3.0])) == pytest.approx(1)
    stats = ope.weight_statistics(np.array([0.0, 1.0, 1.0, 2.0]), quantiles=(0.5,))
    assert (stats.n, stats.mean, stats.max, stats.share_zero) == (4, 1.0, 2.0, 0.25)
    assert stats.quantiles == {0.5: 1.0}
    assert stats.ess == pytest.approx(16 / 6) and stats.ess_share == pytest.approx(16 / 24)


def test_support_warning_flags_rarely_logged_actions() -> None:
    n = 1_000
    target = np.tile([0.5, 0.3, 0.2], (n, 1))
    covered = ope.support_warning(target, np.array([400, 350, 250]))
    assert covered == []
    warnings = ope.support_warning(
        target, np.array([900, 95, 5]), action_names=["empathize", "faq_link", "offer_credit"]
    )
    assert len(warnings) == 1 and "'offer_credit'" in warnings[0] and "5 times" in warnings[0]
    logging = np.tile([0.6, 0.4, 0.0], (n, 1))
    warnings = ope.support_warning(target, logging)
    assert any("never does" in w for w in warnings)
    assert any("no logged support" in w for w in warnings)


def test_registry_names_match_the_design() -> None:
    assert set(ope.ESTIMATORS) == set(BANDIT_NAMES) | set(SEQUENTIAL_NAMES)
    for name, cls in ope.ESTIMATORS.items():
        assert cls.name == name
    assert ope.make_estimator("switch_dr", tau=5.0) == ope.SwitchDR(tau=5.0)


def test_bootstrap_counts_have_poisson_moments() -> None:
    freq = intervals._COUNT_FREQ / intervals._COUNT_FREQ.sum()
    values = np.arange(freq.size)
    mean = freq @ values
    assert mean == 1.0 and freq @ (values - mean) ** 2 == 1.0


# --- bad input ---------------------------------------------------------------------------


def _bandit_call(name: str, **overrides: Any) -> Callable[[], object]:
    feedback, target, reward_hat = hand_example()
    args: dict[str, Any] = {"target_probs": target, "reward_hat": reward_hat} | overrides

    def call() -> object:
        return ope.make_estimator(name).estimate(feedback, **args)

    return call


def _feedback(**overrides: Any) -> Callable[[], object]:
    fields: dict[str, Any] = {
        "action": np.array([0, 1]),
        "reward": np.array([1.0, 0.0]),
        "propensity": np.array([0.5, 0.5]),
        "n_actions": 2,
    } | overrides
    return lambda: BanditFeedback(**fields)


def _sequential(**overrides: Any) -> Callable[[], object]:
    fields: dict[str, Any] = {
        "action": np.array([0, 1, 1]),
        "reward": np.array([1.0, 0.0, 2.0]),
        "propensity": np.array([0.5, 0.5, 0.5]),
        "offsets": np.array([0, 2, 3]),
        "n_actions": 2,
    } | overrides
    return lambda: SequentialFeedback(**fields)


def _sequential_call(name: str, **overrides: Any) -> Callable[[], object]:
    feedback, target = two_conversations()
    args: dict[str, Any] = {"target_probs": target, "q_hat": np.zeros((3, 2))} | overrides
    return lambda: ope.make_estimator(name).estimate(feedback, **args)


BAD_INPUT = [
    (_bandit_call("ips", target_probs=np.array([[0.5, 0.4], [0.6, 0.4]])), r"rows must sum to 1 .*; row 0 sums to 0\.9"),
    (_bandit_call("ips", target_probs=np.array([[1.2, -0.2], [0.6, 0.4]])), r"target_probs must be non-negative; row 0"),
    (_bandit_call("ips", target_probs=np.array([[np.nan, 1.0], [0.6, 0.4]])), r"target_probs must be finite; row 0"),
    (_bandit_call("ips", target_probs=np.full((2, 3), 1 / 3)), r"target_probs must have shape .* = \(2, 2\), got \(2, 3\)"),
    (_bandit_call("dr", reward_hat=np.zeros(2)), r"reward_hat must have shape .*got \(2,\)"),
    (_bandit_call("dr", reward_hat=np.array([[0.0, np.inf], [0.0, 0.0]])), r"reward_hat must be finite; row 0"),
    (_bandit_call("dr", reward_hat=None), r"DoublyRobust \('dr'\) needs reward_hat"),
    (_bandit_call("dm", reward_hat=None), r"DirectMethod \('dm'\) needs reward_hat"),
    (_bandit_call("sndr", reward_hat=None), r"'sndr'\) needs reward_hat"),
    (_bandit_call("switch_dr", reward_hat=None), r"'switch_dr'\) needs reward_hat"),
    (_bandit_call("dr_os", reward_hat=None), r"'dr_os'\) needs reward_hat"),
    (_sequential_call("seq_dr", q_hat=None), r"SequentialDR \('seq_dr'\) needs q_hat"),
    (_sequential_call("wdr", q_hat=None), r"'wdr'\) needs q_hat"),
    (_sequential_call("pdis", target_probs=np.ones((3, 2))), r"rows must sum to 1 .*; row 0 sums to 2"),
    (_feedback(propensity=np.array([0.0, 0.5])), r"BanditFeedback\.propensity must be in \(0, 1\]; row 0 has 0\.0"),
    (_feedback(propensity=np.array([0.5, 1.5])), r"propensity must be in \(0, 1\]; row 1"),
    (_feedback(propensity=np.array([0.5, np.nan])), r"propensity must be in \(0, 1\]; row 1"),
    (_feedback(action=np.array([0, 2])), r"action must be in \[0, n_actions=2\); row 1 has 2"),
    (_feedback(action=np.array([0.0, 1.0])), r"action must hold integers"),
    (_feedback(reward=np.array([1.0, np.nan])), r"reward must be finite; row 1"),
    (_feedback(reward=np.array([1.0])), r"reward must have shape \(2,\)"),
    (_feedback(group=np.array([0])), r"group must have shape \(2,\)"),
    (_feedback(n_actions=0), r"n_actions must be >= 1"),
    (_sequential(propensity=np.array([0.5, 0.0, 0.5])), r"SequentialFeedback\.propensity .*row 1"),
    (_sequential(offsets=np.array([0, 2, 4])), r"offsets must start at 0 and end at n_turns=3"),
    (_sequential(offsets=np.array([0, 2, 2, 3])), r"strictly increasing .*conversation 1"),
    (lambda: ope.SwitchDR(tau=-1.0), r"tau must be >= 0"),
    (lambda: ope.DROptimisticShrinkage(lambda_=float("nan")), r"lambda_ must be a number"),
    (lambda: ope.IPS(max_weight=0.0), r"max_weight must be > 0"),
    (lambda: ope.PDIS(max_weight=-1.0), r"max_weight must be > 0"),
    (lambda: ope.make_estimator("fancy"), r"unknown estimator 'fancy'; valid names: dm, ips"),
    (lambda: ope.make_estimator("dr", tau=1.0), r"no parameter tau; its parameters: max_weight"),
    (lambda: ope.IPS().interval(*hand_example()[:2], n_bootstrap=1), r"n_bootstrap must be >= 2"),
    (lambda: ope.IPS().interval(*hand_example()[:2], alpha=1.5), r"alpha must be in \(0, 1\)"),
    (lambda: ope.support_warning(np.full((2, 2), 0.5), np.array([1, 2, 3])), r"target_probs must have shape"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_gives_a_clear_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_messages_name_the_tolerance() -> None:
    with pytest.raises(ValueError, match=re.escape("(atol 1e-06)")):
        _bandit_call("ips", target_probs=np.array([[0.5, 0.4], [0.6, 0.4]]))()
