"""Reading log files (CSV, a Parquet file, a directory of Parquet parts) into a table that
knows where each row came from, refusing files no reader should trust."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.schema import (
    _SHOW_ROWS,
    LogLimits,
    LogValidationError,
)


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
