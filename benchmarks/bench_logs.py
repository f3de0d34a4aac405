"""Generate logs, then load + validate them; anchor: pandas.read_parquet of the same files.

    python -m benchmarks.bench_logs [--conversations 390000] [--repeats 3]

The default, 390,000 conversations, is about 1M turn rows. Prints rows/s for
``load_conversations`` (read + every schema-v1 check + sort + customers join) beside a
bare ``pandas.read_parquet`` of the same files in the same run, and their ratio (the
goal: at most 3x a bare read). The two are timed alternately, best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import generate_logs


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=390_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generated = generate_logs(args.conversations, seed=0)
        simulate_s = time.perf_counter() - start
        turns, customers = generated.write(Path(tmp) / "data")
        generate_s = time.perf_counter() - start
        rows = generated.logs.n_turns

        ours, anchor = float("inf"), float("inf")
        for _ in range(args.repeats):  # alternate, so load on a shared machine hits both
            ours = min(ours, best_of(1, lambda: load_conversations(turns, customers=customers)))
            anchor = min(
                anchor, best_of(1, lambda: (pd.read_parquet(turns), pd.read_parquet(customers)))
            )

    print(f"logs: {args.conversations} conversations, {rows} turn rows")
    print(f"generate (simulate + write Parquet): {generate_s:.2f} s (simulate {simulate_s:.2f} s)")
    print(f"{'':<34}{'seconds':>10}{'rows/s':>14}")
    print(f"{'load_conversations (validated)':<34}{ours:>10.3f}{rows / ours:>14,.0f}")
    print(f"{'pandas.read_parquet (anchor)':<34}{anchor:>10.3f}{rows / anchor:>14,.0f}")
    print(
        f"ratio ours/anchor time: {ours / anchor:.1f}x (goal <= 3x; validation costs this "
        "much over a bare read)"
    )


if __name__ == "__main__":
    main()
