"""Hypothesis fuzz of the HTTP API (issue 22): bodies, headers and sizes. Whatever arrives,
the service answers JSON, a 2xx or a 4xx naming a field, never a 5xx, and keeps serving.
A real uvicorn server on 127.0.0.1; fast tier (a few dozen requests per property)."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supportrl.serving import DecisionLogger, Predictor
from supportrl.serving.http import MAX_BODY_BYTES

from tests.serving.test_safety_serving import export_policy_dir, serve
from tests.serving.test_serving_http import STATE

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PATHS = ["/v1/decide", "/v1/decide_batch", "/v1/outcome", "/health", "/manifest"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzzhttp")
    predictor = Predictor.load(export_policy_dir(tmp), seed=0)
    logger = DecisionLogger.for_predictor(tmp / "log", predictor, part_rows=5)
    yield from serve(predictor, logger)


def send(
    base: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, object]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["state", "batch", "outcome", "json", "raw", "deep", "big"]))
    if kind == "state":
        state = dict(STATE)
        for key in draw(st.lists(st.sampled_from([*STATE, "extra"]), max_size=3)):
            state[key] = draw(JSON)
        cid = draw(st.none() | st.text(max_size=300) | JSON)
        return json.dumps({"state": state, "conversation_id": cid}).encode()
    if kind == "batch":
        n = draw(st.integers(0, 4))
        rows = [dict(STATE) for _ in range(n)]
        if rows and draw(st.booleans()):
            rows[0][draw(st.sampled_from(list(STATE)))] = draw(JSON)
        return json.dumps({"states": rows, "conversation_ids": draw(JSON)}).encode()
    if kind == "outcome":
        return json.dumps(
            {"conversation_id": draw(JSON), "outcome": draw(JSON), "csat": draw(JSON)}
        ).encode()
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    if kind == "deep":
        depth = draw(st.integers(30, 5000))
        return b'{"state":' + b"[" * depth + b"]" * depth + b"}"
    if kind == "big":
        return b'{"state": "' + b"x" * draw(st.integers(1, 3)) * (3 * 2**20) + b'"}'
    return draw(st.binary(max_size=200))


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    body=bodies(),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    )
    | HEADER_VALUE,
    extra=st.dictionaries(TOKEN.map(lambda t: "x-" + t), HEADER_VALUE, max_size=3),
)
def test_any_request_gets_json_and_never_a_5xx(
    base: str, path: str, body: bytes, content_type: str, extra: dict[str, str]
) -> None:
    method = "GET" if path in ("/health", "/manifest") else "POST"
    headers = {"Content-Type": content_type, **extra}
    status, answer = send(base, method, path, body if method == "POST" else b"", headers)
    assert status < 500, (status, answer)
    if status >= 400:
        assert isinstance(answer, dict) and {"error", "field"} <= set(answer), answer
    assert send(base, "GET", "/health", b"", {})[0] == 200  # still serving, still logging


@FUZZ
@given(declared=st.integers(MAX_BODY_BYTES + 1, 2**62))
def test_a_huge_declared_length_is_refused_before_reading(base: str, declared: int) -> None:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/v1/decide_batch")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(declared))
        conn.endheaders()
        conn.send(b'{"states": [')  # and nothing more: the answer must not wait for it
        resp = conn.getresponse()
        assert resp.status == 413 and json.loads(resp.read())["field"] == "body"
    finally:
        conn.close()
