"""``supportrl sweep`` as a search: the sweep grammar mapped to Tune, searchers, schedulers,
the best trial; tracking (TensorBoard, MLflow) read back."""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from supportrl.experiments.errors import UserError
from supportrl.experiments.sweep import best_trial, trial_metrics
from supportrl.experiments.sweep_space import Axis, SweepSettings, check_args, grid, parse_space

from tests.helpers import REPO, result_of, run_dir_of, supportrl

TINY = (
    "train.total_steps=1500",
    "train.conversations_per_round=64",
    "train.eval_conversations=2000",
)


# ---------------------------------------------------------------- the search space


def test_sweep_grammar_becomes_axes_and_tune_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    fixed, axes = parse_space(
        [
            "train.total_steps=100",
            "agent=linucb,lints",
            "seed=range(0,3)",
            "agent.alpha=interval(0.1,1.0)",
            "agent.ridge=tag(log,interval(0.01,10))",
            "train.conversations_per_round=tag(int,interval(16,64))",
        ]
    )
    assert fixed == ["train.total_steps=100"]
    by = {a.key: a for a in axes}
    assert by["agent"].values == ("linucb", "lints") and by["agent"].kind == "choice"
    assert by["seed"].values == ("0", "1", "2") and by["seed"].kind == "range"
    alpha, ridge, rounds = by["agent.alpha"], by["agent.ridge"], by["train.conversations_per_round"]
    assert (alpha.low, alpha.high, alpha.log, alpha.integer) == (0.1, 1.0, False, False)
    assert ridge.log and rounds.integer
    assert isinstance(by["agent"].tune_domain(), Categorical)
    seed = by["seed"].tune_domain()
    assert isinstance(seed, Integer) and (seed.lower, seed.upper) == (0, 3)  # Tune: upper excluded
    assert isinstance(alpha.tune_domain(), Float) and alpha.tune_domain().lower == 0.1
    assert "LogUniform" in type(ridge.tune_domain().sampler).__name__
    assert isinstance(rounds.tune_domain(), Integer) and rounds.tune_domain().upper == 65
    # checked before Ray starts: each choice once, an interval by its ends
    assert "agent.alpha=0.1,1.0" in check_args(fixed, axes)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("agent.alpha=interval(1.0,0.1)", "an interval needs low < high"),
        ("agent.alpha=tag(log,interval(0,1))", "a log interval needs low > 0"),
        ("agent.alpha=interval(0.1", "cannot parse the overrides"),
        ("train.total_steps=tag(int,interval(1.5,9))", "whole-number ends"),
    ],
)
def test_bad_search_spaces_are_user_errors(arg: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_space([arg])


def test_grid_draws_intervals_per_trial_from_the_seed() -> None:
    fixed, axes = parse_space(["agent=linucb,lints", "agent.alpha=tag(log,interval(0.01,10))"])
    trials = grid(fixed, axes, num_samples=3, seed=0)
    assert len(trials) == 6 and trials == grid(fixed, axes, num_samples=3, seed=0)
    alphas = [float(t[1].split("=")[1]) for t in trials]
    assert len(set(alphas)) == 6 and all(0.01 <= a <= 10 for a in alphas)
    assert [t[0] for t in trials[:2]] == ["agent=linucb", "agent=lints"]
    assert grid(fixed, axes, num_samples=1, seed=1) != grid(fixed, axes, num_samples=1, seed=0)
    integer = Axis("k", low=1, high=3, integer=True, kind="interval")
    rng = np.random.default_rng(0)
    assert {integer.draw(rng) for _ in range(50)} == {"1", "2", "3"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"searcher": "hyperopt"}, "sweep.searcher='hyperopt'"),
        ({"scheduler": "pbt"}, "sweep.scheduler='pbt'"),
        ({"searcher": "optuna", "metric": "retrun"}, "`train` trials report"),
        ({"searcher": "optuna", "command": "fit"}, "no metric"),
        ({"scheduler": "asha", "isolate": True}, "sweep.isolate=false"),
        ({"num_samples": 0}, "num_samples must be >= 1"),
    ],
)
def test_sweep_settings_name_the_wrong_key(kwargs: dict, message: str) -> None:
    import yaml

    grid_yaml = REPO / "configs" / "sweep" / "grid.yaml"
    defaults = yaml.safe_load(grid_yaml.read_text())
    defaults.update(defaults.pop("asha"))
    SweepSettings(**defaults)  # the shipped defaults are valid
    with pytest.raises(UserError, match=message):
        SweepSettings(**{**defaults, **kwargs})


def test_trial_metrics_and_best_trial() -> None:
    train = {"final_return": 0.3, "cumulative_regret": 12.0}
    assert trial_metrics("train", train) == {"return": 0.3, "regret": 12.0}
    pipeline = {
        "agent": "linucb",
        "select": "seq_dr",
        "best_known_value": 0.5,
        "policies": {"linucb": {"true_value": 0.2, "seq_dr": {"estimate": 0.25}}},
    }
    got = trial_metrics("pipeline", pipeline)
    assert got == pytest.approx({"return": 0.2, "ope_value": 0.25, "regret": 0.3})
    evaluate = {"select": "dr", "policies": {"rules_a": {"dr": {"estimate": 0.1}}}}
    assert trial_metrics("evaluate", evaluate) == {"ope_value": 0.1}
    rows = [
        {"overrides": ["a=1"], "status": "completed", "result": "r1", "metrics": {"return": 0.1}},
        {"overrides": ["a=2"], "status": "stopped", "result": None, "metrics": {"return": 0.9}},
        {"overrides": ["a=3"], "status": "skipped", "result": "r3", "metrics": {"return": 0.4}},
        {"overrides": ["a=4"], "status": "failed", "result": None, "metrics": {}},
    ]
    best = best_trial(rows, "return", "max")
    assert best["overrides"] == ["a=3"] and best["value"] == 0.4 and best["metric"] == "return"
    assert best_trial(rows, "return", "min")["overrides"] == ["a=1"]
    assert best_trial(rows, "regret", "max") is None


def test_sweep_rejects_a_bad_interval_before_starting_ray(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "outputs", "sweep", "agent.alpha=interval(1.0,0.1)")
    assert proc.returncode == 2 and "an interval needs low < high" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "outputs").exists()
    bad = supportrl(tmp_path / "outputs", "sweep", "agent.alpha=interval(0.1,1)", "agent.alpah=1")
    assert bad.returncode == 2 and "unknown key agent.alpah" in bad.stderr


# ---------------------------------------------------------------- tracking read back


def _scalars(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_writes_tensorboard_scalars_hparams_and_an_mlflow_run(tmp_path: Path) -> None:
    import mlflow

    outputs = tmp_path / "outputs"
    proc = supportrl(outputs, "train", "logger=mlflow", "agent.alpha=0.3", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = result_of(proc)
    run = Path(result["checkpoint"]).parent
    scalars = _scalars(run)
    curve = np.loadtxt(run / "metrics.csv", delimiter=",", skiprows=1)
    assert scalars["charts/episodic_return"] == pytest.approx(curve[:, 1], abs=1e-5)
    hparams = _scalars(run / "hparams")  # TensorBoard's HParams tab: config beside results
    assert hparams["hparam/final_return"] == [pytest.approx(result["final_return"], abs=1e-6)]
    client = mlflow.MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    logged = client.get_run(result["mlflow_run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params["agent.alpha"] == "0.3" and logged.data.params["seed"] == "0"
    assert logged.data.metrics["final_return"] == pytest.approx(result["final_return"])
    history = client.get_metric_history(logged.info.run_id, "charts/episodic_return")
    assert [m.value for m in history] == pytest.approx(curve[:, 1], abs=1e-5)
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"metrics.csv", "learning_curve.png", "checkpoint"} <= artifacts


# ---------------------------------------------------------------- on Ray Tune


@pytest.mark.slow
@pytest.mark.ray
def test_optuna_with_asha_beats_the_grid_median_and_names_the_best(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    alphas = "0.01,0.1,1,10,30"
    grid_run = supportrl(
        outputs, "sweep", f"agent.alpha={alphas}", *TINY, "ray.num_cpus=2",
        f"hydra.run.dir={tmp_path / 'grid'}", timeout=900,
    )  # fmt: skip
    assert grid_run.returncode == 0, grid_run.stderr[-3000:]
    grid_result = json.loads((tmp_path / "grid" / "result.json").read_text())
    median = statistics.median(t["metrics"]["return"] for t in grid_result["trials"])
    searched = supportrl(
        outputs, "sweep", "sweep=optuna_asha", "agent.alpha=tag(log,interval(0.01,30))",
        "sweep.num_samples=6", "sweep.asha.grace_period=6", *TINY, "ray.num_cpus=2",
        "logger=mlflow", f"hydra.run.dir={tmp_path / 'optuna'}", timeout=900,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    result = json.loads((tmp_path / "optuna" / "result.json").read_text())
    assert result["searcher"] == "optuna" and result["scheduler"] == "asha"
    assert len(result["trials"]) == 6 and result["completed"] >= 1
    best = result["best"]
    assert best["metric"] == "return" and best["value"] > median, (best, median)
    completed = [t for t in result["trials"] if t["status"] == "completed"]
    top = max(completed, key=lambda t: t["metrics"]["return"])
    assert best["overrides"] == top["overrides"]
    assert json.loads(Path(top["result"]).read_text())["final_return"] == best["value"]
    assert "best by return (max)" in searched.stdout
    # every trial reported its iterations to Tune, and Tune's callback logged them to MLflow
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("supportrl")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 6
    assert all("return" in r.data.metrics and "agent.alpha" in r.data.params for r in runs)
    history = client.get_metric_history(runs[0].info.run_id, "return")
    assert len(history) >= 2  # per-iteration reports, not only the final value


@pytest.mark.slow
@pytest.mark.ray
def test_ctrl_c_exits_130_and_the_sweep_resumes(tmp_path: Path) -> None:
    run = tmp_path / "sweep"
    args = [
        "sweep", "agent=linucb,lints,ucb1,epsilon_greedy", "seed=0,1", *TINY,
        "ray.num_cpus=1", f"hydra.run.dir={run}", f"paths.output_dir={tmp_path / 'outputs'}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportrl.experiments.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    start = time.monotonic()
    while not list(run.glob("trials/*/result.json")) and time.monotonic() < start + 300:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, f"stdout: {out[-1000:]}\nstderr: {err[-1000:]}"
    assert "interrupted" in err and not (run / "result.json").exists()
    done = len(list(run.glob("trials/*/result.json")))
    assert 1 <= done < 8
    again = subprocess.run(
        [sys.executable, "-m", "supportrl.experiments.cli", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    assert result["skipped"] == done and result["completed"] == 8 - done
    assert result["best"] is not None


def test_evaluate_writes_tensorboard_hparams_and_an_mlflow_run(tmp_path: Path) -> None:
    import mlflow

    outputs = tmp_path / "outputs"
    gen = supportrl(outputs, "generate", "generate.n_conversations=300", "generate.format=csv")
    assert gen.returncode == 0, gen.stderr[-2000:]
    data = result_of(gen)
    turns = data["turns"]
    proc = supportrl(
        outputs, "evaluate", f"data.turns={turns}", f"data.customers={data['customers']}",
        "logger=mlflow",
        "ope.n_refit=2", "policies=[configs/rules/rules_production.yaml]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = result_of(proc)
    run = run_dir_of(proc)
    seq_dr = result["policies"]["rules_production"]["seq_dr"]
    assert _scalars(run)["rules_production/seq_dr"] == [pytest.approx(seq_dr["estimate"])]
    hparams = _scalars(run / "hparams")
    assert hparams["hparam/rules_production/seq_dr/ci_low"] == [pytest.approx(seq_dr["ci_low"])]
    client = mlflow.MlflowClient(f"sqlite:///{outputs / 'mlflow.db'}")
    logged = client.get_run(result["mlflow_run_id"])
    assert logged.data.metrics["rules_production/seq_dr"] == pytest.approx(seq_dr["estimate"])
    assert logged.data.params["data.turns"] == str(turns)
    assert {"estimates.csv", "forest.png"} <= {
        a.path for a in client.list_artifacts(logged.info.run_id)
    }


def test_a_report_without_ope_names_the_best_by_a_stated_value() -> None:
    from supportrl.experiments.report import best_without_ope

    rows = [
        {"config": "agent=linucb", "true_value": 0.1, "n_runs": 3},
        {"config": "agent=lints", "true_value": 0.3, "n_runs": 3},
    ]
    best = best_without_ope(rows)
    assert best.winner == "agent=lints"
    assert "best by true value (mean over 3 seeds): agent=lints (+0.3000)" in best.reason
    sim = best_without_ope([{"config": "a", "simulated_value": 0.2, "n_runs": 1}])
    assert sim.winner == "a" and "simulated value (mean over 1 seed)" in sim.reason
    assert best_without_ope([{"config": "a"}]).winner is None
