"""What the pipeline prints and reports about OPE: warnings beside the numbers, and the
report choosing on the same (selection) interval as the pipeline."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from supportrl.experiments.report import records_of, write_report

from tests.helpers import result_of, run_dir_of, supportrl

SMALL = (
    "generate.n_conversations=400",
    "train.total_steps=800",
    "fit.true_value_conversations=400",
    "fit.simulated_conversations=400",
    "ope.n_refit=6",
    "ope.conversation_estimators=[pdis,seq_dr,fqe]",
    "ope.decision_estimators=[]",
    "logger.progress=false",
    "loop.rounds=0",
)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    proc = supportrl(tmp_path_factory.mktemp("pipe") / "outputs", "pipeline", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, result_of(proc), run_dir_of(proc)


def test_pipeline_prints_ess_support_and_weight_warnings(small_run) -> None:
    proc, result, _ = small_run
    out = proc.stdout
    # the per-policy diagnostics and warnings of `evaluate`, in the pipeline's output
    for name in result["policies"]:
        assert f"{name}: ESS per decision" in out
    assert "warning: effective sample size of the conversation weights" in out
    assert "of its mass unrepresented" in out and "fqe - is" in out
    # flags in the table itself, next to the estimates they qualify
    assert "low ESS" in out
    # the selection interval is what the final table prints
    for name, row in result["policies"].items():
        sel = row["selection"]
        assert f"[{sel['ci_low']:+.3f}, {sel['ci_high']:+.3f}]" in out, name


def test_report_reads_the_selection_interval_and_picks_the_pipelines_winner(small_run) -> None:
    _, result, run = small_run
    with (run / "report.csv").open() as f:
        rows = {r["agent"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(result["policies"])
    for name, row in result["policies"].items():
        assert float(rows[name]["ope_low"]) == pytest.approx(row["selection"]["ci_low"])
        assert float(rows[name]["ope_high"]) == pytest.approx(row["selection"]["ci_high"])
    chosen = [name for name, r in rows.items() if r["winner"] == "True"]
    assert chosen == ([result["winner"]] if result["winner"] else [])


def _payload(selection: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """A pipeline result.json: seq_dr intervals rank ``a`` first, selection intervals ``b``."""
    seq_dr = {"a": (0.30, 0.50), "b": (0.10, 0.20)}
    return {
        "agent": "a",
        "agents": {"a": {"env_steps": 10, "wall_s": 1.0, "metrics": "missing.csv"}},
        "logging_value": {"estimate": 0.0},
        "policies": {
            k: {
                "simulated_value": 0.2,
                "seq_dr": {"estimate": 0.4 - 0.25 * (k == "b"), "ci_low": lo, "ci_high": hi},
                "selection": {
                    "estimate": 0.4 - 0.25 * (k == "b"),
                    "ci_low": selection[k][0],
                    "ci_high": selection[k][1],
                },
            }
            for k, (lo, hi) in seq_dr.items()
        },
    }


def test_report_winner_is_chosen_on_the_selection_interval(tmp_path: Path) -> None:
    """``a`` is unsupported: its seq_dr interval is narrow, its selection interval wide. The
    pipeline picks ``b``; a report reading seq_dr would pick ``a``."""
    payload = _payload({"a": (-1.2, 0.8), "b": (0.10, 0.20)})
    records = records_of(tmp_path, payload, "seq_dr")
    for rec in records:
        rec.config = rec.agent
    report = write_report(tmp_path, records, select="seq_dr", title="t")
    assert report["selection"]["winner"] == "b"
    lows = {r["agent"]: r["ope_low"] for r in report["rows"]}
    assert lows == {"a": -1.2, "b": 0.10}
