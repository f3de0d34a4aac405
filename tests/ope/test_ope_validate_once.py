"""OffPolicyEvaluation validates each policy's probabilities once, not per estimator call.

Estimators called directly still validate their inputs (tests/ope/test_ope_estimators.py
holds those bad-input tables); here the evaluation of logs must check each policy's
(n_turns, n_actions) matrix a fixed number of times, however many estimators and
bootstrap replicates run on it, and give the numbers the validating path gives.
"""

from __future__ import annotations

import pytest
from supportrl.agents.base import ConstantPolicy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope import estimators, meta, sequential
from supportrl.ope.evaluate import prepare_conversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.sequential import SequentialFeedback
from supportrl.simulators.synthetic import generate_logs

from tests.helpers import truth_imputer


def test_each_policy_validated_once(monkeypatch) -> None:
    generated = generate_logs(300, seed=5)
    logs = generated.logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=truth_imputer(generated.true_csat)
    )
    policies = {
        name: ConstantPolicy(logs.actions, action, epsilon=0.3).action_probs(logs.states())
        for name, action in (("direct", "direct_answer"), ("faq", "faq_link"))
    }
    calls = {"meta": 0, "estimators": 0}

    def counting(key, real):
        def check(*args, **kwargs):
            calls[key] += 1
            return real(*args, **kwargs)

        return check

    real = estimators.check_target_probs
    monkeypatch.setattr(meta, "check_target_probs", counting("meta", real))
    monkeypatch.setattr(estimators, "check_target_probs", counting("estimators", real))
    monkeypatch.setattr(sequential, "check_target_probs", counting("estimators", real))
    counts = []
    for n_bootstrap in (2, 6):
        calls.update(meta=0, estimators=0)
        evaluation = OffPolicyEvaluation(prepared=prepared, n_refit=n_bootstrap)
        results = evaluation.evaluate(policies)
        counts.append(dict(calls))
    # Once per policy where it is received; the weight diagnostics check their input
    # once per policy too; nothing per estimator or per bootstrap replicate (11 estimators
    # x 7 replicates x 2 policies calls before).
    assert counts[0] == counts[1]
    assert counts[0]["meta"] == len(policies)
    assert counts[0]["estimators"] <= 2 * len(policies)

    # The point estimates are those of the public, validating entry points.
    monkeypatch.undo()
    seq = SequentialFeedback(
        action=logs.action,
        reward=prepared.reward,
        propensity=prepared.propensity,
        offsets=logs.offsets,
        n_actions=len(logs.actions),
    )
    pdis = evaluation._conversation_estimators()["pdis"]
    for name, probs in policies.items():
        expected = pdis.statistic(seq, probs).value()
        assert results[name].conversation["pdis"].estimate == pytest.approx(expected, rel=1e-12)
