"""Honest OPE intervals: refitted FQE, partial identification where support is missing."""

from __future__ import annotations

import numpy as np
import pytest
from supportrl.agents.base import ConstantPolicy
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.ope import make_estimator
from supportrl.ope.data import SequentialFeedback
from supportrl.ope.evaluate import prepare_conversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.models import balancing_weights, fitted_q_evaluation
from supportrl.ope.results import format_results
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs, true_value

from tests.helpers import REPO, truth_imputer


def prepared_logs(n: int, seed: int, config: WorldConfig):
    gen = generate_logs(n, seed=seed, world=SyntheticWorld(config))
    return gen, prepare_conversations(
        gen.logs, RewardSpec(), csat_imputer=truth_imputer(gen.true_csat), seed=seed
    )


def test_bounds_contain_the_truth_when_support_is_missing() -> None:
    """The logger never offers credit to free-tier customers (60% of them); a policy that
    always offers credit is then only partially identified, and the bounds say so."""
    config = WorldConfig(support_gaps=True)
    gen, prepared = prepared_logs(2000, 3, config)
    policy = ConstantPolicy(gen.logs.actions, "offer_credit")
    res = OffPolicyEvaluation(prepared=prepared, n_refit=8, decision_estimators=()).evaluate(
        {"credit": policy.action_probs(gen.logs.states())}
    )["credit"]
    truth = true_value(policy, 20_000, world=SyntheticWorld(config), seed=1).value
    free = np.asarray(gen.logs.states()["tier"])[gen.logs.offsets[:-1]] == "free"
    assert res.support.material
    assert res.support.unsupported_conversation == pytest.approx(free.mean(), abs=0.1)
    b = res.support.bounds
    assert b.ci_low <= b.lower <= b.upper <= b.ci_high
    assert b.ci_low <= truth <= b.ci_high
    assert res.selection.ci_low <= truth <= res.selection.ci_high
    # the bounds are wider than the point estimator's own interval: it cannot see the gap
    assert (
        b.ci_high - b.ci_low
        > res.conversation["seq_dr"].ci_high - res.conversation["seq_dr"].ci_low
    )
    # the table flags what rests on few conversations, and only that
    assert "low ESS" in res.conversation["pdis"].flags
    assert "low ESS" not in res.conversation["fqe"].flags
    assert "unsupported" in res.conversation["seq_dr"].flags
    text = "\n".join(format_results({"credit": res}))
    assert "partially identified" in text and "unsupported" in text


def _fqe_width(n: int, seed: int) -> tuple[float, float, float]:
    config = WorldConfig(confounding=0.0, support_gaps=False)
    gen, prepared = prepared_logs(n, seed, config)
    panel = load_rule_panel(REPO / "configs" / "rules", gen.logs.actions)
    probs = panel["rules_clarify_first"].action_probs(gen.logs.states())
    res = OffPolicyEvaluation(
        prepared=prepared,
        n_refit=20,
        conversation_estimators=("fqe",),
        decision_estimators=(),
        seed=seed,
    ).evaluate({"p": probs})["p"]
    fqe = res.conversation["fqe"]
    return fqe.ci_low, fqe.ci_high, fqe.estimate


def test_fqe_interval_width_grows_with_fewer_conversations() -> None:
    low_small, high_small, _ = _fqe_width(800, 0)
    low_big, high_big, _ = _fqe_width(6400, 0)
    # 8x the data: the refitted interval should shrink by about sqrt(8) ~ 2.8
    assert high_small - low_small > 1.8 * (high_big - low_big)


@pytest.mark.slow
def test_refitted_fqe_interval_covers_the_truth_where_the_fixed_one_did_not() -> None:
    """The old interval resampled fixed first-turn predictions of one FQE fit."""
    config = WorldConfig(confounding=0.0, support_gaps=False)
    world = SyntheticWorld(config)
    panel = load_rule_panel(REPO / "configs" / "rules", world.actions)
    missed_fixed = covered_refit = 0
    for seed in range(3):
        gen, prepared = prepared_logs(3000, seed, config)
        logs = gen.logs
        for name in ("rules_clarify_first", "rules_production", "rules_escalate_late"):
            probs = panel[name].action_probs(logs.states())
            truth = true_value(panel[name], 30_000, world=world, seed=7).value
            q = fitted_q_evaluation(
                prepared.x,
                logs.action,
                prepared.reward,
                logs.offsets,
                probs,
                sample_weight=balancing_weights(prepared.propensity, logs.action, 6),
            )
            feedback = SequentialFeedback(
                action=logs.action,
                reward=prepared.reward,
                propensity=prepared.propensity,
                offsets=logs.offsets,
                n_actions=6,
            )
            fixed = make_estimator("fqe").interval(feedback, probs, q, n_bootstrap=200)
            refit = (
                OffPolicyEvaluation(
                    prepared=prepared,
                    n_refit=30,
                    conversation_estimators=("fqe",),
                    decision_estimators=(),
                )
                .evaluate({name: probs})[name]
                .conversation["fqe"]
            )
            assert refit.estimate == pytest.approx(fixed.estimate, abs=1e-9)
            missed_fixed += not fixed.ci_low <= truth <= fixed.ci_high
            covered_refit += refit.ci_low <= truth <= refit.ci_high
    assert missed_fixed >= 3
    assert covered_refit >= 8


class _Mixed:
    """``(1 - eps) * policy + eps * uniform``: a policy closer to the logger."""

    def __init__(self, policy, eps: float) -> None:
        self.policy, self.eps, self.actions = policy, eps, policy.actions

    def action_probs(self, states):
        p = self.policy.action_probs(states)
        return (1 - self.eps) * p + self.eps / p.shape[1]

    def act(self, states, rng):
        from supportrl.agents.base import sample_actions

        return sample_actions(self.action_probs(states), rng)


@pytest.mark.slow
def test_selection_intervals_cover_the_truth_on_a_fixed_set_of_worlds() -> None:
    """Two worlds (confounded with support gaps: the project's own; neither), 4,000 logged
    conversations each, three rule policies as written and mixed 30% with uniform."""
    from supportrl.simulators.fitted.csat import CsatImputation

    covered, total = 0, 0
    for config in (WorldConfig(), WorldConfig(confounding=0.0, support_gaps=False)):
        world = SyntheticWorld(config)
        gen = generate_logs(4000, seed=11, world=world)
        prepared = prepare_conversations(
            gen.logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=11
        )
        panel = load_rule_panel(REPO / "configs" / "rules", world.actions)
        policies = {
            f"{k}@{eps}": panel[k] if eps == 0 else _Mixed(panel[k], eps)
            for k in ("rules_production", "rules_clarify_first", "rules_faq_first")
            for eps in (0.0, 0.3)
        }
        results = OffPolicyEvaluation(
            prepared=prepared, n_refit=15, decision_estimators=(), seed=11
        ).evaluate({k: p.action_probs(gen.logs.states()) for k, p in policies.items()})
        for k, p in policies.items():
            truth = true_value(p, 20_000, world=world, seed=5).value
            s = results[k].selection
            covered += s.ci_low <= truth <= s.ci_high
            total += 1
    assert covered >= total - 1, f"{covered} of {total}"


def test_one_factorised_design_serves_many_targets_and_resamples() -> None:
    """RidgeSystem = PerActionRidge per target; count weights = physically repeated rows."""
    from supportrl.ope.models import PerActionRidge, RidgeSystem, fitted_q_many

    rng = np.random.default_rng(0)
    n, k = 400, 3
    x, a, y = rng.normal(size=(n, 4)), rng.integers(0, k, n), rng.normal(size=n)
    counts = rng.poisson(1.0, n).astype(float)
    system = RidgeSystem.build(x, a, k, sample_weight=counts)
    pred = system.predict(system.solve(np.stack([y, -y], axis=1)))
    rows = np.repeat(np.arange(n), counts.astype(int))
    ref = PerActionRidge.fit(x[rows], a[rows], y[rows], k).predict(x)
    np.testing.assert_allclose(pred[0], ref, atol=1e-10)
    np.testing.assert_allclose(pred[1], -ref, atol=1e-10)
    # FQE of two policies at once = FQE of each
    offsets = np.arange(0, n + 1, 4)
    probs = rng.dirichlet(np.ones(k), size=(2, n))
    many = fitted_q_many(system, y, offsets, probs)
    for p in range(2):
        one = fitted_q_evaluation(x, a, y, offsets, probs[p], sample_weight=counts)
        np.testing.assert_allclose(many[p], one, atol=1e-10)
    # a statistic on count weights = the statistic on the repeated units
    stat = make_estimator("wpdis").statistic(
        SequentialFeedback(
            action=a, reward=y, propensity=np.full(n, 1 / k), offsets=offsets, n_actions=k
        ),
        probs[0],
    )
    conv_counts = rng.poisson(1.0, len(offsets) - 1).astype(float)
    keep = np.repeat(np.arange(len(offsets) - 1), conv_counts.astype(int))
    from supportrl.ope.intervals import RatioStatistic

    repeated = RatioStatistic(stat.numerators[:, keep], stat.denominators[:, keep])
    assert stat.resampled_value(conv_counts) == pytest.approx(repeated.value(), rel=1e-12)
