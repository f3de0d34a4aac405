"""One BLAS/torch thread per process by default (``threads=1``): results do not depend on
the machine's thread settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from supportrl.experiments.entry import limit_threads
from threadpoolctl import threadpool_info

from tests.helpers import result_of


def test_limit_threads_caps_blas_and_torch() -> None:
    before = torch.get_num_threads()
    limiter = limit_threads(1)
    try:
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        limiter.restore_original_limits()
        torch.set_num_threads(before)


def test_dqn_result_identical_across_machine_thread_settings(tmp_path: Path) -> None:
    def train(omp: str, *extra: str) -> dict:
        env = {**os.environ, "OMP_NUM_THREADS": omp, "MKL_NUM_THREADS": omp}
        proc = subprocess.run(
            [
                sys.executable, "-m", "supportrl.experiments.cli", "train", "agent=dqn",
                "train.total_steps=1200", "agent.learning_starts=200", "agent.num_envs=8",
                "agent.batch_size=64", "train.eval_conversations=300", "logger.progress=false",
                f"paths.output_dir={tmp_path / omp}", *extra,
            ],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return result_of(proc)

    one, two = train("1"), train("2")
    assert one["updates"] > 0
    assert one["torch_threads"] == two["torch_threads"] == 1
    assert one["final_return"] == two["final_return"]
    # without the cap the process takes the machine's setting
    assert train("2", "threads=null")["torch_threads"] == 2
