"""What a request to the HTTP service may be: its limits, its body, its fields.

A body is refused before it is parsed when it is over :data:`MAX_BODY_BYTES` (413) or
nested deeper than :data:`MAX_DEPTH` (400); it must be a JSON object (400). Its fields are
checked here (422 naming the field) before a handler of
:class:`~supportrl.serving.service.Service` acts on them. Every refusal is a
:class:`BadRequest` carrying the HTTP status and the field the answer names. Framework
independent: plain bytes and dicts in (numpy only).
"""

from __future__ import annotations

import json
import math
from typing import Any

from supportrl.serving.json_limits import json_depth
from supportrl.serving.log_rows import MAX_ID_LENGTH

MAX_BATCH = 10_000
"""Most states one ``/v1/decide_batch`` request may carry."""
MAX_BODY_BYTES = 8 * 2**20
"""Largest request body (bytes), checked before it is read whole or parsed."""
MAX_DEPTH = 32
"""Deepest nesting of a request body, checked before it is parsed."""
MAX_TURNS = 1000
"""Most per-turn handle times one ``/v1/outcome`` request may carry."""


class BadRequest(Exception):
    """A request the service refuses: HTTP ``status``, ``field`` named in the answer."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def json_object(body: bytes) -> dict[str, Any]:
    """The body parsed, once it is known to be nested at most :data:`MAX_DEPTH` deep; 400
    unless it is a JSON object."""
    depth = json_depth(body)
    if depth > MAX_DEPTH:
        raise BadRequest(400, f"body: nested {depth} levels deep; at most {MAX_DEPTH}", "body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body: not valid JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"body: expected a JSON object, got {type(data).__name__}", "body")
    return data


def conversation_id(value: Any, field: str) -> str | None:
    """A conversation id (None when absent): a non-empty string of at most
    :data:`~supportrl.serving.log_rows.MAX_ID_LENGTH` characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise BadRequest(
            422,
            f"{field}: expected a non-empty string of at most {MAX_ID_LENGTH} characters, "
            f"got {type(value).__name__}{f' of {len(value)} characters' if isinstance(value, str) else ''}",
            field,
        )
    return value


def batch_request(body: dict[str, Any]) -> tuple[str, Any, list[str] | None]:
    """A ``/v1/decide_batch`` body: (``"states"`` or ``"columns"``, its value, the
    conversation ids or None), with at most :data:`MAX_BATCH` states."""
    if ("states" in body) == ("columns" in body):
        raise BadRequest(422, "give exactly one of 'states' (a list) or 'columns'", "states")
    field = "states" if "states" in body else "columns"
    states = body[field]
    if field == "states" and not isinstance(states, list):
        raise BadRequest(422, "states: expected a list of state objects", "states")
    if field == "columns" and not isinstance(states, dict):
        raise BadRequest(422, "columns: expected an object of name -> list", "columns")
    try:
        n = len(states) if field == "states" else len(next(iter(states.values()), []))
    except TypeError:
        n = 0
    if n > MAX_BATCH:
        raise BadRequest(422, f"{field}: at most {MAX_BATCH} states per request, got {n}", field)
    ids = body.get("conversation_ids")
    if ids is not None and (
        not isinstance(ids, list)
        or len(ids) != n
        or not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids)
    ):
        raise BadRequest(
            422,
            f"conversation_ids: expected {n} non-empty strings of at most {MAX_ID_LENGTH} "
            "characters",
            "conversation_ids",
        )
    return field, states, ids


def outcome_request(body: dict[str, Any]) -> tuple[str, str, float | None, list[float] | None]:
    """A ``/v1/outcome`` body: (conversation id, outcome, CSAT or None, seconds per logged
    turn or None)."""
    cid = conversation_id(body.get("conversation_id"), "conversation_id")
    if cid is None:
        raise BadRequest(422, "conversation_id: required", "conversation_id")
    outcome = body.get("outcome")
    if not isinstance(outcome, str):
        raise BadRequest(422, f"outcome: expected a string, got {outcome!r}", "outcome")
    csat = body.get("csat")
    if csat is not None and (
        isinstance(csat, bool) or not isinstance(csat, int | float) or not math.isfinite(csat)
    ):
        raise BadRequest(422, f"csat: expected a number in [1, 5] or null, got {csat!r}", "csat")
    handle = body.get("handle_time_s")
    if handle is not None:
        values = handle if isinstance(handle, list) else [handle]
        if (
            not values
            or len(values) > MAX_TURNS
            or not all(
                not isinstance(v, bool)
                and isinstance(v, int | float)
                and math.isfinite(v)
                and v >= 0
                for v in values
            )
        ):
            raise BadRequest(
                422,
                "handle_time_s: expected seconds >= 0 per logged turn (a list, or one number)",
                "handle_time_s",
            )
        handle = values
    return cid, outcome, csat, handle
