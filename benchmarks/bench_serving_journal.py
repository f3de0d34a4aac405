"""What the decision log's journal costs per call: HTTP with and without it, one run.

    python -m benchmarks.bench_serving_journal [--seconds 10] [--rate 500] [--repeats 2]

The shipped production rules are exported and served by ``python -m
supportrl.serving.http`` in its own process on 127.0.0.1, logging to a fresh folder, four
times over: no log (anchor), a log held in memory until its part is written
(``--no-log-journal``: what every version before the journal did), the journal (default),
the journal with ``--log-fsync``. Traffic is conversations of two ``/v1/decide`` calls and a
``/v1/outcome`` (the anchor: ``/v1/decide`` without a conversation id), from four client
threads on keep-alive connections:

* closed loop (each thread sends its next call when the answer is in): calls/s the server
  sustains, p50 and p99 latency;
* open loop at ``--rate`` calls/s (the fixed rate ``bench_experiments --only http`` uses):
  p50 and p99.

The configurations alternate ``--repeats`` times so that a change of the machine's load
hits each of them; of the repeats, the one with the lowest p99 is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_experiments import export_rule
from benchmarks.bench_serving import start_server

STATE = {
    "previous_action": "none",
    "intent": "billing",
    "sentiment": -0.2,
    "tier": "pro",
    "channel": "chat",
    "tenure_months": 12,
    "prior_contacts_30d": 1,
}
CONFIGS = {
    "no log (anchor)": None,  # decisions only: nothing to log
    "log, no journal (before)": ["--no-log-journal"],
    "log + journal (now)": [],
    "log + journal + fsync": ["--log-fsync"],
}


def start(artifact: Path, log: Path, extra: list[str] | None) -> tuple[subprocess.Popen, int]:
    """The HTTP server on ``artifact``, logging to ``log`` with ``extra`` flags (None: no log)."""
    args = [str(artifact)] if extra is None else [str(artifact), "--log-dir", str(log), *extra]
    return start_server(*args)


def load(
    port: int, seconds: float, rate: float | None, tag: str, logged: bool, threads: int = 4
) -> dict[str, float]:
    """Conversations of decide, decide, outcome (``logged``; else decisions without a
    conversation id, nothing to log); ``rate`` None: closed loop. ``tag`` prefixes the ids."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2
    stop = t0 + seconds

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, errs, i = [], 0, 0
        while True:
            if rate is not None:
                due = t0 + (i + k / threads) * threads / rate
                if due >= stop:
                    break
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            elif time.perf_counter() >= stop:
                break
            cid = f"{tag}{k}-{i // 3}"
            if not logged:
                path, body = "/v1/decide", {"state": {**STATE, "turn": 0}}
            elif i % 3 < 2:
                path = "/v1/decide"
                body = {"state": {**STATE, "turn": i % 3}, "conversation_id": cid}
            else:
                path = "/v1/outcome"
                body = {"conversation_id": cid, "outcome": "resolved", "handle_time_s": [20, 30]}
            begin = time.perf_counter()
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            errs += resp.status != 200
            mine.append(time.perf_counter() - begin)
            i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += errs

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    begin = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - begin - 0.2
    ms = np.asarray(latencies) * 1000
    return {
        "rps": len(ms) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average)")
    best: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        artifact = export_rule(root / "artifacts", "rules_production")
        for r in range(args.repeats):
            for label, extra in CONFIGS.items():
                log = root / f"log-{r}-{list(CONFIGS).index(label)}"
                proc, port = start(artifact, log, extra)
                try:
                    for mode, rate in (("closed loop", None), (f"{args.rate:g}/s", args.rate)):
                        out = load(port, args.seconds, rate, mode[:4], extra is not None)
                        key = (label, mode)
                        if key not in best or out["p99"] < best[key]["p99"]:
                            best[key] = out
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
    for (label, mode), r in best.items():
        print(
            f"HTTP {mode:>11}, {label:<26}: {r['rps']:6.0f} calls/s, p50 {r['p50']:.2f} ms, "
            f"p99 {r['p99']:.2f} ms, errors {r['errors']:.0f}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min average)")


if __name__ == "__main__":
    main()
