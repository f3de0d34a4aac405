"""The pipeline command at several log sizes: wall time, peak RSS and a per-stage table.

    python -m benchmarks.bench_pipeline [--conversations 100000] [--rounds-only] [-- OVERRIDES]

Each size is one ``supportrl pipeline generate.n_conversations=N`` in a fresh process
(default config otherwise, so ``loop.rounds`` improvement rounds included; extra Hydra
overrides after ``--``), in a temporary output directory. Per size it prints the wall
time, the peak resident memory of that process (``wait4``'s ``ru_maxrss``: the process and
any children it waited for) and the stage times the pipeline records in ``result.json``
(``timings_s``: the first pass's stages and ``round1`` .. ``roundR``), then each round's
own stages (``rounds[k].timings_s``: fit, train, evaluate on the pooled logs; truth,
export, serve, analysis of the experiment). Anchors measured in the same run: the same
command with ``loop.rounds=0`` (the first pass alone: what the rounds add), the first
size's figures (how each grows with the logs) and the peak RSS of a process that only
imports what the pipeline imports (the fixed cost under every figure).
``--rounds-only`` skips the first-pass anchor. ``--one-process`` adds, per size, the same
command with ``ope.workers=0 fit.workers=0`` (every fit in the command's process: the anchor
of the worker processes, issue 23): its wall and CPU seconds and stages beside ours, and
whether every number of ``result.json`` (timings aside) is the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = ("generate", "validate", "fit", "train", "evaluate", "select", "truth", "ship")
"""The pipeline's stages in order, as named in ``result.json``'s ``timings_s``."""


def run_measured(cmd: list[str]) -> tuple[float, float, str, float]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB, stdout, CPU seconds of the process and
    the children it waited for, worker processes included). Raises on a non-zero exit."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024, stdout, cpu  # Linux: ru_maxrss in KiB


ROUND_STAGES = (
    "fit",
    "train",
    "evaluate",
    "truth",
    "export",
    "serve",
    "analysis",
    "read_log",
    "pool",
)
"""A round's stages in order, as named in its record's ``timings_s``."""


def pipeline_run(n: int, overrides: list[str], root: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "pipeline",
        f"generate.n_conversations={n}",
        "logger.progress=false",
        f"paths.output_dir={root / str(n)}",
        *overrides,
    ]
    wall, rss, stdout, cpu = run_measured(cmd)
    run_dir = next(
        line.removeprefix("run_dir: ")
        for line in stdout.splitlines()
        if line.startswith("run_dir: ")
    )
    result = json.loads((Path(run_dir) / "result.json").read_text())
    return {
        "n": n,
        "turns": result["summary"]["turns"],
        "wall": wall,
        "rss": rss,
        "timings": result["timings_s"],
        "rounds": [r.get("timings_s", {}) for r in result.get("rounds", [])],
        "cpu": cpu,
        "numbers": numbers_of(result),
    }


TIMING_KEYS = ("timings_s", "wall_s", "sps")
"""result.json keys that hold seconds (they differ from run to run)."""


def numbers_of(result: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of ``result`` by its path, timings and run-directory paths left out."""
    if isinstance(result, dict):
        out: dict[str, Any] = {}
        for key, value in result.items():
            if key not in TIMING_KEYS:
                out.update(numbers_of(value, f"{path}/{key}"))
        return out
    if isinstance(result, list):
        out = {}
        for k, value in enumerate(result):
            out.update(numbers_of(value, f"{path}[{k}]"))
        return out
    if isinstance(result, str) and "/" in result:
        return {}  # a path under this run's temporary directory
    return {path: result}


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Paths whose values differ (NaN equals NaN), or that only one side has."""
    same = [k for k in a.keys() & b.keys() if a[k] == b[k] or (a[k] != a[k] and b[k] != b[k])]
    return sorted((a.keys() | b.keys()) - set(same))


def stage_table(rows: list[dict[str, Any]], labels: list[str]) -> None:
    """Stage seconds, one column per run; ``other``: wall minus the stages."""
    names = [s for s in STAGES if any(s in r["timings"] for r in rows)]
    names += sorted({k for r in rows for k in r["timings"]} - set(names))
    print(f"{'stage (s)':<12}" + "".join(f"{label:>16}" for label in labels))
    for name in names:
        cells = "".join(
            f"{r['timings'][name]:>16.1f}" if name in r["timings"] else f"{'-':>16}" for r in rows
        )
        print(f"{name:<12}{cells}")
    other = "".join(f"{r['wall'] - sum(r['timings'].values()):>16.1f}" for r in rows)
    print(f"{'other':<12}{other}   (start-up, imports, report: wall minus the stages)")


def round_table(row: dict[str, Any], label: str = "") -> None:
    """One run's rounds: each round's stages (seconds)."""
    rounds = row["rounds"]
    if not rounds:
        return
    print(
        f"\nrounds of the {row['n']:,}-conversation run{label} (s; round 1 reuses the first pass)"
    )
    names = [s for s in ROUND_STAGES if any(s in r for r in rounds)]
    names += sorted({k for r in rounds for k in r} - set(names))
    print(f"{'stage':<12}" + "".join(f"{'round ' + str(k + 1):>10}" for k in range(len(rounds))))
    for name in names:
        cells = (f"{r[name]:>10.1f}" if name in r else f"{'-':>10}" for r in rounds)
        print(f"{name:<12}" + "".join(cells))
    totals = [row["timings"].get(f"round{k + 1}", float("nan")) for k in range(len(rounds))]
    print(f"{'total':<12}" + "".join(f"{t:>10.1f}" for t in totals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--rounds-only", action="store_true", help="skip the loop.rounds=0 anchor runs"
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="also run with ope.workers=0 fit.workers=0 (the anchor of the worker processes)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_args()

    imports = "import supportrl.experiments.pipeline, torch, pandas, pyarrow, scipy"
    base_rss = run_measured([sys.executable, "-c", imports])[1]
    rows, anchors, single = [], [], []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.conversations:
            rows.append(pipeline_run(n, list(args.overrides), Path(tmp) / "rounds"))
            print(f"done {n}: {rows[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
            loads.append(os.getloadavg()[0])
            if args.one_process:
                plain = [*args.overrides, "ope.workers=0", "fit.workers=0"]
                single.append(pipeline_run(n, plain, Path(tmp) / "one"))
                print(f"done {n}, one process: {single[-1]['wall']:.1f} s", file=sys.stderr)
                loads.append(os.getloadavg()[0])
            if not args.rounds_only:
                first_pass = [*args.overrides, "loop.rounds=0"]
                anchors.append(pipeline_run(n, first_pass, Path(tmp) / "first"))
                print(f"done {n}, first pass: {anchors[-1]['wall']:.1f} s", file=sys.stderr)
                loads.append(os.getloadavg()[0])

    first = rows[0]
    print(
        f"pipeline, default config{' + ' + ' '.join(args.overrides) if args.overrides else ''}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average (1 min) {min(loads):.2f}-{max(loads):.2f} during the runs"
    )
    header = f"{'conversations':>14}{'turns':>11}{'wall s':>9}{'x first':>9}{'peak MiB':>10}{'x first':>9}"
    header += f"{'anchor: first pass s':>22}{'rounds add':>12}"
    print(header)
    for k, row in enumerate(rows):
        anchor = anchors[k]["wall"] if anchors else float("nan")
        print(
            f"{row['n']:>14,}{row['turns']:>11,}{row['wall']:>9.1f}"
            f"{row['wall'] / first['wall']:>8.2f}x{row['rss']:>10,.0f}"
            f"{row['rss'] / first['rss']:>8.2f}x{anchor:>22.1f}{row['wall'] - anchor:>12.1f}"
        )
    print(f"anchor: a process importing the pipeline's modules peaks at {base_rss:,.0f} MiB")
    for row, plain in zip(rows, single, strict=False):
        diff = differing(row["numbers"], plain["numbers"])
        print(
            f"{row['n']:,}: wall {row['wall']:.1f} s, CPU {row['cpu']:.1f} s with workers; "
            f"anchor, every fit in one process: wall {plain['wall']:.1f} s, CPU {plain['cpu']:.1f} s; "
            f"result.json: {len(row['numbers'])} numbers, "
            + ("all the same" if not diff else f"{len(diff)} differ: {diff[:5]}")
        )
    print()
    runs, labels = [], []
    for k, row in enumerate(rows):
        runs.append(row)
        labels.append(f"{row['n']:,}")
        if single:
            runs.append(single[k])
            labels.append(f"{row['n']:,} 1 proc")
        if anchors:
            runs.append(anchors[k])
            labels.append(f"{row['n']:,} 1st pass")
    stage_table(runs, labels)
    for row in rows:
        round_table(row)
    for row in single:
        round_table(row, " with every fit in one process")


if __name__ == "__main__":
    main()
