"""The decision log's write-ahead journal: segments on disk, read back, recovered.

A :class:`~supportrl.serving.DecisionLogger` appends every decision, outcome and drop to
its journal (:class:`Journal`) before the call returns: one JSON line per call in a
segment ``.journal-<stamp>-<n>.jsonl`` of the log folder, written with ``os.write`` (and
``fsync``-ed with ``sync=True``). A segment is locked (``flock``) while its logger runs.
When a part is written the journal starts a new segment holding only the rows still open
and the older segments are removed, so it stays about one flush interval long.

:func:`recover` finds the journals of loggers that ended without closing (unlocked) and
hands each one's live lines, in order, to a replay function that writes them as a part
(:func:`supportrl.serving.logger.recover_journals`); then it removes the segments.
Stdlib and numpy only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

JOURNAL_VERSION = 1
"""Version of the journal's line format (its header says which)."""
_SEGMENT = re.compile(r"^\.journal-(?P<stamp>.+)-(?P<n>\d{5})\.jsonl$")

Event = tuple[Path, int, dict[str, Any]]
"""One journal line to replay: (segment, line number, event)."""
Replay = Callable[[Path, str, dict[str, Any], list[Event]], Path | None]
"""``replay(directory, stamp, columns, events)``: write one journal's events as the part
:func:`recovered_part` names; returns it (None when nothing was left to write)."""


class JournalError(ValueError):
    """A journal line that cannot be read back (names the file and the line)."""


def lock(fd: int, *, wait: bool) -> bool:
    """An exclusive lock on an open journal segment (False: another process holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): journals are not shared
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def encode_columns(chunk: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """Rows as JSON-ready columns (timestamps as microseconds since the epoch)."""
    return {
        k: (v.astype("datetime64[us]").astype(np.int64) if k == "timestamp" else v).tolist()
        for k, v in chunk.items()
    }


def decisions_line(columns: Mapping[str, np.ndarray], *, snapshot: bool = False) -> dict[str, Any]:
    """The line of logged decisions (``snapshot``: rows held when a segment started)."""
    return {"e": "d", **({"s": 1} if snapshot else {}), "c": encode_columns(columns)}


def outcomes_line(
    ids: list[str],
    outcomes: Sequence[str],
    csat: list[float],
    handles: Mapping[str, np.ndarray],
    *,
    snapshot: bool = False,
) -> dict[str, Any]:
    """The line of recorded outcomes: CSAT (NaN for none) and seconds per turn where given."""
    return {
        "e": "o",
        **({"s": 1} if snapshot else {}),
        "ids": ids,
        "outcomes": list(outcomes),
        "csat": csat,
        "h": {c: h.tolist() for c, h in handles.items()},
    }


def drop_line(conversation_id: str) -> dict[str, Any]:
    """The line of a conversation left out of the log."""
    return {"e": "x", "id": conversation_id}


class Journal:
    """The append-only journal of one :class:`~supportrl.serving.DecisionLogger` (module doc).

    Segment ``n`` starts with a header line ``{"journal": 1, "columns": {...}, "replaces":
    [older segments], "part": PART}``: once ``PART`` exists the segments it replaces are
    obsolete, and its snapshot lines (``"s": 1``, the rows still open when ``PART`` was
    written) stand for them. Then one line per call: ``{"e": "d", "c": {COLUMN: [...]}}``
    (decisions), ``{"e": "o", ...}`` (outcomes), ``{"e": "x", "id": ...}`` (a drop).
    """

    def __init__(self, directory: Path, stamp: str, columns: dict[str, Any], sync: bool) -> None:
        self.directory, self.stamp, self.columns, self.sync = directory, stamp, columns, sync
        self.n = 0
        self.segments: list[Path] = []
        self.fd = -1

    def _new_segment(self, replaces: list[str], part: str | None, snapshot: list[dict]) -> None:
        """Write the next segment whole under a temporary name, rename it, append to it."""
        self.n += 1
        path = self.directory / f".journal-{self.stamp}-{self.n:05d}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        header = {"journal": JOURNAL_VERSION, "columns": self.columns}
        lines = [{**header, "replaces": replaces, "part": part}, *snapshot]
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            lock(fd, wait=True)
            self._write(fd, data)
            if self.sync:
                os.fsync(fd)
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        if self.fd >= 0:
            os.close(self.fd)  # its lock goes with it; the file stays until retired
        self.fd = fd
        self.segments.append(path)

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    @property
    def unlinked(self) -> bool:
        """Whether the current segment was removed from the folder (e.g. the folder was)."""
        return self.fd < 0 or os.fstat(self.fd).st_nlink == 0

    def append(self, event: dict[str, Any]) -> None:
        """One line, written before the call that logged it returns (OSError if it cannot)."""
        self._write(self.fd, (json.dumps(event, separators=(",", ":")) + "\n").encode())
        if self.sync:
            os.fsync(self.fd)

    def start(self, snapshot: list[dict]) -> None:
        """A first segment (or a fresh one when the folder lost the journal): replaces none."""
        self.segments = [p for p in self.segments if p.exists()]
        self._new_segment([p.name for p in self.segments], None, snapshot)

    def rotate(self, part: str, snapshot: list[dict]) -> None:
        """A new segment before ``part`` is written: ``snapshot`` is what stays held after it."""
        self._new_segment([p.name for p in self.segments], part, snapshot)

    def retire(self) -> None:
        """``part`` was written: the segments before the newest are obsolete."""
        for path in self.segments[:-1]:
            path.unlink(missing_ok=True)
        self.segments = self.segments[-1:]

    def close(self, *, remove: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if remove:
            for path in self.segments:
                path.unlink(missing_ok=True)
            self.segments = []


def read_segment(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, event) of a segment; a torn last line (killed mid-write) is skipped."""
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw:
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            if i == last:  # never acknowledged: the call that wrote it did not return
                return
            raise JournalError(f"{path}: line {i + 1} is not a journal line") from None
        if not isinstance(event, dict):
            raise JournalError(f"{path}: line {i + 1} is not a journal line")
        yield i + 1, event


def recovered_part(directory: Path, stamp: str) -> Path:
    """The part a journal of ``stamp`` is recovered into (one per logger that did not close)."""
    return directory / f"part-{stamp}-recovered-00001.parquet"


def recover(directory: Path, replay: Replay) -> list[Path]:
    """Replay the journals in ``directory`` left by loggers that did not close, then remove
    their segments; journals held by a running logger (locked) are left alone. A journal
    whose part (:func:`recovered_part`) exists was recovered before and is only removed.
    Returns the parts written; :class:`JournalError` names the file and line of a journal
    that cannot be read."""
    groups: dict[str, list[tuple[int, Path]]] = {}
    for path in directory.glob(".journal-*.jsonl"):
        m = _SEGMENT.match(path.name)
        if m:
            groups.setdefault(m["stamp"], []).append((int(m["n"]), path))
    written = []
    for stamp, numbered in sorted(groups.items()):
        segments = [p for _, p in sorted(numbered)]
        fds = []
        try:
            for path in segments:
                fds.append(os.open(path, os.O_RDONLY))
                if not lock(fds[-1], wait=False):
                    break  # a running logger's journal
            else:
                part = _recover_one(directory, stamp, segments, replay)
                if part is not None:
                    written.append(part)
                for path in segments:
                    path.unlink(missing_ok=True)
        finally:
            for fd in fds:
                os.close(fd)
    return written


def _recover_one(directory: Path, stamp: str, segments: list[Path], replay: Replay) -> Path | None:
    """Replay one logger's segments: those no written part made obsolete, each after the
    header, without a segment's snapshot when the segment it replaces was replayed."""
    if recovered_part(directory, stamp).exists():
        return None
    events = {p: list(read_segment(p)) for p in segments}
    headers = {}
    for path, lines in events.items():
        if not lines or "journal" not in lines[0][1]:
            raise JournalError(f"{path}: line 1 is not a journal header")
        if lines[0][1]["journal"] != JOURNAL_VERSION:
            raise JournalError(f"{path}: journal version {lines[0][1]['journal']!r} unknown")
        headers[path.name] = lines[0][1]
    obsolete = {
        name
        for header in headers.values()
        if header.get("part") and (directory / header["part"]).exists()
        for name in header["replaces"]
    }
    live = [p for p in segments if p.name not in obsolete]
    if not live:
        return None
    replayed: set[str] = set()
    ordered: list[Event] = []
    for path in live:
        skip_snapshot = any(name in replayed for name in headers[path.name]["replaces"])
        ordered += [
            (path, line, event)
            for line, event in events[path][1:]
            if not (skip_snapshot and event.get("s"))
        ]
        replayed.add(path.name)
    return replay(directory, stamp, headers[live[0].name]["columns"], ordered)
