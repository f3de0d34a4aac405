"""The rows a decision log holds in memory until their part is written, by conversation.

A conversation is *open* from its first logged decision until its outcome is recorded (or
it is cut off), then *completed* until the part holding it is written; a *dropped*
conversation's rows are left out of every part. :class:`HeldRows` keeps that state and
answers what the next part holds (:meth:`HeldRows.split`) and what the journal must hold
to stand for it (:meth:`HeldRows.snapshot`); the
:class:`~supportrl.serving.DecisionLogger` decides when to write.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from supportrl.serving.journal import decisions_line, outcomes_line
from supportrl.serving.log_rows import Columns, check_outcomes, check_turns, completed_rows

CUT_OFF = ("continue", float("nan"))
"""(outcome, CSAT) of a conversation closed before it ended."""


class HeldRows:
    """Logged rows not yet in a part, and where each conversation stands."""

    def __init__(self) -> None:
        self.chunks: list[Columns] = []
        """Logged rows in arrival order (open, completed and dropped conversations)."""
        self.next_turn: dict[str, int] = {}
        """Each held conversation's next turn (number of rows logged for it)."""
        self.done: dict[str, tuple[str, float]] = {}
        """Completed conversations: (outcome, CSAT or NaN)."""
        self.handles: dict[str, np.ndarray] = {}
        """Seconds per turn given with an outcome (they replace the logged ones)."""
        self.dropped: set[str] = set()
        """Conversations left out of the log; their rows are never written."""
        self.done_rows = 0
        """Rows of the completed conversations."""
        self.rows = 0
        """Rows held (the dropped conversations' too, until the next part leaves them out)."""

    @property
    def open(self) -> int:
        """Conversations with decisions and no outcome yet."""
        return len(self.next_turn) - len(self.done)

    # ------------------------------------------------------------------ decisions

    def live(self, chunk: Columns) -> Columns:
        """``chunk`` without the rows of dropped conversations."""
        if not self.dropped:
            return chunk
        cids = chunk["conversation_id"].tolist()
        keep = np.fromiter((c not in self.dropped for c in cids), dtype=bool, count=len(cids))
        return {k: v[keep] for k, v in chunk.items()}

    def check(self, chunk: Columns) -> dict[str, int]:
        """The conversations' next turns after ``chunk`` (ValueError if out of order)."""
        return check_turns(chunk["conversation_id"], chunk["turn"], self.next_turn, self.done)

    def add(self, chunk: Columns, turns: dict[str, int]) -> None:
        """Hold ``chunk`` (checked: ``turns`` from :meth:`check`)."""
        if len(chunk["conversation_id"]):
            self.chunks.append(chunk)
            self.rows += len(chunk["conversation_id"])
        self.next_turn.update(turns)

    def drop(self, cid: str) -> None:
        """Leave ``cid`` out: its held rows are left out when the next part is written."""
        self.dropped.add(cid)
        if cid in self.done:
            self.done_rows -= self.next_turn[cid]
            del self.done[cid]
        self.next_turn.pop(cid, None)
        self.handles.pop(cid, None)

    def cut_off_oldest(self, max_open: int) -> None:
        """Close the oldest open conversations as cut off while more than ``max_open`` are open."""
        excess = self.open - max_open
        if excess <= 0:
            return
        for cid in list(self.next_turn):
            if excess <= 0:
                break
            if cid not in self.done:
                self.done[cid] = CUT_OFF
                self.done_rows += self.next_turn[cid]
                excess -= 1

    def cut_off_open(self) -> None:
        """Close every open conversation as cut off."""
        for cid in [c for c in self.next_turn if c not in self.done]:
            self.done[cid] = CUT_OFF

    # ------------------------------------------------------------------ outcomes

    def handle_times(self, cid: str, values: Sequence[float] | float) -> np.ndarray:
        """``values`` checked as seconds per logged turn of ``cid`` (KeyError, ValueError)."""
        if cid not in self.next_turn:
            raise KeyError(f"conversation_id {cid!r}: no decisions logged for it")
        turns = self.next_turn[cid]
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if arr.ndim != 1 or len(arr) != turns:
            raise ValueError(
                f"handle_time_s: expected {turns} number(s), one per logged turn, got {len(arr)}"
            )
        if not (np.isfinite(arr) & (arr >= 0)).all():
            raise ValueError("handle_time_s: every value must be a finite number >= 0")
        return arr

    def live_outcomes(
        self, ids: list[str], outcomes: Sequence[str], scores: np.ndarray
    ) -> tuple[list[str], Sequence[str], np.ndarray]:
        """The outcomes of conversations not dropped, checked (see :func:`check_outcomes`)."""
        if self.dropped:  # outcomes of dropped conversations are ignored
            keep = [i for i, c in enumerate(ids) if c not in self.dropped]
            ids, outcomes, scores = (
                [ids[i] for i in keep],
                [outcomes[i] for i in keep],
                scores[keep],
            )
        check_outcomes(ids, outcomes, scores, self.next_turn, self.done)
        return ids, outcomes, scores

    def complete(
        self,
        ids: list[str],
        outcomes: Sequence[str],
        scores: np.ndarray,
        handles: dict[str, np.ndarray],
    ) -> None:
        """Record checked outcomes (from :meth:`live_outcomes`)."""
        self.handles.update(handles)
        for cid, outcome, score in zip(ids, outcomes, scores.tolist(), strict=True):
            self.done[cid] = (outcome, score)
            self.done_rows += self.next_turn[cid]

    # ------------------------------------------------------------------ parts

    def _columns(self) -> Columns:
        return {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}

    def split(self) -> tuple[Columns, np.ndarray, np.ndarray, list[str], Columns]:
        """The next part and what stays held: (rows, outcome, csat, completed conversation ids)
        from :func:`completed_rows`, then the rows of open conversations. Needs a completed
        conversation (so a held row)."""
        columns = self._columns()
        cids = columns["conversation_id"].tolist()
        is_done = np.fromiter((c in self.done for c in cids), dtype=bool, count=len(cids))
        dropped = np.fromiter((c in self.dropped for c in cids), dtype=bool, count=len(cids))
        rest = {k: v[~is_done & ~dropped] for k, v in columns.items()}
        rows = {k: v[is_done & ~dropped] for k, v in columns.items()}
        return (*completed_rows(rows, self.done, self.handles), rest)

    def written(self, ends: list[str], rest: Columns) -> None:
        """The part of :meth:`split` is written: ``ends`` leave, ``rest`` stays held."""
        for c in ends:
            del self.done[c], self.next_turn[c]
            self.handles.pop(c, None)
        self.done_rows = 0
        self.chunks = [rest] if len(rest["conversation_id"]) else []
        self.rows = len(rest["conversation_id"])

    def clear(self) -> None:
        """Nothing held any more (the logger closed)."""
        self.chunks, self.next_turn, self.done, self.handles = [], {}, {}, {}
        self.rows = 0

    def snapshot(self, *, full: bool) -> list[dict]:
        """Journal lines standing for the held rows: open conversations only, or (``full``)
        every held row and the outcomes of completed conversations."""
        if not self.chunks:
            return []
        columns = self._columns()
        cids = columns["conversation_id"].tolist()
        keep = np.fromiter(
            (c not in self.dropped and (full or c not in self.done) for c in cids),
            dtype=bool,
            count=len(cids),
        )
        lines = []
        if keep.any():
            lines.append(decisions_line({k: v[keep] for k, v in columns.items()}, snapshot=True))
        if full and self.done:
            done = list(self.done)
            lines.append(
                outcomes_line(
                    done,
                    [self.done[c][0] for c in done],
                    [self.done[c][1] for c in done],
                    {c: self.handles[c] for c in done if c in self.handles},
                    snapshot=True,
                )
            )
        return lines
