"""Running ``supportrl`` commands in tests, and reading what they wrote."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
"""The project's root (tests sit in per-package folders below ``tests/``)."""


ISOLATED_COMMANDS = frozenset({"serve", "sweep"})
"""Commands a test always runs in a subprocess: a server, and Ray Tune's sweeps."""

ISOLATED_KEYS = ("threads=", "engine=ray", "backend=rllib", "ray.address=")
"""Overrides that change the process itself (its thread pools) or start Ray in it: such a
command runs in a subprocess, so that no test's worker is left with its effects."""


def supportrl(
    output_dir: Path, *args: str, timeout: float = 300, isolate: bool = False
) -> subprocess.CompletedProcess[str]:
    """``supportrl ARGS paths.output_dir=OUTPUT_DIR``, its exit code and output captured.

    The command runs in this process, through the same entry point as the console script
    (:func:`supportrl.experiments.cli.main`: its checks, its ``error: ...`` lines and exit
    codes), which spares every test the interpreter's start and the imports of torch,
    pandas and Hydra. ``isolate`` (or a command or override of :data:`ISOLATED_COMMANDS` /
    :data:`ISOLATED_KEYS`) runs ``python -m supportrl.experiments.cli`` in a subprocess
    instead, with ``timeout``; ``SUPPORTRL_TEST_SUBPROCESS=1`` does so for every command
    (what every test did before, the anchor of the fast tier's timing)."""
    argv = [*args, f"paths.output_dir={output_dir}"]
    isolate = isolate or os.environ.get("SUPPORTRL_TEST_SUBPROCESS") == "1"
    isolate = isolate or (bool(args) and args[0] in ISOLATED_COMMANDS)
    isolate = isolate or any(a.startswith(ISOLATED_KEYS) for a in args)
    if isolate:
        cmd = [sys.executable, "-m", "supportrl.experiments.cli", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return _in_process(argv)


def _in_process(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``supportrl ARGV`` in this process as the sweep's in-worker trials do."""
    from supportrl.experiments import cli

    from supportrl.outputs import CREATED

    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env, known = sys.argv, dict(os.environ), set(CREATED.paths)
    shielded = _shield_handler_streams()
    code: int = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for handler, stream in shielded:
            handler.stream = stream
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        CREATED.forget([p for p in CREATED.paths if p not in known])
    return subprocess.CompletedProcess(
        ["supportrl", *argv], code, stdout=out.getvalue(), stderr=err.getvalue()
    )


class _Unclosable(io.TextIOBase):
    """A stream that writes through to another and never closes it."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        pass


def _shield_handler_streams() -> list[tuple[Any, Any]]:
    """Hydra configures logging on every run, which closes every live handler; a handler
    such as absl's closes its stream too, and a stream a library bound at import is the
    test runner's own capture file. The command sees each such stream through
    :class:`_Unclosable`; returns ``(handler, stream)`` pairs to restore afterwards."""
    import logging

    pairs = []
    for ref in list(logging._handlerList):  # type: ignore[attr-defined]
        handler = ref()
        stream = handler.__dict__.get("stream") if handler is not None else None
        if stream is not None and not isinstance(stream, _Unclosable):
            pairs.append((handler, stream))
            handler.stream = _Unclosable(stream)  # type: ignore[union-attr]
    return pairs


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
