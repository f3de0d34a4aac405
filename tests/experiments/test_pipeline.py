"""The pipeline obeys its config: each group's override reaches the stage that uses it.

One small base run, then one run per override; each test checks that the override changed
what its stage produced (and, where it should, nothing upstream of it). Were an override
dropped, the run would equal the base run and the test would fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import result_of, run_dir_of, supportrl

SMALL = (
    "generate.n_conversations=300",
    "train.total_steps=600",
    "fit.true_value_conversations=300",
    "fit.simulated_conversations=300",
    "ope.n_refit=20",
    "ope.conversation_estimators=[wpdis,seq_dr]",
    "ope.decision_estimators=[]",
    "pipeline.baselines=[configs/rules/rules_production.yaml]",
    "logger.progress=false",
    "loop.rounds=0",
)


def run(tmp: Path, *overrides: str) -> tuple[dict[str, Any], Path]:
    proc = supportrl(tmp / "outputs", "pipeline", *SMALL, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result_of(proc), run_dir_of(proc)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    # the per-segment breakdown runs after every stage the other tests compare, on its own
    # seed: the base run carries it, so it costs no run of its own
    return run(tmp_path_factory.mktemp("base"), "report.segment_by=[tier]")


def seq_dr(result: dict[str, Any], name: str = "linucb") -> float:
    return result["policies"][name]["seq_dr"]["estimate"]


def test_seed_and_generate_reach_the_data(base, tmp_path: Path) -> None:
    result, _ = run(tmp_path, "seed=1", "generate.n_conversations=250")
    assert result["summary"]["conversations"] == 250
    assert result["data"]["seed"] == 1
    assert base[0]["summary"]["conversations"] == 300


def test_world_reaches_generate(base, tmp_path: Path) -> None:
    result, _ = run(tmp_path, "world.logging_epsilon=0.9")
    # a near-uniform logger: different logs, different logged value and action mix
    assert result["summary"]["turns"] != base[0]["summary"]["turns"]
    assert result["logging_value"]["estimate"] != base[0]["logging_value"]["estimate"]


def test_user_logs_skip_generate_and_truth(base, tmp_path: Path) -> None:
    turns = base[0]["data"]["turns"]
    customers = base[0]["data"]["customers"]
    result, out = run(tmp_path, f"data.turns={turns}", f"data.customers={customers}")
    assert result["data"]["source"] == turns
    assert not (out / "data").exists()  # nothing generated
    assert "true_value" not in result["policies"]["linucb"] and "logging_true_value" not in result
    # same logs, same seed: the same fit, agent and estimates as the run that generated them
    assert seq_dr(result) == pytest.approx(seq_dr(base[0]))


def test_missing_turns_file_is_an_error_not_a_reason_to_generate(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "outputs", "pipeline", *SMALL, "data.turns=/nonexistent.parquet")
    assert proc.returncode == 2
    assert "error: /nonexistent.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]


def test_simulator_reaches_fit(base, tmp_path: Path) -> None:
    result, out = run(tmp_path, "simulator.l2=1000")
    sim = json.loads((out / "simulator" / "simulator.json").read_text())
    assert sim["params"]["l2"] == 1000
    assert (
        result["policies"]["rules_production"]["simulated_value"]
        != base[0]["policies"]["rules_production"]["simulated_value"]
    )
    # the logs and their estimates did not change
    assert result["logging_value"] == base[0]["logging_value"]


@pytest.mark.slow  # the group reaches the fit as simulator.l2 does (test_simulator_reaches_fit);
# the ensemble family's fit: tests/simulators/test_fitted.py
def test_simulator_group_reaches_fit(base, tmp_path: Path) -> None:
    result, out = run(tmp_path, "simulator=ensemble", "simulator.epochs=1", "simulator.n_members=2")
    sim = json.loads((out / "simulator" / "simulator.json").read_text())
    assert sim["family"] == "ensemble"
    assert (
        result["policies"]["linucb"]["simulated_value"]
        != (base[0]["policies"]["linucb"]["simulated_value"])
    )


def test_fit_keys_reach_the_pipeline_fit(base, tmp_path: Path) -> None:
    result, out = run(
        tmp_path,
        "fit.holdout=0.5",
        "fit.sample_turns=700",
        "fit.sample_min_per_intent=5",
        "fit.simulated_conversations=200",
        "fit.true_value_conversations=200",
        "fit.plots=false",
    )
    n_turns = base[0]["summary"]["turns"]
    # held out and scored as `fit` does: 0.2 of all the logs by default, 0.5 of a sample here
    assert 0.1 * n_turns < base[0]["fidelity"]["outcome_model"]["n_decisions"] < 0.3 * n_turns
    assert result["fidelity"]["sample"]["of_turns"] == n_turns
    assert "fit.sample_min_per_intent=5" in result["fidelity"]["sample"]["method"]
    assert "plots" in base[0]["fidelity"] and "plots" not in result["fidelity"]
    assert not (out / "plots").exists()
    for key in ("simulated_value", "true_value"):
        assert (
            result["policies"]["rules_production"][key]
            != base[0]["policies"]["rules_production"][key]
        )
    # OPE reads all the logs whatever share the simulator was fitted on: the baselines'
    # estimates and the logging value do not move with fit.*
    assert seq_dr(result, "rules_production") == pytest.approx(seq_dr(base[0], "rules_production"))
    assert result["logging_value"] == pytest.approx(base[0]["logging_value"])


def test_agent_and_budget_reach_train(base, tmp_path: Path) -> None:
    result, _ = run(tmp_path, "agent.alpha=20", "train.total_steps=900")
    assert result["env_steps"] >= 900 and base[0]["env_steps"] < 900
    assert seq_dr(result) != seq_dr(base[0])
    assert seq_dr(result, "rules_production") == pytest.approx(seq_dr(base[0], "rules_production"))


def test_agent_group_reaches_train(tmp_path: Path) -> None:
    result, out = run(tmp_path, "agent=dqn", "agent.hidden_sizes=[7]", "agent.num_envs=8")
    assert result["agent"] == "dqn" and "dqn" in result["policies"]
    policy = json.loads((out / "agents" / "dqn" / "checkpoint" / "policy.json").read_text())
    assert policy["network"]["hidden_sizes"] == [7]


def test_reward_reaches_values_and_ope(base, tmp_path: Path) -> None:
    result, _ = run(tmp_path, "reward.resolved=3.0")
    assert result["logging_value"]["estimate"] > base[0]["logging_value"]["estimate"] + 0.5
    assert result["policies"]["rules_production"]["true_value"] > (
        base[0]["policies"]["rules_production"]["true_value"] + 0.5
    )


def test_ope_reaches_evaluate_and_selection(base, tmp_path: Path) -> None:
    result, _ = run(tmp_path, "ope.select=wpdis", "ope.alpha=0.5")
    assert result["select"] == "wpdis" and "wpdis" in result["selection"]["reason"]
    narrow, wide = result["policies"]["linucb"]["seq_dr"], base[0]["policies"]["linucb"]["seq_dr"]
    assert narrow["ci_high"] - narrow["ci_low"] < wide["ci_high"] - wide["ci_low"]


def test_misspelt_override_names_the_key(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "outputs", "pipeline", "agent.alpah=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown key agent.alpah" in proc.stderr and "agent.alpha" in proc.stderr
    assert not (tmp_path / "outputs").exists()
    # the same check (precheck_argv -> check_overrides) names a wrong type and a wrong
    # option; in process: the command line's exit code and clean-up are shown above
    from supportrl.experiments.entry import check_overrides
    from supportrl.experiments.schema import ConfigError

    with pytest.raises(ConfigError, match="agent.alpha: expected float"):
        check_overrides(["agent.alpha=abc"], "pipeline")
    with pytest.raises(ConfigError, match="agent=linucbb: no such option.*linucb"):
        check_overrides(["agent=linucbb"], "pipeline")


def test_the_loop_command_asks_for_a_round(tmp_path: Path) -> None:
    """``supportrl loop`` (its own command module) is the pipeline with at least one round:
    ``loop.rounds=0`` is a user error naming the key, and the run leaves nothing behind."""
    proc = supportrl(tmp_path / "outputs", "loop", *SMALL, "loop.rounds=0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "loop.rounds=0: the loop command runs at least 1 round" in proc.stderr
    assert "[1/7] generate" not in proc.stdout  # refused before any work
    left = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert not left, left


def test_segment_breakdown(base) -> None:
    result, out = base
    tiers = result["segments"]["tier"]
    assert set(tiers) <= {"free", "pro", "enterprise"} and len(tiers) >= 2
    for seg in tiers.values():
        assert set(seg["policies"]) == set(result["policies"])
        for mix in [
            seg["logging"]["action_mix"],
            *(p["action_mix"] for p in seg["policies"].values()),
        ]:
            assert sum(mix.values()) == pytest.approx(1.0, abs=1e-3)
    n = {k: v["n_conversations"] for k, v in tiers.items()}
    assert sum(n.values()) <= result["summary"]["conversations"]
    # a breakdown, not one number repeated: segments differ
    assert len({round(v["policies"]["linucb"]["estimate"], 6) for v in tiers.values()}) > 1
    assert "Per segment" in (out / "report.md").read_text()


def test_segment_by_a_numeric_feature_is_a_user_error(small_generated) -> None:
    from hydra import compose, initialize_config_dir
    from supportrl.envs.rewards import RewardSpec
    from supportrl.experiments.errors import UserError
    from supportrl.experiments.repo_files import CONFIG_PATH
    from supportrl.experiments.stages import ope_settings, segment_stage

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        settings = ope_settings(compose("config"))
    logs = small_generated.logs
    with pytest.raises(UserError, match="'sentiment' is not a categorical feature"):
        segment_stage(logs, RewardSpec(), {}, settings, seed=0, by=("sentiment",))


def test_stage_timings_recorded(base) -> None:
    result = base[0]
    timings = result["timings_s"]
    stages = {"generate", "validate", "fit", "train", "evaluate", "select", "ship"}
    assert stages <= set(timings), timings
    assert all(value >= 0 for value in timings.values())
    assert sum(timings.values()) <= result["wall_s"]  # stages do not overlap


def test_a_stage_timed_twice_adds_up(monkeypatch) -> None:
    """``timed`` adds to a stage's seconds: the pipeline times ``train`` once per agent."""
    from supportrl.experiments import stages
    from supportrl.experiments.stages import data

    clock = iter([0.0, 1.0, 10.0, 12.5])
    monkeypatch.setattr(data.time, "perf_counter", lambda: next(clock))
    timings: dict[str, float] = {}
    for _ in range(2):
        with stages.timed(timings, "train"):
            pass
    assert timings == {"train": 3.5}
