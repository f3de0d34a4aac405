"""Progress of long OPE loops (resample fits, partitions): a tqdm bar on a terminal, one
line every :data:`LINE_INTERVAL_S` seconds otherwise (logs, CI), nothing for short loops,
and nothing at all when the caller turns it off (``enabled=False``: the commands'
``logger.progress=false``, through :attr:`OffPolicyEvaluation.progress`).

    with progress(n_fits, "OPE nuisance fits") as bar:
        for ...:
            bar.update(1)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["LINE_INTERVAL_S", "Progress", "progress"]

LINE_INTERVAL_S = 10.0
"""Seconds between two one-line updates when the output is not a terminal."""


@dataclass
class Progress:
    """Counts finished steps of ``total``; writes to ``stream`` (see :func:`progress`)."""

    total: int
    description: str
    stream: IO[str]
    bar: Any = None
    """A tqdm bar (terminal), or None (periodic lines)."""
    enabled: bool = True
    """False: count silently."""
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_line: float = field(default_factory=time.perf_counter)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last_line >= LINE_INTERVAL_S and self.done < self.total:
            self.last_line = now
            elapsed = now - self.started
            left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            print(
                f"{self.description}: {self.done}/{self.total} after {elapsed:.0f} s "
                f"(about {left:.0f} s left)",
                file=self.stream,
                flush=True,
            )


@contextmanager
def progress(
    total: int, description: str, *, stream: IO[str] | None = None, enabled: bool = True
) -> Iterator[Progress]:
    """A :class:`Progress` of ``total`` steps: a tqdm bar when ``stream`` (default stderr)
    is a terminal, else a line every :data:`LINE_INTERVAL_S` seconds while it runs; with
    ``enabled=False``, neither (it only counts)."""
    out = sys.stderr if stream is None else stream
    bar = None
    if enabled and out.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=description, file=out, leave=False)
    state = Progress(total=total, description=description, stream=out, bar=bar, enabled=enabled)
    try:
        yield state
    finally:
        if bar is not None:
            bar.close()
