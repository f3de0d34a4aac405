"""Running ``supportrl`` commands in tests, and reading what they wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
"""The project's root (tests sit in per-package folders below ``tests/``)."""


def supportrl(
    output_dir: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m supportrl.experiments.cli ARGS paths.output_dir=OUTPUT_DIR``, output captured."""
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        *args,
        f"paths.output_dir={output_dir}",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def run_dir_of(proc: subprocess.CompletedProcess[str]) -> Path:
    """The run directory a command printed on its ``run_dir: PATH`` line (exactly one)."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith("run_dir: ")]
    assert len(lines) == 1, proc.stdout
    return Path(lines[0].removeprefix("run_dir: "))


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The command's ``result.json``."""
    return json.loads((run_dir_of(proc) / "result.json").read_text())


def truth_imputer(true_csat: np.ndarray) -> Callable[[Any], tuple[np.ndarray, int]]:
    """For tests on the synthetic world only: fill missing CSAT with the hidden truth."""

    def impute(logs: Any) -> tuple[np.ndarray, int]:
        csat = logs.csat.copy()
        missing = np.isnan(csat) & (logs.outcome != 0)
        csat[missing] = true_csat[missing]
        return csat, int(missing.sum())

    return impute
