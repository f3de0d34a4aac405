"""LinUCB / LinTS decisions + updates per second, against a tutorial-style numpy anchor.

Setting: 6 actions, 40 encoded features (+ intercept: d = 41), synthetic linear rewards.

Rows (each ``decide + update`` unless it says ``decide``):

* ``batch 1, encoded``: ``act_one`` then ``update_one`` on one pre-encoded row, repeated
  (the online hot path: Sherman-Morrison in place, preallocated buffers).
* ``batch 1, raw states``: ``act`` then ``update`` on a one-row raw state batch (includes
  ``FeatureSpec.encode`` and input validation every call).
* ``batch 1024, encoded``: ``act_encoded`` on 1024 rows, then ``update_encoded`` with them.
* ``batch 1024, raw states``: the same through ``act`` / ``update`` on raw states.
* ``batch 1024, decide``: scoring only (``act_encoded``).

Anchor, measured in the same run: LinUCB (or LinTS) the way most tutorials write it: per
action a list of ``A`` and ``b``, ``theta = inv(A) @ b`` recomputed at every decision, a
Python loop over rows and actions (LinTS: ``rng.multivariate_normal`` per action per row).
The anchor has no batch form, so at batch 1024 it loops over the rows.

Reference figures quoted in the issue for this machine (not measured here): tutorial numpy
LinUCB ~4k decide+update/s; MABWiser 2.7.4 LinUCB ~1.6k/s online and ~230k/s batch scoring.
Goal: >= 50k/s one row at a time and >= 1M scored decisions/s batched.

Run: ``python -m benchmarks.bench_linear_bandits`` (measures with OMP_NUM_THREADS=1 and 2,
each in a fresh process, since BLAS reads it at import) or ``--threads 1`` for one setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from supportrl.agents.bandits import LinTS, LinUCB
from supportrl.envs.features import FeatureSpec

K = 6
N_FEATURES = 40
ALPHA = 1.0
V = 0.5
SEED = 0


def _rate(fn: Callable[[], int], repeats: int = 3) -> float:
    """Best rows/s over ``repeats`` calls of ``fn`` (which returns the rows it processed)."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        rows = fn()
        best = max(best, rows / (time.perf_counter() - t0))
    return best


def _measure(
    name: str,
    make: Callable[[], LinUCB | LinTS],
    states: dict[str, np.ndarray],
    feats: np.ndarray,
    reward_table: np.ndarray,
    quick: bool,
) -> dict[str, dict[str, float]]:
    """All rows of the table for one bandit class, with its anchor."""
    act_rng = np.random.default_rng(1)
    n_rows = len(feats)
    batch = 1024

    def online_encoded() -> int:
        bandit = make()
        for i in range(n_rows):
            a = bandit.act_one(feats[i], act_rng)
            bandit.update_one(feats[i], a, reward_table[i, a])
        return n_rows

    one_row = [{k: v[i : i + 1] for k, v in states.items()} for i in range(2000)]

    def online_raw() -> int:
        bandit = make()
        for i, row in enumerate(one_row):
            a = bandit.act(row, act_rng)
            bandit.update(row, a, reward_table[i, a])
        return len(one_row)

    starts = range(0, n_rows - batch + 1, batch)

    def batch_encoded() -> int:
        bandit = make()
        for s in starts:
            a = bandit.act_encoded(feats[s : s + batch], act_rng)
            r = reward_table[s : s + batch][np.arange(batch), a]
            bandit.update_encoded(feats[s : s + batch], a, r)
        return len(starts) * batch

    chunks = [{k: v[s : s + batch] for k, v in states.items()} for s in starts]

    def batch_raw() -> int:
        bandit = make()
        for s, chunk in zip(starts, chunks, strict=True):
            a = bandit.act(chunk, act_rng)
            bandit.update(chunk, a, reward_table[s : s + batch][np.arange(batch), a])
        return len(starts) * batch

    scorer = make()
    scorer.update_encoded(feats, act_rng.integers(0, K, n_rows), reward_table[:, 0])

    def batch_decide() -> int:
        for s in starts:
            scorer.act_encoded(feats[s : s + batch], act_rng)
        return len(starts) * batch

    anchor_rows = 600 if quick else 2000
    anchor = _rate(lambda: _anchor_run(name, feats[:anchor_rows], reward_table), 1)
    anchor_decide = _rate(lambda: _anchor_decide(name, feats[:anchor_rows]), 1)
    return {
        f"{name} batch 1, encoded": {"ours": _rate(online_encoded), "anchor": anchor},
        f"{name} batch 1, raw states": {"ours": _rate(online_raw), "anchor": anchor},
        f"{name} batch 1024, encoded": {"ours": _rate(batch_encoded), "anchor": anchor},
        f"{name} batch 1024, raw states": {"ours": _rate(batch_raw), "anchor": anchor},
        f"{name} batch 1024, decide": {"ours": _rate(batch_decide), "anchor": anchor_decide},
    }


def _child(quick: bool) -> dict[str, dict[str, float]]:
    """Measure everything in this process; returns {row: {"ours": x, "anchor": y}} in rows/s."""
    rng = np.random.default_rng(SEED)
    actions = tuple(f"action_{i}" for i in range(K))
    categorical = {
        "intent": tuple(f"intent_{i}" for i in range(8)),
        "previous_action": ("none", *actions),
        "tier": ("free", "pro", "enterprise"),
        "channel": ("chat", "email", "voice", "app"),
    }
    numeric = {"turn": (0.0, 10.0), "sentiment": (0.0, 1.0)}
    numeric |= {f"ctx_{i}": (0.0, 1.0) for i in range(N_FEATURES - 22 - 2)}
    spec = FeatureSpec(categorical=categorical, numeric=numeric)
    assert spec.dim == N_FEATURES

    n_rows = 4096 if quick else 20_480
    states: dict[str, np.ndarray] = {
        name: rng.choice(np.asarray(levels), n_rows) for name, levels in categorical.items()
    }
    states["turn"] = rng.integers(0, 10, n_rows)
    states["sentiment"] = rng.uniform(-1, 1, n_rows)
    states |= {name: rng.normal(size=n_rows) for name in numeric if name.startswith("ctx_")}
    feats = spec.encode(states)
    true_theta = rng.normal(scale=0.3, size=(K, N_FEATURES))
    reward_table = feats @ true_theta.T + rng.normal(scale=0.5, size=(n_rows, K))

    results = _measure(
        "LinUCB",
        lambda: LinUCB(actions, spec, alpha=ALPHA, seed=SEED),
        states,
        feats,
        reward_table,
        quick,
    )
    results |= _measure(
        "LinTS", lambda: LinTS(actions, spec, v=V, seed=SEED), states, feats, reward_table, quick
    )

    # Same numbers: replay the anchor's (x, a, r) sequence through ours, compare theta.
    xs, acts, rs = _anchor_trace(feats[:500], reward_table)
    ours = LinUCB(actions, spec, alpha=ALPHA)
    for x, a, r in zip(xs, acts, rs, strict=True):
        ours.update_one(x, a, r)
    anchor_theta = _anchor_theta(xs, acts, rs)
    results["check: max |theta ours - anchor|"] = {
        "ours": float(np.abs(ours.theta - anchor_theta).max()),
        "anchor": 0.0,
    }
    return results


class _TutorialLinUCB:
    """LinUCB as tutorials write it: lists of A and b, inv(A) at every decision."""

    def __init__(self, n_actions: int, d: int, alpha: float, thompson: bool = False) -> None:
        self.A = [np.identity(d) for _ in range(n_actions)]
        self.b = [np.zeros(d) for _ in range(n_actions)]
        self.alpha = alpha
        self.thompson = thompson
        self.rng = np.random.default_rng(0)

    def select(self, x: np.ndarray) -> int:
        scores = []
        for a in range(len(self.A)):
            A_inv = np.linalg.inv(self.A[a])
            theta = A_inv @ self.b[a]
            if self.thompson:
                sample = self.rng.multivariate_normal(theta, self.alpha**2 * A_inv)
                scores.append(sample @ x)
            else:
                scores.append(theta @ x + self.alpha * np.sqrt(x @ A_inv @ x))
        return int(np.argmax(scores))

    def update(self, a: int, x: np.ndarray, r: float) -> None:
        self.A[a] += np.outer(x, x)
        self.b[a] += r * x


def _with_intercept(feats: np.ndarray) -> np.ndarray:
    return np.c_[feats.astype(np.float64), np.ones(len(feats))]


def _anchor_run(name: str, feats: np.ndarray, reward_table: np.ndarray) -> int:
    x = _with_intercept(feats)
    model = _TutorialLinUCB(K, x.shape[1], V if name == "LinTS" else ALPHA, name == "LinTS")
    for i in range(len(x)):
        a = model.select(x[i])
        model.update(a, x[i], reward_table[i, a])
    return len(x)


def _anchor_decide(name: str, feats: np.ndarray) -> int:
    x = _with_intercept(feats)
    model = _TutorialLinUCB(K, x.shape[1], V if name == "LinTS" else ALPHA, name == "LinTS")
    for i in range(len(x)):
        model.select(x[i])
    return len(x)


def _anchor_trace(
    feats: np.ndarray, reward_table: np.ndarray
) -> tuple[np.ndarray, list[int], list[float]]:
    x = _with_intercept(feats)
    model = _TutorialLinUCB(K, x.shape[1], ALPHA)
    acts, rs = [], []
    for i in range(len(x)):
        a = model.select(x[i])
        model.update(a, x[i], reward_table[i, a])
        acts.append(a)
        rs.append(float(reward_table[i, a]))
    return feats, acts, rs


def _anchor_theta(feats: np.ndarray, acts: list[int], rs: list[float]) -> np.ndarray:
    x = _with_intercept(feats)
    model = _TutorialLinUCB(K, x.shape[1], ALPHA)
    for xi, a, r in zip(x, acts, rs, strict=True):
        model.update(a, xi, r)
    return np.stack([np.linalg.solve(model.A[a], model.b[a]) for a in range(K)])


def _format(results: dict[str, dict[str, dict[str, float]]]) -> str:
    threads = list(results)
    header = f"{'case (decide+update unless noted)':38}" + "".join(
        f" | {'ours/s':>10} {'anchor/s':>9} {'ratio':>7} (OMP={t})" for t in threads
    )
    lines = [header, "-" * len(header)]
    for case in results[threads[0]]:
        if case.startswith("check"):
            continue
        cells = []
        for t in threads:
            r = results[t][case]
            cells.append(
                f" | {r['ours']:>10,.0f} {r['anchor']:>9,.0f} {r['ours'] / r['anchor']:>6.0f}x"
                + " " * 8
            )
        lines.append(f"{case:38}" + "".join(cells))
    for t in threads:
        for case, r in results[t].items():
            if case.startswith("check"):
                lines.append(f"{case} (OMP={t}): {r['ours']:.2e}")
    lines.append(
        "reference (issue, this machine, not measured): tutorial numpy LinUCB ~4k/s; "
        "MABWiser 2.7.4 LinUCB ~1.6k/s online, ~230k/s batch scoring"
    )
    lines.append("goal: >= 50,000/s at batch 1 (encoded); >= 1,000,000 scored decisions/s batched")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="fewer rows (smoke test)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.quick)))
        return
    results = {}
    for threads in args.threads:
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        cmd = [sys.executable, "-m", "benchmarks.bench_linear_bandits", "--child"]
        if args.quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        results[threads] = json.loads(out.strip().splitlines()[-1])
    print(_format(results))


if __name__ == "__main__":
    main()
