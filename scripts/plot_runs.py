"""Overlay the learning curves of several `supportrl train` runs in one figure.

Usage::

    python scripts/plot_runs.py outputs/train/2026-11-29/*/ --metric charts/episodic_return \
        --out curves.png

Each run directory holds the ``metrics.csv`` that ``train`` writes (``env_steps`` first, then
fixed metric names); the legend shows each run's agent from its ``result.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_metrics(run: Path) -> dict[str, np.ndarray]:
    """Columns of ``run/metrics.csv`` by name."""
    with open(run / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    values = np.loadtxt(run / "metrics.csv", delimiter=",", skiprows=1, ndmin=2)
    return {name: values[:, j] for j, name in enumerate(header)}


def label(run: Path) -> str:
    result = run / "result.json"
    agent = json.loads(result.read_text()).get("agent", "?") if result.exists() else "?"
    return f"{agent} ({run.name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="train run directories")
    parser.add_argument("--metric", default=None, help="metric column (default: the first)")
    parser.add_argument("--out", type=Path, default=Path("learning_curves.png"))
    args = parser.parse_args(argv)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    metric = args.metric
    for run in args.runs:
        if not (run / "metrics.csv").is_file():
            print(f"error: {run}: no metrics.csv (not a train run directory)", file=sys.stderr)
            return 2
        columns = read_metrics(run)
        names = [n for n in columns if n != "env_steps"]
        metric = metric or names[0]
        if metric not in columns:
            print(f"error: {run}: no metric {metric!r}; has {names}", file=sys.stderr)
            return 2
        ax.plot(columns["env_steps"], columns[metric], label=label(run))
    ax.set_xlabel("env steps (decisions)")
    ax.set_ylabel(f"{metric} (reward v1 units)")
    ax.set_title(f"Learning curves: {metric}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
