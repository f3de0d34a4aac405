"""Rows of the decision log: the schema-v1 columns logged decisions become, their checks, and
completed conversations written as one Parquet part.

A batch of decisions becomes columns (:meth:`LogColumns.decision_columns`): ids and labels
as object arrays of Python strings capped in length (never fixed-width numpy strings),
numbers as float64, timestamps as ``datetime64[us]``. Completed conversations are ordered
by conversation and turn, their outcome and CSAT put on their last row
(:func:`completed_rows`), and written to a temporary name then renamed
(:meth:`LogColumns.write_part`), so no half-written part is ever seen. The
:class:`~supportrl.serving.DecisionLogger` holds the rows in between.

Writing Parquet needs pyarrow; nothing else beyond numpy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("continue", "resolved", "escalated", "abandoned")
"""Schema-v1 outcomes; ``continue`` on a conversation's last row means it was cut off."""
STATE_COLUMNS = ("turn", "intent", "sentiment")
"""Schema-v1 state columns; ``previous_action`` is derived from the actions on reading."""
MAX_ID_LENGTH = 256
"""Longest conversation, customer or decision id (characters) a log row may carry."""
MAX_LABEL_LENGTH = 256
"""Longest categorical value or action label (characters) a log row may carry."""

Columns = dict[str, np.ndarray]
"""Rows as columns: name -> array of shape (n,)."""


def strings(values: Any, name: str, limit: int) -> np.ndarray:
    """``values`` as an object array of str, each at most ``limit`` characters (ValueError)."""
    out = np.fromiter(map(str, values), dtype=object, count=len(values))
    if len(out) and max(map(len, out)) > limit:
        row = next(i for i, v in enumerate(out) if len(v) > limit)
        raise ValueError(f"{name}: row {row} is longer than {limit} characters")
    return out


@dataclass(frozen=True)
class LogColumns:
    """The columns of one decision log beyond the schema-v1 ones."""

    categorical: tuple[str, ...]
    """Categorical state variables (``intent`` and ``previous_action`` not among them)."""
    numeric: tuple[str, ...]
    """Numeric state variables (``turn`` and ``sentiment`` not among them)."""
    experiment: bool = False
    """Whether rows carry the experiment columns ``arm`` and ``decision_id``."""
    customer_column: bool = False
    """Whether rows carry a (pseudonymized) ``customer_id``: every row then needs one."""

    def state_names(self) -> tuple[str, ...]:
        return ("turn", "intent", "sentiment", *self.categorical, *self.numeric)

    def header(self) -> dict[str, Any]:
        """These columns as the journal's header records them."""
        return {
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "experiment": self.experiment,
            "customer_column": self.customer_column,
        }

    def decision_columns(
        self,
        ids: np.ndarray,
        states: Mapping[str, Sequence[Any]],
        actions: Sequence[str],
        propensities: Sequence[float],
        *,
        timestamps: Sequence[Any] | None,
        handle_time_s: Sequence[float] | None,
        arms: Sequence[str] | None,
        customer_ids: Sequence[str] | None,
        decision_ids: Sequence[str] | None,
    ) -> Columns:
        """``n`` decisions (``ids`` from :func:`strings`) as checked columns, each (n,)
        (ValueError naming the argument; see ``DecisionLogger.log_batch``)."""
        n = len(ids)
        missing = [name for name in self.state_names() if name not in states]
        if missing:
            raise ValueError(f"states: missing state variable(s) {missing}")
        chunk = {"conversation_id": ids}
        for name in ("intent", *self.categorical):
            chunk[name] = strings(states[name], name, MAX_LABEL_LENGTH)
        for name in ("turn", "sentiment", *self.numeric):
            chunk[name] = np.asarray(states[name], dtype=np.float64)
        chunk["action"] = strings(actions, "actions", MAX_LABEL_LENGTH)
        chunk["propensity"] = np.asarray(propensities, dtype=np.float64)
        if timestamps is None:
            chunk["timestamp"] = np.full(n, np.datetime64(time.time_ns() // 1000, "us"))
        else:
            chunk["timestamp"] = np.asarray(timestamps, dtype="datetime64[us]")
        chunk["handle_time_s"] = (
            np.full(n, np.nan)
            if handle_time_s is None
            else np.asarray(handle_time_s, dtype=np.float64)
        )
        if self.experiment:
            if arms is None or decision_ids is None:
                raise ValueError("arms, decision_ids: an experiment's log needs both")
            chunk["arm"] = strings(arms, "arms", MAX_LABEL_LENGTH)
            chunk["decision_id"] = strings(decision_ids, "decision_ids", MAX_ID_LENGTH)
        if self.customer_column:
            if customer_ids is None or not all(customer_ids):
                raise ValueError("customer_ids: this log keeps a customer id on every row")
            chunk["customer_id"] = strings(customer_ids, "customer_ids", MAX_ID_LENGTH)
        for name, values in chunk.items():
            if values.shape != (n,):
                raise ValueError(f"{name}: expected {n} values, got shape {values.shape}")
        bad = ~((chunk["propensity"] > 0) & (chunk["propensity"] <= 1))
        if bad.any():
            raise ValueError(
                f"propensities: must be in (0, 1]; rows {np.flatnonzero(bad)[:5].tolist()}"
            )
        return chunk

    def write_part(self, path: Path, rows: Columns, outcome: np.ndarray, csat: np.ndarray) -> int:
        """Write ``rows`` (from :func:`completed_rows`) as the Parquet part ``path``, through a
        temporary name; returns the number of rows (OSError when it cannot be written)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "conversation_id": pa.array(rows["conversation_id"], pa.string()),
                "turn": pa.array(rows["turn"].astype(np.int64)),
                "intent": pa.array(rows["intent"], pa.string()),
                "sentiment": pa.array(rows["sentiment"]),
                "action": pa.array(rows["action"], pa.string()),
                "propensity": pa.array(rows["propensity"]),
                "outcome": pa.array(outcome.astype(str), pa.string()),
                "csat": pa.array(csat, pa.float64(), from_pandas=True),
                "handle_time_s": pa.array(rows["handle_time_s"], pa.float64(), from_pandas=True),
                "timestamp": pa.array(rows["timestamp"], pa.timestamp("us")),
                **{c: pa.array(rows[c], pa.string()) for c in self.categorical},
                **(
                    {
                        c: pa.array([v or None for v in rows[c].tolist()], pa.string())
                        for c in ("arm", "decision_id")
                    }
                    if self.experiment
                    else {}
                ),
                **(
                    {"customer_id": pa.array(rows["customer_id"].tolist(), pa.string())}
                    if self.customer_column
                    else {}
                ),
                **{c: pa.array(rows[c]) for c in self.numeric},
            }
        )
        tmp = path.with_name("." + path.name + ".tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written part
            raise
        return table.num_rows


def check_turns(
    ids: np.ndarray,
    turns: np.ndarray,
    next_turn: Mapping[str, int],
    done: Mapping[str, Any],
) -> dict[str, int]:
    """The conversations' next turns after these rows (ValueError if out of order, or if a
    conversation is already in ``done``); ``next_turn``: each open conversation's next turn."""
    expected: dict[str, int] = {}
    for i, (cid, turn) in enumerate(zip(ids.tolist(), turns.tolist(), strict=True)):
        if cid in done:
            raise ValueError(f"conversation {cid!r}: already completed by record_outcome")
        want = expected.get(cid, next_turn.get(cid, 0))
        if turn != want:
            raise ValueError(
                f"conversation {cid!r}: row {i} has turn {turn:g}, expected {want} "
                "(turns are 0, 1, 2, ... in order)"
            )
        expected[cid] = want + 1
    return expected


def check_outcomes(
    ids: Sequence[str],
    outcomes: Sequence[str],
    scores: np.ndarray,
    next_turn: Mapping[str, int],
    done: Mapping[str, Any],
) -> None:
    """Outcomes for logged conversations without one yet (KeyError for a conversation with
    no decisions, ValueError naming the field otherwise); ``scores``: CSAT, NaN for none."""
    for cid, outcome, score in zip(ids, outcomes, scores.tolist(), strict=True):
        if cid not in next_turn:
            raise KeyError(f"conversation_id {cid!r}: no decisions logged for it")
        if cid in done:
            raise ValueError(f"conversation_id {cid!r}: outcome already recorded")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: {outcome!r} is not one of {list(OUTCOMES)}")
        if not (np.isnan(score) or 1.0 <= score <= 5.0):
            raise ValueError(f"csat: must be in [1, 5], got {score}")


def completed_rows(
    rows: Columns, done: Mapping[str, tuple[str, float]], handles: Mapping[str, np.ndarray]
) -> tuple[Columns, np.ndarray, np.ndarray, list[str]]:
    """The rows of completed conversations in part order (by conversation, then turn), each
    conversation's ``done`` (outcome, CSAT) on its last row and ``handles`` (seconds per
    turn) replacing its logged handle times. Returns (rows, outcome, csat, conversation ids)."""
    _, codes = np.unique(rows["conversation_id"], return_inverse=True)
    order = np.lexsort((rows["turn"], codes.reshape(-1)))
    rows = {k: v[order] for k, v in rows.items()}
    cid = rows["conversation_id"]
    last = np.append(cid[1:] != cid[:-1], True)
    outcome = np.full(len(cid), "continue", dtype=object)
    csat = np.full(len(cid), np.nan)
    ends = cid[last].tolist()
    outcome[last] = [done[c][0] for c in ends]
    csat[last] = [done[c][1] for c in ends]
    if handles:
        starts = np.flatnonzero(np.append(True, cid[1:] != cid[:-1]))
        for start, c in zip(starts.tolist(), ends, strict=True):
            given = handles.get(c)
            if given is not None:
                rows["handle_time_s"][start : start + len(given)] = given
    return rows, outcome, csat, ends
