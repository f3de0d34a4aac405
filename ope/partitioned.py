"""Off-policy evaluation of a Parquet directory of any size, in one process or on Ray.

:func:`evaluate_partitioned` reads a sample of whole conversations into memory, fits every
nuisance model on it (:func:`ope.streaming.fit_nuisance`), then streams the logs in
partitions by a hash of ``conversation_id`` (a conversation never straddles two) and adds
up each partition's statistics (:func:`ope.streaming.partition_sums`). ``engine="local"``
runs the partitions one after another in this process; with ``engine="ray"`` Ray Data
reads the logs and groups the rows by partition, each partition's statistics are computed
in a Ray task (a local Ray, or the cluster at ``ray_address``) and added here
(:func:`~supportrl.simulators.logs.partitioned.map_partitions_ray_data`). Both give the same
numbers, and the in-memory ``OffPolicyEvaluation``'s when the sample is all the logs
(``docs/scale.md``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import PreparedConversations, prepare_conversations, target_probs_of
from supportrl.ope.finish import finish
from supportrl.ope.meta import MIN_REFIT_CONVERSATIONS, OffPolicyEvaluation
from supportrl.ope.nuisance import NuisanceFits, fit_nuisance
from supportrl.ope.progress import progress
from supportrl.ope.results import PolicyEvaluation
from supportrl.ope.streaming import partition_sums
from supportrl.ope.sums import RANGE_KEY, PartitionSums, add_sums
from supportrl.simulators.logs import (
    LoggedConversations,
    LogLimits,
    all_propensities_one,
    data_warnings,
    load_conversations,
)
from supportrl.simulators.logs.bounded import (
    parquet_parts,
    pass_of,
    read_spilled,
    sample_conversations,
    select_table,
    spill_passes,
)
from supportrl.simulators.logs.partitioned import (
    RAY_DATA_OBJECT_STORE_MB,
    map_partitions_ray_data,
    map_passes,
    ray_session,
)

__all__ = ["EVALUATE_BYTES_PER_ROW", "LogSource", "PartitionedEvaluation", "evaluate_partitioned"]

EVALUATE_BYTES_PER_ROW = 6_000
"""Peak memory of one partition's statistics per turn row (bytes; see benchmarks/README.md)."""


@dataclass(frozen=True)
class LogSource:
    """Where the turns are and how to read them (the arguments of ``load_conversations``)."""

    turns: Path
    customers: Path | None = None
    categorical: Sequence[str] | None = None
    numeric: Sequence[str] | None = None
    actions: Sequence[str] | None = None
    limits: LogLimits = field(default_factory=LogLimits)

    def load(self, table: Any) -> LoggedConversations:
        """Validated conversations of a table of rows (or of the whole source)."""
        kwargs: dict[str, Any] = {
            "customers": self.customers,
            "categorical": self.categorical,
            "numeric": self.numeric,
            "limits": self.limits,
        }
        if self.actions is not None:
            kwargs["actions"] = self.actions
        return load_conversations(table, **kwargs)


@dataclass(frozen=True)
class PartitionedEvaluation:
    """Results of :func:`evaluate_partitioned`."""

    results: dict[str, PolicyEvaluation]
    n_partitions: int
    n_turns: int
    """Turn rows of the logs as given."""
    sample_conversations: int
    sample_turns: int
    sample_share: float
    """Probability with which each conversation entered the nuisance sample (1: all)."""
    refit_share: float
    """Probability with which each conversation is evaluated under every resample's refitted
    models (1: all, as in memory)."""
    prepared_sample: PreparedConversations
    engine: str
    returns: tuple[float, float, float]
    """(conversations, sum, sum of squares) of the logged conversation returns."""
    notes: tuple[str, ...] = ()
    return_range: tuple[float, float] | None = None
    """(lowest, highest) logged conversation return; None without conversations."""
    fit_s: float = 0.0
    """Seconds spent reading the sample and fitting the nuisance models."""
    sums_s: float = 0.0
    """Seconds spent on the partitions (reading, validating, statistics), all workers together
    in wall time."""


def _partition(
    source: LogSource,
    parts: Sequence[tuple[Path, int]],
    n_partitions: int,
    fits: NuisanceFits,
    policies: Mapping[str, Any],
    k: int,
    spilled: Path | None,
) -> tuple[PartitionSums, tuple[float, ...], dict[str, Any]]:
    """Statistics of partition ``k`` (read from its spilled file when there is one): its
    conversations, validated, then summed; with (conversations, sum, sum of squares, min,
    max) of its returns and the counts that :func:`data_warnings` reads."""
    if spilled is not None:
        table = read_spilled(spilled, parts, source.turns, source.limits)
    else:
        table = select_table(
            parts, source.turns, lambda conv: pass_of(conv, n_partitions) == k, source.limits
        )
    if table is None and n_partitions == 1:
        source.load(source.turns)  # names what is wrong (no rows, no conversation_id)
    return _partition_of_table(source, fits, policies, k, table)


def _partition_of_table(
    source: LogSource,
    fits: NuisanceFits,
    policies: Mapping[str, Any],
    k: int,
    table: Any,
) -> tuple[PartitionSums, tuple[float, ...], dict[str, Any]]:
    """:func:`_partition` of partition ``k``'s rows (a table, or None for none; ``k`` is
    the argument of :func:`map_partitions_ray_data`'s functions)."""
    if table is None:
        return PartitionSums(), (0.0, 0.0, 0.0, math.inf, -math.inf), _counts(None)
    logs = source.load(table)
    sums = partition_sums(fits, logs, policies)
    returns = sums.arrays.pop("_returns")[0]
    low, neg_high = sums.arrays.pop(RANGE_KEY, np.array([[math.inf, math.inf]]))[0]
    return sums, (*(float(r) for r in returns), float(low), -float(neg_high)), _counts(logs)


def _counts(logs: LoggedConversations | None) -> dict[str, Any]:
    """What :func:`data_warnings` reads of a partition: conversations, censored ones, turns
    per action, and whether every propensity is 1 (True for none: the identity of ``and``)."""
    if logs is None:
        return {"conversations": 0, "censored": 0, "actions": {}, "ones": True}
    summary = logs.summary()
    return {
        "conversations": int(summary.get("conversations", 0)),
        "censored": int(summary.get("outcomes", {}).get("censored", 0)),
        "actions": dict(summary.get("actions", {})),
        "ones": all_propensities_one(logs.propensity),
    }


def _data_warnings(counts: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`data_warnings` of the whole logs, from the partitions' counts."""
    actions: dict[str, int] = {}
    for c in counts:
        for a, n in c["actions"].items():
            actions[a] = actions.get(a, 0) + int(n)
    summary = {
        "conversations": sum(c["conversations"] for c in counts),
        "outcomes": {"censored": sum(c["censored"] for c in counts)},
        "actions": actions,
    }
    ones = any(c["conversations"] for c in counts) and all(c["ones"] for c in counts)
    return data_warnings(summary, propensities_all_one=bool(ones))


def _category_levels(
    source: LogSource, parts: Sequence[tuple[Path, int]], sample: LoggedConversations
) -> dict[str, list[str]]:
    """Distinct values (their string forms, sorted) of ``intent`` and every categorical
    feature over all the logs, read column by column one row batch at a time, so that the
    sample's encodings know the levels only other partitions hold (those encode like any
    level the models saw no data for). Null and malformed values are left to validation."""
    import pyarrow.parquet as pq

    names = ["intent", *sample.categorical]
    found: dict[str, set[str]] = {n: set() for n in names}
    states = sample.states()
    for n in names:
        found[n].update(np.asarray(states[n]).astype(str).tolist())

    def update(path: Path, frame: pd.DataFrame) -> None:
        for c in frame.columns:
            found[c].update(pd.Index(pd.unique(frame[c].dropna())).astype(str).tolist())
            if len(found[c]) > source.limits.max_levels:  # bounds this set's memory too
                raise ValueError(
                    f"{path}, column {c!r}: more than {source.limits.max_levels} distinct "
                    "values over the logs (set data.max_levels=N to allow more)"
                )

    def add(path: Path, columns: Sequence[str]) -> list[str]:
        if path.suffix.lower() == ".csv":
            present = [c for c in columns if c in pd.read_csv(path, nrows=0).columns]
            if present:
                update(path, pd.read_csv(path, usecols=present))
            return present
        pf = pq.ParquetFile(path)
        present = [c for c in columns if c in pf.schema_arrow.names]
        if present:
            for batch in pf.iter_batches(columns=present, batch_size=65_536):
                update(path, batch.to_pandas())
        return present

    in_turns: set[str] = set()
    for path, _ in parts:
        in_turns.update(add(path, names))
    rest = [n for n in names if n not in in_turns]
    if rest and source.customers is not None:
        customers = Path(source.customers)
        files = sorted(customers.rglob("*.parquet")) if customers.is_dir() else [customers]
        # customers absent from the turns add levels no row uses: harmless zero columns
        for path in files:
            add(path, rest)
    return {n: sorted(v) for n, v in found.items()}


def _is_from_logs(imputer: Any) -> bool:
    """Whether ``imputer`` is ``CsatImputation.from_logs`` (which takes ``levels``)."""
    from supportrl.simulators.fitted.csat import CsatImputation

    return getattr(imputer, "__func__", None) is CsatImputation.from_logs.__func__


def _check_csat_levels(
    prepared: PreparedConversations, levels: Mapping[str, Sequence[str]] | None
) -> None:
    """ValueError when the CSAT imputer's encoding lacks a level the logs hold (a custom
    imputer fitted on the sample alone): partitions holding it could not be imputed."""
    spec = getattr(prepared.csat_model, "spec", None)
    if spec is None or levels is None:
        return
    for name, values in levels.items():
        missing = sorted(set(values) - set(spec.categorical.get(name, values)))
        if missing:
            raise ValueError(
                f"csat: the CSAT imputer encodes {name!r} without value(s) {missing[:5]} that "
                "the logs hold outside the sample; build it with "
                "CsatImputation.from_logs(logs, levels=...) or pass CsatImputation.from_logs"
            )


def _refit_share(refit_turns: int, n_turns: int, n_conversations: float) -> float:
    """Share of the conversations in the refit subset; ValueError, before any partition
    runs, when the subset would hold fewer than :data:`MIN_REFIT_CONVERSATIONS` of the
    (estimated) ``n_conversations``."""
    if refit_turns < 1:
        raise ValueError(f"ope.refit_turns must be at least 1, got {refit_turns}")
    share = min(1.0, refit_turns / max(n_turns, 1))
    expected = share * n_conversations
    if share < 1.0 and expected < MIN_REFIT_CONVERSATIONS:
        raise ValueError(
            f"ope.refit_turns={refit_turns}: the refit subset would hold about {expected:.0f} "
            f"conversations, too few to measure the refitted models' variation; raise it to "
            f"at least {math.ceil(MIN_REFIT_CONVERSATIONS * n_turns / n_conversations)}"
        )
    return share


def _local_partitions(
    source: LogSource,
    parts: Sequence[tuple[Path, int]],
    n_partitions: int,
    fits: NuisanceFits,
    policies: Mapping[str, Any],
    spill_dir: str | Path | None,
    show_progress: bool = True,
) -> list[tuple[PartitionSums, tuple[float, ...], dict[str, Any]]]:
    """Every partition's statistics in this process, one after another (``show_progress``:
    report them, :mod:`ope.progress`)."""
    with tempfile.TemporaryDirectory(prefix="supportrl-partitions-", dir=spill_dir) as tmp:
        # one read of the logs into per-partition files beats every partition reading all
        spilled = spill_passes(parts, n_partitions, Path(tmp)) if n_partitions > 2 else None
        out = []
        with progress(n_partitions, "OPE partitions", enabled=show_progress) as bar:
            for k in range(n_partitions):
                one = spilled[k] if spilled else None
                out.append(_partition(source, parts, n_partitions, fits, policies, k, one))
                bar.update(1)
        return out


def _sample_evaluation(
    source: LogSource,
    parts: Sequence[tuple[Path, int]],
    share: float,
    reward: RewardSpec,
    make_ope: Callable[[PreparedConversations], OffPolicyEvaluation],
    csat_imputer: Any,
    seed: int,
) -> tuple[LoggedConversations, PreparedConversations, OffPolicyEvaluation]:
    """The nuisance sample (each conversation kept with probability ``share``), its prepared
    logs and the evaluation on them, its clip set for the whole logs."""
    sample = sample_conversations(source.turns, share, seed, source.load, source.limits)
    levels = _category_levels(source, parts, sample) if share < 1.0 else None
    if levels is not None and _is_from_logs(csat_imputer):
        csat_imputer = functools.partial(csat_imputer, levels=levels)
    prepared = prepare_conversations(
        sample, reward, csat_imputer=csat_imputer, levels=levels, seed=seed
    )
    _check_csat_levels(prepared, levels)
    if prepared.csat_model is not None and getattr(prepared.csat_model, "spec", None) is None:
        raise ValueError(
            "csat: evaluation in partitions imputes CSAT with CsatImputation.from_logs (its "
            f"state encoding); got {type(prepared.csat_model).__name__} without one "
            "(from_basis / from_model designs are supported in memory only)"
        )
    ope = make_ope(prepared)
    if share < 1.0 and ope.max_weight == "auto":
        # the clip grows with the whole logs, not the sample: their number of
        # conversations, estimated from the sample's share (fixed before any partition runs)
        total = sample.n_conversations / share
        ope = dataclasses.replace(ope, max_weight=max(ope.weight_share * total, 1.0))
    return sample, prepared, ope


def _sampling_notes(
    sample: LoggedConversations, share: float, n_turns: int, refit_share: float, refit_turns: int
) -> list[str]:
    """What the nuisance sample and the refit subset are, when they are not all the logs."""
    notes = []
    if share < 1.0:
        notes.append(
            f"nuisance models fitted on a random sample of {sample.n_conversations} "
            f"conversations ({sample.n_turns} turns, each conversation kept with probability "
            f"{share:.3g}); estimates and intervals sum over all {n_turns} turns"
        )
    if refit_share < 1.0:
        notes.append(
            f"bootstrap: nuisance models refitted per resample and evaluated on a random "
            f"{refit_share:.3g} of the conversations (ope.refit_turns={refit_turns}); the "
            "others' resamples keep the point fit's models"
        )
    return notes


def _on_ray(
    source: LogSource,
    parts: Sequence[tuple[Path, int]],
    n_partitions: int,
    ope: OffPolicyEvaluation,
    probs: np.ndarray,
    policies: Mapping[str, Any],
    refit_share: float,
    *,
    ray_address: str | None,
    num_cpus: int,
) -> tuple[NuisanceFits, float, list[Any]]:
    """The nuisance fits as Ray tasks (the 1 + n_resamples fits are independent: chunks of
    them), the time they were done, and every partition's statistics with Ray Data reading
    the files and grouping the rows by partition."""

    def on_ray(fn: Callable[..., Any], args: list[Any], shared: tuple[Any, ...]) -> Any:
        return map_passes(
            fn, args, engine="ray", ray_address=ray_address, num_cpus=num_cpus, shared=shared
        )

    names = list(policies)
    fits = fit_nuisance(
        ope, probs, names, refit_share=refit_share, map_fits=on_ray, n_chunks=4 * num_cpus
    )
    fitted = time.perf_counter()
    pieces = map_partitions_ray_data(
        _partition_of_table, parts, source.turns, n_partitions, source.limits,
        ray_address=ray_address, num_cpus=num_cpus, shared=(source, fits, dict(policies)),
    )  # fmt: skip
    return fits, fitted, pieces


def _n_partitions(n_turns: int, memory_budget_mb: float, engine: str, num_cpus: int) -> int:
    """Partitions of about ``memory_budget_mb`` of rows each; at least ``num_cpus`` on Ray."""
    rows_per_partition = max(1_000, int(memory_budget_mb * 2**20 / EVALUATE_BYTES_PER_ROW))
    n_partitions = max(1, math.ceil(n_turns / rows_per_partition))
    return max(n_partitions, num_cpus) if engine == "ray" else n_partitions


def evaluate_partitioned(
    source: LogSource,
    policies: Mapping[str, Any],
    reward: RewardSpec,
    make_ope: Callable[[PreparedConversations], OffPolicyEvaluation],
    *,
    csat_imputer: Any = None,
    sample_turns: int = 500_000,
    refit_turns: int = 20_000,
    memory_budget_mb: float = 1024.0,
    engine: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    num_cpus: int = 2,
    seed: int = 0,
    spill_dir: str | Path | None = None,
) -> PartitionedEvaluation:
    """Evaluate ``policies`` (name -> policy) on the Parquet logs of ``source``.

    ``make_ope`` builds the :class:`OffPolicyEvaluation` (estimators, resamples, interval
    settings) on prepared logs; it is applied to the nuisance sample: each conversation
    enters it with probability ``sample_turns / n_turns`` (all when the logs have at most
    ``sample_turns`` rows). Partitions hold about ``memory_budget_mb`` of rows each (at
    least ``num_cpus`` on Ray). ``engine="local"`` with more than two: the logs are first
    read once into one temporary Parquet file per partition under ``spill_dir`` (default:
    the system's temporary directory; deleted at the end), so that each partition reads
    only its own rows. ``engine="ray"``: Ray Data reads and groups them
    (:func:`~supportrl.simulators.logs.partitioned.map_partitions_ray_data`; ``spill_dir``
    unused).

    The bootstrap refits the nuisance models in every resample, as in memory, evaluated on
    a subset of about ``refit_turns`` turns (by id hash); the other conversations'
    resamples keep the point fit's models (:func:`ope.streaming.partition_sums`).
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    start = time.perf_counter()
    parts = parquet_parts(source.turns)
    n_turns = sum(n for _, n in parts)
    share = min(1.0, sample_turns / max(n_turns, 1))
    sample, prepared, ope = _sample_evaluation(
        source, parts, share, reward, make_ope, csat_imputer, seed
    )
    names = list(policies)
    states = prepared.logs.states()
    probs = np.stack([target_probs_of(policies[k], states, prepared.logs.actions) for k in names])
    refit_share = _refit_share(refit_turns, n_turns, sample.n_conversations / share)
    n_partitions = _n_partitions(n_turns, memory_budget_mb, engine, num_cpus)
    with ray_session(engine, ray_address, num_cpus, RAY_DATA_OBJECT_STORE_MB):
        if engine == "ray":
            fits, fitted, pieces = _on_ray(
                source, parts, n_partitions, ope, probs, policies, refit_share,
                ray_address=ray_address, num_cpus=num_cpus,
            )  # fmt: skip
        else:
            fits = fit_nuisance(ope, probs, names, refit_share=refit_share)
            fitted, at = time.perf_counter(), (source, parts, n_partitions)
            pieces = _local_partitions(*at, fits, policies, spill_dir, ope.progress)
    sums = add_sums([p for p, _, _ in pieces])
    summed = time.perf_counter()
    returns = tuple(float(sum(r[j] for _, r, _ in pieces)) for j in range(3))
    low, high = min(r[3] for _, r, _ in pieces), max(r[4] for _, r, _ in pieces)
    notes = list(prepared.notes) + _data_warnings([c for _, _, c in pieces])
    notes += _sampling_notes(sample, share, n_turns, refit_share, refit_turns)
    return PartitionedEvaluation(
        results=finish(ope, fits, probs, sums),
        n_partitions=n_partitions,
        n_turns=n_turns,
        sample_conversations=sample.n_conversations,
        sample_turns=sample.n_turns,
        sample_share=share,
        refit_share=refit_share,
        prepared_sample=prepared,
        engine=engine,
        returns=(returns[0], returns[1], returns[2]),
        return_range=(low, high) if returns[0] else None,
        notes=tuple(notes),
        fit_s=fitted - start,
        sums_s=summed - fitted,
    )
