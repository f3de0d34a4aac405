"""Shared fixtures (small generated logs written once per session) and the test run's
layout on several workers (``make test`` runs ``pytest -n 2 --dist loadgroup``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from supportrl.simulators.synthetic import GeneratedLogs, generate_logs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that starts Ray runs on one xdist worker, one after another: two local Ray
    runtimes at once would split the 2 cores and the memory their object stores reserve."""
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def small_generated() -> GeneratedLogs:
    return generate_logs(300, seed=7)


@pytest.fixture(scope="session")
def small_log_files(
    small_generated: GeneratedLogs, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(turns.parquet, customers.parquet) of 300 generated conversations."""
    return small_generated.write(tmp_path_factory.mktemp("logs") / "data")
