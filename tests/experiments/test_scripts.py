"""The helpers in scripts/ run as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from supportrl.simulators.logs import load_conversations, load_decisions

from tests.helpers import REPO

ROOT = REPO
SCRIPTS = ROOT / "scripts"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300, **kw)


def test_make_demo_data_writes_valid_logs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "SUPPORTRL": str(Path(sys.executable).parent / "supportrl")}
    proc = run("bash", str(SCRIPTS / "make_demo_data.sh"), "300", str(out), "3", env=env)
    assert proc.returncode == 0, proc.stderr
    logs = load_conversations(out / "data/turns.parquet", customers=out / "data/customers.parquet")
    assert logs.n_conversations == 300
    assert json.loads((out / "validate/result.json").read_text())["summary"]["conversations"] == 300


def test_convert_obd_keeps_every_row_and_loads_as_bandit_feedback(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 500
    obd = pd.DataFrame(
        {
            "timestamp": pd.date_range("2019-11-24", periods=n, freq="s").astype(str),
            "item_id": rng.integers(0, 5, n),
            "position": rng.integers(1, 4, n),
            "click": rng.integers(0, 2, n),
            "propensity_score": np.full(n, 0.2),
            "user_feature_0": rng.choice(["a", "b"], n),
        }
    )
    source, target = tmp_path / "all.csv", tmp_path / "obd.csv"
    obd.to_csv(source)  # with its saved index, as the dataset ships
    proc = run(sys.executable, str(SCRIPTS / "convert_obd.py"), str(source), str(target))
    assert proc.returncode == 0, proc.stderr
    logs = load_decisions(target)
    assert logs.n_rounds == n
    assert sorted(logs.actions) == sorted(f"item_{i}" for i in np.unique(obd["item_id"]))
    np.testing.assert_allclose(logs.reward, obd["click"].to_numpy())

    bad = tmp_path / "bad.csv"
    obd.drop(columns=["click"]).to_csv(bad)
    proc = run(sys.executable, str(SCRIPTS / "convert_obd.py"), str(bad), str(tmp_path / "x.csv"))
    assert proc.returncode == 2 and "missing columns ['click']" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def test_plot_runs_overlays_metrics(tmp_path: Path) -> None:
    runs = []
    for name, agent in (("a", "linucb"), ("b", "lints")):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "metrics.csv").write_text(
            "env_steps,charts/episodic_return\n1000,0.1\n2000,0.2\n"
        )
        (run_dir / "result.json").write_text(json.dumps({"agent": agent}))
        runs.append(str(run_dir))
    out = tmp_path / "curves.png"
    proc = run(sys.executable, str(SCRIPTS / "plot_runs.py"), *runs, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = run(sys.executable, str(SCRIPTS / "plot_runs.py"), str(tmp_path), "--out", str(out))
    assert proc.returncode == 2 and "no metrics.csv" in proc.stderr
