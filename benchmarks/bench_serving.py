"""Serving latency and throughput: Predictor vs bare onnxruntime vs the torch policy, one run.

    python -m benchmarks.bench_serving [--calls 5000] [--batches 200] [--http-seconds 20]

A DQN policy with the shipped config's network (64, 64, dueling) is exported; then

* one state dict: ``Predictor.decide`` (validation + encoding + onnxruntime + sampling)
  beside bare ``onnxruntime`` ``session.run`` on an already-encoded (1, dim) array and
  beside the in-framework torch ``QPolicy.action_probs`` on the same one-row state;
* a batch of 1024 states as columns (Python lists, as JSON gives them):
  ``Predictor.decide_batch`` beside the torch policy (numpy columns) and bare onnxruntime;
* HTTP: ``python -m supportrl.serving.http`` in its own process on 127.0.0.1, fed
  ``POST /v1/decide`` at a fixed 500 requests/s for ``--http-seconds`` by four client
  threads on keep-alive connections; latency from send to full answer.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.serving import Predictor
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) in microseconds."""
    us = np.asarray(samples_ns) / 1000.0
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def time_calls(fn, args: list, repeat: int) -> list[int]:
    out = []
    for i in range(repeat):
        a = args[i % len(args)]
        start = time.perf_counter_ns()
        fn(a)
        out.append(time.perf_counter_ns() - start)
    return out


def http_load(
    port: int,
    states: list[dict],
    rate: float,
    seconds: float,
    threads: int = 4,
    customers: int = 0,
) -> dict[str, float]:
    """Open-loop load: each thread sends at rate/threads on its own keep-alive connection.

    With ``customers``, request j carries ``customer_id`` ``customer-{j % customers}`` and
    the answer's ``arm`` is tracked: ``changed`` counts customers served by two arms."""
    latencies: list[float] = []
    errors = [0]
    arms_seen: dict[str, set] = {}
    lock = threading.Lock()
    interval = threads / rate
    t0 = time.perf_counter() + 0.2

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, seen, errs = [], {}, 0
        n = int(seconds * rate / threads)
        for i in range(n):
            due = t0 + (i + k / threads) * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            j = i * threads + k
            body = {"state": states[j % len(states)]}
            if customers:
                body |= {"conversation_id": f"c{k}-{i}", "customer_id": f"customer-{j % customers}"}
            start = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/decide", json.dumps(body), {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status != 200:
                    errs += 1
                elif customers:
                    seen.setdefault(body["customer_id"], set()).add(json.loads(answer)["arm"])
            except (OSError, http.client.HTTPException):
                errs += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors[0] += errs
            for c, a in seen.items():
                arms_seen.setdefault(c, set()).update(a)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    begin = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - begin
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(ms),
        "achieved_rps": len(ms) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors[0],
        "changed": sum(len(a) > 1 for a in arms_seen.values()),
        "customers": len(arms_seen),
    }


def start_server(*args: str) -> tuple[subprocess.Popen, int]:
    """``python -m supportrl.serving.http ARGS --port P`` on a free port, once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "supportrl.serving.http", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the HTTP server did not start: " + proc.stderr.read().decode()[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--http-rate", type=float, default=500.0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    world = SyntheticWorld()
    network = build_q_network(world.feature_spec.dim, len(world.actions), (64, 64), True, seed=0)
    policy = QPolicy(actions=world.actions, feature_spec=world.feature_spec, network=network)
    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    artifact = export_policy(
        policy,
        tmp / "artifact",
        epsilon=0.05,
        bounds={"tenure_months": (0.0, None), "prior_contacts_30d": (0.0, None)},
    )
    policy.epsilon = 0.05
    predictor = Predictor.load(artifact, seed=0)
    logs = generate_logs(2000, seed=1).logs
    columns = logs.states()
    dicts = [{k: v[i].item() for k, v in columns.items()} for i in range(2048)]
    one_row = [{k: np.asarray([v]) for k, v in d.items()} for d in dicts]
    encoded = [world.feature_spec.encode(s) for s in one_row]
    session = ort.InferenceSession(
        str(artifact / "policy.onnx"), predictor._scorer.session.get_session_options()
    )
    eps = np.array([0.05], dtype=np.float32)

    for fn, a in ((predictor.decide, dicts), (policy.action_probs, one_row)):
        time_calls(fn, a, 500)  # warm-up
    ours = percentiles(time_calls(predictor.decide, dicts, args.calls))
    bare = percentiles(
        time_calls(
            lambda x: session.run(["probs"], {"obs": x, "epsilon": eps}), encoded, args.calls
        )
    )
    torch_one = percentiles(time_calls(policy.action_probs, one_row, args.calls))
    print("one state dict (us)        p50       p99   p99 ratio to ours")
    print(f"Predictor.decide      {ours[0]:>9.1f} {ours[1]:>9.1f}")
    print(f"bare onnxruntime      {bare[0]:>9.1f} {bare[1]:>9.1f}   {ours[1] / bare[1]:>6.2f}x")
    print(
        f"torch QPolicy         {torch_one[0]:>9.1f} {torch_one[1]:>9.1f}   {ours[1] / torch_one[1]:>6.2f}x"
    )

    n = 1024
    list_columns = [
        {k: v[i * n : (i + 1) * n].tolist() for k, v in columns.items()}
        for i in range(len(logs.action) // n)
    ]
    np_columns = [
        {k: v[i * n : (i + 1) * n] for k, v in columns.items()} for i in range(len(list_columns))
    ]
    big = [world.feature_spec.encode(c) for c in np_columns]
    rates = {}
    for name, fn, data in (
        ("Predictor.decide_batch (list columns)", predictor.decide_batch, list_columns),
        ("torch QPolicy.action_probs (np columns)", policy.action_probs, np_columns),
        (
            "bare onnxruntime (encoded)",
            lambda x: session.run(["probs"], {"obs": x, "epsilon": eps}),
            big,
        ),
    ):
        fn(data[0])
        start = time.perf_counter()
        for i in range(args.batches):
            fn(data[i % len(data)])
        rates[name] = args.batches * n / (time.perf_counter() - start)
    print(f"\nbatch of {n} (decisions/s)")
    for name, rate in rates.items():
        print(f"{name:<42}{rate:>14,.0f}")

    if args.http_seconds > 0:
        proc, port = start_server(str(artifact))
        try:
            http_load(port, dicts, args.http_rate, 2.0)  # warm-up
            res = http_load(port, dicts, args.http_rate, args.http_seconds)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        print(
            f"\nHTTP /v1/decide at {args.http_rate:.0f} req/s for {args.http_seconds:.0f} s: "
            f"{res['requests']} requests, achieved {res['achieved_rps']:.0f}/s, "
            f"p50 {res['p50_ms']:.2f} ms, p99 {res['p99_ms']:.2f} ms, errors {res['errors']}"
        )


if __name__ == "__main__":
    main()
