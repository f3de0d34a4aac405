"""Sweeps: Hydra's basic launcher vs Ray Tune on one machine, and ``report`` over many runs.

1. The same 12-trial search space (4 bandits x 3 seeds, ``--steps`` env steps each, the
   synthetic world) run as ``supportrl train -m ...`` (Hydra's basic launcher, the anchor:
   one process, trials one after another) and as ``supportrl sweep ...`` (Ray Tune: local
   Ray started once, ``--cpus`` CPUs for Ray, 1 per trial, each trial run inside a reused
   Ray worker); with ``--isolate`` also ``sweep.isolate=true`` (a fresh process per trial,
   the sweep's former only mode). Prints the wall times, their ratio, and Tune's overhead
   per trial (extra wall seconds per trial over the basic launcher).
2. ``report`` over ``--runs`` fixture pipeline runs (4 seeds per configuration): our
   ``collect + write_report`` (table, CSV, markdown, HTML with figures) against the anchor,
   reading the same ``result.json`` files in a plain loop.

    python benchmarks/bench_sweep.py [--steps 5000] [--runs 1000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AGENTS = "linucb,lints,epsilon_greedy,ucb1"
SEEDS = "0,1,2"


def supportrl(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "supportrl.experiments.cli", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc


def tune_sweep(tmp: Path, name: str, trial: list[str], cpus: int, *extra: str) -> float:
    wall, _ = supportrl(
        "sweep",
        f"agent={AGENTS}",
        f"seed={SEEDS}",
        *trial,
        *extra,
        f"ray.num_cpus={cpus}",
        f"hydra.run.dir={tmp}/{name}",
        f"paths.output_dir={tmp}",
    )
    result = json.loads((tmp / name / "result.json").read_text())
    assert result["completed"] == 12, result
    return wall


def sweeps(tmp: Path, steps: int, cpus: int, isolate: bool) -> None:
    trial = [f"train.total_steps={steps}", "train.eval_conversations=5000"]
    basic_s, _ = supportrl(
        "train", "-m", f"agent={AGENTS}", f"seed={SEEDS}", *trial, f"paths.output_dir={tmp}/basic"
    )
    rows = [("Hydra basic launcher (anchor)", basic_s)]
    rows.append(("Ray Tune, trials in workers", tune_sweep(tmp, "tune", trial, cpus)))
    if isolate:
        wall = tune_sweep(tmp, "isolated", trial, cpus, "sweep.isolate=true")
        rows.append(("Ray Tune, a process per trial", wall))
    n = 12
    print(f"12-trial sweep (4 bandits x 3 seeds, {steps} env steps each), {cpus} CPUs for Ray")
    print(f"{'launcher':<34}{'wall s':>9}{'per trial s':>13}{'/ basic':>9}{'overhead/trial s':>18}")
    for label, wall in rows:
        extra = (wall - basic_s) / n
        print(f"{label:<34}{wall:>9.1f}{wall / n:>13.2f}{wall / basic_s:>9.2f}{extra:>+18.2f}")


def fixture_runs(root: Path, n: int) -> None:
    """``n`` pipeline runs as the command writes them, 4 seeds per configuration."""
    for i in range(n):
        config, seed = f"agent.alpha={i // 4}", i % 4
        run = root / f"{config},seed={seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- {config}\n- seed={seed}\n")
        metrics = run / "agents" / "linucb" / "metrics.csv"
        metrics.parent.mkdir(parents=True)
        rows = "".join(f"{s},{0.001 * s * (1 + seed)}\n" for s in range(256, 20_001, 256))
        metrics.write_text("env_steps,charts/episodic_return\n" + rows)
        est = 0.1 + 0.01 * (i % 13)
        ope = {"estimate": est, "ci_low": est - 0.1, "ci_high": est + 0.1}
        result = {
            "agent": "linucb",
            "agents": {"linucb": {"env_steps": 20_000, "wall_s": 2.0, "metrics": str(metrics)}},
            "policies": {"linucb": {"simulated_value": est, "true_value": est, "seq_dr": ope}},
            "select": "seq_dr",
            "logging_value": {"estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0},
        }
        (run / "result.json").write_text(json.dumps(result))


def report_time(tmp: Path, n: int) -> None:
    from supportrl.experiments.report import collect, write_report

    root = tmp / "runs"
    fixture_runs(root, n)
    start = time.perf_counter()
    loaded = [json.loads(p.read_text()) for p in sorted(root.rglob("result.json"))]
    anchor = time.perf_counter() - start
    start = time.perf_counter()
    records = collect(root, "seq_dr")
    out = tmp / "report"
    out.mkdir()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        payload = write_report(out, records, select="seq_dr", title="bench")
    ours = time.perf_counter() - start
    assert len(loaded) == n and len(payload["rows"]) == n // 4
    print(f"\nreport over {n} fixture runs ({n // 4} configurations x 4 seeds, 78-point curves)")
    print(f"{'':<46}{'s':>8}")
    print(f"{'read every result.json in a loop (anchor)':<46}{anchor:>8.2f}")
    print(f"{'supportrl report (table, CSV, MD, HTML, figures)':<46}{ours:>8.2f}")
    print(f"ratio: {ours / anchor:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--skip-sweeps", action="store_true")
    parser.add_argument("--isolate", action="store_true", help="also time sweep.isolate=true")
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_sweeps:
            sweeps(Path(tmp), args.steps, args.cpus, args.isolate)
        if not args.skip_report:
            report_time(Path(tmp), args.runs)


if __name__ == "__main__":
    main()
