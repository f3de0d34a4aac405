"""Generated logs larger than memory: partitions simulated and written independently.

Partition ``p`` of ``P`` is an independent simulation of ``n // P`` conversations (one more
for the first ``n % P``) by :func:`~supportrl.simulators.synthetic.generate_logs` with its
own seed (entropy ``(seed, p)``), its conversation and customer ids prefixed
``p{p}-`` so they are unique across partitions, and written to ``turns/part-{p}.parquet`` and
``customers/part-{p}.parquet``. A partition's bytes depend on ``(seed, p, P, n, world)``
only, so one process (``engine="local"``) and Ray tasks (``"ray"``) write byte-identical
files, and memory holds one partition at a time per worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.partitioned import map_passes
from supportrl.simulators.synthetic.generate import generate_logs
from supportrl.simulators.synthetic.params import CUSTOMER_FEATURES
from supportrl.simulators.synthetic.world import SyntheticWorld

from supportrl.outputs import CREATED

__all__ = ["PartitionedLogs", "partition_sizes", "write_partitioned_logs"]


@dataclass(frozen=True)
class PartitionedLogs:
    """Where :func:`write_partitioned_logs` wrote, and how much."""

    turns: Path
    """Directory of ``part-*.parquet`` turn files."""
    customers: Path
    """Directory of ``part-*.parquet`` customer files."""
    conversations: int
    turn_rows: int
    partitions: int


def partition_sizes(n_conversations: int, partitions: int) -> np.ndarray:
    """Conversations per partition, shape (partitions,): ``n // P``, the first ``n % P`` one more."""
    sizes = np.full(partitions, n_conversations // partitions, dtype=np.int64)
    sizes[: n_conversations % partitions] += 1
    return sizes


def _write_partition(
    world: SyntheticWorld,
    seed: int,
    customers_per_conversation: float,
    tmp: Path,
    p: int,
    size: int,
    width: int,
) -> int:
    """Simulate and write partition ``p``; returns its turn rows."""
    # a partition's seed depends on (seed, p) only: the same bytes in any process
    part_seed = int(np.random.SeedSequence([seed, p]).generate_state(1)[0])
    generated = generate_logs(
        size,
        seed=part_seed,
        world=world,
        customers_per_conversation=customers_per_conversation,
    )
    prefix = f"p{p:0{width}d}-"
    turns = generated.logs.to_frame().drop(columns=list(CUSTOMER_FEATURES))
    turns["conversation_id"] = prefix + turns["conversation_id"].astype(str)
    turns["customer_id"] = prefix + turns["customer_id"].astype(str)
    customers = pd.DataFrame(generated.customers)
    customers["customer_id"] = (prefix + customers["customer_id"].astype(str)).astype(object)
    customers["tier"] = customers["tier"].astype(object)
    name = f"part-{p:0{width}d}.parquet"
    turns.to_parquet(tmp / "turns" / name, index=False)
    customers.to_parquet(tmp / "customers" / name, index=False)
    return len(turns)


def write_partitioned_logs(
    directory: str | Path,
    n_conversations: int,
    *,
    partitions: int,
    seed: int = 0,
    world: SyntheticWorld | None = None,
    customers_per_conversation: float = 0.7,
    engine: str = "local",
    ray_address: str | None = None,
    num_cpus: int = 2,
) -> PartitionedLogs:
    """Simulate ``n_conversations`` into ``partitions`` Parquet parts under a new ``directory``
    (``turns/`` and ``customers/``), one partition per task (see the module docstring).

    Written to a temporary directory beside ``directory`` and renamed at the end, so a
    failure leaves nothing behind; on a Ray cluster the workers must see that directory.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if n_conversations < partitions:
        raise ValueError(
            f"n_conversations ({n_conversations}) must be at least partitions ({partitions})"
        )
    directory = Path(directory)
    if os.path.lexists(directory):
        raise ValueError(f"{directory}: already exists; choose a new directory")
    world = world or SyntheticWorld()
    with CREATED.new_directory(directory, "choose a new directory") as tmp:
        (tmp / "turns").mkdir()
        (tmp / "customers").mkdir()
        sizes = partition_sizes(n_conversations, partitions)
        width = len(str(partitions - 1))
        rows: list[Any] = map_passes(
            _write_partition,
            [(p, int(sizes[p]), width) for p in range(partitions)],
            engine=engine,
            ray_address=ray_address,
            num_cpus=num_cpus,
            shared=(world, seed, customers_per_conversation, tmp),
        )
    return PartitionedLogs(
        turns=directory / "turns",
        customers=directory / "customers",
        conversations=n_conversations,
        turn_rows=int(sum(rows)),
        partitions=partitions,
    )
