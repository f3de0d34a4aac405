"""Issue 22 item 10, last part: 2M rows with 2M dictionary levels reached 4.2 GB and a
MemoryError traceback in ``validate`` (300k levels were refused cleanly). Each record batch
read from a Parquet file carries the file's whole dictionary, and pandas made a Python
string per level for every batch; now a batch's dictionary is cut to the values it uses
before pandas sees it, and the level check refuses the column with its usual message."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from supportrl.simulators.logs import LogValidationError
from supportrl.simulators.logs import bounded as logs_bounded
from supportrl.simulators.logs.bounded import _small_dictionaries
from supportrl.simulators.logs.validation import validate_conversations_bounded


def _levels_file(path: Path, n: int) -> Path:
    i = np.arange(n)
    table = pa.table(
        {
            "conversation_id": pa.array([f"c{k}" for k in range(n)]),
            "turn": pa.array(np.zeros(n, dtype=np.int64)),
            "intent": pa.array(np.array(["billing", "technical"])[i % 2]),
            "sentiment": pa.array(np.zeros(n)),
            "action": pa.array(np.array(["empathize", "direct_answer"])[i % 2]),
            "outcome": pa.array(["resolved"] * n),
            "tier": pa.array([f"level-{k:08d}" for k in range(n)]).dictionary_encode(),
        }
    )
    pq.write_table(table, path)
    return path


def test_a_batch_keeps_only_the_dictionary_values_it_uses() -> None:
    tier = pa.array([f"v{k}" for k in range(1000)]).dictionary_encode()
    batch = pa.RecordBatch.from_arrays(
        [tier, pa.array(np.arange(1000))],
        schema=pa.schema([("tier", tier.type), ("n", pa.int64())], metadata={b"k": b"v"}),
    )
    part = _small_dictionaries(batch.slice(10, 3))
    assert len(part.column(0).dictionary) == 3
    assert part.column(0).to_pylist() == ["v10", "v11", "v12"]
    assert part.schema.metadata == {b"k": b"v"} and part.column(1).to_pylist() == [10, 11, 12]
    table = _small_dictionaries(pa.Table.from_batches([batch.slice(0, 2), batch.slice(5, 2)]))
    assert [len(c.dictionary) for c in table.column(0).chunks] == [2, 2]
    assert table.column(0).to_pylist() == ["v0", "v1", "v5", "v6"]
    small = batch.slice(0, 1000)  # a dictionary no larger than the batch is left as it is
    assert _small_dictionaries(small) is small


def test_many_dictionary_levels_are_refused_without_a_string_per_level_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20_000
    path = _levels_file(tmp_path / "turns.parquet", n)
    monkeypatch.setattr(logs_bounded, "BATCH_ROWS", 500)  # 40 batches, each with n levels
    tracemalloc.start()
    try:
        with pytest.raises(LogValidationError, match=r"column 'tier': \d+ distinct values, too"):
            validate_conversations_bounded(path, memory_budget_mb=1.0)  # in passes
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # before: 58 MiB traced (a string per level for each of the 40 batches); now 3 MiB
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB traced"
