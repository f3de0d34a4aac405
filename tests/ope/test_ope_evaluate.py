"""OPE on logs: preparation, per-policy evaluation, target_probs files, the evaluate command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from supportrl.agents.base import ConstantPolicy
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import (
    CONVERSATION_ESTIMATORS,
    DECISION_ESTIMATORS,
    load_target_probs,
    prepare_conversations,
)
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.logs import LoggedConversations, write_conversations
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs, true_value

from tests.helpers import REPO, run_dir_of, truth_imputer


@pytest.fixture(scope="module")
def generated():
    return generate_logs(1500, seed=4)


def test_prepare_refuses_missing_csat_without_a_model(generated) -> None:
    with pytest.raises(ValueError, match=r"terminal turn\(s\) lack CSAT and no CSAT model"):
        prepare_conversations(generated.logs, RewardSpec())


def test_prepare_estimates_missing_propensities_and_says_so(generated) -> None:
    logs = generated.logs
    stripped = LoggedConversations(**{**logs.__dict__, "propensity": np.full(logs.n_turns, np.nan)})
    prepared = prepare_conversations(
        stripped, RewardSpec(), csat_imputer=truth_imputer(generated.true_csat)
    )
    assert prepared.propensity_estimated
    assert any("estimated by a cross-fitted multinomial logit" in n for n in prepared.notes)
    assert ((prepared.propensity > 0) & (prepared.propensity <= 1)).all()
    # the estimate tracks the true logging propensities
    assert np.corrcoef(prepared.propensity, logs.propensity)[0, 1] > 0.6
    # and is refitted on a bootstrap resample (so OPE intervals carry its error)
    counts = np.random.default_rng(0).poisson(1.0, logs.n_conversations).astype(float)
    refit = prepared.propensity_for(counts)
    assert not np.allclose(refit, prepared.propensity)
    assert np.corrcoef(refit, prepared.propensity)[0, 1] > 0.9
    assert prepared.propensity_for(None) is prepared.propensity


def test_every_estimator_reported_with_intervals(generated) -> None:
    prepared = prepare_conversations(
        generated.logs, RewardSpec(), csat_imputer=truth_imputer(generated.true_csat)
    )
    policy = ConstantPolicy(generated.logs.actions, "direct_answer", epsilon=0.2)
    res = OffPolicyEvaluation(prepared=prepared, n_refit=10).evaluate(
        {"direct": policy.action_probs(generated.logs.states())}
    )["direct"]
    assert set(res.conversation) == set(CONVERSATION_ESTIMATORS)
    assert set(res.decision) == set(DECISION_ESTIMATORS)
    for row in [*res.conversation.values(), *res.decision.values()]:
        assert row.ci_low <= row.estimate <= row.ci_high
    assert 0 < res.diagnostics.ess_conversation <= generated.logs.n_conversations


def test_on_policy_ips_equals_the_logged_mean(generated) -> None:
    """Evaluating the logger's own probabilities: IS weights are 1, PDIS is the logged mean return."""
    logs = generated.logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=truth_imputer(generated.true_csat)
    )
    world = SyntheticWorld()
    # the logging policy's full probabilities need the hidden state; rebuild them from a rollout
    probs = np.zeros((logs.n_turns, len(logs.actions)))
    probs[np.arange(logs.n_turns), logs.action] = logs.propensity
    rest = (1 - logs.propensity) / (len(logs.actions) - 1)
    probs = np.where(probs > 0, probs, rest[:, None])
    res = OffPolicyEvaluation(
        prepared=prepared, n_refit=5, decision_estimators=("ips",), max_weight=None
    ).evaluate({"logger": probs})["logger"]
    logged_mean = np.bincount(logs.conversation_index, weights=prepared.reward).mean()
    assert res.conversation["pdis"].estimate == pytest.approx(logged_mean, abs=1e-12)
    assert world.actions == logs.actions


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda df: df.assign(**{"14": df["14"] + 0.5}), r"rows \[0, 1, 2, 3, 4\] do not sum to 1"),
        (lambda df: df.assign(**{"0": -df["0"]}), r"negative probabilities"),
        (lambda df: df.drop(columns="7"), r"missing \['7'\]"),
        (lambda df: df.rename(columns={"7": "seven"}), r"missing \['7'\], unexpected \['seven'\]"),
        (lambda df: df.iloc[:-1], r"has 9 rows; the logs have 10"),
    ],
)
def test_target_probs_file_errors(tmp_path: Path, edit, pattern: str) -> None:
    good = pd.DataFrame({"0": [0.2] * 10, "7": [0.3] * 10, "14": [0.5] * 10})
    path = tmp_path / "tp.csv"
    edit(good).to_csv(path, index=False)
    with pytest.raises(ValueError, match=pattern):
        load_target_probs(path, ("0", "7", "14"), 10)
    good.to_csv(path, index=False)
    assert load_target_probs(path, ("0", "7", "14"), 10).shape == (10, 3)


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "evaluate",
        *args,
        # the bootstrap that acts: fixed-model on bandit feedback, refit on conversation logs
        # (the tests read estimates and the layout, not interval widths)
        "ope.n_bootstrap=100" if "data=bandit" in args else "ope.n_refit=3",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_evaluate_cli_target_probs_follow_file_row_order(tmp_path: Path) -> None:
    """Logs with rows shuffled and all CSAT present: target_probs rows follow the file's rows."""
    gen = generate_logs(400, seed=2)
    logs = LoggedConversations(**{**gen.logs.__dict__, "csat": gen.true_csat})
    frame = logs.to_frame().sample(frac=1.0, random_state=0).reset_index(drop=True)
    turns = tmp_path / "turns.csv"
    frame.to_csv(turns, index=False)
    target = np.where(
        (frame["intent"] == "billing").to_numpy()[:, None], np.eye(6)[4], np.eye(6)[1]
    )
    pd.DataFrame(target, columns=list(logs.actions)).to_csv(tmp_path / "tp.csv", index=False)
    proc = run_cli(tmp_path, f"data.turns={turns}", f"target_probs={tmp_path / 'tp.csv'}")
    assert proc.returncode == 0, proc.stderr
    run_dir = run_dir_of(proc)
    result = json.loads((run_dir / "result.json").read_text())
    est = result["policies"]["target"]
    assert set(est) == set(CONVERSATION_ESTIMATORS) | set(DECISION_ESTIMATORS)
    # same numbers as the library on the sorted logs with a rule policy doing the same thing
    rule = tmp_path / "billing_credit.yaml"
    rule.write_text(
        "rules:\n  - when: 'intent == \"billing\"'\n    action: offer_credit\ndefault: direct_answer\n"
    )
    proc2 = run_cli(tmp_path, f"data.turns={turns}", f"policies=[{rule}]")
    run_dir2 = run_dir_of(proc2)
    est2 = json.loads((run_dir2 / "result.json").read_text())["policies"]["billing_credit"]
    for name in ("ips", "snips", "pdis", "wpdis"):
        assert est[name]["estimate"] == pytest.approx(est2[name]["estimate"], abs=1e-12)
    assert (run_dir / "forest.png").stat().st_size > 0


def test_evaluate_cli_needs_something_to_evaluate(tmp_path: Path, generated) -> None:
    path = write_conversations(generated.logs, tmp_path / "t.parquet")
    proc = run_cli(tmp_path, f"data.turns={path}")
    assert proc.returncode == 2 and "nothing to evaluate" in proc.stderr


def test_evaluate_cli_unknown_rule_variable(tmp_path: Path) -> None:
    gen = generate_logs(100, seed=1)
    logs = LoggedConversations(**{**gen.logs.__dict__, "csat": gen.true_csat})
    path = write_conversations(logs, tmp_path / "t.parquet")
    rule = tmp_path / "bad.yaml"
    rule.write_text("rules:\n  - when: 'mood < 0'\n    action: empathize\ndefault: direct_answer\n")
    proc = run_cli(tmp_path, f"data.turns={path}", f"policies=[{rule}]")
    assert proc.returncode == 2 and "mood" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_doubly_robust_tracks_truth_on_the_synthetic_world() -> None:
    """Confounding on, full support, 20k conversations, the deterministic rule panel, on
    three log samples: one sample's Spearman ranges 0.24-0.96 (measured over six seeds), so
    the ranking is judged on the mean over samples, and the selection interval on coverage
    in every sample."""
    world = SyntheticWorld(WorldConfig(support_gaps=False))
    panel = load_rule_panel(REPO / "configs" / "rules", world.actions)
    truth = {name: true_value(p, 30_000, world=world, seed=1).value for name, p in panel.items()}
    assert len(truth) >= 8
    rhos = []
    for seed in (1, 2, 3):
        gen = generate_logs(20_000, seed=seed, world=world)
        prepared = prepare_conversations(
            gen.logs, RewardSpec(), csat_imputer=truth_imputer(gen.true_csat)
        )
        results = OffPolicyEvaluation(
            prepared=prepared,
            n_refit=40,
            conversation_estimators=("seq_dr",),
            decision_estimators=(),
            seed=seed,
        ).evaluate({k: p.action_probs(gen.logs.states()) for k, p in panel.items()})
        rows = {name: results[name].selection for name in panel}
        rhos.append(
            spearmanr([truth[k] for k in panel], [rows[k].estimate for k in panel]).statistic
        )
        covered = sum(rows[k].ci_low <= truth[k] <= rows[k].ci_high for k in panel)
        assert covered >= len(panel) - 1, (seed, covered)
    assert np.mean(rhos) >= 0.6, rhos


def test_conversations_are_cut_at_max_turns(generated) -> None:
    logs = generated.logs
    reward = RewardSpec(max_turns=2)
    cut, kept = logs.truncate(2)
    true_csat = np.where(cut.outcome != 0, generated.true_csat[kept], np.nan)
    prepared = prepare_conversations(logs, reward, csat_imputer=lambda lg: (true_csat, 0))
    assert prepared.logs.lengths.max() == 2
    assert any("longer than reward.max_turns=2" in n for n in prepared.notes)
    # expected: rewards of the first two turns; a cut conversation earns no terminal reward
    expected = reward.rewards(
        actions=cut.action,
        outcomes=cut.outcome,
        handle_time_s=cut.handle_time_s,
        csat=true_csat,
        catalogue=cut.actions,
    )
    np.testing.assert_allclose(prepared.reward, expected)
    assert (cut.outcome[cut.offsets[1:][logs.lengths > 2] - 1] == 0).all()
    # target probabilities for the original turns are accepted and cut the same way
    probs = np.zeros((logs.n_turns, 6))
    probs[np.arange(logs.n_turns), logs.action] = 1.0  # deterministic copy of the log
    res = OffPolicyEvaluation(prepared=prepared, n_refit=3, decision_estimators=()).evaluate(
        {"copy": probs}
    )
    assert np.isfinite(res["copy"].conversation["pdis"].estimate)


def test_missing_handle_time_everywhere_is_refused(generated) -> None:
    logs = generated.logs
    blank = LoggedConversations(**{**logs.__dict__, "handle_time_s": np.full(logs.n_turns, np.nan)})
    imputer = truth_imputer(generated.true_csat)
    with pytest.raises(ValueError, match="no turn has a handle time"):
        prepare_conversations(blank, RewardSpec(), csat_imputer=imputer)
    prepared = prepare_conversations(blank, RewardSpec(per_minute=0.0), csat_imputer=imputer)
    assert np.isfinite(prepared.reward).all()


def test_evaluate_cli_on_bandit_feedback(tmp_path: Path) -> None:
    """Generic bandit feedback: per-decision estimators, typed results written as rows."""
    rng = np.random.default_rng(0)
    n = 300
    item = rng.integers(0, 3, n)
    frame = pd.DataFrame(
        {"item": item, "click": rng.random(n) < 0.2 + 0.2 * item, "ps": np.full(n, 1 / 3)}
    )
    frame["click"] = frame["click"].astype(int)
    frame["age"] = rng.normal(size=n)
    frame.to_csv(tmp_path / "b.csv", index=False)
    target = np.tile([0.0, 0.0, 1.0], (n, 1))
    pd.DataFrame(target, columns=["0", "1", "2"]).to_csv(tmp_path / "tp.csv", index=False)
    proc = run_cli(
        tmp_path,
        "data=bandit",
        f"data.path={tmp_path / 'b.csv'}",
        "data.action_col=item",
        "data.reward_col=click",
        "data.propensity_col=ps",
        f"target_probs={tmp_path / 'tp.csv'}",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((run_dir_of(proc) / "result.json").read_text())
    ips = result["policies"]["target"]["ips"]
    expected = float(np.mean((item == 2) * 3.0 * frame["click"]))
    assert ips["estimate"] == pytest.approx(expected, abs=1e-12)
    assert ips["ci_low"] <= ips["estimate"] <= ips["ci_high"]
    assert result["diagnostics"]["target"]["ess_decision"] > 0
