"""Serving safety (issue 22, items 4, 5, 7, 11, 12): a decision log that survives, request
limits before parsing, model faults that are not blamed on the client. Real uvicorn on
127.0.0.1, real folders."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.serving import DecisionLogger, Predictor
from supportrl.serving.http import MAX_BODY_BYTES, MAX_DEPTH
from supportrl.serving.logger import MAX_ID_LENGTH, LogUnavailable, LogWriteError
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld

from tests.serving.test_serving_http import STATE, call, free_port

WORLD = SyntheticWorld()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=2)
    policy = QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)
    return export_policy(policy, tmp_path_factory.mktemp("safe") / "artifact", epsilon=0.1)


def serve(predictor: Predictor, logger: DecisionLogger | None) -> Iterator[str]:
    import threading
    import time

    import uvicorn
    from supportrl.serving.http import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(predictor, logger=logger), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def declared_body(base: str, length: int) -> tuple[int, dict[str, object]]:
    """POST a body declared ``length`` bytes long, sending only its first bytes."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/v1/decide_batch")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        conn.send(b'{"states": [')
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _states(n: int) -> dict[str, list[object]]:
    return {k: [v] * n for k, v in STATE.items()}


# --------------------------------------------------------------------------- the logger


def test_a_long_conversation_id_is_refused_and_strings_stay_objects(tmp_path: Path) -> None:
    """Issue 22 item 4: one 150,000-character id among 10,000 decisions made the shutdown
    flush ask for 5.6 GiB (fixed-width numpy strings) and the log came out empty."""
    predictor = Predictor.load(export_policy_dir(tmp_path))
    logger = DecisionLogger.for_predictor(tmp_path / "log", predictor)
    with pytest.raises(
        ValueError, match=rf"conversation_ids: row 0 is longer than {MAX_ID_LENGTH}"
    ):
        logger.log_batch(["x" * 150_000], _states(1), [WORLD.actions[0]], [0.5])
    ids = [f"c{i}" for i in range(1000)]
    logger.log_batch(ids, _states(1000), [WORLD.actions[0]] * 1000, [0.5] * 1000)
    assert logger._held.chunks[0]["conversation_id"].dtype == object
    logger.record_outcomes(ids, ["resolved"] * 1000)
    logger.close()
    assert load_conversations(tmp_path / "log").n_conversations == 1000


def export_policy_dir(tmp_path: Path) -> Path:
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=2)
    policy = QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)
    return export_policy(policy, tmp_path / "artifact")


def test_a_removed_log_folder_is_recreated(tmp_path: Path) -> None:
    """Issue 22 item 5: the log folder removed while serving lost every later row."""
    predictor = Predictor.load(export_policy_dir(tmp_path))
    logger = DecisionLogger.for_predictor(tmp_path / "log", predictor, part_rows=1)
    logger.log("a", STATE, WORLD.actions[0], 0.5)
    shutil.rmtree(tmp_path / "log")
    logger.record_outcome("a", "resolved")
    assert logger.healthy and load_conversations(tmp_path / "log").n_conversations == 1


def test_an_unwritable_log_keeps_its_rows_reports_and_recovers(tmp_path: Path) -> None:
    """Issue 22 item 5: a log folder that cannot be written: rows are held (not lost), the
    logger says why and refuses what it cannot make durable (nothing is acknowledged that
    is not in the journal), and writes again once the folder can be made again; close()
    raises when rows could still not be written."""
    predictor = Predictor.load(export_policy_dir(tmp_path))
    log = tmp_path / "log"
    logger = DecisionLogger.for_predictor(log, predictor, part_rows=1)
    logger.log("a", STATE, WORLD.actions[0], 0.5)
    shutil.rmtree(log)
    log.write_text("not a folder")  # mkdir and every write now fail (as root too)
    with pytest.raises(LogUnavailable, match="the journal cannot be written"):
        logger.record_outcome("a", "resolved")  # not durable: refused, not acknowledged
    assert not logger.healthy and str(log) in str(logger.error)
    assert logger.unwritten_rows == 1  # "a" is still held
    with pytest.raises(LogUnavailable):
        logger.log("b", STATE, WORLD.actions[1], 0.5)
    with pytest.raises(LogWriteError, match=r"decision log: 1 rows not written"):
        logger.close()
    log.unlink()
    logger.close()  # the held rows are written now ("a" cut off by the first close)
    logs = load_conversations(log)
    assert logs.conversation_id.tolist() == ["a"] and logs.outcome.tolist() == [0]
    assert [p.suffix for p in log.iterdir()] == [".parquet"]  # no journal left behind


def test_the_buffer_is_bounded_while_writes_fail(tmp_path: Path) -> None:
    predictor = Predictor.load(export_policy_dir(tmp_path))
    log = tmp_path / "log"
    logger = DecisionLogger.for_predictor(
        log, predictor, part_rows=1, max_buffer_rows=3, journal=False
    )  # with the journal a folder that cannot be written refuses rows at once (test above)
    shutil.rmtree(log)
    log.write_text("not a folder")
    for cid in ("a", "b", "c"):
        logger.log(cid, STATE, WORLD.actions[0], 0.5)
        logger.record_outcome(cid, "resolved")
    with pytest.raises(LogUnavailable, match="3 rows wait to be written"):
        logger.log("d", STATE, WORLD.actions[0], 0.5)


def test_open_conversations_are_capped_and_flushed_on_time(tmp_path: Path) -> None:
    """Issue 22 item 11: open conversations had no cap; a part waited for part_rows."""
    predictor = Predictor.load(export_policy_dir(tmp_path))
    logger = DecisionLogger.for_predictor(
        tmp_path / "log", predictor, part_rows=10_000, max_open=2, flush_interval_s=0.0
    )
    for cid in ("a", "b", "c"):
        logger.log(cid, STATE, WORLD.actions[0], 0.5)
    assert logger.open_conversations == 2  # "a", the oldest, was closed as cut off ...
    assert logger.parts  # ... and written at once (flush_interval_s=0)
    logs = load_conversations(tmp_path / "log")
    assert logs.conversation_id.tolist() == ["a"] and logs.outcome.tolist() == [0]


# --------------------------------------------------------------------------- HTTP


@pytest.fixture()
def service(artifact: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    predictor = Predictor.load(artifact, seed=0)
    logger = DecisionLogger.for_predictor(tmp_path / "log", predictor, part_rows=1)
    for base in serve(predictor, logger):
        yield base, tmp_path / "log"


def test_request_limits_before_parsing(service: tuple[str, Path]) -> None:
    """Issue 22 items 7 and 11: 100,000 nested '[' got a 500 (RecursionError); a 300 MB body
    was accepted; ids had no length cap."""
    base, _ = service
    status, answer = call(base, "POST", "/v1/decide", raw=b"[" * 100_000)
    assert status == 400 and answer["field"] == "body" and "nested" in answer["error"]
    deep = {"state": STATE, "x": json.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))}
    assert call(base, "POST", "/v1/decide", deep)[0] == 400
    status, answer = declared_body(base, MAX_BODY_BYTES + 1)
    assert status == 413 and answer["field"] == "body"
    long_id = {"state": STATE, "conversation_id": "x" * (MAX_ID_LENGTH + 1)}
    status, answer = call(base, "POST", "/v1/decide", long_id)
    assert status == 422 and answer["field"] == "conversation_id"


def test_health_is_503_not_logging_and_outcomes_are_never_500(
    service: tuple[str, Path],
) -> None:
    """Issue 22 item 5: with the log folder gone or unwritable, outcomes got 500. Now an
    outcome that cannot be made durable is a 503 (not acknowledged), and a retry once the
    folder can be written again records it."""
    base, log = service
    assert call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "k1"})[0] == 200
    shutil.rmtree(log)
    log.write_text("not a folder")
    outcome = {"conversation_id": "k1", "outcome": "resolved"}
    status, answer = call(base, "POST", "/v1/outcome", outcome)
    assert status == 503 and answer["field"] == "log" and "not logging" in answer["error"]
    status, health = call(base, "GET", "/health")
    assert status == 503 and health["field"] == "log" and "not logging" in health["error"]
    log.unlink()
    status, answer = call(base, "POST", "/v1/outcome", outcome)  # the client retries
    assert status == 200 and answer["recorded"] is True
    assert call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "k2"})[0] == 200
    assert (
        call(base, "POST", "/v1/outcome", {"conversation_id": "k2", "outcome": "resolved"})[0]
        == 200
    )
    assert call(base, "GET", "/health")[0] == 200
    assert sorted(load_conversations(log).conversation_id.tolist()) == ["k1", "k2"]


def test_manifest_serves_no_absolute_path(artifact: Path, tmp_path: Path) -> None:
    """Issue 22 item 12: an artifact exported before the fix still has absolute paths."""
    copy = tmp_path / "old"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["training"] = {"run": "/home/alice/runs/train", "data": "/srv/logs/turns.parquet"}
    text = json.dumps(manifest)
    (copy / "manifest.json").write_text(text)
    (copy / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest())
    for base in serve(Predictor.load(copy), None):
        status, served = call(base, "GET", "/manifest")
        assert status == 200 and served["training"] == {"run": "train", "data": "turns.parquet"}
        assert "/home/" not in json.dumps(served)


def test_a_model_fault_is_a_500_naming_the_model(artifact: Path, tmp_path: Path) -> None:
    """Issue 22 item 15: a bad model's NaN probabilities were blamed on the client (422)."""
    from onnx import TensorProto, helper

    k = len(WORLD.actions)
    # probs = 1/k + 0 * sqrt(5 - max(obs)): a distribution on the load-time probe batch
    # (|obs| <= 1), NaN for a state whose encoding exceeds 5 somewhere
    nodes = [
        helper.make_node("ReduceMax", ["obs"], ["top"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["five", "top"], ["gap"]),
        helper.make_node("Sqrt", ["gap"], ["root"]),
        helper.make_node("Mul", ["root", "nought"], ["nan_or_zero"]),
        helper.make_node("Add", ["nan_or_zero", "uniform"], ["probs"]),
    ]
    init = [
        helper.make_tensor("five", TensorProto.FLOAT, [], [5.0]),
        helper.make_tensor("nought", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("uniform", TensorProto.FLOAT, [k], [1.0 / k] * k),
    ]
    copy = _with_graph(artifact, tmp_path / "nan", nodes, init)
    predictor = Predictor.load(copy)  # the probe batch passes
    for base in serve(predictor, None):
        assert call(base, "POST", "/v1/decide", {"state": STATE})[0] == 200
        status, answer = call(
            base, "POST", "/v1/decide", {"state": {**STATE, "tenure_months": 10**6}}
        )
        assert status == 500 and answer["field"] == "model", answer
        assert "not a distribution" in answer["error"]


def test_serve_exits_non_zero_when_rows_could_not_be_written(
    artifact: Path, tmp_path: Path
) -> None:
    """Issue 22 items 4 and 5: rows lost at shutdown, and the process exited 0."""
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "log"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportrl.serving.http", str(artifact), "--port", str(port)]
        + ["--log-dir", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(base, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        assert call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "z"})[0] == 200
        shutil.rmtree(log)
        log.write_text("not a folder")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, stderr
    assert f"error: decision log {log}: 1 rows could not be written" in stderr, stderr


def _with_graph(artifact: Path, copy: Path, nodes: list, init: list) -> Path:
    """``artifact`` copied with its policy.onnx replaced by a graph obs, epsilon -> probs
    (the manifest's hashes updated, as an exporter would write them)."""
    import onnx
    from onnx import TensorProto, helper

    shutil.copytree(artifact, copy)
    dim, k = WORLD.feature_spec.dim, len(WORLD.actions)
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", dim]),
            helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", k])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(copy / "policy.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["policy.onnx"] = hashlib.sha256(
        (copy / "policy.onnx").read_bytes()
    ).hexdigest()
    text = json.dumps(manifest)
    (copy / "manifest.json").write_text(text)
    (copy / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest())
    return copy


def _tiled_graph(reps: int) -> tuple[list, list]:
    """probs = uniform + 0 * max(tile(obs, reps)): a (n, dim * reps) float32 intermediate."""
    from onnx import TensorProto, helper

    k = len(WORLD.actions)
    nodes = [
        helper.make_node("Tile", ["obs", "reps"], ["big"]),
        helper.make_node("ReduceMax", ["big"], ["top"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["top", "nought"], ["zero"]),
        helper.make_node("Add", ["zero", "uniform"], ["probs"]),
    ]
    init = [
        helper.make_tensor("reps", TensorProto.INT64, [2], [1, reps]),
        helper.make_tensor("nought", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("uniform", TensorProto.FLOAT, [k], [1.0 / k] * k),
    ]
    return nodes, init


def test_a_graph_whose_memory_grows_with_the_batch_is_refused_at_load(
    artifact: Path, tmp_path: Path
) -> None:
    """Issue 22 item 7: an ONNX graph that passes the 4-row load probe could exhaust memory
    on a big batch. The probe now runs a full slice (ONNX_BATCH_ROWS rows), and
    onnxruntime's arena is capped (ONNX_ARENA_BYTES): 1.6 GB at 1,024 rows is refused
    without being allocated."""
    from supportrl.serving.artifact import ArtifactError
    from supportrl.serving.models import ONNX_ARENA_BYTES, ONNX_BATCH_ROWS

    reps = 20_000  # 4 rows: 6 MB; 1,024 rows: 1.6 GB
    assert ONNX_BATCH_ROWS * WORLD.feature_spec.dim * reps * 4 > ONNX_ARENA_BYTES
    copy = _with_graph(artifact, tmp_path / "grows", *_tiled_graph(reps))
    with pytest.raises(ArtifactError, match=r"policy\.onnx: the model failed .*load-time probe"):
        Predictor.load(copy)


def test_a_batch_larger_than_a_slice_is_run_in_slices(artifact: Path, tmp_path: Path) -> None:
    """A modest per-row graph serves a batch of several slices, one distribution per row."""
    from supportrl.serving.models import ONNX_BATCH_ROWS

    predictor = Predictor.load(_with_graph(artifact, tmp_path / "small", *_tiled_graph(4)))
    n = 2 * ONNX_BATCH_ROWS + 3
    batch = predictor.decide_batch(_states(n))
    assert batch.probabilities.shape == (n, len(WORLD.actions))
    assert np.allclose(batch.probabilities, 1.0 / len(WORLD.actions))
    real = Predictor.load(artifact)
    states = {**_states(n), "sentiment": list(np.linspace(-1, 1, n))}
    whole = real.decide_batch(states).probabilities
    one = real.decide_batch({k: v[n - 3 :] for k, v in states.items()}).probabilities
    assert np.allclose(whole[n - 3 :], one)  # the last slice's rows, as when run alone
