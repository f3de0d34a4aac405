"""Command-line contract (docs/cli.md): exit codes, run_dir, result.json, no leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tests.helpers import run_dir_of
from tests.helpers import supportrl as run_supportrl
from tests.simulators.test_logs import base_frame


def supportrl(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_supportrl(tmp_path / "outputs", *args)


def test_generate_then_validate(tmp_path: Path) -> None:
    gen = supportrl(tmp_path, "generate", "generate.n_conversations=200", "seed=3")
    assert gen.returncode == 0, gen.stderr
    result = json.loads((run_dir_of(gen) / "result.json").read_text())
    assert result["conversations"] == 200
    assert gen.stdout.strip().splitlines()[-1].startswith("generated 200 conversations")
    val = supportrl(
        tmp_path,
        "validate",
        f"data.turns={result['turns']}",
        f"data.customers={result['customers']}",
    )
    assert val.returncode == 0, val.stderr
    summary = json.loads((run_dir_of(val) / "result.json").read_text())["summary"]
    assert summary["conversations"] == 200
    assert val.stdout.strip().splitlines()[-1].startswith("valid: 200 conversations")
    assert "features inferred from dtypes" in val.stdout


def test_validate_bad_data_exits_nonzero_and_writes_nothing(tmp_path: Path) -> None:
    frame = base_frame()
    frame.loc[3, "sentiment"] = 4.0
    turns = tmp_path / "bad.csv"
    frame.to_csv(turns, index=False)
    proc = supportrl(tmp_path, "validate", f"data.turns={turns}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        f"error: {turns}, column 'sentiment', row(s) 3: values must be in [-1, 1], got 4"
        in proc.stderr
    )
    leftovers = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert leftovers == []


def test_validate_without_data_is_a_clear_error(tmp_path: Path) -> None:
    proc = supportrl(tmp_path, "validate")
    assert proc.returncode == 2 and "data.turns is required" in proc.stderr


def test_validate_bandit_feedback(tmp_path: Path) -> None:
    path = tmp_path / "bandit.csv"
    pd.DataFrame(
        {"item": [3, 1, 3], "click": [1, 0, 1], "ps": [0.2, 0.5, 0.2], "age": [1.0, 2.0, 3.0]}
    ).to_csv(path, index=False)
    proc = supportrl(
        tmp_path,
        "validate",
        "data=bandit",
        f"data.path={path}",
        "data.action_col=item",
        "data.reward_col=click",
        "data.propensity_col=ps",
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip().splitlines()[-1]
        == "valid: 3 decisions, 2 actions, 0 missing propensities"
    )


def test_unknown_command(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supportrl.experiments.cli", "fly"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown command 'fly'" in proc.stderr


def test_pipeline_small(tmp_path: Path) -> None:
    proc = supportrl(
        tmp_path,
        "pipeline",
        "generate.n_conversations=600",
        "train.total_steps=2000",
        "fit.true_value_conversations=500",
        "fit.simulated_conversations=500",
        "ope.n_refit=5",
        "logger.progress=false",
        "n_conversations=400",
        "loop.rounds=1",
        "loop.conversations=600",
        "loop.look_every=300",
        "loop.extend=300",
    )
    assert proc.returncode == 0, proc.stderr
    out = run_dir_of(proc)
    result = json.loads((out / "result.json").read_text())
    # the winner (or the best lower bound) is exported and deployed, its log valid schema v1
    assert Path(result["artifact"], "manifest.json").is_file()
    assert result["deploy"]["n_conversations"] == 400
    assert Path(result["deploy"]["log"]).is_dir()
    assert "deployed on-policy value" in proc.stdout
    # the OPE table carries its diagnostics: ESS, support, disagreement, flags
    assert "ESS per decision" in proc.stdout and "fqe - is" in proc.stdout
    assert "select:seq_dr" in proc.stdout
    result = json.loads((run_dir_of(proc) / "result.json").read_text())
    assert result["summary"]["conversations"] == 600
    assert set(result["policies"]) >= {"linucb", "rules_production"}
    assert result["winner"] is None or result["winner"] in result["policies"]
    for row in result["policies"].values():
        assert {"simulated_value", "true_value", "seq_dr", "wdr"} <= set(row)
    assert Path(result["simulator"], "simulator.json").exists()
    assert proc.stdout.strip().splitlines()[-1].startswith("pipeline: ")
    # the console output is in the run's log file too
    assert "[4/7] train linucb" in (out / "pipeline.log").read_text()
    assert (out / "forest.png").exists() and (out / "agents/linucb/metrics.csv").exists()
    # one improvement round (DESIGN 8b): shortlist, experiment against production, decision
    (round_1,) = result["rounds"]
    assert round_1["round"] == 1 and round_1["candidates"]
    assert "rules_production" not in round_1["candidates"]  # production is the control
    experiment = round_1["experiment"]
    assert experiment["decision"]["action"] in ("promote", "roll_back", "continue")
    assert set(experiment["arms"]) == {"rules_production", *round_1["candidates"]}
    # looked at after 300 conversations, again after 600 unless it decided, and after 900
    # only if undecided at 600 but expected to decide within loop.extend=300 more
    assert sum(a["n_conversations"] for a in experiment["arms"].values()) in (300, 600, 900)
    assert result["production"]["policy"] == round_1["production"]
    assert isinstance(result["production"]["true_value"], float)
    assert Path(result["production"]["experiment"], "experiment.json").is_file()
    assert "[round 1] experiment:" in proc.stdout and "decision:" in proc.stdout
    # per-round timings: the round's total in timings_s, its stages in its record
    assert result["timings_s"]["round1"] > 0
    assert {"truth", "serve", "analysis"} <= set(round_1["timings_s"])
    assert sum(round_1["timings_s"].values()) <= result["timings_s"]["round1"]
    assert sum(result["timings_s"].values()) <= result["wall_s"]  # stages do not overlap
