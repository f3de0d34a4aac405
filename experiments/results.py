"""What a command writes at the end: ``result.json`` (strict JSON, atomically), the
``run_dir:`` line and the one-line summary; figures that never fail a run."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supportrl.experiments.run_dirs import output, run_dir

from supportrl.outputs import CREATED, atomic_write_text


def plot_or_warn(plot: Callable[..., Any], path: Path, *args: Any, **kwargs: Any) -> bool:
    """Draw a figure to ``path``; a plotting failure is a printed warning, never a failed run.

    Returns whether the figure was written (a partial file is removed).
    """
    new = not os.path.lexists(path)
    try:
        plot(path, *args, **kwargs)
    except Exception as exc:  # figures are optional outputs: any failure is only a warning
        if new:
            Path(path).unlink(missing_ok=True)
        print(f"warning: {Path(path).name} not written ({type(exc).__name__}: {exc})")
        return False
    if new:
        CREATED.record_file(path)  # this run's file: removed if the run fails later
    return True


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write strict JSON atomically (a unique temp file, then rename).

    Non-finite numbers (NaN, +-inf: an estimate that overflowed, an interval without
    bounds) are written as ``null``, never as the non-standard ``NaN`` / ``Infinity``
    that strict JSON readers refuse.
    """
    text = json.dumps(strict_json(payload), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def strict_json(value: Any) -> Any:
    """``value`` with non-finite floats (also numpy scalars and arrays) replaced by None."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return strict_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish(result: dict[str, Any], summary: str) -> dict[str, Any]:
    """Write ``result.json``, print ``run_dir: PATH`` and the one-line summary (last line)."""
    out = run_dir()
    path = out / "result.json"
    # a resumed run (user_errors(allow_finished=True)) replaces the earlier result in place;
    # it is not this run's to remove
    write_json(path if path.exists() else output(path), result)
    print(f"run_dir: {out}")
    print(summary)
    return result
