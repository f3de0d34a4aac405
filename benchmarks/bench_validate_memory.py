"""Peak memory of ``validate`` on large Parquet logs; anchor: a bare ``pyarrow`` read.

    python -m benchmarks.bench_validate_memory [--million-rows 5] [--budget-mb 512]

Writes ``--million-rows`` million turn rows as Parquet parts (generated conversations,
tiled with fresh ids), then measures in fresh processes, one after another: the bounded
validation that ``supportrl validate`` runs (``data.memory_budget_mb``), and
``pyarrow.parquet.read_table`` of the same files (the anchor: what merely holding the
table costs); with ``--in-memory`` also the whole-file validation. Prints peak RSS (MiB)
and MiB per million rows of each, and the ratio of ours to the anchor.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import bench_scale

# VmHWM (peak RSS of this process image): ru_maxrss would carry the parent's peak over exec
CHILD = """
import sys, time
start = time.perf_counter()
{body}
wall = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) / 1024, wall)
"""

OURS = """
from supportrl.simulators.logs.bounded import validate_conversations_bounded
summary = validate_conversations_bounded(sys.argv[1], memory_budget_mb=float(sys.argv[2]))
assert summary["turns"] > 0
"""

ANCHOR = """
import pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
assert table.num_rows > 0
"""

IN_MEMORY = """
from supportrl.simulators.logs import load_conversations
assert load_conversations(sys.argv[1]).summary()["turns"] > 0
"""

BASELINE = """
import supportrl.simulators.logs.bounded
"""


def write_parts(directory: Path, million_rows: float) -> int:
    """Tile one generated block of logs into parts with fresh conversation ids; total rows."""
    return bench_scale.write_parts(directory, million_rows * 1e6, 100_000)


def measure(body: str, *args: str) -> tuple[float, float]:
    """(peak RSS MiB, wall seconds) of ``body`` in a fresh Python process."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(body=body), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million-rows", type=float, default=5.0)
    parser.add_argument("--budget-mb", type=float, default=512.0)
    parser.add_argument(
        "--in-memory", action="store_true", help="also measure the whole-file validation"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rows = write_parts(Path(tmp), args.million_rows)
        print(f"wrote {rows:,} turn rows in {time.perf_counter() - start:.1f} s")
        parts = str(Path(tmp) / "parts")
        base, _ = measure(BASELINE)
        ours, ours_s = measure(OURS, parts, str(args.budget_mb))
        anchor, anchor_s = measure(ANCHOR, parts)
        whole = measure(IN_MEMORY, parts) if args.in_memory else None
    m = rows / 1e6
    print(f"interpreter + imports alone: {base:,.0f} MiB")
    print(f"{'':<42}{'peak MiB':>10}{'MiB / M rows':>14}{'seconds':>10}")
    label = f"validate (budget {args.budget_mb:.0f} MiB)"
    print(f"{label:<42}{ours:>10,.0f}{ours / m:>14,.0f}{ours_s:>10.1f}")
    print(
        f"{'pyarrow.parquet.read_table (anchor)':<42}{anchor:>10,.0f}{anchor / m:>14,.0f}{anchor_s:>10.1f}"
    )
    if whole is not None:
        label = "whole-file validation (before)"
        print(f"{label:<42}{whole[0]:>10,.0f}{whole[0] / m:>14,.0f}{whole[1]:>10.1f}")
    print(f"ratio validate/anchor peak memory: {ours / anchor:.2f}x")


if __name__ == "__main__":
    main()
