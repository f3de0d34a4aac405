"""The pipeline command at several log sizes: wall time, peak RSS and a per-stage table.

    python -m benchmarks.bench_pipeline [--conversations 25000 100000 400000] [-- OVERRIDES]

Each size is one ``supportrl pipeline generate.n_conversations=N`` in a fresh process
(default config otherwise; extra Hydra overrides after ``--``), in a temporary output
directory. Per size it prints the wall time, the peak resident memory of that process
(``wait4``'s ``ru_maxrss``: the process and any children it waited for) and the stage
times the pipeline records in ``result.json`` (``timings_s``). Anchors measured in the
same run: the first size's figures (how each grows with the logs: linear scaling means
a time ratio equal to the size ratio) and the peak RSS of a process that only imports
what the pipeline imports (the fixed cost under every figure).
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

STAGES = ("generate", "validate", "fit", "train", "evaluate", "select", "truth", "ship")
"""The pipeline's stages in order, as named in ``result.json``'s ``timings_s``."""


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; (wall seconds, peak RSS in MiB, stdout). Raises on a non-zero exit."""
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
    return wall, usage.ru_maxrss / 1024, stdout  # Linux: ru_maxrss in KiB


def pipeline_run(n: int, overrides: list[str], root: Path) -> dict[str, object]:
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
    wall, rss, stdout = run_measured(cmd)
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[25_000, 100_000, 400_000])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    args = parser.parse_args()

    imports = "import supportrl.experiments.pipeline, torch, pandas, pyarrow, scipy"
    _, base_rss, _ = run_measured([sys.executable, "-c", imports])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.conversations:
            rows.append(pipeline_run(n, list(args.overrides), Path(tmp)))
            print(f"done {n}: {rows[-1]['wall']:.1f} s", file=sys.stderr, flush=True)

    first = rows[0]
    print(
        f"pipeline, default config{' + ' + ' '.join(args.overrides) if args.overrides else ''}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = f"{'conversations':>14}{'turns':>11}{'wall s':>9}{'x first':>9}{'peak MiB':>10}{'x first':>9}"
    print(header)
    for row in rows:
        print(
            f"{row['n']:>14,}{row['turns']:>11,}{row['wall']:>9.1f}"
            f"{row['wall'] / first['wall']:>8.2f}x{row['rss']:>10,.0f}"
            f"{row['rss'] / first['rss']:>8.2f}x"
        )
    print(f"anchor: a process importing the pipeline's modules peaks at {base_rss:,.0f} MiB")
    print()
    names = [s for s in STAGES if any(s in r["timings"] for r in rows)]
    names += sorted({k for r in rows for k in r["timings"]} - set(names))
    print(f"{'stage (s)':<12}" + "".join(f"{r['n']:>12,}" for r in rows))
    for name in names:
        cells = "".join(
            f"{r['timings'][name]:>12.1f}" if name in r["timings"] else f"{'-':>12}" for r in rows
        )
        print(f"{name:<12}{cells}")
    other = "".join(f"{r['wall'] - sum(r['timings'].values()):>12.1f}" for r in rows)
    print(f"{'other':<12}{other}   (start-up, imports, report: wall minus the stages)")


if __name__ == "__main__":
    main()
