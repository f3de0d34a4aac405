"""Logs larger than memory: Parquet parts read in passes of bounded size.

The rows are split into ``k`` passes by a hash of ``conversation_id`` (:func:`pass_of`; a
conversation never straddles two passes), each pass small enough for about
``memory_budget_mb`` (:func:`passes_needed`). A pass is read batch by batch keeping only its
rows (:func:`select_table`), or from per-pass files written in one read
(:func:`spill_passes`). The same hashes draw samples of conversations
(:func:`sample_conversations`, :func:`stratified_sample`) and keyed resamples in OPE.
Validation in passes is :mod:`~supportrl.simulators.logs.validation`; running a function per
pass locally or on Ray is :mod:`~supportrl.simulators.logs.partitioned`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.reading import _check_parquet_schema, _Table, reading_parquet
from supportrl.simulators.logs.schema import LogLimits, LogValidationError

BYTES_PER_ROW = 700
"""Measured peak memory of an in-memory validation per turn row (bytes; see benchmarks)."""

BATCH_ROWS = 65_536
"""Rows per Parquet record batch read."""

ID_HASH_KEY = "supportrl-resamp"
"""pandas' SipHash key (16 bytes) for conversation ids: fixed, so hashes never change."""


def parquet_parts(path: str | Path) -> list[tuple[Path, int]]:
    """(file, rows) of a Parquet file or of a directory's parts (sorted by name)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not files:
            raise LogValidationError(f"{path}: directory holds no .parquet files")
    else:
        files = [path]
    parts = []
    for f in files:
        _check_parquet_schema(f)
        with reading_parquet(f):
            parts.append((f, pq.ParquetFile(f).metadata.num_rows))
    _check_schemas(files)
    return parts


def _small_dictionaries(data: Any) -> Any:
    """``data`` (an Arrow record batch or table) with each dictionary column's dictionary
    cut to the values its rows use. A batch read from a file carries the file's whole
    dictionary, and pandas makes a Python string per dictionary value for every batch: 2M
    distinct values over 31 batches reached 4.2 GB and a MemoryError before the level check
    could refuse the column. Columns and schema metadata are kept."""
    import pyarrow as pa

    arrays, fields, changed = [], [], False
    for field, col in zip(data.schema, data.columns, strict=True):
        chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
        if pa.types.is_dictionary(col.type) and any(len(c.dictionary) > len(c) for c in chunks):
            chunks = [c.dictionary_decode().dictionary_encode() for c in chunks]
            col = pa.chunked_array(chunks) if isinstance(col, pa.ChunkedArray) else chunks[0]
            field, changed = field.with_type(chunks[0].type), True
        arrays.append(col)
        fields.append(field)
    if not changed:
        return data
    return type(data).from_arrays(arrays, schema=pa.schema(fields, data.schema.metadata))


def _batches(file: Path, batches: Iterator[Any]) -> Iterator[Any]:
    """``batches`` of ``file``; a corrupt page is an error naming the file."""
    it = iter(batches)
    while True:
        with reading_parquet(file):
            batch = next(it, None)
        if batch is None:
            return
        yield batch


def _check_schemas(files: Sequence[Path]) -> None:
    """Same columns, and numbers vs strings alike, in every part."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = pq.read_schema(files[0])
    for f in files[1:]:
        schema = pq.read_schema(f)
        if set(schema.names) != set(first.names):
            raise LogValidationError(
                f"{f}: columns {sorted(schema.names)} differ from {files[0].name}'s "
                f"{sorted(first.names)}"
            )
        for name in first.names:
            a, b = first.field(name).type, schema.field(name).type
            numeric = [pa.types.is_integer(t) or pa.types.is_floating(t) for t in (a, b)]
            if numeric[0] != numeric[1] or (not numeric[0] and a != b):
                raise LogValidationError(
                    f"{f}, column {name!r}: type {b} differs from {files[0].name}'s {a}; "
                    "write every part with the same column types"
                )


def passes_needed(n_rows: int, memory_budget_mb: float) -> int:
    """How many passes keep one pass's rows within ``memory_budget_mb``."""
    rows_per_pass = max(10_000, int(memory_budget_mb * 2**20 / BYTES_PER_ROW))
    return max(1, math.ceil(n_rows / rows_per_pass))


def id_hash(conversation_id: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of every id (SipHash of its string form), shape (n,) uint64."""
    ids = pd.Series(np.asarray(conversation_id)).astype(str)
    return pd.util.hash_pandas_object(ids, index=False, hash_key=ID_HASH_KEY).to_numpy(np.uint64)


def _splitmix(z: np.ndarray) -> np.ndarray:
    # SplitMix64's finaliser (Steele et al. 2014): a bijection of uint64 that passes BigCrush
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def id_uniform(hashes: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform in [0, 1) per id hash for ``(seed, stream)``, shape (n,) float64."""
    key = _splitmix(np.asarray([seed & (2**64 - 1)], dtype=np.uint64))
    key = _splitmix(key ^ np.uint64(stream & (2**64 - 1)))
    z = _splitmix(np.asarray(hashes, dtype=np.uint64) ^ key)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def find_sorted(sorted_hashes: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``hashes`` are in ``sorted_hashes`` (sorted uint64), and at what position
    (meaningful where found): two arrays of shape (n,), bool and int."""
    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=bool), np.zeros(len(hashes), dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return sorted_hashes[pos] == hashes, pos


def sample_conversations(
    turns: str | Path,
    share: float,
    seed: int,
    load: Callable[[Any], Any],
    limits: LogLimits | None = None,
) -> Any:
    """The conversations whose id's uniform (:func:`id_uniform`, stream 0 of ``seed``) is
    below ``share``: a uniform random sample of whole conversations (equal weights) that does
    not depend on the file layout, read batch by batch. ``load`` validates the rows (e.g.
    ``load_conversations`` with the data settings); ``share >= 1``: all of ``turns``.
    """
    if share >= 1.0:
        return load(turns)
    root = Path(turns)
    parts = parquet_parts(root)

    def keep(conv: pd.Series) -> np.ndarray:
        return id_uniform(id_hash(conv.to_numpy()), seed, 0) < share

    table = select_table(parts, root, keep, limits or LogLimits())
    if table is None:
        raise LogValidationError(
            f"{root}: a sample of {share:.2g} of the conversations holds none; sample more turns"
        )
    return load(table)


@dataclass(frozen=True)
class StratifiedSample:
    """A sample of whole conversations stratified by their first turn's intent."""

    logs: Any
    """The sampled conversations, validated (what ``load`` returned)."""
    weights: np.ndarray
    """(n_conversations,) inverse inclusion probability of each, in ``logs``' order."""
    strata: dict[str, dict[str, float]]
    """intent -> {"conversations": in the logs, "probability": of inclusion}."""


def stratified_sample(
    turns: str | Path,
    share: float,
    seed: int,
    load: Callable[[Any], Any],
    limits: LogLimits | None = None,
    *,
    min_per_intent: int = 0,
) -> StratifiedSample:
    """Conversations sampled within strata of their first turn's (``turn == 0``) intent:
    each kept with probability ``max(share, min(1, min_per_intent / N_s))`` in a stratum of
    ``N_s`` conversations, by its id's uniform (:func:`id_uniform`, stream 0 of ``seed``),
    so rare intents keep about ``min_per_intent`` conversations and the weights (inverse
    probabilities) restore the logs' mix. Two bounded reads: the first turns' ids and
    intents, then the kept conversations' rows. With ``min_per_intent=0`` it is the sample
    of :func:`sample_conversations` with weights 1. A conversation without a turn 0 is
    invalid: :class:`LogValidationError` names its file and rows (as ``load`` would).
    """
    import pyarrow.parquet as pq

    limits = limits or LogLimits()
    root = Path(turns)
    parts = parquet_parts(root)
    columns = ["conversation_id", "turn", "intent"]
    hashes, codes, every, levels = [], [], [], {}
    for file, _ in parts:
        pf = pq.ParquetFile(file)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise LogValidationError(
                f"{file}: missing required column(s) {missing}; found {pf.schema_arrow.names}"
            )
        for batch in _batches(file, pf.iter_batches(BATCH_ROWS, columns=columns)):
            frame = _small_dictionaries(batch).to_pandas()
            every.append(np.unique(id_hash(frame["conversation_id"].to_numpy())))
            first = frame[pd.to_numeric(frame["turn"], errors="coerce") == 0]
            found, idx = np.unique(first["intent"].astype(str).to_numpy(), return_inverse=True)
            for level in found:
                levels.setdefault(level, len(levels))
                if len(levels) > limits.max_levels:
                    raise LogValidationError(
                        f"{file}, column 'intent': more than {limits.max_levels} distinct "
                        "values (set data.max_levels=N to allow more)"
                    )
            codes.append(np.array([levels[v] for v in found], dtype=np.int64)[idx])
            hashes.append(id_hash(first["conversation_id"].to_numpy()))
    h, code = np.concatenate(hashes), np.concatenate(codes)
    _check_first_turns(parts, root, np.unique(np.concatenate(every)), h, load, limits)
    n_s = np.bincount(code, minlength=len(levels)).astype(np.float64)
    prob = np.clip(np.maximum(share, min_per_intent / np.maximum(n_s, 1.0)), 0.0, 1.0)
    kept = id_uniform(h, seed, 0) < prob[code]
    order = np.argsort(h[kept])
    kept_hash, kept_weight = h[kept][order], 1.0 / prob[code[kept]][order]

    def keep(conv: pd.Series) -> np.ndarray:
        return find_sorted(kept_hash, id_hash(conv.to_numpy()))[0]

    table = select_table(parts, root, keep, limits)
    if table is None:
        raise LogValidationError(
            f"{root}: a sample of {share:.2g} of the conversations holds none; sample more turns"
        )
    logs = load(table)
    ids = id_hash(np.asarray(logs.conversation_id))
    weights = kept_weight[find_sorted(kept_hash, ids)[1]]
    strata = {
        level: {"conversations": int(n_s[c]), "probability": float(prob[c])}
        for level, c in sorted(levels.items())
    }
    return StratifiedSample(logs, weights, strata)


def _check_first_turns(
    parts: Sequence[tuple[Path, int]],
    root: Path,
    every: np.ndarray,
    first: np.ndarray,
    load: Callable[[Any], Any],
    limits: LogLimits,
) -> None:
    """LogValidationError naming file and rows when a conversation (id hashes ``every``,
    sorted) has no turn 0 (hashes ``first``): its rows are read and validated, which says
    what is wrong with them."""
    lacking = np.setdiff1d(every, first)
    if not len(lacking):
        return

    def keep(conv: pd.Series) -> np.ndarray:
        return np.isin(id_hash(conv.to_numpy()), lacking)

    table = select_table(parts, root, keep, limits)
    load(table)  # raises: turns must start at 0
    raise LogValidationError(f"{root}: {len(lacking)} conversation(s) have no turn 0")


def pass_of(conversation_id: pd.Series, n_passes: int) -> np.ndarray:
    """The pass (partition) of every row, shape (n,): a hash of its ``conversation_id``."""
    conv = conversation_id.astype(str)
    return pd.util.hash_pandas_object(conv, index=False).to_numpy() % n_passes


def _pass_table(
    parts: Sequence[tuple[Path, int]], root: Path, k: int, n_passes: int, limits: LogLimits
) -> _Table | None:
    """The rows of pass ``k`` (conversation hash mod ``n_passes``), with global row numbers."""
    return select_table(parts, root, lambda conv: pass_of(conv, n_passes) == k, limits)


def select_table(
    parts: Sequence[tuple[Path, int]],
    root: Path,
    keep_rows: Callable[[pd.Series], np.ndarray],
    limits: LogLimits,
) -> _Table | None:
    """The rows whose ``conversation_id`` ``keep_rows`` keeps (a bool per row; it must keep
    all rows of a conversation or none), read batch by batch, with global row numbers
    (so errors name the file and row); None when no row is kept or the column is missing."""
    import pyarrow.parquet as pq

    frames, ids, offset = [], [], 0
    for file, _ in parts:
        for batch in _batches(file, pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS)):
            if "conversation_id" not in batch.schema.names:
                return None  # load_conversations names the missing column
            batch = _small_dictionaries(batch)
            conv = pd.Series(batch.column("conversation_id").to_pandas())
            rows = np.flatnonzero(keep_rows(conv))
            if len(rows):
                frames.append(batch.take(rows).to_pandas())
                ids.append(offset + rows)
            offset += batch.num_rows
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    return _Table(
        frame=frame, path=root, parts=tuple(parts), limits=limits, row_ids=np.concatenate(ids)
    )


ROW_COLUMN = "__supportrl_row__"
"""Column of a spilled pass holding each row's global row number in the source."""


def spill_passes(
    parts: Sequence[tuple[Path, int]], n_passes: int, directory: Path
) -> list[Path | None] | None:
    """Read every file once and write each row to ``directory/pass-K.parquet`` of its pass
    (:func:`pass_of`), with its global row number in :data:`ROW_COLUMN`; then a pass reads
    its own file instead of every file (:func:`read_spilled`). The file of a pass without
    rows is None. Returns None (nothing written) when the parts' schemas differ, since one
    writer per pass needs one schema; the caller then selects rows from every file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(f) for f, _ in parts]
    if any(not s.equals(schemas[0]) for s in schemas[1:]):
        return None
    if "conversation_id" not in schemas[0].names:
        return None
    schema = schemas[0].append(pa.field(ROW_COLUMN, pa.int64()))
    paths = [directory / f"pass-{k}.parquet" for k in range(n_passes)]
    writers: dict[int, Any] = {}
    offset = 0
    try:
        for file, _ in parts:
            for batch in _batches(file, pq.ParquetFile(file).iter_batches(batch_size=BATCH_ROWS)):
                batch, n = _small_dictionaries(batch), batch.num_rows
                rows = pa.array(np.arange(offset, offset + n, dtype=np.int64))
                batch = pa.RecordBatch.from_arrays([*batch.columns, rows], schema=schema)
                k_of = pass_of(pd.Series(batch.column("conversation_id").to_pandas()), n_passes)
                order = np.argsort(k_of, kind="stable")
                bounds = np.searchsorted(k_of[order], np.arange(n_passes + 1))
                for k in np.flatnonzero(np.diff(bounds)):
                    if k not in writers:
                        writers[k] = pq.ParquetWriter(paths[k], schema)
                    writers[k].write_batch(batch.take(order[bounds[k] : bounds[k + 1]]))
                offset += n
    finally:
        for writer in writers.values():
            writer.close()
    return [paths[k] if k in writers else None for k in range(n_passes)]


def read_spilled(
    path: Path, parts: Sequence[tuple[Path, int]], root: Path, limits: LogLimits
) -> _Table:
    """A spilled pass as the table :func:`select_table` would return (same row numbers)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    row_ids = table.column(ROW_COLUMN).to_numpy()
    frame = _small_dictionaries(table.drop_columns([ROW_COLUMN])).to_pandas()
    return _Table(frame=frame, path=root, parts=tuple(parts), limits=limits, row_ids=row_ids)
