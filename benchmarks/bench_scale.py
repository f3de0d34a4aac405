"""Logs beyond memory: ``validate`` and ``evaluate`` in memory, in partitions, and on Ray.

    python -m benchmarks.bench_scale [--validate-million-rows 2] [--eval-conversations 5000]
        [--resamples 200] [--sample-turns 500000] [--budget-mb 256] [--workers 2]
        [--conversations N] [--refit-turns 20000] [--engines local,ray]
        [--skip-validate] [--skip-evaluate]

Writes generated conversations as Parquet parts (one generated block tiled with fresh
conversation ids, as ``bench_validate_memory`` does), then measures each mode in a fresh
process, one after another: wall seconds, peak RSS of the driver (``VmHWM``) and, for Ray,
the peak summed RSS of the driver and every process under it (raylet, workers; sampled
every 0.2 s). The anchor of each row is the in-memory path on the same files (``load_conversations``;
``OffPolicyEvaluation``), at a size where it fits. ``evaluate`` runs three rule policies
with ``--resamples`` refit resamples. From the partition phase it derives the throughput per
worker (turns per second) and a **projection** (not a measurement) of the time for 1B
turns on N workers: the sample's fit (fixed) plus 1e9 / (N x throughput per worker).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from supportrl.simulators.synthetic import generate_logs

# The child measures its own wall time and peak; with Ray it also samples the RSS of its
# whole process tree (Ray's workers are the raylet's children, not ours directly).
CHILD = """
import os, sys, json, threading, time
def tree_rss():
    kids, rss = {}, {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/statm") as f:
                rss[int(pid)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(pid))
    todo, total, pss = [os.getpid()], 0, 0
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(kids.get(p, []))
        try:  # proportional set size: shared pages (Ray's object store) counted once
            with open(f"/proc/{p}/smaps_rollup") as f:
                pss += next(int(l.split()[1]) for l in f if l.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            pass
    tree_rss.pss = max(getattr(tree_rss, "pss", 0.0), pss / 2**20)
    return total / 2**20
peak = [0.0]
def watch():
    while True:
        peak[0] = max(peak[0], tree_rss())
        time.sleep(0.2)
threading.Thread(target=watch, daemon=True).start()
start = time.perf_counter()
{body}
wall = time.perf_counter() - start
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
tree = max(peak[0], tree_rss())
print(json.dumps({"rss": int(hwm) / 1024, "tree": tree, "pss": tree_rss.pss, "wall": wall, **extra}))
"""

VALIDATE_MEMORY = """
from supportrl.simulators.logs import load_conversations
extra = {"turns": load_conversations(sys.argv[1]).n_turns}
"""

VALIDATE_BOUNDED = """
from supportrl.simulators.logs.bounded import validate_conversations_bounded
s = validate_conversations_bounded(sys.argv[1], memory_budget_mb=float(sys.argv[2]),
                                   engine=sys.argv[3], num_cpus=int(sys.argv[4]))
extra = {"turns": s["turns"], "passes": s["passes"]}
"""

SETUP = """
# one BLAS thread per process, as the command line's threads=1 and Ray's workers run (set
# before numpy loads its BLAS: threadpoolctl would only cap pools already loaded)
os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
from supportrl.agents.rules.loading import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.logs import DEFAULT_ACTIONS
names = ["rules_faq_first", "rules_clarify_first", "rules_escalate_late"]
policies = {n: load_rule_policy(f"configs/rules/{n}.yaml", DEFAULT_ACTIONS) for n in names}
def make(prepared):
    return OffPolicyEvaluation(prepared=prepared, n_refit=int(sys.argv[2]), seed=0)
"""

EVALUATE_MEMORY = (
    SETUP
    + """
from supportrl.ope.evaluate import prepare_conversations, target_probs_of
from supportrl.simulators.logs import load_conversations
logs = load_conversations(sys.argv[1])
prepared = prepare_conversations(logs, RewardSpec(), csat_imputer=CsatImputation.from_logs)
states = logs.states()
res = make(prepared).evaluate({k: target_probs_of(p, states, logs.actions) for k, p in policies.items()})
extra = {"turns": logs.n_turns, "seq_dr": {k: r.conversation["seq_dr"].estimate for k, r in res.items()},
         "ci": {k: r.conversation["seq_dr"].ci_low for k, r in res.items()}}
"""
)

EVALUATE_PARTS = (
    SETUP
    + """
from supportrl.ope.partitioned import LogSource, evaluate_partitioned
out = evaluate_partitioned(LogSource(__import__("pathlib").Path(sys.argv[1])), policies,
    RewardSpec(), make, csat_imputer=CsatImputation.from_logs, sample_turns=int(sys.argv[3]),
    memory_budget_mb=float(sys.argv[4]), engine=sys.argv[5], num_cpus=int(sys.argv[6]),
    refit_turns=int(sys.argv[7]))
res = out.results
extra = {"turns": out.n_turns, "partitions": out.n_partitions, "fit_s": out.fit_s,
         "sums_s": out.sums_s, "sample_turns": out.sample_turns, "refit_share": out.refit_share,
         "seq_dr": {k: r.conversation["seq_dr"].estimate for k, r in res.items()},
         "ci": {k: r.conversation["seq_dr"].ci_low for k, r in res.items()}}
"""
)


def write_parts(directory: Path, n_rows: float, block_conversations: int) -> int:
    """Tile one generated block into parts with fresh conversation ids; total rows."""
    block = generate_logs(block_conversations, seed=0)
    turns, _ = block.write(directory / "block")
    table = pq.read_table(turns).drop_columns(["customer_id"])
    parts = directory / "parts"
    parts.mkdir()
    n, i = 0, 0
    while n < n_rows:
        ids = pc.binary_join_element_wise(pa.scalar(f"p{i}-"), table["conversation_id"], "")
        part = table.set_column(
            table.schema.get_field_index("conversation_id"), "conversation_id", ids
        )
        pq.write_table(part, parts / f"part-{i:03d}.parquet")
        n, i = n + part.num_rows, i + 1
    return n


def measure(body: str, *args: str) -> dict:
    """The child's JSON line: peak RSS MiB (driver, tree), wall seconds and extras."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{body}", body), *map(str, args)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(label: str, r: dict, anchor: dict | None = None) -> str:
    # seconds per turn against the anchor's (sizes may differ)
    ratio = (
        f"{(r['wall'] / r['turns']) / (anchor['wall'] / anchor['turns']):>9.3g}x"
        if anchor
        else f"{'':>8}"
    )
    return f"{label:<52}{r['turns']:>11,}{r['wall']:>9.1f}{r['rss']:>10,.0f}{r['tree']:>10,.0f} {ratio}"


def _write_logs(tmp: Path, args: argparse.Namespace) -> tuple[str, int]:
    """The measured logs: ``--conversations`` tiled into parts (or the validate rows)."""
    start = time.perf_counter()
    # about 2.5 turns per conversation in the default world
    target = args.conversations * 2.5 if args.conversations else args.validate_million_rows * 1e6
    rows = write_parts(tmp / "v", target, 100_000)
    print(f"wrote {rows:,} turn rows in {time.perf_counter() - start:.1f} s")
    return str(tmp / "v" / "parts"), rows


def _validate(tmp: Path, parts: str, args: argparse.Namespace, engines: list[str]) -> None:
    # the in-memory anchor on the first parts only, up to --memory-million-rows
    subset = tmp / "v" / "subset"
    subset.mkdir()
    n = 0
    for part in sorted(Path(parts).iterdir()):
        if n >= args.memory_million_rows * 1e6:
            break
        (subset / part.name).symlink_to(part)
        n += pq.ParquetFile(part).metadata.num_rows
    w = str(args.workers)
    mem = measure(VALIDATE_MEMORY, subset)
    print(HEAD)
    print(row("validate in memory (anchor)", mem))
    for engine in engines:
        r = measure(VALIDATE_BOUNDED, parts, args.budget_mb, engine, w if engine == "ray" else 1)
        label = f"validate engine={engine}, {r['passes']} passes of ~{args.budget_mb:.0f} MB"
        print(row(label + (f", {w} workers" if engine == "ray" else ""), r, mem))
        print(
            f"  peak PSS of the process tree (shared object store pages once): {r['pss']:,.0f} MiB"
        )
        if engine == "local":
            per_worker = r["turns"] / r["wall"]
            print(f"  validate throughput per worker: {per_worker:,.0f} turns/s")
            for k in (2, 16, 128):
                print(f"  projection: 1B turns on {k} workers: {1e9 / per_worker / k / 3600:.2f} h")


def _evaluate(tmp: Path, parts: str | None, args: argparse.Namespace, engines: list[str]) -> None:
    block = generate_logs(args.eval_conversations, seed=1)
    turns, _ = block.write(tmp / "e")
    table = pq.read_table(turns).drop_columns(["customer_id"])
    edir = tmp / "e" / "parts"
    edir.mkdir()
    step = table.num_rows // 4 + 1
    for i in range(4):
        pq.write_table(table.slice(i * step, step), edir / f"part-{i}.parquet")
    target = parts or str(edir)
    print(
        f"evaluate: 3 policies, {args.resamples} refit resamples; in memory on "
        f"{args.eval_conversations:,} conversations ({table.num_rows:,} turns)"
    )
    emem = None if args.skip_memory_evaluate else measure(EVALUATE_MEMORY, edir, args.resamples)
    print(HEAD)
    if emem:
        print(row("evaluate in memory (anchor)", emem))
    settings = [args.resamples, args.sample_turns, args.budget_mb]
    runs = {}
    for engine in engines:
        w = args.workers if engine == "ray" else 1
        small = measure(EVALUATE_PARTS, edir, *settings, engine, w, args.refit_turns)
        runs[engine] = r = measure(EVALUATE_PARTS, target, *settings, engine, w, args.refit_turns)
        if emem:
            worst = max(abs(emem["seq_dr"][k] - small["seq_dr"][k]) for k in emem["seq_dr"])
            worst = max(worst, *(abs(emem["ci"][k] - small["ci"][k]) for k in emem["ci"]))
            print(f"  engine={engine} on the anchor's logs: largest |in memory - it| of "
                  f"seq_dr estimate and ci_low {worst:.1e}")  # fmt: skip
        label = f"evaluate engine={engine}, {r['partitions']} partitions"
        print(row(label + (f", {w} workers" if engine == "ray" else ""), r, emem))
        print(
            f"  peak PSS of the process tree (shared object store pages once): {r['pss']:,.0f} MiB"
        )
        print(
            f"  nuisance fit on {r['sample_turns']:,} turns {r['fit_s']:.1f} s, partitions "
            f"{r['sums_s']:.1f} s (refits evaluated on a share {r['refit_share']:.3g})"
        )
    if "local" in runs:
        r = runs["local"]
        # one worker's steady rate: the local engine's partition phase
        per_worker = r["turns"] / r["sums_s"]
        print(
            f"evaluate partition throughput per worker (local engine): {per_worker:,.0f} "
            f"turns/s at {args.resamples} resamples x 3 policies"
        )
        for k in (2, 16, 128):
            hours = (r["fit_s"] + 1e9 / per_worker / k) / 3600
            print(f"  projection: 1B turns on {k} workers: {hours:,.2f} h "
                  f"(fit on {r['sample_turns']:,} turns + partitions)")  # fmt: skip


HEAD = f"{'':<52}{'turns':>11}{'wall s':>9}{'RSS MiB':>10}{'tree MiB':>10}{'s/turn vs memory':>18}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=0,
                        help="logs of about this many conversations for validate and evaluate "
                             "(0: --validate-million-rows for validate, the anchor's for evaluate)")  # fmt: skip
    parser.add_argument("--validate-million-rows", type=float, default=2.0)
    parser.add_argument("--eval-conversations", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--sample-turns", type=int, default=500_000)
    parser.add_argument("--refit-turns", type=int, default=20_000)
    parser.add_argument("--budget-mb", type=float, default=256.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--skip-validate", action="store_true")
    parser.add_argument("--skip-evaluate", action="store_true")
    parser.add_argument("--skip-memory-evaluate", action="store_true")
    parser.add_argument(
        "--memory-million-rows", type=float, default=5.0, help="in-memory validate anchor size"
    )
    args = parser.parse_args()
    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        parts, _ = _write_logs(Path(tmp), args)
        if not args.skip_validate:
            _validate(Path(tmp), parts, args, engines)
        if not args.skip_evaluate:
            _evaluate(Path(tmp), parts if args.conversations else None, args, engines)


if __name__ == "__main__":
    main()
