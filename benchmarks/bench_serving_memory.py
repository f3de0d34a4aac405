"""Serving memory with one long category value, and encoding speed (issue 22, item 11).

    python -m benchmarks.bench_serving_memory [--rows 1000] [--length 60000] [--repeats 200]

A DQN artifact is served with ``on_invalid="fallback"``. One ``decide_batch`` of ``--rows``
states (columns, Python lists as JSON gives them) carries one ``tier`` value of
``--length`` characters. Peak traced memory (``tracemalloc``; numpy reports its buffers) of:

* ours: ``Predictor.decide_batch`` (categorical values stay Python strings);
* anchor: the fixed-width numpy string array the encoder built before (``np.array(values,
  dtype=str)`` of that one column), measured in the same run.

Then the encoding time of an ordinary batch (no long value): ours (dict lookup of each
value) beside the anchor (fixed-width array + ``searchsorted`` of the sorted levels, as
before), best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.serving import Predictor
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs


def peak_bytes(fn) -> int:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def anchor_codes(values: list[str], levels: tuple[str, ...]) -> np.ndarray:
    """The encoder's former categorical lookup: fixed-width strings + searchsorted."""
    arr = np.asarray(levels, dtype=str)
    order = np.argsort(arr)
    sorted_levels = arr[order]
    strings = np.array(values, dtype=str)
    pos = np.minimum(np.searchsorted(sorted_levels, strings), len(sorted_levels) - 1)
    return order[pos]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--length", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    world = SyntheticWorld()
    network = build_q_network(world.feature_spec.dim, len(world.actions), (64, 64), True, seed=0)
    policy = QPolicy(actions=world.actions, feature_spec=world.feature_spec, network=network)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = export_policy(policy, Path(tmp) / "artifact", fallback_action=world.actions[0])
        predictor = Predictor.load(artifact, on_invalid="fallback", seed=0)
    states = generate_logs(2000, seed=0).logs.states()
    n = args.rows
    columns = {k: np.asarray(v)[:n].tolist() for k, v in states.items()}
    long_batch = {**columns, "tier": columns["tier"][:-1] + ["x" * args.length]}

    predictor.decide_batch(long_batch)  # warm-up
    ours = peak_bytes(lambda: predictor.decide_batch(long_batch))
    anchor = peak_bytes(lambda: np.array(long_batch["tier"], dtype=str))
    print(f"decide_batch of {n} rows, one value of {args.length} characters (peak traced MB)")
    print(f"{'ours: decide_batch':<44}{ours / 2**20:>10.2f}")
    print(f"{'anchor: fixed-width str array of 1 column':<44}{anchor / 2**20:>10.2f}")
    print(f"{'ratio anchor / ours':<44}{anchor / ours:>10.1f}")

    encoder = predictor.encoder
    levels = encoder.categorical["tier"]
    ours_s = best_seconds(
        lambda: encoder._codes("tier", np.array(columns["tier"], dtype=object)), args.repeats
    )
    anchor_s = best_seconds(lambda: anchor_codes(columns["tier"], levels), args.repeats)
    print(f"\ncategorical codes of {n} ordinary values, best of {args.repeats} (microseconds)")
    print(f"{'ours: dict lookup':<44}{ours_s * 1e6:>10.1f}")
    print(f"{'anchor: fixed-width + searchsorted':<44}{anchor_s * 1e6:>10.1f}")
    full = best_seconds(lambda: predictor.decide_batch(columns), max(args.repeats // 10, 5))
    print(f"{'ours: whole decide_batch (for scale)':<44}{full * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
