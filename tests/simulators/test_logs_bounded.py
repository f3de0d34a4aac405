"""Validation in bounded memory: the same summary and errors as a single in-memory pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from supportrl.simulators.logs import LogValidationError, load_conversations
from supportrl.simulators.logs.bounded import passes_needed
from supportrl.simulators.logs.validation import validate_conversations_bounded
from supportrl.simulators.synthetic import generate_logs


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """About 21,000 turn rows in three Parquet parts, rows shuffled (conversations interleave)."""
    generated = generate_logs(6000, seed=5)
    turns, customers = generated.write(tmp_path_factory.mktemp("logs") / "data")
    frame = pd.read_parquet(turns).sample(frac=1.0, random_state=0).reset_index(drop=True)
    directory = turns.parent / "parts"
    directory.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[chunk].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory, customers


def test_bounded_summary_equals_the_in_memory_one(parts: tuple[Path, Path]) -> None:
    directory, customers = parts
    whole = load_conversations(directory, customers=customers).summary()
    bounded = validate_conversations_bounded(directory, customers=customers, memory_budget_mb=1)
    assert bounded.pop("passes") == passes_needed(whole["turns"], 1) >= 2
    assert bounded.pop("propensities_all_one") is False
    assert bounded == whole


def test_bounded_errors_name_the_same_file_and_rows(
    parts: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = parts
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in sorted(directory.iterdir()):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":
            frame.loc[1234, "sentiment"] = 7.0
        frame.to_parquet(broken / part.name, index=False)
    with pytest.raises(LogValidationError) as single:
        load_conversations(broken, customers=customers)
    with pytest.raises(LogValidationError) as bounded:
        validate_conversations_bounded(broken, customers=customers, memory_budget_mb=1)
    assert str(bounded.value) == str(single.value)
    assert "part-1.parquet, column 'sentiment', row(s) 1234" in str(bounded.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.parquet"
    with pytest.raises(LogValidationError, match=f"{missing}: no such file or directory"):
        validate_conversations_bounded(missing)
