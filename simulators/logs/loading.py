"""Conversation logs, schema v1: :func:`load_conversations` reads and validates a turns table
(and optionally a customers table joined on ``customer_id``) into
:class:`~supportrl.envs.conversations.LoggedConversations`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import CONTINUE, OUTCOMES
from supportrl.simulators.logs.columns import (
    _check_labels,
    _check_range,
    _codes,
    _codes_index,
    _numbers,
    _plain_dtype,
    _require_columns,
    _sort_order,
    _unicode,
)
from supportrl.simulators.logs.features import _check_inferred, _feature_arrays, _infer_features
from supportrl.simulators.logs.reading import _Table, read_table
from supportrl.simulators.logs.schema import (
    DEFAULT_ACTIONS,
    MAX_HANDLE_TIME_S,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    LogLimits,
    LogValidationError,
)


@dataclass(frozen=True)
class _TurnColumns:
    """The turns table's schema columns, validated, in file row order (each shape (n,))."""

    conv_codes: np.ndarray
    conv_labels: np.ndarray
    turn: np.ndarray
    intent_codes: np.ndarray
    intent_labels: np.ndarray
    sentiment: np.ndarray
    action: np.ndarray
    outcome: np.ndarray
    propensity: np.ndarray
    csat: np.ndarray
    handle_time_s: np.ndarray
    timestamp: np.ndarray | None
    cust_codes: np.ndarray | None
    cust_labels: pd.Index | None


@dataclass(frozen=True)
class _RowOrder:
    """Rows sorted by (conversation, turn); row numbers in messages stay those of the file."""

    conv_ids: np.ndarray
    """Distinct conversation ids in sorted order, shape (n_conversations,)."""
    conv_sorted: np.ndarray
    """Each row's conversation number (into ``conv_ids``), file row order, shape (n,)."""
    order: np.ndarray
    """File row of each sorted row, shape (n,)."""
    in_order: bool
    """The file's rows are already sorted (logs written in order): no reordering needed."""

    def fresh(self, values: np.ndarray) -> np.ndarray:
        """``values`` (n,), built by the loader, in sorted row order."""
        return values if self.in_order else values[self.order]


def _optional_numbers(
    table: _Table, column: str, bad: Callable[[np.ndarray], np.ndarray], rule: str
) -> np.ndarray:
    """An optional numeric column (NaN where missing or absent), ``bad`` rows refused."""
    if column not in table.frame:
        return np.full(len(table.frame), np.nan)
    values = _numbers(table, column, allow_missing=True)
    _check_range(table, column, values, bad(values), rule)
    return values


def _turn_columns(table: _Table, actions: tuple[str, ...]) -> _TurnColumns:
    """Validate every schema column of the turns table, one column at a time."""
    frame = table.frame
    conv_codes, conv_labels = _codes(table, "conversation_id")
    turn_f = _numbers(table, "turn", allow_missing=False)
    _check_range(
        table, "turn", turn_f, (turn_f < 0) | (turn_f != np.round(turn_f)), "integers >= 0"
    )
    intent_codes, intent_labels = _codes(table, "intent", categorical=True)
    sentiment = _numbers(table, "sentiment", allow_missing=False)
    _check_range(table, "sentiment", sentiment, (sentiment < -1) | (sentiment > 1), "in [-1, 1]")
    action = _check_labels(table, "action", *_codes(table, "action"), actions, "action(s)")
    outcome = _check_labels(table, "outcome", *_codes(table, "outcome"), OUTCOMES, "outcome(s)")
    propensity = _optional_numbers(table, "propensity", lambda p: (p <= 0) | (p > 1), "in (0, 1]")
    csat = _optional_numbers(table, "csat", lambda c: (c < 1) | (c > 5), "in [1, 5]")
    handle = _optional_numbers(
        table,
        "handle_time_s",
        lambda h: (h < 0) | (h > MAX_HANDLE_TIME_S),
        f">= 0 and at most {MAX_HANDLE_TIME_S:.0f} s (a week)",
    )
    timestamp = None
    if "timestamp" in frame:
        parsed = pd.to_datetime(frame["timestamp"], errors="coerce", format="mixed")
        wrong = np.flatnonzero(parsed.isna().to_numpy() & frame["timestamp"].notna().to_numpy())
        if len(wrong):
            raise LogValidationError(f"{table.where(wrong, 'timestamp')}: not a date-time")
        timestamp = parsed.to_numpy(dtype="datetime64[ns]")
    cust_codes, cust_labels = (
        _codes_index(table, "customer_id") if "customer_id" in frame else (None, None)
    )
    return _TurnColumns(
        conv_codes=conv_codes,
        conv_labels=conv_labels,
        turn=turn_f.astype(np.int64),
        intent_codes=intent_codes,
        intent_labels=intent_labels,
        sentiment=sentiment,
        action=action,
        outcome=outcome,
        propensity=propensity,
        csat=csat,
        handle_time_s=handle,
        timestamp=timestamp,
        cust_codes=cust_codes,
        cust_labels=cust_labels,
    )


def _row_order(cols: _TurnColumns) -> _RowOrder:
    """Sort rows by (conversation, turn); conversations are numbered in sorted id order,
    sorting the k distinct ids, not n rows."""
    rank = np.argsort(cols.conv_labels, kind="stable")
    sorted_code = np.empty(len(rank), dtype=np.int64)
    sorted_code[rank] = np.arange(len(rank))
    conv_sorted = sorted_code[cols.conv_codes]
    order = _sort_order(conv_sorted, cols.turn)
    n = len(order)
    in_order = bool(order[-1] == n - 1) and bool((order[1:] > order[:-1]).all())
    return _RowOrder(cols.conv_labels[rank], conv_sorted, order, in_order)


def _check_conversations(
    table: _Table,
    cols: _TurnColumns,
    rows: _RowOrder,
    turn: np.ndarray,
    outcome: np.ndarray,
    cust_sorted: np.ndarray | None,
) -> np.ndarray:
    """Per-conversation rules on the sorted rows: turns 0, 1, 2, ... without duplicates or
    gaps, a terminal outcome and CSAT only on a conversation's last row, one customer per
    conversation. ``turn``, ``outcome``, ``cust_sorted`` (n,): those columns in sorted row
    order. Returns the conversation offsets, shape (n_conversations + 1,) int64."""
    order = rows.order
    n = len(order)
    codes = rows.fresh(rows.conv_sorted)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    offsets = np.r_[starts, n].astype(np.int64)
    first = np.zeros(n, dtype=bool)
    first[starts] = True
    last = np.zeros(n, dtype=bool)
    last[offsets[1:] - 1] = True

    def refuse(bad: np.ndarray, column: str, message: str) -> None:
        if bad.any():
            file_rows = np.sort(order[np.flatnonzero(bad)])
            raise LogValidationError(f"{table.where(file_rows, column)}: {message}")

    same_conv_prev = ~first
    dup = np.zeros(n, dtype=bool)
    dup[1:] = same_conv_prev[1:] & (turn[1:] == turn[:-1])
    refuse(dup, "turn", "duplicate turn within a conversation")
    gap = np.zeros(n, dtype=bool)
    gap[first] = turn[first] != 0
    gap[1:] |= same_conv_prev[1:] & (turn[1:] != turn[:-1] + 1)
    refuse(gap, "turn", "turns must be 0, 1, 2, ... without gaps in each conversation")
    early_end = (outcome != CONTINUE) & ~last
    refuse(early_end, "outcome", "terminal outcome before the conversation's last row")
    early_csat = ~np.isnan(cols.csat[order]) & ~last
    refuse(early_csat, "csat", "csat is only allowed on a conversation's last row")
    if cust_sorted is not None:
        split = np.zeros(len(offsets) - 1, dtype=bool)
        split[codes[cust_sorted != cust_sorted[starts][codes]]] = True
        refuse(split[codes], "customer_id", "a conversation has several customer_ids")
    return offsets


def _context_features(
    table: _Table,
    cols: _TurnColumns,
    rows: _RowOrder,
    customers: str | Path | None,
    categorical: Sequence[str] | None,
    numeric: Sequence[str] | None,
    limits: LogLimits | None,
) -> tuple[dict[str, np.ndarray], tuple[str, ...], tuple[str, ...]]:
    """The context features of the turns (and customers) table in sorted row order, and the
    categorical and numeric names (turn columns first)."""
    frame = table.frame
    extra = [c for c in frame.columns if c not in RESERVED_COLUMNS]
    dtypes: dict[str, Any] = {c: _plain_dtype(frame[c].dtype) for c in extra}
    cust_table = None
    if customers is not None:
        cust_table = read_table(customers, limits, dictionary=True)
        _require_columns(cust_table, ["customer_id"])
        cust_extra = [c for c in cust_table.frame.columns if c != "customer_id"]
        clash = sorted(set(cust_extra) & set(frame.columns))
        if clash:
            raise LogValidationError(
                f"{cust_table.path}: column(s) {clash} also in the turns table"
            )
        dtypes.update({c: _plain_dtype(cust_table.frame[c].dtype) for c in cust_extra})
    cat_all, num_all = _infer_features(dtypes, categorical, numeric, table.path)
    if categorical is None and numeric is None:
        _check_inferred(
            table, [c for c in cat_all if c in extra], [c for c in num_all if c in extra]
        )
        if cust_table is not None:
            _check_inferred(
                cust_table,
                [c for c in cat_all if c not in extra],
                [c for c in num_all if c not in extra],
            )
    turn_cat = tuple(c for c in cat_all if c in extra)
    turn_num = tuple(c for c in num_all if c in extra)
    cust_cat = tuple(c for c in cat_all if c not in extra)
    cust_num = tuple(c for c in num_all if c not in extra)
    features = _feature_arrays(table, turn_cat, turn_num, None if rows.in_order else rows.order)
    if cust_table is not None:
        cust_row = _join_customers(table, cols.cust_codes, cols.cust_labels, cust_table)
        features.update(_feature_arrays(cust_table, cust_cat, cust_num, rows.fresh(cust_row)))
    return features, turn_cat + cust_cat, turn_num + cust_num


def load_conversations(
    turns: str | Path | _Table,
    *,
    customers: str | Path | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    actions: Sequence[str] = DEFAULT_ACTIONS,
    limits: LogLimits | None = None,
) -> LoggedConversations:
    """Load and validate schema-v1 conversation logs.

    Args:
        turns: CSV file, Parquet file or directory of Parquet parts.
        customers: optional customers table joined on ``customer_id``; its other columns
            become context features.
        categorical, numeric: context feature columns. When both are None, every
            non-schema column is a feature, numeric if its dtype is numeric, else
            categorical. When either is given, every extra column must be declared.
        actions: the action catalogue.
        limits: label length and level caps (default :class:`LogLimits`).

    Raises:
        LogValidationError: on any schema violation, naming file, column and rows.
    """
    actions = tuple(actions)
    if len(set(actions)) != len(actions) or not actions:
        raise LogValidationError(
            f"actions: catalogue must be non-empty and unique, got {list(actions)}"
        )
    table = turns if isinstance(turns, _Table) else read_table(turns, limits, dictionary=True)
    _require_columns(table, REQUIRED_COLUMNS)
    if customers is not None:
        _require_columns(table, ["customer_id"], "join")
    cols = _turn_columns(table, actions)
    rows = _row_order(cols)
    turn, outcome = rows.fresh(cols.turn), rows.fresh(cols.outcome)
    cust_sorted = None if cols.cust_codes is None else rows.fresh(cols.cust_codes)
    offsets = _check_conversations(table, cols, rows, turn, outcome, cust_sorted)
    features, cat, num = _context_features(
        table, cols, rows, customers, categorical, numeric, limits
    )
    order = rows.order
    return LoggedConversations(
        actions=actions,
        conversation_id=rows.conv_ids,
        offsets=offsets,
        turn=turn,
        intent=cols.intent_labels[rows.fresh(cols.intent_codes)],
        sentiment=cols.sentiment[order],
        action=rows.fresh(cols.action),
        outcome=outcome,
        propensity=cols.propensity[order],
        csat=cols.csat[order],
        handle_time_s=cols.handle_time_s[order],
        features=features,
        categorical=cat,
        numeric=num,
        customer_id=None if cust_sorted is None else _unicode(cols.cust_labels)[cust_sorted],
        timestamp=None if cols.timestamp is None else cols.timestamp[order],
        source=str(table.path if isinstance(turns, _Table) else turns),
        source_row=order,
    )


def _join_customers(
    table: _Table, codes: np.ndarray, labels: pd.Index, customers: _Table
) -> np.ndarray:
    """Row of ``customers`` for each turn row, shape (n,) int64.

    ``codes``/``labels``: the turns' ``customer_id`` (see :func:`_codes_index`). Ids are
    matched on the distinct values; a duplicate id in ``customers`` or an id it lacks is
    an error.
    """
    found = _find_unique_ids(customers, labels)
    if found is None:  # not plain strings, or a duplicate: factorize, name duplicate rows
        import pyarrow as pa
        import pyarrow.compute as pc

        cust_codes, cust_labels = _codes_index(customers, "customer_id")
        counts = np.bincount(cust_codes, minlength=len(cust_labels))
        if (counts > 1).any():
            dup_rows = np.flatnonzero(counts[cust_codes] > 1)
            raise LogValidationError(
                f"{customers.where(dup_rows, 'customer_id')}: duplicate customer_id"
            )
        row_of_label = np.empty(len(cust_labels), dtype=np.int64)
        row_of_label[cust_codes] = np.arange(len(cust_codes))
        found = pc.index_in(pa.array(labels), value_set=pa.array(cust_labels))
        found = found.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        found = np.where(found < 0, -1, row_of_label[np.maximum(found, 0)])
    if (found < 0).any():
        unknown = np.flatnonzero(found[codes] < 0)
        raise LogValidationError(
            f"{table.where(unknown, 'customer_id')}: customer_id not in customers table "
            f"{customers.path} ({int((found < 0).sum())} unknown id(s); "
            "ids are not shown: they are personal data)"
        )
    return found[codes]


def _find_unique_ids(customers: _Table, labels: pd.Index) -> np.ndarray | None:
    """Row of ``customers`` holding each of ``labels`` (k,) (-1: none), int64, or None.

    One factorization of the customers' ids followed by the labels: when the ids are
    strings without nulls, within the length limit and each new when met (no duplicate),
    a label's code is the row holding it. Otherwise None (the caller's general path
    names the offending rows).
    """
    ids = customers.frame["customer_id"]
    if not isinstance(ids.dtype, pd.StringDtype) or ids.isna().any():
        return None
    if len(ids) and ids.str.len().max() > customers.limits.max_label_length:
        return None
    both, _ = pd.factorize(pd.concat([ids, pd.Series(labels)], ignore_index=True), sort=False)
    m = len(ids)
    if not (both[:m] == np.arange(m)).all():
        return None
    found = both[m:].astype(np.int64)
    found[found >= m] = -1
    return found


def all_propensities_one(propensity: np.ndarray) -> bool:
    """Whether every row has a logged propensity and it is exactly 1; ``propensity`` (n,)."""
    return bool(len(propensity) and not np.isnan(propensity).any() and (propensity == 1).all())


def data_warnings(summary: Mapping[str, Any], *, propensities_all_one: bool = False) -> list[str]:
    """Warnings about logs that are valid but make estimates meaningless or suspect.

    ``summary`` is :meth:`LoggedConversations.summary` (or one merged over passes);
    ``propensities_all_one`` from :func:`all_propensities_one`.
    """
    notes = []
    conversations = int(summary.get("conversations", 0))
    censored = int(summary.get("outcomes", {}).get("censored", 0))
    if conversations and censored == conversations:
        notes.append(
            "every conversation is censored (its last row has outcome 'continue'): no "
            "resolution, escalation or abandonment is logged, so values count only per-turn costs"
        )
    used = sum(1 for n in summary.get("actions", {}).values() if n > 0)
    if propensities_all_one and used > 1:
        notes.append(
            f"every logged propensity is 1 but {used} different actions occur: a "
            "deterministic logger takes one action per state, so the propensities are "
            "probably wrong (importance weights will be too)"
        )
    return notes


def write_conversations(logs: LoggedConversations, path: str | Path) -> Path:
    """Write the turns as one schema-v1 Parquet file (atomically: temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    logs.to_frame().to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
