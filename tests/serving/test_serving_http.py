"""The HTTP service on a real uvicorn server bound to 127.0.0.1: answers, malformed requests, logging."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.serving import DecisionLogger, Predictor
from supportrl.serving.http import create_app
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld

WORLD = SyntheticWorld()
STATE = {
    "turn": 0,
    "previous_action": "none",
    "intent": "billing",
    "sentiment": -0.3,
    "tier": "free",
    "channel": "chat",
    "tenure_months": 12,
    "prior_contacts_30d": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(
    base: str, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = build_q_network(WORLD.feature_spec.dim, 6, (16, 16), True, seed=2)
    policy = QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)
    return export_policy(
        policy,
        tmp_path_factory.mktemp("http") / "artifact",
        epsilon=0.1,
        bounds={"tenure_months": (0.0, None), "prior_contacts_30d": (0.0, None)},
    )


@pytest.fixture(scope="module")
def server(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    predictor = Predictor.load(artifact, seed=0)
    log_dir = tmp_path_factory.mktemp("decisions") / "log"
    logger = DecisionLogger.for_predictor(log_dir, predictor, part_rows=1)
    port = free_port()
    config = uvicorn.Config(
        create_app(predictor, logger=logger), host="127.0.0.1", port=port, log_level="error"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", log_dir
    srv.should_exit = True
    thread.join(timeout=10)


def test_decide_health_manifest_and_logged_round_trip(server: tuple[str, Path]) -> None:
    base, log_dir = server
    status, health = call(base, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["policy"] == "dqn"
    status, manifest = call(base, "GET", "/manifest")
    assert status == 200 and manifest["actions"] == list(WORLD.actions)

    status, d = call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "h1"})
    assert status == 200 and d["logged"] is True
    assert d["action"] in WORLD.actions and d["propensity"] == d["probabilities"][d["action"]]
    assert min(d["probabilities"].values()) >= 0.1 / 6 - 1e-6
    second = {**STATE, "turn": 1, "previous_action": d["action"]}
    status, d2 = call(base, "POST", "/v1/decide", {"state": second, "conversation_id": "h1"})
    assert status == 200 and d2["logged"] is True
    status, ok = call(
        base, "POST", "/v1/outcome", {"conversation_id": "h1", "outcome": "resolved", "csat": 5}
    )
    assert status == 200 and ok == {"recorded": True}

    batch = [STATE, {**STATE, "intent": "cancel"}]
    status, b = call(
        base, "POST", "/v1/decide_batch", {"states": batch, "conversation_ids": ["h2", "h3"]}
    )
    assert status == 200 and len(b["actions"]) == 2 and b["logged"] is True
    columns = {k: [v, v] for k, v in STATE.items()}
    status, c = call(base, "POST", "/v1/decide_batch", {"columns": columns})
    assert status == 200 and c["probabilities"][0] == pytest.approx(b["probabilities"][0])
    for cid in ("h2", "h3"):
        assert (
            call(base, "POST", "/v1/outcome", {"conversation_id": cid, "outcome": "abandoned"})[0]
            == 200
        )

    logs = load_conversations(log_dir)  # part_rows=1: every outcome wrote a part
    assert sorted(logs.conversation_id.tolist()) == ["h1", "h2", "h3"]
    assert logs.n_turns == 4
    assert logs.csat[logs.offsets[1] - 1] == 5.0


BAD_STATE_TURN = {**STATE, "turn": -2}

MALFORMED = [
    # (path, body or raw bytes, status, field, message fragment)
    ("/v1/decide", b"{not json", 400, "body", "not valid JSON"),
    ("/v1/decide", [1, 2], 400, "body", "expected a JSON object"),
    ("/v1/decide", {}, 422, "state", "expected a JSON object"),
    ("/v1/decide", {"state": "hello"}, 422, "state", "expected a JSON object"),
    ("/v1/decide", {"state": {**STATE, "tier": "gold"}}, 422, "state.tier", "unknown category"),
    (
        "/v1/decide",
        {"state": {k: v for k, v in STATE.items() if k != "intent"}},
        422,
        "state.intent",
        "missing key",
    ),
    (
        "/v1/decide",
        {"state": {**STATE, "sentiment": "sad"}},
        422,
        "state.sentiment",
        "expected a number",
    ),
    ("/v1/decide", {"state": {**STATE, "sentiment": 3}}, 422, "state.sentiment", "out of range"),
    (
        "/v1/decide",
        {"state": {**STATE, "tenure_months": 10**400}},
        422,
        "state.tenure_months",
        "finite",
    ),
    (
        "/v1/decide_batch",
        {"columns": {**{k: [v] for k, v in STATE.items()}, "turn": [10**400]}},
        422,
        "columns.turn",
        "finite",
    ),
    ("/v1/decide", {"state": BAD_STATE_TURN}, 422, "state.turn", "out of range"),
    (
        "/v1/decide",
        {"state": {**STATE, "tenure_months": None}},
        422,
        "state.tenure_months",
        "expected a number",
    ),
    (
        "/v1/decide",
        {"state": {**STATE, "intent": ["billing"]}},
        422,
        "state.intent",
        "expected a string",
    ),
    ("/v1/decide", b'{"state": {"sentiment": NaN}}', 422, "state.", "missing key"),
    (
        "/v1/decide",
        {"state": STATE, "conversation_id": 7},
        422,
        "conversation_id",
        "non-empty string",
    ),
    ("/v1/decide_batch", {}, 422, "states", "exactly one of"),
    ("/v1/decide_batch", {"states": STATE}, 422, "states", "expected a list"),
    ("/v1/decide_batch", {"states": [STATE, 3]}, 422, "states[1]", "expected a state dict"),
    (
        "/v1/decide_batch",
        {"states": [STATE, {**STATE, "channel": "fax"}]},
        422,
        "states.channel",
        "row 1",
    ),
    ("/v1/decide_batch", {"columns": {"turn": 0}}, 422, "columns.turn", "list of values"),
    (
        "/v1/decide_batch",
        {"columns": {"turn": [0, 1], "intent": ["billing"]}},
        422,
        "columns",
        "different lengths",
    ),
    (
        "/v1/decide_batch",
        {"states": [STATE], "conversation_ids": ["a", "b"]},
        422,
        "conversation_ids",
        "expected 1",
    ),
    ("/v1/decide_batch", {"states": [STATE] * 10_001}, 422, "states", "at most"),
    ("/v1/outcome", {"outcome": "resolved"}, 422, "conversation_id", "required"),
    (
        "/v1/outcome",
        {"conversation_id": "nobody", "outcome": "resolved"},
        404,
        "conversation_id",
        "no decisions",
    ),
    ("/v1/outcome", {"conversation_id": "x", "outcome": 3}, 422, "outcome", "expected a string"),
    (
        "/v1/outcome",
        {"conversation_id": "x", "outcome": "resolved", "csat": "great"},
        422,
        "csat",
        "number",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "field", "message"), MALFORMED)
def test_malformed_requests_get_4xx_naming_the_field(
    server: tuple[str, Path], path: str, body: Any, status: int, field: str, message: str
) -> None:
    base, _ = server
    raw = body if isinstance(body, bytes) else None
    got, answer = call(base, "POST", path, None if raw else body, raw=raw)
    assert got == status, answer
    assert answer["field"].startswith(field), answer
    assert message in answer["error"], answer


def test_outcome_checks_through_the_logger(server: tuple[str, Path]) -> None:
    base, _ = server
    assert call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "o1"})[0] == 200
    status, answer = call(
        base, "POST", "/v1/outcome", {"conversation_id": "o1", "outcome": "happy"}
    )
    assert status == 422 and answer["field"] == "outcome"
    status, answer = call(
        base, "POST", "/v1/outcome", {"conversation_id": "o1", "outcome": "resolved", "csat": 9}
    )
    assert status == 422 and answer["field"] == "csat"
    assert (
        call(base, "POST", "/v1/outcome", {"conversation_id": "o1", "outcome": "resolved"})[0]
        == 200
    )
    status, answer = call(
        base, "POST", "/v1/outcome", {"conversation_id": "o1", "outcome": "resolved"}
    )
    assert status == 404  # completed and written: no open conversation o1 any more


def test_supportrl_serve_command(artifact: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supportrl.experiments.cli",
            "serve",
            f"artifact={artifact}",
            f"serve.port={port}",
            f"paths.output_dir={tmp_path}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, health = call(f"http://127.0.0.1:{port}", "GET", "/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "supportrl serve did not come up"
                time.sleep(0.2)
        assert status == 200 and health["policy"] == "dqn"
        status, d = call(f"http://127.0.0.1:{port}", "POST", "/v1/decide", {"state": STATE})
        assert status == 200 and d["logged"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "supportrl.experiments.cli",
            "serve",
            f"paths.output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: artifact is required")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 20)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
STATE_LIKE = st.fixed_dictionaries(
    {},
    optional={k: JSON | st.just(v) for k, v in STATE.items()},
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/decide", "/v1/decide_batch", "/v1/outcome"]),
    body=st.one_of(
        JSON,
        st.fixed_dictionaries({"state": STATE_LIKE}, optional={"conversation_id": JSON}),
        st.fixed_dictionaries({"states": st.lists(STATE_LIKE, max_size=3)}),
        st.fixed_dictionaries({"columns": st.dictionaries(st.sampled_from(list(STATE)), JSON)}),
        st.fixed_dictionaries({"conversation_id": JSON, "outcome": JSON}, optional={"csat": JSON}),
    ),
)
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_no_input_gets_a_5xx(server: tuple[str, Path], path: str, body: Any) -> None:
    status, answer = call(server[0], "POST", path, body)
    assert status < 500, (status, answer)
    if status >= 400:
        assert answer["field"] and answer["error"]


def test_a_fallback_decision_leaves_its_conversation_out_of_the_log(
    artifact: Path, tmp_path: Path
) -> None:
    from supportrl.serving.http import Service

    predictor = Predictor.load(
        artifact, on_invalid="fallback", fallback_action="escalate_human", seed=0
    )
    logger = DecisionLogger.for_predictor(tmp_path / "log", predictor)
    service = Service(predictor, logger)
    assert service.decide({"state": STATE, "conversation_id": "ok"})["logged"] is True
    assert service.decide({"state": STATE, "conversation_id": "bad"})["logged"] is True
    second = {**STATE, "turn": 1, "tier": "gold"}  # invalid: answered with the fallback
    answer = service.decide({"state": second, "conversation_id": "bad"})
    assert answer["fallback"] and answer["action"] in WORLD.actions and not answer["logged"]
    later = service.decide({"state": {**STATE, "turn": 2}, "conversation_id": "bad"})
    assert later["logged"] is False
    assert service.outcome({"conversation_id": "bad", "outcome": "resolved"})["recorded"] is False
    batch = service.decide_batch(
        {"states": [STATE, {**STATE, "channel": "fax"}], "conversation_ids": ["b1", "b2"]}
    )
    assert batch["fallback"] == [False, True] and batch["logged"] is True
    for cid in ("ok", "b1"):
        assert service.outcome({"conversation_id": cid, "outcome": "resolved"})["recorded"]
    logger.close()
    logs = load_conversations(tmp_path / "log")
    assert sorted(logs.conversation_id.tolist()) == ["b1", "ok"]
    assert logger.dropped == 2
