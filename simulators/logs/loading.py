"""Logged support data, schema v1: loading, validation and the typed arrays the rest uses.

Two kinds of log (docs/log-schema.md):

* **conversations**: a *turns* table (one row per bot decision) and optionally a
  *customers* table joined on ``customer_id``, loaded into :class:`LoggedConversations`;
* **generic logged bandit feedback**: one row per decision with named action, reward,
  propensity and context columns, loaded into :class:`LoggedDecisions`.

Both loaders read CSV, a Parquet file, or a directory of Parquet parts, validate every
rule of the schema with vectorised checks, and raise :class:`LogValidationError` naming
the file, the column and the first offending rows (0-based data rows of that file; for
CSV the line number is row + 2). Nothing is dropped or repaired silently. Rows may come in
any order: they are sorted by (``conversation_id``, ``turn``) on load.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import CONTINUE, OUTCOMES

from supportrl.files import brief

SCHEMA_VERSION = 1

DEFAULT_ACTIONS: tuple[str, ...] = (
    "empathize",
    "direct_answer",
    "faq_link",
    "clarify",
    "offer_credit",
    "escalate_human",
)

REQUIRED_COLUMNS: tuple[str, ...] = (
    "conversation_id",
    "turn",
    "intent",
    "sentiment",
    "action",
    "outcome",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "propensity",
    "csat",
    "handle_time_s",
    "timestamp",
    # decision logs of an experiment (docs/experiments.md): which arm decided, and the id
    # of the decision; neither is a context feature
    "arm",
    "decision_id",
)
RESERVED_COLUMNS: frozenset[str] = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)

_SHOW_ROWS = 5

MAX_HANDLE_TIME_S = 7 * 86_400.0
"""Longest ``handle_time_s`` of one turn (a week): beyond it, a unit or typing error that
would swamp every reward (reward v1 charges per minute)."""
MAX_ABS_VALUE = 1e12
"""Largest magnitude of a numeric feature or a generic bandit reward: beyond it, sums and
squares lose every digit (or overflow) in fitting and estimation."""


PROPENSITY_FLOOR = 1e-3
"""Every estimated propensity (of a logged action, by a model of the logging policy) is
floored here: an importance weight of at most 1,000. The one floor of the simulators' behaviour
cloning and of OPE's propensity models."""


class LogValidationError(ValueError):
    """Logged data breaks schema v1; the message names the file, column and rows."""


@contextlib.contextmanager
def reading_parquet(path: str | Path) -> Iterator[None]:
    """Turn pyarrow's errors while the block reads ``path`` (random bytes, a truncated
    part, a corrupt page) into a :class:`LogValidationError` that names the file."""
    import pyarrow as pa

    try:
        yield
    except (LogValidationError, FileNotFoundError):
        raise
    except (pa.ArrowException, OSError) as exc:
        raise LogValidationError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})"
        ) from None


@dataclass(frozen=True)
class LogLimits:
    """Bounds on string columns, checked on the distinct values before any per-row array.

    A label longer than ``max_label_length`` characters (any string column: ids, intents,
    features) and a categorical column (``intent``, categorical features) with more than
    ``max_levels`` distinct values are user errors naming the column and rows. Both are
    settable from the command line (``data.max_label_length``, ``data.max_levels``).
    """

    max_label_length: int = 200
    """Longest string value accepted in any column (characters)."""
    max_levels: int = 1_000
    """Most distinct values of a categorical column (intent or a categorical feature)."""

    def __post_init__(self) -> None:
        for name in ("max_label_length", "max_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be an integer >= 1, got {value!r}")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Table:
    """A raw table and where its rows came from (for error messages)."""

    frame: pd.DataFrame
    path: Path
    parts: tuple[tuple[Path, int], ...]  # (file, number of rows), in row order
    limits: LogLimits = LogLimits()
    row_ids: np.ndarray | None = None
    """When ``frame`` holds a subset of the rows: their global row numbers, shape (len(frame),)."""

    def where(self, rows: np.ndarray, column: str | None = None) -> str:
        """Readable location of (global, 0-based) ``rows``: file, column and first rows."""
        rows = np.asarray(rows)
        if self.row_ids is not None:
            rows = self.row_ids[rows]
        shown = rows[:_SHOW_ROWS]
        starts = np.cumsum([0] + [n for _, n in self.parts])
        locs = []
        for row in shown.tolist():
            part = int(np.searchsorted(starts, row, side="right") - 1)
            file, local = self.parts[part][0], row - starts[part]
            locs.append((file, local))
        files = sorted({str(f) for f, _ in locs})
        if len(files) == 1:
            rows_text = ", ".join(str(local) for _, local in locs)
        else:
            rows_text = ", ".join(f"{f.name}:{local}" for f, local in locs)
        more = f" (and {len(rows) - len(shown)} more)" if len(rows) > len(shown) else ""
        col = f", column {column!r}" if column else ""
        return f"{files[0] if len(files) == 1 else self.path}{col}, row(s) {rows_text}{more}"


# Columns never read as dictionaries: ids with about as many values as rows (a dictionary
# would cost more than it saves) and the columns the loader parses as numbers or dates.
_PLAIN_COLUMNS = frozenset(
    ("conversation_id", "customer_id", "turn", "sentiment", "propensity", "csat")
    + ("handle_time_s", "timestamp")
)


def _read_one(path: Path, dictionary: bool = False) -> pd.DataFrame:
    """One CSV or Parquet file as a frame.

    ``dictionary``: read a Parquet file's other string columns as Arrow dictionaries (the
    frame holds them as categoricals: codes without a string per row). Only
    :func:`load_conversations` asks for it; it takes the codes straight from them.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _check_csv_header(path)
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            schema = _check_parquet_schema(path)
            if not dictionary:
                with reading_parquet(path):
                    return pd.read_parquet(path)
            import pyarrow as pa

            strings = [
                f.name
                for f in schema
                if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
                and f.name not in _PLAIN_COLUMNS
            ]
            with reading_parquet(path):
                return pd.read_parquet(path, read_dictionary=strings)
    except LogValidationError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise LogValidationError(f"{path}: file is empty") from exc
    except Exception as exc:  # pyarrow/csv parser errors have many types
        raise LogValidationError(f"{path}: cannot read file ({type(exc).__name__}: {exc})") from exc
    raise LogValidationError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")


def _check_csv_header(path: Path) -> None:
    """Refuse a CSV header naming a column twice (pandas would rename it ``name.1``)."""
    import csv
    from collections import Counter

    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        header = next(csv.reader(fh), [])
    counts = Counter(header)
    twice = sorted(c for c, n in counts.items() if n > 1)
    if twice:
        raise LogValidationError(f"{path}: column(s) {twice} appear more than once in the header")


MAX_PARQUET_FOOTER_BYTES = 64 * 2**20
"""Largest Parquet footer (schema and metadata) read: a real one is kilobytes."""


def _check_parquet_footer(path: Path) -> None:
    """Refuse a Parquet file whose footer (read whole by every reader) is huge, from its
    last 8 bytes alone (4-byte footer length, ``PAR1``); other damage is pyarrow's to name."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size < 12:
            return
        fh.seek(size - 8)
        tail = fh.read(8)
    footer = int.from_bytes(tail[:4], "little")
    if tail[4:] == b"PAR1" and footer > MAX_PARQUET_FOOTER_BYTES:
        raise LogValidationError(
            f"{path}: Parquet metadata of {footer} bytes; at most {MAX_PARQUET_FOOTER_BYTES} "
            "(a huge schema-metadata blob: rewrite the file without it)"
        )


def _check_parquet_schema(path: Path) -> Any:
    """The file's Arrow schema; list / struct / map columns are refused (schema-v1 values
    are strings and numbers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_parquet_footer(path)
    with reading_parquet(path):
        schema = pq.read_schema(path)
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if nested:
        kinds = ", ".join(f"{f.name!r} ({f.type})" for f in schema if f.name in nested)
        raise LogValidationError(
            f"{path}: column(s) {kinds} hold lists or structs; schema-v1 columns hold strings "
            "or numbers (flatten them into columns first)"
        )
    return schema


def _check_part_types(files: Sequence[Path], frames: Sequence[pd.DataFrame]) -> None:
    """Refuse Parquet parts whose columns differ in kind (numbers in one, strings in another)."""
    first = frames[0]
    for file, frame in zip(files[1:], frames[1:], strict=True):
        for column in first.columns:
            a, b = first[column].dtype, frame[column].dtype
            numeric = [
                pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d)
                for d in (a, b)
            ]
            if numeric[0] != numeric[1] or (not numeric[0] and a != b):
                raise LogValidationError(
                    f"{file}, column {column!r}: type {b} differs from {files[0].name}'s {a}; "
                    "write every part with the same column types"
                )


def read_table(
    path: str | Path, limits: LogLimits | None = None, *, dictionary: bool = False
) -> _Table:
    """Read a CSV file, a Parquet file, or a directory of Parquet parts (sorted by name).

    ``dictionary``: a single Parquet file's string columns other than ids, numbers and
    dates come as categoricals (see :func:`_read_one`); the values are the same.
    """
    if str(path).strip() == "":
        raise LogValidationError("empty path: give a CSV file, a Parquet file or a directory")
    path = Path(path)
    if not path.exists():
        raise LogValidationError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            raise LogValidationError(f"{path}: directory holds no .parquet files")
        frames = [_read_one(f) for f in files]
        columns = [tuple(f.columns) for f in frames]
        for f, cols in zip(files, columns, strict=True):
            if set(cols) != set(columns[0]):
                raise LogValidationError(
                    f"{f}: columns {sorted(cols)} differ from {files[0].name}'s {sorted(columns[0])}"
                )
        _check_part_types(files, frames)
        frame = pd.concat(frames, ignore_index=True)
        parts = tuple((f, len(fr)) for f, fr in zip(files, frames, strict=True))
    else:
        frame = _read_one(path, dictionary).reset_index(drop=True)
        parts = ((path, len(frame)),)
    if len(frame) == 0:
        raise LogValidationError(f"{path}: no rows")
    return _Table(frame=frame, path=path, parts=parts, limits=limits or LogLimits())


# --------------------------------------------------------------------------- column checks


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


def _infer_features(
    dtypes: Mapping[str, Any],
    categorical: Sequence[str] | None,
    numeric: Sequence[str] | None,
    path: Path,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split the extra columns (name -> dtype) into categorical and numeric features.

    Declared lists are checked against the data; otherwise numbers are numeric and
    everything else (strings, booleans) categorical.
    """
    columns = list(dtypes)
    if categorical is not None or numeric is not None:
        categorical, numeric = tuple(categorical or ()), tuple(numeric or ())
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise LogValidationError(
                f"data config: column(s) {both} declared both categorical and numeric"
            )
        reserved = sorted((set(categorical) | set(numeric)) & RESERVED_COLUMNS)
        if reserved:
            raise LogValidationError(
                f"data config: {reserved} are schema columns, not context features"
            )
        missing = [c for c in categorical + numeric if c not in dtypes]
        if missing:
            raise LogValidationError(
                f"{path}: declared feature column(s) {missing} not found; extra columns are {columns}"
            )
        undeclared = [c for c in columns if c not in categorical + numeric]
        if undeclared:
            raise LogValidationError(
                f"{path}: column(s) {undeclared} are neither schema columns nor declared features; "
                "declare them in data.categorical / data.numeric"
            )
        return categorical, numeric
    cat, num = [], []
    for c, dtype in dtypes.items():
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            num.append(c)
        else:
            cat.append(c)
    return tuple(cat), tuple(num)


MIN_ROWS_UNIQUE = 20
"""From this many rows, an inferred categorical column unique on every row is refused."""

MAX_INFERRED_LEVELS = 200
"""An inferred categorical feature with more levels than this is refused (an id or a date?)."""


_PERSONAL_NAME = re.compile(
    r"e_?mail|phone|mobile|msisdn|first_?name|last_?name|full_?name|surname|given_?name|"
    r"^name$|customer_?name|street|address|postcode|zip_?code|ssn|passport|birth",
    re.IGNORECASE,
)
_PERSONAL_VALUES = {
    "e-mail addresses": r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",
    "phone numbers": r"^\+?[0-9][0-9 ().\-]{6,}[0-9]$",
}


_EMAIL_IN_TEXT = r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"
_PERSON_NAME = r"^[A-Z][a-z]+(?: [A-Z]\.)?(?: [A-Z][a-z'\-]+)+$"
_MIN_NAMES = 3
"""Distinct values that must look like "First Last" before a column counts as names."""
_FREE_TEXT_WORDS = 4
"""Values of this many words or more are free text, not a category."""


def _free_text_reason(sample: pd.Series) -> str:
    """Why distinct values ``sample`` (str) are free text or names, not categories; "" if not.

    Any e-mail address inside a value; half the values or more "First Last" names (at
    least :data:`_MIN_NAMES` of them) or sentences of :data:`_FREE_TEXT_WORDS` words.
    """
    if sample.str.contains(_EMAIL_IN_TEXT, regex=True).any():
        return "its values contain e-mail addresses"
    names = sample.str.match(_PERSON_NAME)
    if names.sum() >= _MIN_NAMES and names.mean() >= 0.5:
        return "its values look like people's names"
    if (sample.str.split().str.len() >= _FREE_TEXT_WORDS).mean() >= 0.5:
        return "its values are free text"
    return ""


def _check_personal(table: _Table, columns: Sequence[str]) -> None:
    """Refuse columns that look like personal data (by name, or by their values).

    Support logs carry personal data; a feature built from an e-mail address, a phone
    number or a name would end up in models, artifacts and reports. Declaring the
    features explicitly (``data.categorical`` / ``data.numeric``) overrides this check.
    """
    for c in columns:
        reason = ""
        if _PERSONAL_NAME.search(str(c)):
            reason = "its name suggests personal data"
        elif not pd.api.types.is_numeric_dtype(table.frame[c]):
            sample = pd.Series(table.frame[c].dropna().unique()[:1000]).astype(str)
            for what, pattern in _PERSONAL_VALUES.items():
                if len(sample) and sample.str.match(pattern).mean() >= 0.5:
                    reason = f"its values look like {what}"
            if not reason and len(sample):
                reason = _free_text_reason(sample)
        if reason:
            raise LogValidationError(
                f"{table.path}, column {c!r}: {reason}; personal data is not used as a feature. "
                "Drop the column, or declare the features explicitly (data.categorical=[..] "
                "data.numeric=[..], or data.context=[..] for bandit feedback)"
            )


def _check_inferred(table: _Table, categorical: Sequence[str], numeric: Sequence[str]) -> None:
    """Refuse inferred features that are surely not features: indexes, ids, personal data."""
    _check_personal(table, [*categorical, *numeric])
    for c in (*categorical, *numeric):
        if str(c).startswith("Unnamed: "):
            raise LogValidationError(
                f"{table.path}, column {c!r}: looks like a saved DataFrame index, not a feature; "
                "drop it or declare the features (data.categorical=[..] data.numeric=[..], "
                "or data.context=[..] for bandit feedback)"
            )
    for c in categorical:
        levels = table.frame[c].nunique()
        if levels > MAX_INFERRED_LEVELS:
            raise LogValidationError(
                f"{table.path}, column {c!r}: {levels} distinct values, too many for a categorical "
                "feature (an id, a date or free text?); declare the features (data.categorical=[..] "
                "data.numeric=[..], or data.context=[..] for bandit feedback)"
            )

        if levels == len(table.frame) >= MIN_ROWS_UNIQUE:
            raise LogValidationError(
                f"{table.path}, column {c!r}: a different value on every row (an id, an e-mail "
                "address?), not a feature; drop it or declare the features "
                "(data.categorical=[..] data.numeric=[..])"
            )
    _check_schema_aliases(table, [*categorical, *numeric])


SCHEMA_ALIASES = {"propensity_score": "propensity", "pscore": "propensity"}
"""Other tools' names of schema-v1 columns (Open Bandit Pipeline: ``pscore``; its Open
Bandit Dataset files: ``propensity_score``)."""


def _check_schema_aliases(table: _Table, features: Sequence[str]) -> None:
    """Refuse an inferred feature that is another tool's name for a schema column (a
    logging propensity read as a context feature would be estimated instead, silently)."""
    for c in features:
        meant = SCHEMA_ALIASES.get(str(c).lower())
        if meant is not None and meant not in table.frame.columns:
            raise LogValidationError(
                f"{table.path}, column {c!r}: did you mean {meant}? It looks like the logging "
                f"propensity under Open Bandit Pipeline's name; rename the column to {meant!r} "
                f"(schema v1), pass data.propensity_col={c} (data=bandit), or declare the "
                "features (data.categorical=[..] data.numeric=[..]) to keep it as a feature"
            )


def _feature_arrays(
    table: _Table,
    categorical: Sequence[str],
    numeric: Sequence[str],
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Feature name -> values of ``table`` at ``rows`` (default: every row in order).

    Categorical columns come back as str arrays, numeric ones as float64; the whole
    column is validated, and only the selected rows are expanded into strings.
    """
    features: dict[str, np.ndarray] = {}
    for c in categorical:
        codes, labels = _codes(table, c, categorical=True)
        features[c] = labels[codes if rows is None else codes[rows]]
    for c in numeric:
        values = _numbers(table, c, allow_missing=False)
        _check_range(
            table, c, values, np.abs(values) > MAX_ABS_VALUE, f"within +-{MAX_ABS_VALUE:g}"
        )
        # a copy: values may be a read-only view of the frame
        features[c] = values.copy() if rows is None else values[rows]
    return features


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


# --------------------------------------------------------------------------- conversations


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
    frame = table.frame
    _require_columns(table, REQUIRED_COLUMNS)
    if customers is not None:
        _require_columns(table, ["customer_id"], "join")

    conv_codes, conv_labels = _codes(table, "conversation_id")
    turn_f = _numbers(table, "turn", allow_missing=False)
    _check_range(
        table, "turn", turn_f, (turn_f < 0) | (turn_f != np.round(turn_f)), "integers >= 0"
    )
    turn = turn_f.astype(np.int64)
    intent_codes, intent_labels = _codes(table, "intent", categorical=True)
    sentiment = _numbers(table, "sentiment", allow_missing=False)
    _check_range(table, "sentiment", sentiment, (sentiment < -1) | (sentiment > 1), "in [-1, 1]")
    action = _check_labels(table, "action", *_codes(table, "action"), actions, "action(s)")
    outcome = _check_labels(table, "outcome", *_codes(table, "outcome"), OUTCOMES, "outcome(s)")
    n = len(frame)
    nan = np.full(n, np.nan)
    if "propensity" in frame:
        propensity = _numbers(table, "propensity", allow_missing=True)
        _check_range(
            table, "propensity", propensity, (propensity <= 0) | (propensity > 1), "in (0, 1]"
        )
    else:
        propensity = nan.copy()
    if "csat" in frame:
        csat = _numbers(table, "csat", allow_missing=True)
        _check_range(table, "csat", csat, (csat < 1) | (csat > 5), "in [1, 5]")
    else:
        csat = nan.copy()
    if "handle_time_s" in frame:
        handle = _numbers(table, "handle_time_s", allow_missing=True)
        _check_range(
            table,
            "handle_time_s",
            handle,
            (handle < 0) | (handle > MAX_HANDLE_TIME_S),
            f">= 0 and at most {MAX_HANDLE_TIME_S:.0f} s (a week)",
        )
    else:
        handle = nan.copy()
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

    # Sort rows by (conversation, turn); row numbers in messages stay those of the file.
    # Conversations are numbered in sorted id order: sort the k distinct ids, not n rows.
    rank = np.argsort(conv_labels, kind="stable")
    conv_ids = conv_labels[rank]
    sorted_code = np.empty(len(rank), dtype=np.int64)
    sorted_code[rank] = np.arange(len(rank))
    conv_sorted = sorted_code[conv_codes]
    order = _sort_order(conv_sorted, turn)
    # Rows already in order (logs written sorted): arrays built here need no reordering.
    in_order = bool(order[-1] == n - 1) and bool((order[1:] > order[:-1]).all())

    def fresh(values: np.ndarray) -> np.ndarray:
        """``values`` (n,), built by this function, in sorted row order."""
        return values if in_order else values[order]

    codes = fresh(conv_sorted)
    turn_sorted = fresh(turn)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    offsets = np.r_[starts, n].astype(np.int64)
    first = np.zeros(n, dtype=bool)
    first[starts] = True
    last = np.zeros(n, dtype=bool)
    last[offsets[1:] - 1] = True

    same_conv_prev = ~first
    dup = np.zeros(n, dtype=bool)
    dup[1:] = same_conv_prev[1:] & (turn_sorted[1:] == turn_sorted[:-1])
    if dup.any():
        rows = np.sort(order[np.flatnonzero(dup)])
        raise LogValidationError(
            f"{table.where(rows, 'turn')}: duplicate turn within a conversation"
        )
    gap = np.zeros(n, dtype=bool)
    gap[first] = turn_sorted[first] != 0
    gap[1:] |= same_conv_prev[1:] & (turn_sorted[1:] != turn_sorted[:-1] + 1)
    if gap.any():
        rows = np.sort(order[np.flatnonzero(gap)])
        raise LogValidationError(
            f"{table.where(rows, 'turn')}: turns must be 0, 1, 2, ... without gaps in each conversation"
        )
    outcome = fresh(outcome)
    early_end = (outcome != CONTINUE) & ~last
    if early_end.any():
        rows = np.sort(order[np.flatnonzero(early_end)])
        raise LogValidationError(
            f"{table.where(rows, 'outcome')}: terminal outcome before the conversation's last row"
        )
    early_csat = ~np.isnan(csat[order]) & ~last
    if early_csat.any():
        rows = np.sort(order[np.flatnonzero(early_csat)])
        raise LogValidationError(
            f"{table.where(rows, 'csat')}: csat is only allowed on a conversation's last row"
        )
    if cust_codes is not None:
        cust_sorted = fresh(cust_codes)
        split = np.zeros(len(offsets) - 1, dtype=bool)
        split[codes[cust_sorted != cust_sorted[starts][codes]]] = True
        if split.any():
            rows = np.sort(order[split[codes]])
            raise LogValidationError(
                f"{table.where(rows, 'customer_id')}: a conversation has several customer_ids"
            )

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
    features = _feature_arrays(table, turn_cat, turn_num, None if in_order else order)
    if cust_table is not None:
        cust_row = _join_customers(table, cust_codes, cust_labels, cust_table)
        features.update(_feature_arrays(cust_table, cust_cat, cust_num, fresh(cust_row)))

    return LoggedConversations(
        actions=actions,
        conversation_id=conv_ids,
        offsets=offsets,
        turn=turn_sorted,
        intent=intent_labels[fresh(intent_codes)],
        sentiment=sentiment[order],
        action=fresh(action),
        outcome=outcome,
        propensity=propensity[order],
        csat=csat[order],
        handle_time_s=handle[order],
        features=features,
        categorical=turn_cat + cust_cat,
        numeric=turn_num + cust_num,
        customer_id=None if cust_codes is None else _unicode(cust_labels)[cust_sorted],
        timestamp=None if timestamp is None else timestamp[order],
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


# --------------------------------------------------------------------------- bandit feedback


@dataclass(frozen=True)
class LoggedDecisions:
    """Generic logged bandit feedback: one row per decision.

    Actions are labelled by their string form (integer action 14 is ``"14"``), sorted
    numerically when every label is a number, else alphabetically.
    """

    actions: tuple[str, ...]
    action: np.ndarray
    """(n,) int64 index into ``actions``."""
    reward: np.ndarray
    """(n,) float64."""
    propensity: np.ndarray
    """(n,) float64 in (0, 1]; NaN when the data has no propensity column."""
    context: Mapping[str, np.ndarray] = field(default_factory=dict)
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    source: str = ""

    @property
    def n_rounds(self) -> int:
        return len(self.action)

    @property
    def has_propensity(self) -> bool:
        return bool(np.isfinite(self.propensity).all())

    def states(self) -> dict[str, np.ndarray]:
        return dict(self.context)

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.action, minlength=len(self.actions))
        return {
            "source": self.source,
            "decisions": self.n_rounds,
            "actions": {a: int(c) for a, c in zip(self.actions, counts, strict=True)},
            "mean_reward": float(self.reward.mean()),
            "missing_propensity": int(np.isnan(self.propensity).sum()),
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
        }


def _action_labels(values: pd.Series) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """An action column as ``(codes, labels)`` (see :func:`_factorize`) and its sorted catalogue."""
    codes, index = _factorize(values)
    labels = np.asarray(index, dtype=str)
    uniq = np.sort(labels)
    numeric = pd.to_numeric(pd.Series(uniq), errors="coerce")
    if numeric.notna().all():
        uniq = uniq[np.argsort(numeric.to_numpy(), kind="stable")]
    return codes, labels, tuple(uniq.tolist())


def load_decisions(
    path: str | Path,
    *,
    action_col: str = "action",
    reward_col: str = "reward",
    propensity_col: str | None = "propensity",
    context: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    limits: LogLimits | None = None,
) -> LoggedDecisions:
    """Load generic logged bandit feedback.

    ``context`` names the context columns (default: every other column);
    ``categorical``/``numeric`` split them (default: by dtype). ``actions`` fixes the
    catalogue (default: the labels present, see :class:`LoggedDecisions`).
    """
    table = read_table(path, limits)
    frame = table.frame
    _require_columns(table, [action_col, reward_col])
    if propensity_col is not None and propensity_col not in frame:
        raise LogValidationError(
            f"{table.path}: propensity column {propensity_col!r} not found; found {list(frame.columns)} "
            "(set data.propensity_col=null when the logs have none)"
        )
    _no_nulls(table, action_col)
    codes, labels, present = _action_labels(frame[action_col])
    catalogue = tuple(str(a) for a in actions) if actions is not None else present
    action = _check_labels(table, action_col, codes, labels, catalogue, "action(s)")
    reward = _numbers(table, reward_col, allow_missing=False)
    _check_range(
        table, reward_col, reward, np.abs(reward) > MAX_ABS_VALUE, f"within +-{MAX_ABS_VALUE:g}"
    )
    if propensity_col is not None:
        propensity = _numbers(table, propensity_col, allow_missing=False)
        _check_range(
            table, propensity_col, propensity, (propensity <= 0) | (propensity > 1), "in (0, 1]"
        )
    else:
        propensity = np.full(len(frame), np.nan)
    used = {action_col, reward_col, propensity_col}
    if context is None:
        context = [c for c in frame.columns if c not in used]
    else:
        _require_columns(table, list(context), "context")
    context = list(context)
    clash = sorted(set(context) & {c for c in used if c is not None})
    if clash:
        raise LogValidationError(
            f"{table.path}: context column(s) {clash} are the action, reward or propensity column"
        )
    if categorical is None and numeric is None:
        cat, num = _infer_features({c: frame[c].dtype for c in context}, None, None, table.path)
        _check_inferred(table, cat, num)
    else:
        cat, num = tuple(categorical or ()), tuple(numeric or ())
        outside = [c for c in cat + num if c not in context]
        if outside:
            raise LogValidationError(
                f"{table.path}: declared feature column(s) {outside} are not context columns "
                f"(context: {context}; columns: {list(frame.columns)})"
            )
        undeclared = [c for c in context if c not in cat + num]
        if undeclared:
            raise LogValidationError(
                f"{table.path}: context column(s) {undeclared} not declared categorical or numeric"
            )
    return LoggedDecisions(
        actions=catalogue,
        action=action,
        reward=reward,
        propensity=propensity,
        context=_feature_arrays(table, cat, num),
        categorical=cat,
        numeric=num,
        source=str(path),
    )
