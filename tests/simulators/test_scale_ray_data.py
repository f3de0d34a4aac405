"""engine=ray reads the logs with Ray Data: whole partitions in Ray workers, source rows named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from supportrl.simulators.logs import LogLimits, LogValidationError, load_conversations
from supportrl.simulators.logs.bounded import parquet_parts, pass_of, select_table
from supportrl.simulators.logs.partitioned import map_partitions_ray_data
from supportrl.simulators.synthetic import generate_logs

N_PARTITIONS = 3


def _rows(k: int, table: Any) -> tuple[int, list[tuple[str, float]]]:
    """The process that saw partition ``k`` and its (conversation, turn) rows, sorted."""
    frame = table.frame
    rows = zip(frame["conversation_id"], frame["turn"].astype(float), strict=True)
    return os.getpid(), sorted(rows)


def _load(k: int, table: Any) -> int:
    return load_conversations(table).n_conversations


def _fail(bad: int, k: int, table: Any) -> int:
    if k == bad:
        raise KeyError(f"partition {k} failed")
    return k


@pytest.fixture(scope="module")
def parts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 1,600 turn rows in three parts, rows shuffled; the last part's ``turn`` column
    is float64 where the others hold int64 (numbers alike, types not)."""
    turns, _ = generate_logs(600, seed=4).write(tmp_path_factory.mktemp("r") / "data")
    frame = pd.read_parquet(turns).drop(columns=["customer_id"])
    frame = frame.sample(frac=1.0, random_state=2).reset_index(drop=True)
    directory = turns.parent / "parts"
    directory.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), 3)):
        part = frame.iloc[chunk].copy()
        if i == 2:
            part["turn"] = part["turn"].astype("float64")
        part.to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_gives_whole_partitions_and_errors_name_source_rows(
    parts_dir: Path, tmp_path: Path
) -> None:
    import ray

    broken = tmp_path / "broken"
    broken.mkdir()
    for part in sorted(parts_dir.iterdir()):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":
            frame.loc[77, "sentiment"] = 9.0
        frame.to_parquet(broken / part.name, index=False)
    parts, limits = parquet_parts(parts_dir), LogLimits()
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False)
    try:
        seen = map_partitions_ray_data(_rows, parts, parts_dir, N_PARTITIONS, limits)
        counts = map_partitions_ray_data(_load, parts, parts_dir, N_PARTITIONS, limits)
        with pytest.raises(LogValidationError) as error:
            map_partitions_ray_data(_load, parquet_parts(broken), broken, N_PARTITIONS, limits)
        with pytest.raises(KeyError, match="partition 1 failed"):  # unwrapped, not Ray's
            map_partitions_ray_data(_fail, parts, parts_dir, N_PARTITIONS, limits, shared=(1,))
    finally:
        ray.shutdown()
    # each partition: exactly the rows of its conversations, read in a Ray worker
    for k, (pid, rows) in enumerate(seen):
        keep = select_table(parts, parts_dir, lambda c, k=k: pass_of(c, N_PARTITIONS) == k, limits)
        assert keep is not None and pid != os.getpid()
        expected = zip(keep.frame["conversation_id"], keep.frame["turn"].astype(float), strict=True)
        assert rows == sorted(expected)
    assert sum(counts) == 600 and min(counts) > 0
    # the failing partition, validated again from the source: its file and row
    assert "part-1.parquet, column 'sentiment', row(s) 77:" in str(error.value)
