"""Running one function per pass of the logs: in this process, as Ray tasks, or with Ray Data
reading the Parquet files and grouping the rows by pass (:func:`map_partitions_ray_data`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.bounded import _pass_table, _small_dictionaries, pass_of
from supportrl.simulators.logs.reading import _Table
from supportrl.simulators.logs.schema import LogLimits, LogValidationError

from supportrl.ray_runtime import start_ray

RAY_OBJECT_STORE_MB = 256
"""Object store of a local Ray started here for tasks (results are small summaries and sums)."""

RAY_DATA_OBJECT_STORE_MB = 1024
"""Object store of a local Ray started here for Ray Data: the rows in flight through the
shuffle (beyond it, Ray spills them to disk; 256 MB took 1.5x the time of 1 GB on 3M
turns, benchmarks/README.md)."""


PARTITION_COLUMN = "__supportrl_partition__"
"""Column that Ray Data groups the rows by: the partition of each row (:func:`pass_of`)."""


@contextlib.contextmanager
def ray_session(
    engine: str, ray_address: str | None, num_cpus: int, object_store_mb: int = RAY_OBJECT_STORE_MB
) -> Iterator[None]:
    """Ray started once (``engine="ray"``, see :func:`~supportrl.ray_runtime.start_ray`) for several calls of
    :func:`map_passes` / :func:`map_partitions_ray_data`, and shut down after them if this
    started it; nothing for other engines."""
    started = engine == "ray" and start_ray(
        ray_address, num_cpus=num_cpus, object_store_mb=object_store_mb
    )
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


@contextlib.contextmanager
def _task_errors() -> Iterator[None]:
    """Raise a failed Ray task's own error (:func:`_unwrapped`) instead of Ray's wrapper."""
    import ray

    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        cause = _unwrapped(exc)
        if cause is exc:
            raise
        raise cause from None


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

    started = start_ray(ray_address, num_cpus=num_cpus, object_store_mb=RAY_OBJECT_STORE_MB)
    try:
        task = ray.remote(num_cpus=1)(fn)
        refs = [ray.put(v) for v in shared]
        with _task_errors():
            return ray.get([task.remote(*refs, *a) for a in args])
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


@contextlib.contextmanager
def _ray_data_settings() -> Iterator[None]:
    """Ray Data with :data:`_DATA_CONTEXT` set and its progress loggers quiet (no progress
    notes or execution statistics on stderr; Ray Data resets its own logger), both restored
    afterwards."""
    import ray

    quiet = [logging.getLogger(f"ray.data._internal.{name}") for name in _QUIET_LOGGERS]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in _DATA_CONTEXT}
    try:
        for name, value in _DATA_CONTEXT.items():
            setattr(context, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


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
    started = start_ray(ray_address, num_cpus=num_cpus, object_store_mb=RAY_DATA_OBJECT_STORE_MB)
    try:
        with _ray_data_settings(), _task_errors():
            schema = _read_schema(parts)
            rows = (
                ray.data.read_parquet(
                    [str(f) for f, _ in parts], file_extensions=None, partitioning=None
                )
                .map_batches(
                    _with_partition, fn_args=(schema, n_partitions), batch_format="pyarrow"
                )
                .groupby(PARTITION_COLUMN, num_partitions=n_partitions)
                .map_groups(
                    _run_partition,
                    fn_args=(fn, tuple(shared), root, parts, limits),
                    batch_format="pyarrow",
                )
                .take_all()
            )
    finally:
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
