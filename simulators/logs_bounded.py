"""Validating conversation logs larger than memory: Parquet read in passes of bounded size.

Every schema-v1 check of :func:`~supportrl.simulators.logs.load_conversations` concerns
one conversation at a time, except the caps on distinct values. So the rows are split
into ``k`` passes by a hash of ``conversation_id`` (a conversation never straddles two
passes); each pass reads the Parquet files batch by batch, keeps only its rows, and runs
the full validation on them. Peak memory is that of one pass, about
``memory_budget_mb``; the files are read ``k`` times. Error messages name the same file,
column and rows as a single in-memory validation. The level caps are checked on the union
of distinct values across passes.

On Ray (``engine="ray"``), Ray Data reads the files and groups the rows by pass
(:func:`map_partitions_ray_data`); each pass is validated in a Ray task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs import (
    DEFAULT_ACTIONS,
    MAX_INFERRED_LEVELS,
    MIN_ROWS_UNIQUE,
    LogLimits,
    LogValidationError,
    _check_parquet_schema,
    _Table,
    all_propensities_one,
    load_conversations,
    reading_parquet,
)

BYTES_PER_ROW = 700
"""Measured peak memory of an in-memory validation per turn row (bytes; see benchmarks)."""

BATCH_ROWS = 65_536
"""Rows per Parquet record batch read."""

ID_HASH_KEY = "supportrl-resamp"
"""pandas' SipHash key (16 bytes) for conversation ids: fixed, so hashes never change."""

RAY_OBJECT_STORE_MB = 256
"""Object store of a local Ray started here for tasks (results are small summaries and sums)."""

RAY_DATA_OBJECT_STORE_MB = 1024
"""Object store of a local Ray started here for Ray Data: the rows in flight through the
shuffle (beyond it, Ray spills them to disk; 256 MB took 1.5x the time of 1 GB on 3M
turns, benchmarks/README.md)."""


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


def _batches(file: Path, batches: Iterator[Any]) -> Iterator[Any]:
    """``batches`` of ``file``; a corrupt page is an error naming the file."""
    it = iter(batches)
    while True:
        with reading_parquet(file):
            batch = next(it, None)
        if batch is None:
            return
        yield batch


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


PARTITION_COLUMN = "__supportrl_partition__"
"""Column that Ray Data groups the rows by: the partition of each row (:func:`pass_of`)."""


def _start_ray(
    ray_address: str | None, num_cpus: int, object_store_mb: int = RAY_OBJECT_STORE_MB
) -> bool:
    """Start Ray unless it runs (the cluster at ``ray_address``, else a local Ray of
    ``num_cpus`` CPUs and an object store of ``object_store_mb``); whether this call
    started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if ray_address is None:
        kwargs.update(num_cpus=num_cpus, object_store_memory=object_store_mb * 2**20)
    ray.init(address=ray_address, **kwargs)
    return True


@contextlib.contextmanager
def ray_session(
    engine: str, ray_address: str | None, num_cpus: int, object_store_mb: int = RAY_OBJECT_STORE_MB
) -> Iterator[None]:
    """Ray started once (``engine="ray"``, see :func:`_start_ray`) for several calls of
    :func:`map_passes` / :func:`map_partitions_ray_data`, and shut down after them if this
    started it; nothing for other engines."""
    started = engine == "ray" and _start_ray(ray_address, num_cpus, object_store_mb)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _unwrapped(exc: BaseException) -> BaseException:
    """A Ray task's own error (a LogValidationError names file, column and rows), not Ray's
    wrapper with the remote traceback."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


def map_passes(
    fn: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    engine: str = "local",
    ray_address: str | None = None,
    num_cpus: int = 2,
    shared: tuple[Any, ...] = (),
) -> list[Any]:
    """``[fn(*shared, *a) for a in args]``, in this process (``engine="local"``) or as one Ray
    task each (``"ray"``: the cluster at ``ray_address``, else a local Ray of ``num_cpus``
    CPUs with a small object store, shut down afterwards). ``shared`` arguments are put in
    Ray's object store once. Results come back in the order of ``args``.
    """
    if engine == "local":
        return [fn(*shared, *a) for a in args]
    if engine != "ray":
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    import ray

    started = _start_ray(ray_address, num_cpus)
    try:
        task = ray.remote(num_cpus=1)(fn)
        refs = [ray.put(v) for v in shared]
        try:
            return ray.get([task.remote(*refs, *a) for a in args])
        except ray.exceptions.RayTaskError as exc:
            cause = _unwrapped(exc)
            if cause is exc:
                raise
            raise cause from None
    finally:
        if started:
            ray.shutdown()


def _read_schema(parts: Sequence[tuple[Path, int]]) -> Any:
    """One Arrow schema for every part: the first part's, with a column that is an integer
    in one part and a float in another read as float64 (as pandas concatenates them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(f) for f, _ in parts]
    fields = []
    for field in schemas[0]:
        types = {s.field(field.name).type for s in schemas}
        fields.append(field.with_type(pa.float64()) if len(types) > 1 else field)
    return pa.schema(fields)


def _with_partition(batch: Any, schema: Any, n_partitions: int) -> Any:
    """A Ray Data batch (Arrow) in ``schema`` with its rows' partition in PARTITION_COLUMN."""
    import pyarrow as pa

    batch = batch.select(schema.names).cast(schema)
    k_of = pass_of(pd.Series(batch.column("conversation_id").to_pandas()), n_partitions)
    return batch.append_column(PARTITION_COLUMN, pa.array(k_of.astype(np.int64)))


def _run_partition(
    batch: Any,
    fn: Callable[..., Any],
    shared: tuple[Any, ...],
    root: Path,
    parts: tuple[tuple[Path, int], ...],
    limits: LogLimits,
) -> dict[str, np.ndarray]:
    """``fn(*shared, k, table)`` on one whole partition (a Ray Data group), its result or
    its error pickled in one row (``k``, ``ok``, ``out``). The table's rows come in Ray
    Data's order and carry no source row numbers: a failing partition is read again on the
    driver (:func:`map_partitions_ray_data`)."""
    from ray import cloudpickle

    k = int(batch.column(PARTITION_COLUMN)[0].as_py())
    frame = _small_dictionaries(batch.drop_columns([PARTITION_COLUMN])).to_pandas()
    table = _Table(frame=frame, path=root, parts=parts, limits=limits)
    try:
        ok, out = True, fn(*shared, k, table)
    except Exception as exc:  # noqa: BLE001 - handed to the driver, which raises it
        ok, out = False, exc
    try:
        payload = cloudpickle.dumps(out)
    except Exception:  # noqa: BLE001 - an unpicklable error: its text
        ok, payload = False, cloudpickle.dumps(RuntimeError(f"{type(out).__name__}: {out}"))
    return {"k": np.array([k]), "ok": np.array([ok]), "out": np.array([payload], dtype=object)}


_QUIET_LOGGERS = ("progress", "execution.streaming_executor", "datasource.parquet_datasource")

_DATA_CONTEXT = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    # Ray 2.60's default Parquet reader lists the files in threads of a Ray task, which all
    # import fsspec's HTTP file system: without aiohttp (not needed here) that import fails
    # and, racing itself, fails as an ImportError Ray does not catch. The V1 reader lists
    # them once, on the driver.
    "use_datasource_v2": False,
}
"""Ray Data settings of :func:`map_partitions_ray_data`, restored afterwards."""


def map_partitions_ray_data(
    fn: Callable[..., Any],
    parts: Sequence[tuple[Path, int]],
    root: Path,
    n_partitions: int,
    limits: LogLimits,
    *,
    ray_address: str | None = None,
    num_cpus: int = 2,
    shared: tuple[Any, ...] = (),
) -> list[Any]:
    """``[fn(*shared, k, table_k) for k in range(n_partitions)]`` on Ray, where ``table_k``
    holds the rows of partition ``k`` (:func:`pass_of` of ``conversation_id``: whole
    conversations), or None when it has none.

    Ray Data reads the Parquet files of ``parts`` (``ray.data.read_parquet``), adds each
    row's partition, groups the rows by it (a hash shuffle) and calls ``fn`` on every group
    in a Ray task (``map_groups``); partitions without rows are called here. Ray is the
    cluster at ``ray_address`` (which must see the files at the same paths), else a local
    Ray of ``num_cpus`` CPUs, shut down afterwards. Results come back in partition order.

    Errors: the error of the lowest failing partition is raised, unwrapped. Ray Data does
    not number rows, so a :class:`LogValidationError` is not raised from the task's table:
    that partition is read again here with :func:`select_table` (global row numbers) and
    ``fn`` runs on it, so the message names the source file and rows exactly as in one
    process.
    """
    import pyarrow.parquet as pq
    import ray
    from ray import cloudpickle

    parts = tuple(parts)
    if "conversation_id" not in pq.read_schema(parts[0][0]).names:
        # nothing to partition by: an empty table of the columns, for fn to name what lacks
        empty = pq.read_schema(parts[0][0]).empty_table().to_pandas()
        table = _Table(frame=empty, path=root, parts=parts, limits=limits)
        return [fn(*shared, k, table) for k in range(n_partitions)]
    started = _start_ray(ray_address, num_cpus, RAY_DATA_OBJECT_STORE_MB)
    # no progress notes or execution statistics on stderr (Ray Data resets its own logger)
    quiet = [logging.getLogger(f"ray.data._internal.{name}") for name in _QUIET_LOGGERS]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in _DATA_CONTEXT}
    try:
        for name, value in _DATA_CONTEXT.items():
            setattr(context, name, value)
        schema = _read_schema(parts)
        rows = (
            ray.data.read_parquet(
                [str(f) for f, _ in parts], file_extensions=None, partitioning=None
            )
            .map_batches(_with_partition, fn_args=(schema, n_partitions), batch_format="pyarrow")
            .groupby(PARTITION_COLUMN, num_partitions=n_partitions)
            .map_groups(
                _run_partition,
                fn_args=(fn, tuple(shared), root, parts, limits),
                batch_format="pyarrow",
            )
            .take_all()
        )
    except ray.exceptions.RayTaskError as exc:
        cause = _unwrapped(exc)
        if cause is exc:
            raise
        raise cause from None
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
        if started:
            ray.shutdown()
    done = {int(r["k"]): (bool(r["ok"]), cloudpickle.loads(r["out"])) for r in rows}
    results = []
    for k in range(n_partitions):
        ok, out = done.get(k, (True, None))
        if k not in done:
            out = fn(*shared, k, None)
        elif not ok:
            if isinstance(out, LogValidationError):
                # again with the source's row numbers: raises the exact message
                table = _pass_table(parts, root, k, n_partitions, limits)
                fn(*shared, k, table)
            raise out
        results.append(out)
    return results


def _validate_pass(
    parts: Sequence[tuple[Path, int]],
    root: Path,
    n_passes: int,
    load: dict[str, Any],
    k: int,
    spilled: Path | None = None,
) -> tuple[dict[str, Any] | None, dict[str, list[str]], bool, str | None]:
    """Pass ``k``'s summary, distinct levels and all-ones flag, or the error message."""
    limits = load["limits"]
    if spilled is not None:
        table = read_spilled(spilled, parts, root, limits)
    else:
        table = _pass_table(parts, root, k, n_passes, limits) if n_passes > 1 else None
    if n_passes > 1 and table is None:
        return None, {}, True, None
    return _validate_table(load, k, table if table is not None else root)


def _validate_table(
    load: dict[str, Any], k: int, table: _Table | Path | None
) -> tuple[dict[str, Any] | None, dict[str, list[str]], bool, str | None]:
    """The summary, distinct levels and all-ones flag of one pass's rows (``k`` unused: the
    signature of :func:`map_partitions_ray_data`'s functions), or the error message."""
    if table is None:
        return None, {}, True, None
    try:
        logs = load_conversations(table, **load)
    except LogValidationError as exc:
        return None, {}, True, str(exc)
    levels = {
        name: np.unique(logs.intent if name == "intent" else logs.features[name]).tolist()
        for name in ("intent", *logs.categorical)
    }
    return logs.summary(), levels, all_propensities_one(logs.propensity), None


def validate_conversations_bounded(
    turns: str | Path,
    *,
    customers: str | Path | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    actions: Sequence[str] = DEFAULT_ACTIONS,
    limits: LogLimits | None = None,
    memory_budget_mb: float = 1024.0,
    engine: str = "local",
    ray_address: str | None = None,
    num_cpus: int = 2,
) -> dict[str, Any]:
    """The summary of :meth:`LoggedConversations.summary` for Parquet logs of any size, plus
    ``passes`` and ``propensities_all_one`` (see :func:`~supportrl.simulators.logs.data_warnings`).

    Raises :class:`LogValidationError` with the messages of :func:`load_conversations`
    (file, column, global row numbers), holding about ``memory_budget_mb`` of rows at a
    time. When the logs break several rules, the one reported first may differ from a
    single in-memory validation (passes go by conversation hash, not by row order): the
    error of the lowest failing pass. ``engine="ray"``: Ray Data reads the files and
    validates the passes in Ray tasks (:func:`map_partitions_ray_data`; at least
    ``num_cpus`` passes), with the same summary and the same first error (a failing pass
    is validated again here from the source, for its row numbers).
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    limits = limits or LogLimits()
    root = Path(turns)
    if not root.exists():
        raise LogValidationError(f"{root}: no such file or directory")
    if root.suffix.lower() not in (".parquet", ".pq") and not root.is_dir():
        logs = load_conversations(
            turns, customers=customers, categorical=categorical, numeric=numeric,
            actions=actions, limits=limits,
        )  # fmt: skip
        ones = all_propensities_one(logs.propensity)
        return {**logs.summary(), "passes": 1, "propensities_all_one": ones}
    parts = parquet_parts(root)
    n_rows = sum(n for _, n in parts)
    n_passes = passes_needed(n_rows, memory_budget_mb)
    if engine == "ray":
        n_passes = max(n_passes, num_cpus)
    load = {
        "customers": customers, "categorical": categorical, "numeric": numeric,
        "actions": actions, "limits": limits,
    }  # fmt: skip
    results = (
        map_partitions_ray_data(
            _validate_table,
            parts,
            root,
            n_passes,
            limits,
            ray_address=ray_address,
            num_cpus=num_cpus,
            shared=(load,),
        )  # fmt: skip
        if engine == "ray"
        else None
    )
    with tempfile.TemporaryDirectory(prefix="supportrl-passes-") as tmp:
        # local: one read into per-pass files beats every pass reading every file
        spilled = (
            spill_passes(parts, n_passes, Path(tmp)) if n_passes > 2 and results is None else None
        )
        total: dict[str, Any] | None = None
        levels: dict[str, set[str]] = {}
        all_one = True
        for k in range(n_passes):
            # local: one pass at a time, so the first error stops the reading
            summary, found, ones, error = (
                results[k]
                if results is not None
                else _validate_pass(parts, root, n_passes, load, k, spilled[k] if spilled else None)
            )
            if error is not None and results is not None:
                # Ray Data's rows carry no row numbers: the pass again, with the source's
                error = _validate_pass(parts, root, n_passes, load, k)[3] or error
            if error is not None:
                raise LogValidationError(error)
            if summary is None:
                continue
            for name, values in found.items():
                levels.setdefault(name, set()).update(values)
                if len(levels[name]) > limits.max_levels:
                    raise LogValidationError(
                        f"{root}, column {name!r}: more than {limits.max_levels} distinct "
                        "values (set data.max_levels=N to allow more)"
                    )
            all_one = all_one and ones
            total = _merge(total, summary)
    if total is None:
        raise LogValidationError(f"{root}: no rows")
    if categorical is None and numeric is None:
        _check_union(root, levels, total)
    total["source"] = str(turns)
    total["passes"] = n_passes
    total["propensities_all_one"] = all_one
    return total


def _check_union(root: Path, levels: dict[str, set[str]], total: dict[str, Any]) -> None:
    """Inferred categorical features: the level checks of a single validation, across passes."""
    for name in total["categorical"]:
        n = len(levels.get(name, ()))
        if n > MAX_INFERRED_LEVELS:
            raise LogValidationError(
                f"{root}, column {name!r}: {n} distinct values, too many for a categorical "
                "feature (an id, a date or free text?); declare the features "
                "(data.categorical=[..] data.numeric=[..])"
            )
        if n == total["turns"] >= MIN_ROWS_UNIQUE:
            raise LogValidationError(
                f"{root}, column {name!r}: a different value on every row (an id, an e-mail "
                "address?), not a feature; drop it or declare the features "
                "(data.categorical=[..] data.numeric=[..])"
            )


def _merge(total: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    """Sum two summaries (counts and count dictionaries); mean_turns recomputed."""
    if total is None:
        return dict(part)
    out = dict(total)
    for key, value in part.items():
        if isinstance(value, dict):
            merged = dict(out.get(key, {}))
            for k, v in value.items():
                merged[k] = merged.get(k, 0) + v
            out[key] = dict(sorted(merged.items())) if key == "intents" else merged
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = out.get(key, 0) + value
    out["mean_turns"] = round(out["turns"] / max(out["conversations"], 1), 3)
    return out
