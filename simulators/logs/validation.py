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

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.simulators.logs.bounded import (
    _pass_table,
    parquet_parts,
    passes_needed,
    read_spilled,
    spill_passes,
)
from supportrl.simulators.logs.features import MAX_INFERRED_LEVELS, MIN_ROWS_UNIQUE
from supportrl.simulators.logs.loading import all_propensities_one, load_conversations
from supportrl.simulators.logs.partitioned import map_partitions_ray_data
from supportrl.simulators.logs.reading import _Table
from supportrl.simulators.logs.schema import DEFAULT_ACTIONS, LogLimits, LogValidationError


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
    total, levels, all_one = _validate_passes(parts, root, n_passes, load, results)
    if categorical is None and numeric is None:
        _check_union(root, levels, total)
    total["source"] = str(turns)
    total["passes"] = n_passes
    total["propensities_all_one"] = all_one
    return total


def _validate_passes(
    parts: Sequence[tuple[Path, int]],
    root: Path,
    n_passes: int,
    load: dict[str, Any],
    results: list[Any] | None,
) -> tuple[dict[str, Any], dict[str, set[str]], bool]:
    """Validate the passes one by one (or read Ray Data's ``results``) and merge them: the
    summed summary, the distinct levels of each categorical column, and whether every
    propensity is 1. The first failing pass raises its error."""
    limits = load["limits"]
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
    return total, levels, all_one


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
