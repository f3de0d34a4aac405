"""Column checks of a read table: required columns, nulls, numbers, ranges and labels, each as
integer codes into the distinct values (never one Python string per row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.reading import _Table
from supportrl.simulators.logs.schema import (
    _SHOW_ROWS,
    LogValidationError,
)

from supportrl.files import brief


def _require_columns(table: _Table, columns: Sequence[str], what: str = "required") -> None:
    missing = [c for c in columns if c not in table.frame.columns]
    if missing:
        raise LogValidationError(
            f"{table.path}: missing {what} column(s) {missing}; found {list(table.frame.columns)}"
        )


def _no_nulls(table: _Table, column: str) -> None:
    nulls = np.flatnonzero(table.frame[column].isna().to_numpy())
    if len(nulls):
        raise LogValidationError(f"{table.where(nulls, column)}: missing value(s)")


def _factorize(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """A non-null column as ``(codes, labels)``: ``labels[codes]`` is its string form.

    ``codes`` (n,) int64 index ``labels`` (k,), the distinct string forms in order of
    first appearance (numbers are taken in their string form). Later steps work on the k
    distinct values and the integer codes, never on n Python strings.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        return _category_codes(series)
    codes, uniques = pd.factorize(series, sort=False)
    labels = pd.Index(uniques).astype(str)
    if series.dtype == object:
        # Two distinct values can share one string form (1 and "1" in an object column).
        merged, distinct = pd.factorize(labels, sort=False)
        if len(distinct) < len(labels):
            codes, labels = merged[codes], pd.Index(distinct)
    return codes.astype(np.int64, copy=False), labels


def _category_codes(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``(codes, labels)`` of a categorical read from an Arrow dictionary (no nulls).

    The codes are the dictionary indices; levels no row uses are dropped so that labels
    holds exactly the distinct values (as :func:`_factorize` does).
    """
    codes = series.cat.codes.to_numpy().astype(np.int64)
    labels = pd.Index(series.cat.categories).astype(str)
    used = np.bincount(codes, minlength=len(labels)) > 0
    if not used.all():
        codes = (np.cumsum(used) - 1)[codes]
        labels = labels[used]
    return codes, labels


def _plain_dtype(dtype: Any) -> Any:
    """The dtype a column read as a dictionary has in its plain form."""
    return dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype


def _plain(series: pd.Series) -> pd.Series:
    """A column read as a dictionary (categorical) back in its plain form; others as is."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.astype(series.cat.categories.dtype)
    return series


def _unicode(labels: pd.Index) -> np.ndarray:
    """``labels`` (k,) strings as a numpy unicode array, equal to ``np.asarray(labels, str)``.

    Arrow-backed ASCII labels (ids, the usual case) are padded to one width by Arrow and
    the bytes viewed as fixed-width: no Python string per label.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(labels)
    except (TypeError, ValueError, pa.ArrowException):
        return np.asarray(labels, dtype=str)
    large = pa.types.is_large_string(arr.type)  # pandas' "str" columns are large_string
    if not (large or pa.types.is_string(arr.type)) or arr.null_count or len(arr) == 0:
        return np.asarray(labels, dtype=str)
    if not pc.all(pc.string_is_ascii(arr)).as_py():
        return np.asarray(labels, dtype=str)
    width = max(1, pc.max(pc.utf8_length(arr)).as_py())
    padded = pc.utf8_rpad(arr, width=width, padding="\0")  # numpy drops trailing NULs too
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int64 if large else np.int32)
    start = int(offsets[padded.offset])
    raw = np.frombuffer(padded.buffers()[2], dtype=f"S{width}", count=len(arr), offset=start)
    return raw.astype(f"U{width}")


def _codes(
    table: _Table, column: str, *, categorical: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A non-null column as ``(codes, labels)``, codes (n,) int64 into labels (k,) str.

    The limits (:class:`LogLimits`) are checked on the distinct values, so a huge label or
    too many levels (``categorical``) is an error before an array of k x longest label
    is built.
    """
    codes, labels = _codes_index(table, column, categorical=categorical)
    return codes, _unicode(labels)


def _codes_index(
    table: _Table, column: str, *, categorical: bool = False
) -> tuple[np.ndarray, pd.Index]:
    """:func:`_codes` with the labels (k,) still a pandas Index of str (not yet numpy)."""
    _no_nulls(table, column)
    codes, labels = _factorize(table.frame[column])
    limits = table.limits
    if categorical and len(labels) > limits.max_levels:
        raise LogValidationError(
            f"{table.path}, column {column!r}: {len(labels)} distinct values; at most "
            f"{limits.max_levels} (set data.max_levels=N to allow more)"
        )
    lengths = labels.str.len().to_numpy()
    if len(lengths) and lengths.max() > limits.max_label_length:
        rows = np.flatnonzero(lengths[codes] > limits.max_label_length)
        raise LogValidationError(
            f"{table.where(rows, column)}: value of {int(lengths.max())} characters; at most "
            f"{limits.max_label_length} (set data.max_label_length=N to allow more)"
        )
    return codes, labels


def _strings(table: _Table, column: str, *, categorical: bool = False) -> np.ndarray:
    """A non-null column as a numpy unicode array, shape (n,) (see :func:`_codes`)."""
    codes, labels = _codes(table, column, categorical=categorical)
    return labels[codes]


def _numbers(table: _Table, column: str, *, allow_missing: bool) -> np.ndarray:
    """A column as float64; non-numeric entries are a 'wrong type' error."""
    series = _plain(table.frame[column])
    if pd.api.types.is_bool_dtype(series):
        raise LogValidationError(f"{table.path}, column {column!r}: expected numbers, got booleans")
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    was_null = series.isna().to_numpy()
    wrong = np.flatnonzero(np.isnan(values) & ~was_null)
    if len(wrong):
        examples = [brief(v) for v in series.iloc[wrong[:_SHOW_ROWS]].tolist()]
        raise LogValidationError(
            f"{table.where(wrong, column)}: expected numbers, got {', '.join(examples)}"
        )
    if not allow_missing:
        _no_nulls(table, column)
    inf = np.flatnonzero(np.isinf(values))
    if len(inf):
        raise LogValidationError(f"{table.where(inf, column)}: infinite value(s)")
    return values


def _check_range(
    table: _Table, column: str, values: np.ndarray, bad: np.ndarray, rule: str
) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        shown = ", ".join(f"{v:g}" for v in values[rows[:_SHOW_ROWS]])
        raise LogValidationError(f"{table.where(rows, column)}: values must be {rule}, got {shown}")


def _check_labels(
    table: _Table,
    column: str,
    codes: np.ndarray,
    labels: np.ndarray,
    allowed: Sequence[str],
    what: str,
) -> np.ndarray:
    """Index in ``allowed`` of each row (``labels[codes]``), shape (n,) int64.

    The distinct labels are looked up once (a table of k entries); unknown labels are an
    error naming their rows.
    """
    position: dict[str, int] = {}
    for i, a in enumerate(allowed):
        position.setdefault(str(a), i)
    lookup = np.array([position.get(label, -1) for label in labels.tolist()], dtype=np.int64)
    index = lookup[codes]
    if (lookup < 0).any():
        bad = np.flatnonzero(index < 0)
        unknown = sorted(labels[lookup < 0].tolist())[:_SHOW_ROWS]
        raise LogValidationError(
            f"{table.where(bad, column)}: unknown {what} {unknown}; expected one of {list(allowed)}"
        )
    return index


def _sort_order(conversation: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Row order sorting by (``conversation``, ``turn``), both (n,) int64 >= 0; stable.

    The two keys are packed into one int64 when they fit, and already sorted rows (the
    usual case: logs written in order) cost one comparison pass.
    """
    n_turns = int(turn.max()) + 1
    if (int(conversation.max()) + 1) * n_turns < 2**62:
        key = conversation * n_turns + turn
        if bool((key[1:] >= key[:-1]).all()):
            return np.arange(len(key), dtype=np.int64)
        return np.argsort(key, kind="stable")
    return np.lexsort((turn, conversation))
