"""Sweeps (Hydra multirun, Ray Tune) and the report across runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t
from supportrl.experiments.summary import (
    Interval,
    RunRecord,
    aggregate,
    curve_band,
    flag_disagreement,
    select_winner,
)

from tests.helpers import result_of, supportrl

TINY_TRAIN = ("train.total_steps=400", "train.eval_conversations=200", "logger.progress=false")


# ---------------------------------------------------------------- selection and aggregation


def test_winner_is_the_highest_lower_bound_and_only_if_safe() -> None:
    cands = {
        "a": Interval(0.50, 0.10, 0.90),  # higher estimate, wide interval
        "b": Interval(0.40, 0.30, 0.50),  # the highest lower bound
    }
    sel = select_winner(cands, logging_value=0.2, estimator="seq_dr")
    assert sel.winner == "b" and "safe improvement" in sel.reason
    unsafe = select_winner(cands, logging_value=0.35, estimator="seq_dr")
    assert unsafe.winner is None and unsafe.best_lower_bound == "b"
    assert "no candidate is safely better than the logging policy" in unsafe.reason
    assert select_winner(cands, None).winner == "b"


def test_aggregate_means_and_t_intervals_over_seeds() -> None:
    values = {"x": [0.1, 0.3, 0.2], "y": [1.0, 2.0]}
    records = [
        RunRecord(
            path=f"{c}{i}",
            config=c,
            agent=c,
            overrides=[f"seed={i}"],
            seed=i,
            values={"true_value": v, "env_steps": 100},
        )  # fmt: skip
        for c, vs in values.items()
        for i, v in enumerate(vs)
    ]
    rows = {r["config"]: r for r in aggregate(records)}
    x = np.array(values["x"])
    half = student_t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    assert rows["x"]["n_runs"] == 3 and rows["x"]["seeds"] == [0, 1, 2]
    assert rows["x"]["true_value"] == pytest.approx(0.2)
    assert rows["x"]["true_value_seed_low"] == pytest.approx(0.2 - half)
    assert rows["x"]["true_value_seed_high"] == pytest.approx(0.2 + half)
    assert rows["y"]["true_value"] == pytest.approx(1.5) and rows["y"]["n_runs"] == 2


def test_disagreement_flag_and_curve_band() -> None:
    assert flag_disagreement({"simulated_value": 0.9, "ope_low": 0.1, "ope_high": 0.5})
    assert not flag_disagreement({"simulated_value": 0.3, "ope_low": 0.1, "ope_high": 0.5})
    a = {"env_steps": np.array([10.0, 20, 30]), "charts/episodic_return": np.array([0.0, 1, 2])}
    b = {"env_steps": np.array([10.0, 20]), "charts/episodic_return": np.array([2.0, 3])}
    steps, mean, low, high = curve_band([a, b])
    assert list(steps) == [10, 20] and list(mean) == [1, 2] and list(low) == [0, 1]
    assert list(high) == [2, 3]


# ---------------------------------------------------------------- report from fixture runs


def fake_pipeline_run(root: Path, config: str, seed: int, ope: float, sim: float) -> None:
    """A pipeline run as the command writes it: result.json, .hydra/overrides.yaml, metrics."""
    run = root / f"{config},seed={seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- {config}\n- seed={seed}\n- paths.output_dir=/somewhere\n"
    )
    metrics = run / "agents" / "linucb" / "metrics.csv"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        "env_steps,charts/episodic_return\n"
        + "".join(f"{s},{ope * s / 300}\n" for s in (100, 200, 300))
    )
    row = {"estimate": ope, "ci_low": ope - 0.1, "ci_high": ope + 0.1}
    result = {
        "agent": "linucb",
        "agents": {"linucb": {"env_steps": 300, "wall_s": 1.5, "metrics": str(metrics)}},
        "policies": {
            "linucb": {"simulated_value": sim, "true_value": ope - 0.05, "seq_dr": row},
            "rules_production": {
                "simulated_value": 0.1,
                "true_value": 0.1,
                "seq_dr": {"estimate": 0.1, "ci_low": 0.05, "ci_high": 0.15},
            },
        },
        "select": "seq_dr",
        "logging_value": {"estimate": 0.0, "ci_low": -0.01, "ci_high": 0.01},
    }
    (run / "result.json").write_text(json.dumps(result))


def test_report_from_fixture_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ope = {"agent.alpha=0.1": [0.30, 0.40, 0.35], "agent.alpha=2.0": [0.60, 0.50, 0.70]}
    for config, estimates in ope.items():
        for seed, est in enumerate(estimates):
            fake_pipeline_run(runs, config, seed, est, sim=est + (1.0 if "2.0" in config else 0))
    (runs / "junk").mkdir()
    (runs / "junk" / "result.json").write_text("{not json")  # an unfinished run: ignored
    proc = supportrl(tmp_path / "outputs", "report", f"dir={runs}")
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    rows = {r["config"]: r for r in result["rows"]}
    # labels keep the varying overrides; a baseline ignores the agent's, and counts once per seed
    assert set(rows) == {*ope, "rules_production"} and rows["rules_production"]["n_runs"] == 3
    best = rows["agent.alpha=2.0"]
    assert best["n_runs"] == 3 and best["ope_estimate"] == pytest.approx(0.6)
    assert best["ope_low"] == pytest.approx(0.5) and best["ope_high"] == pytest.approx(0.7)
    assert best["true_value"] == pytest.approx(0.55) and best["env_steps"] == 300
    assert best["simulated_value"] == pytest.approx(1.6) and best["disagrees"]
    assert not rows["agent.alpha=0.1"]["disagrees"]
    assert result["selection"]["winner"] == "agent.alpha=2.0" and best["winner"]
    html = Path(result["html"]).read_text()
    assert html.count("data:image/png;base64,") == 3  # curves, forest, agreement
    csv = Path(result["csv"]).read_text().splitlines()
    assert len(csv) == 1 + 3 and csv[0].startswith("config,agent,overrides,n_runs")
    assert "agent.alpha=2.0" in Path(result["md"]).read_text()
    assert proc.stdout.strip().splitlines()[-1].startswith("report: 3 configurations from 9 runs")


def test_report_says_when_no_candidate_is_safely_better(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for seed in range(2):
        fake_pipeline_run(runs, "agent.alpha=1.0", seed, -0.5, sim=-0.5)
    for path in runs.rglob("result.json"):
        result = json.loads(path.read_text())
        result["logging_value"]["estimate"] = 0.9  # the logging policy beats every candidate
        path.write_text(json.dumps(result))
    proc = supportrl(tmp_path / "outputs", "report", f"dir={runs}")
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc)["selection"]["winner"] is None
    assert "no candidate is safely better than the logging policy" in proc.stdout


def test_report_without_runs_is_a_clear_error(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "outputs", "report", f"dir={tmp_path}")
    assert proc.returncode == 2 and "no train, pipeline or evaluate runs" in proc.stderr


# ---------------------------------------------------------------- Hydra multirun + report


def test_multirun_basic_launcher_then_report(tmp_path: Path) -> None:
    proc = supportrl(
        tmp_path / "outputs", "train", "-m", "agent=linucb,lints", "seed=0,1", *TINY_TRAIN
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = sorted(p.parent for p in (tmp_path / "outputs").rglob("result.json"))
    names = {d.name.split(",train.")[0] for d in dirs}  # folders named by their overrides
    assert names == {"agent=linucb,seed=0", "agent=linucb,seed=1", "agent=lints,seed=0",
                     "agent=lints,seed=1"}  # fmt: skip
    finals = {d.name: json.loads((d / "result.json").read_text())["final_return"] for d in dirs}
    assert all((d / "train.log").read_text().strip() for d in dirs)  # console output saved
    sweep_dir = dirs[0].parent
    report = supportrl(tmp_path / "outputs", "report", f"dir={sweep_dir}")
    assert report.returncode == 0, report.stderr
    rows = {r["agent"]: r for r in result_of(report)["rows"]}
    assert rows["lints"]["n_runs"] == 2
    lints = [v for k, v in finals.items() if k.startswith("agent=lints")]
    assert rows["lints"]["true_value"] == pytest.approx(np.mean(lints))


# ---------------------------------------------------------------- Ray Tune


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_on_ray_tune_reports_failures_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "sweep"
    args = (
        "sweep",
        "agent=linucb,lints",
        "train.total_steps=400,0",  # 0: the trial fails (train.total_steps must be >= 1)
        *TINY_TRAIN[1:],
        "ray.num_cpus=2",
        f"hydra.run.dir={run}",
    )
    proc = supportrl(tmp_path / "outputs", *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    status = {" ".join(t["overrides"]): t["status"] for t in result["trials"]}
    assert sorted(status.values()) == ["completed", "completed", "failed", "failed"]
    assert result["skipped"] == 0 and result["failed"] == 2
    for trial in result["trials"]:
        if trial["status"] == "failed":
            assert "train.total_steps=0" in trial["overrides"]
            assert "train.total_steps must be >= 1" in trial["error"] and trial["result"] is None
        else:
            trial_dir = Path(trial["result"]).parent
            assert (trial_dir / ".hydra" / "config.yaml").exists()
            assert (trial_dir / "checkpoint").is_dir() and (trial_dir / "metrics.csv").exists()
    # a trial killed mid-way leaves no result.json (written atomically): simulate one
    done = [Path(t["result"]) for t in result["trials"] if t["status"] == "completed"]
    done[0].unlink()
    (done[0].parent / "partial.tmp").write_text("half")
    again = supportrl(tmp_path / "outputs", *args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((run / "result.json").read_text())
    by = {" ".join(t["overrides"]): t["status"] for t in resumed["trials"]}
    assert resumed["skipped"] == 1 and resumed["completed"] == 1 and resumed["failed"] == 2
    assert done[0].exists() and not (done[0].parent / "partial.tmp").exists()
    assert sorted(by.values()) == ["completed", "failed", "failed", "skipped"]
    report = supportrl(tmp_path / "outputs", "report", f"dir={run}")
    assert report.returncode == 0 and len(result_of(report)["rows"]) == 2
    shutil.rmtree(run / "tune", ignore_errors=True)


def test_sweep_rejects_a_misspelt_trial_key_before_starting_ray(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "outputs", "sweep", "agent=linucb,lints", "agent.alpah=1")
    assert proc.returncode == 2 and "unknown key agent.alpah" in proc.stderr
    assert not (tmp_path / "outputs").exists()
