"""Shared fixtures: small generated logs written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from supportrl.simulators.synthetic import GeneratedLogs, generate_logs


@pytest.fixture(scope="session")
def small_generated() -> GeneratedLogs:
    return generate_logs(300, seed=7)


@pytest.fixture(scope="session")
def small_log_files(
    small_generated: GeneratedLogs, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(turns.parquet, customers.parquet) of 300 generated conversations."""
    return small_generated.write(tmp_path_factory.mktemp("logs") / "data")
