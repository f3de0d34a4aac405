"""Improvement rounds on the synthetic world: how close production gets to the best candidate.

    python -m benchmarks.bench_rounds [--seeds 10] [--first-seed 0 | --seed-list S ..] [--conversations 100000] [--rounds 3] [-- OVERRIDES]

Runs ``supportrl pipeline seed=S loop.rounds=R`` (the default budget otherwise, or the
overrides given after ``--``) for each seed, in a fresh process, and reads
``result.json``:

* ours: production after the rounds (``production.true_value``) against the best
  candidate's true value over every round (``production.regret``), and whether any round
  promoted a policy whose true value is below its control's (a wrong promotion);
* anchor, same runs: what the pipeline shipped before rounds existed, the candidate with
  the best lower bound of the selection interval (``selection.best_lower_bound``, or the
  safe winner), and its regret against the same best candidate.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(seed: int, rounds: int, conversations: int, extra: list[str], root: Path) -> dict:
    cmd = [
        sys.executable, "-m", "supportrl.experiments.cli", "pipeline", f"seed={seed}",
        f"loop.rounds={rounds}", f"generate.n_conversations={conversations}",
        "logger.progress=false", f"paths.output_dir={root}", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = next(x for x in proc.stdout.splitlines() if x.startswith("run_dir: "))
    return json.loads((Path(line.removeprefix("run_dir: ")) / "result.json").read_text())


def wrong_promotions(result: dict) -> int:
    wrong = 0
    for record in result["rounds"]:
        decision = record.get("experiment", {}).get("decision", {})
        if decision.get("action") != "promote":
            continue
        control = next(iter(record["experiment"]["arms"]))
        values = record["values"]
        wrong += values[decision["arm"]]["true_value"] < values[control]["true_value"]
    return wrong


def served_decision(experiment: dict) -> str:
    """A round's decision and the conversations its experiment served (``promote@20000``)."""
    if not experiment:
        return "-"
    served = sum(arm["n_conversations"] for arm in experiment["arms"].values())
    return f"{experiment['decision']['action']}@{served}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument(
        "--seed-list", type=int, nargs="+", help="these seeds (instead of --first-seed, --seeds)"
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    ours, anchor, wrong, walls = [], [], 0, []
    with tempfile.TemporaryDirectory() as tmp:
        seeds = args.seed_list or range(args.first_seed, args.first_seed + args.seeds)
        for seed in seeds:
            start = time.perf_counter()
            r = run(seed, args.rounds, args.conversations, args.overrides, Path(tmp))
            walls.append(time.perf_counter() - start)
            prod = r["production"]
            best = prod["best_candidate_true_value"]
            shipped = r["selection"].get("winner") or r["selection"].get("best_lower_bound")
            before = r["policies"][shipped]["true_value"]
            ours.append(best - prod["true_value"])
            anchor.append(best - before)
            wrong += wrong_promotions(r)
            decisions = [served_decision(x.get("experiment", {})) for x in r["rounds"]]
            print(
                f"seed {seed}: production {prod['policy']} true {prod['true_value']:+.3f}, best "
                f"candidate {best:+.3f} (regret {ours[-1]:+.3f}); before rounds shipped {shipped} "
                f"{before:+.3f} (regret {anchor[-1]:+.3f}); decisions {decisions}; {walls[-1]:.0f} s",
                flush=True,
            )
    ours_a, anchor_a = np.array(ours), np.array(anchor)
    print(
        f"\n{len(ours)} seeds, {args.rounds} rounds, {args.conversations} conversations: regret "
        f"after rounds mean {ours_a.mean():.3f} (max {ours_a.max():.3f}; within 0.03 in "
        f"{(ours_a <= 0.03).sum()}/{len(ours_a)}); anchor (best lower bound, no experiment) mean "
        f"{anchor_a.mean():.3f} (max {anchor_a.max():.3f}); wrong promotions {wrong}; "
        f"wall per seed {np.mean(walls):.0f} s"
    )


if __name__ == "__main__":
    main()
