"""``supportrl export`` / ``evaluate`` of artifacts / ``deploy``, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.simulators.synthetic import SyntheticWorld

from tests.helpers import result_of, run_dir_of, supportrl


def test_export_train_run_and_evaluate_checkpoint_vs_artifact(
    tmp_path: Path, small_log_files: tuple[Path, Path]
) -> None:
    train = supportrl(
        tmp_path,
        "train",
        "agent=linucb",
        "train.total_steps=2000",
        "train.eval_conversations=500",
        "train.regret_panel=configs/agent/none",
        "logger.progress=false",
    )
    assert train.returncode == 0, train.stderr
    checkpoint = result_of(train)["checkpoint"]
    export = supportrl(tmp_path, "export", f"run={run_dir_of(train)}")
    assert export.returncode == 0, export.stderr
    artifact = result_of(export)["artifact"]
    assert Path(artifact) == run_dir_of(export) / "artifact"
    manifest = json.loads((Path(artifact) / "manifest.json").read_text())
    assert manifest["policy"]["kind"] == "linucb"
    assert manifest["training"]["config"]["agent"]["kind"] == "linucb"
    assert "final_return" in manifest["evaluation"]

    turns, customers = small_log_files
    evaluate = supportrl(
        tmp_path,
        "evaluate",
        f"data.turns={turns}",
        f"data.customers={customers}",
        f"policies=[{checkpoint},{artifact}]",
        "ope.n_refit=20",
    )
    assert evaluate.returncode == 0, evaluate.stderr
    policies = result_of(evaluate)["policies"]
    from_checkpoint = next(v for k, v in policies.items() if "artifact" not in k)
    from_artifact = next(v for k, v in policies.items() if "artifact" in k)
    assert set(from_checkpoint) == set(from_artifact)
    for estimator, row in from_checkpoint.items():
        for key in ("estimate", "ci_low", "ci_high"):
            assert from_artifact[estimator][key] == pytest.approx(row[key], abs=1e-6), estimator


def test_export_dqn_checkpoint_and_rule_file(tmp_path: Path) -> None:
    world = SyntheticWorld()
    network = build_q_network(world.feature_spec.dim, 6, (16,), False, seed=1)
    QPolicy(actions=world.actions, feature_spec=world.feature_spec, network=network).save(
        tmp_path / "ckpt"
    )
    dqn = supportrl(tmp_path, "export", f"run={tmp_path / 'ckpt'}", "export.epsilon=0.05")
    assert dqn.returncode == 0, dqn.stderr
    artifact = Path(result_of(dqn)["artifact"])
    assert (artifact / "policy.onnx").is_file()
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["exploration"]["epsilon"] == 0.05

    rules = supportrl(
        tmp_path,
        "export",
        "run=configs/rules/rules_production.yaml",
        "export.fallback_action=escalate_human",
    )
    assert rules.returncode == 0, rules.stderr
    artifact = Path(result_of(rules)["artifact"])
    assert sorted(p.name for p in artifact.iterdir()) == [
        "manifest.json",
        "manifest.sha256",
        "policy.yaml",
        "rules.json",
    ]
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["fallback_action"] == "escalate_human"


def test_export_bad_run_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    proc = supportrl(tmp_path, "export", f"run={tmp_path / 'missing'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: run=") and "Traceback" not in proc.stderr
    (tmp_path / "notes.txt").write_text("hello")
    proc = supportrl(tmp_path, "export", f"run={tmp_path / 'notes.txt'}")
    assert proc.returncode == 2 and "rule-policy .yaml" in proc.stderr
    assert not (tmp_path / "export").exists()


def test_deploy_writes_a_log_that_validate_and_evaluate_read(tmp_path: Path) -> None:
    export = supportrl(
        tmp_path, "export", "run=configs/rules/rules_production.yaml", "export.epsilon=0.2"
    )
    assert export.returncode == 0, export.stderr
    artifact = result_of(export)["artifact"]
    deploy = supportrl(tmp_path, "deploy", f"artifact={artifact}", "n_conversations=1500")
    assert deploy.returncode == 0, deploy.stderr
    result = result_of(deploy)["deploy"]
    assert result["n_conversations"] == 1500 and result["epsilon"] == 0.2
    log = result["log"]

    validate = supportrl(tmp_path, "validate", f"data.turns={log}", f"artifact={artifact}")
    assert validate.returncode == 0, validate.stderr
    summary = result_of(validate)["summary"]
    drift = result_of(validate)["drift"]  # the same world's customers: no customer drift
    assert drift["drifted"] == [] and drift["verdict"].startswith("no drift")
    assert set(drift["psi"]) >= {"intent", "sentiment", "tier", "tenure_months"}
    assert summary["conversations"] == 1500 and summary["missing_propensity"] == 0
    assert summary["turns"] == result["n_turns"]

    # on-policy: the logged propensities are the artifact's, so every importance weight is 1
    # and the estimate is the logged mean return; it must agree with the deployed value
    evaluate = supportrl(
        tmp_path, "evaluate", f"data.turns={log}", f"policies=[{artifact}]", "ope.n_refit=50"
    )
    assert evaluate.returncode == 0, evaluate.stderr
    (estimates,) = result_of(evaluate)["policies"].values()
    wpdis = estimates["wpdis"]
    slack = 0.03  # imputed CSAT (log) vs true CSAT (deployed value)
    assert wpdis["ci_low"] - slack <= result["on_policy_value"] <= wpdis["ci_high"] + slack

    # same seed, same numbers
    again = supportrl(tmp_path, "deploy", f"artifact={artifact}", "n_conversations=1500")
    assert result_of(again)["deploy"]["on_policy_value"] == result["on_policy_value"]


def test_deploy_refuses_a_tampered_artifact(tmp_path: Path) -> None:
    export = supportrl(tmp_path, "export", "run=configs/rules/rules_production.yaml")
    artifact = Path(result_of(export)["artifact"])
    rules = artifact / "rules.json"
    rules.write_text(rules.read_text().replace("escalate_human", "offer_credit"))
    deploy = supportrl(tmp_path, "deploy", f"artifact={artifact}", "n_conversations=100")
    assert deploy.returncode == 2
    assert "rules.json: SHA-256 differs" in deploy.stderr
    assert not (tmp_path / "deploy").exists()


def test_export_refuses_a_rule_file_that_cannot_run_on_the_data(tmp_path: Path) -> None:
    bad = tmp_path / "rules_bad.yaml"
    bad.write_text("rules:\n  - when: 'tier > 3'\n    action: empathize\ndefault: clarify\n")
    proc = supportrl(tmp_path, "export", f"run={bad}", "export.summary_conversations=200")
    assert proc.returncode == 2, proc.stdout
    assert "tier" in proc.stderr and "Traceback" not in proc.stderr
    unknown = tmp_path / "rules_unknown.yaml"
    unknown.write_text(
        "rules:\n  - when: 'vip == \"yes\"'\n    action: empathize\ndefault: clarify\n"
    )
    proc = supportrl(tmp_path, "export", f"run={unknown}", "export.summary_conversations=200")
    assert proc.returncode == 2 and "vip" in proc.stderr
    assert not (tmp_path / "export").exists()
