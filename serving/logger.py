"""DecisionLogger: production decisions as schema-v1 turns, in Parquet parts.

Each logged decision becomes one turns row (``conversation_id``, ``turn``, ``intent``,
``sentiment``, ``action``, ``propensity``, ``timestamp``, ``handle_time_s`` and the context
features). A conversation's rows are held in memory until :meth:`DecisionLogger.record_outcome`
completes it; completed conversations are written in parts of about ``part_rows`` rows,
each to a temporary name and then renamed, so a crash loses at most the part being
written and never corrupts an earlier one. The directory is then a schema-v1 log:
``supportrl validate data.turns=DIR`` and ``supportrl evaluate data.turns=DIR`` read it
as it is (docs/log-schema.md).

Bounded and failure-aware: ids are capped at :data:`MAX_ID_LENGTH` characters and strings
are kept as Python objects (never fixed-width numpy strings); completed conversations are
written at least every ``flush_interval_s`` seconds of activity; at most ``max_open``
conversations are held open (the oldest is then written as cut off); a write that fails
(folder removed, read-only, disk full) keeps the rows in memory (up to ``max_buffer_rows``),
recreates the folder and tries again, and :attr:`DecisionLogger.error` says why meanwhile.
:meth:`DecisionLogger.close` raises :class:`LogWriteError` when rows could not be written.

Durable before acknowledged: every decision, outcome and drop is appended to a journal in
the log folder (``.journal-<stamp>-<n>.jsonl``, one JSON line per call, ``os.write``)
before the call returns, so a process killed at any instant (``kill -9``) loses nothing a
client was told was logged; with ``sync=True`` each line is also ``fsync``-ed (power loss
too). When a part is written the journal starts a new segment holding only the rows still
open, and the older segments are removed: the journal stays about one flush interval long.
A journal that cannot be written refuses the row (:class:`LogUnavailable`). A new
:class:`DecisionLogger` on the folder (``serve`` restarted) first turns the journals of
processes that ended without closing into parts (:func:`recover_journals`): completed
conversations with their outcomes, open ones as cut off. The loaders read only
``*.parquet``; the journal is invisible to ``validate``, ``evaluate`` and ``abtest``.

The parts of a logger: the journal's format, its segments and recovery in
:mod:`supportrl.serving.journal`; the rows' columns, checks and Parquet parts in
:mod:`supportrl.serving.log_rows`; the conversations held until written in
:mod:`supportrl.serving.held_rows`. Writing Parquet needs pyarrow (``pip install
"./serving[log]"``); nothing else beyond numpy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.serving.held_rows import HeldRows
from supportrl.serving.journal import (
    Event,
    Journal,
    JournalError,
    decisions_line,
    drop_line,
    outcomes_line,
    recover,
)
from supportrl.serving.log_rows import (
    MAX_ID_LENGTH,
    LogColumns,
    strings,
)


class LogWriteError(OSError):
    """Rows of the decision log could not be written (the folder is gone, read-only, full)."""


class LogUnavailable(RuntimeError):
    """The log holds as many unwritten rows as it may (``max_buffer_rows``): new rows are
    refused until a write succeeds."""


def recover_journals(directory: str | os.PathLike[str]) -> list[Path]:
    """Turn the journals in ``directory`` left by loggers that did not close into parts.

    Journals held by a running logger (locked) are left alone. Per journal: completed
    conversations keep their outcomes, open ones are written as cut off (``continue``), and
    the part is named ``part-<stamp>-recovered-00001.parquet``; its segments are then
    removed (if that part already exists, the journal was recovered before and is only
    removed). Returns the parts written. Raises :class:`JournalError` naming the file and
    line of a journal that cannot be read.
    """
    return recover(Path(directory), _replay_journal)


def _replay_journal(
    directory: Path, stamp: str, columns: dict[str, Any], events: list[Event]
) -> Path | None:
    """Replay one logger's journal lines into one part: every conversation, open ones as
    cut off (:func:`recover_journals`)."""
    logger = DecisionLogger(
        directory,
        categorical=columns["categorical"],
        numeric=columns["numeric"],
        experiment=columns["experiment"],
        customer_column=columns["customer_column"],
        part_rows=2**62,
        flush_interval_s=float("inf"),
        max_open=2**62,
        max_buffer_rows=2**62,
        journal=False,
        recover=False,
    )
    logger._stamp = f"{stamp}-recovered"  # the part recovered_part names
    for path, line, event in events:
        try:
            logger._replay(event)
        except (KeyError, TypeError, ValueError) as err:
            raise JournalError(f"{path}: line {line}: {err}") from None
    logger.close()
    return logger.parts[0] if logger.parts else None


class DecisionLogger:
    """Append decisions and outcomes to a directory of schema-v1 Parquet parts.

    Args:
        directory: where the parts go (created if needed; existing parts are kept).
        categorical: categorical state variables of the policy (``intent`` and
            ``previous_action`` included or not: both are handled).
        numeric: numeric state variables (``turn``, ``sentiment`` and context features).
        part_rows: completed rows per part (a part is written once this many are ready).
        flush_interval_s: completed conversations are written at the first call after this
            many seconds even when fewer than ``part_rows`` rows are ready.
        max_open: most conversations held open; beyond it the oldest is closed as cut off.
        max_buffer_rows: most rows held in memory while writes fail; beyond it
            :class:`LogUnavailable`.
        journal: append every call to the folder's journal before it returns (module doc);
            False keeps rows only in memory until their part is written.
        sync: ``fsync`` each journal line (survives power loss, not only a killed process;
            costs a disk flush per call).
        recover: first turn journals left in ``directory`` by loggers that did not close
            into parts (:func:`recover_journals`; :attr:`recovered` lists them).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        categorical: Sequence[str],
        numeric: Sequence[str],
        part_rows: int = 10_000,
        experiment: bool = False,
        customer_column: bool = False,
        flush_interval_s: float = 10.0,
        max_open: int = 100_000,
        max_buffer_rows: int = 2_000_000,
        journal: bool = True,
        sync: bool = False,
        recover: bool = True,
    ) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                'DecisionLogger writes Parquet and needs pyarrow: pip install "supportrl-serving[log]"'
            ) from exc
        if part_rows < 1:
            raise ValueError(f"part_rows must be >= 1, got {part_rows}")
        if max_open < 1 or max_buffer_rows < 1 or not flush_interval_s >= 0:
            raise ValueError("max_open, max_buffer_rows >= 1 and flush_interval_s >= 0 required")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._layout = LogColumns(
            categorical=tuple(c for c in categorical if c not in ("intent", "previous_action")),
            numeric=tuple(c for c in numeric if c not in ("turn", "sentiment")),
            experiment=bool(experiment),
            customer_column=bool(customer_column),
        )
        self.categorical, self.numeric = self._layout.categorical, self._layout.numeric
        self.experiment = self._layout.experiment
        """Whether rows carry the experiment columns ``arm`` and ``decision_id``."""
        self.customer_column = self._layout.customer_column
        """Whether rows carry a (pseudonymized) ``customer_id``: every row then needs one."""
        self.part_rows = int(part_rows)
        self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
        self._seq = 0
        self._held = HeldRows()
        self.parts: list[Path] = []
        """Parts written so far."""
        self.rows_written = 0
        self.flush_interval_s = float(flush_interval_s)
        self.max_open = int(max_open)
        self.max_buffer_rows = int(max_buffer_rows)
        self._last_flush = time.monotonic()
        self.error: str | None = None
        """Why the last write failed (None when the last write succeeded)."""
        self.failed_writes = 0
        self.recovered: list[Path] = recover_journals(self.directory) if recover else []
        """Parts written from journals of earlier loggers that did not close."""
        self._journal: Journal | None = None
        if journal:
            self._journal = Journal(self.directory, self._stamp, self._layout.header(), sync)
            self._journal.start([])

    @classmethod
    def for_predictor(
        cls,
        directory: str | os.PathLike[str],
        predictor: Any,
        *,
        part_rows: int = 10_000,
        flush_interval_s: float = 10.0,
        max_open: int = 100_000,
        max_buffer_rows: int = 2_000_000,
        journal: bool = True,
        sync: bool = False,
    ) -> DecisionLogger:
        """A logger for the state variables of a :class:`~supportrl.serving.Predictor`."""
        return cls(
            directory,
            categorical=tuple(predictor.encoder.categorical),
            numeric=tuple(predictor.encoder.numeric),
            part_rows=part_rows,
            flush_interval_s=flush_interval_s,
            max_open=max_open,
            max_buffer_rows=max_buffer_rows,
            journal=journal,
            sync=sync,
        )

    @classmethod
    def for_experiment(
        cls,
        directory: str | os.PathLike[str],
        experiment: Any,
        *,
        part_rows: int = 10_000,
        journal: bool = True,
        sync: bool = False,
    ) -> DecisionLogger:
        """A logger for an :class:`~supportrl.serving.experiment.Experiment`: the union of its
        arms' state variables, plus the ``arm``, ``customer_id`` and ``decision_id`` columns."""
        categorical: list[str] = []
        numeric: list[str] = []
        for p in experiment.predictors:
            categorical += [c for c in p.encoder.categorical if c not in categorical]
            numeric += [c for c in p.encoder.numeric if c not in numeric]
        return cls(
            directory,
            categorical=categorical,
            numeric=numeric,
            part_rows=part_rows,
            experiment=True,
            customer_column=experiment.config.unit == "customer",
            journal=journal,
            sync=sync,
        )

    # ------------------------------------------------------------------ decisions

    def log(
        self,
        conversation_id: str,
        state: Mapping[str, Any],
        action: str,
        propensity: float,
        *,
        timestamp: np.datetime64 | None = None,
        handle_time_s: float | None = None,
        arm: str | None = None,
        customer_id: str | None = None,
        decision_id: str | None = None,
    ) -> bool:
        """Log one decision taken in ``state`` (its ``turn`` must be the conversation's next);
        False when the conversation was dropped (:meth:`drop`) and the row left out."""
        columns = {name: [state[name]] for name in self._layout.state_names() if name in state}
        return 1 == self.log_batch(
            [conversation_id],
            columns,
            [action],
            [propensity],
            timestamps=None if timestamp is None else [timestamp],
            handle_time_s=None if handle_time_s is None else [handle_time_s],
            arms=None if arm is None else [arm],
            customer_ids=None if decision_id is None else [customer_id or ""],
            decision_ids=None if decision_id is None else [decision_id],
        )

    def log_batch(
        self,
        conversation_ids: Sequence[str],
        states: Mapping[str, Sequence[Any]],
        actions: Sequence[str],
        propensities: Sequence[float],
        *,
        timestamps: Sequence[Any] | None = None,
        handle_time_s: Sequence[float] | None = None,
        arms: Sequence[str] | None = None,
        customer_ids: Sequence[str] | None = None,
        decision_ids: Sequence[str] | None = None,
    ) -> int:
        """Log ``n`` decisions: ids, state columns, action labels and propensities, each (n,).

        Within one call a conversation's rows must come in turn order; each turn must be
        the conversation's next (0 for a new one). ``timestamps`` default to now (UTC);
        ``handle_time_s`` to missing. Rows of dropped conversations are left out; returns
        the number of rows logged. An experiment's logger (``experiment=True``) also takes
        each row's ``arms``, ``customer_ids`` (already pseudonymized; "" when none) and
        ``decision_ids``.
        """
        ids = strings(conversation_ids, "conversation_ids", MAX_ID_LENGTH)
        n = len(ids)
        if self._held.rows + n > self.max_buffer_rows:
            self._maybe_flush(force=True)
            if self._held.rows + n > self.max_buffer_rows:
                raise LogUnavailable(
                    f"decision log {self.directory}: {self._held.rows} rows wait to be written "
                    f"({self.error or 'too many open conversations'}); new rows are refused"
                )
        chunk = self._layout.decision_columns(
            ids,
            states,
            actions,
            propensities,
            timestamps=timestamps,
            handle_time_s=handle_time_s,
            arms=arms,
            customer_ids=customer_ids,
            decision_ids=decision_ids,
        )
        chunk = self._held.live(chunk)
        turns = self._held.check(chunk)
        if len(chunk["conversation_id"]):
            self._journal_append(decisions_line(chunk))  # durable, then held
        self._held.add(chunk, turns)
        self._held.cut_off_oldest(self.max_open)
        self._maybe_flush()
        return len(chunk["conversation_id"])

    def drop(self, conversation_id: str) -> None:
        """Leave a conversation out of the log (e.g. one of its states was invalid, so its rows
        would not be valid schema v1): rows logged so far are discarded, later decisions and
        its outcome are ignored."""
        cid = str(conversation_id)[:MAX_ID_LENGTH]
        if cid not in self._held.dropped:
            try:  # a drop lost with the journal only leaves its rows in, cut off
                self._journal_append(drop_line(cid))
            except LogUnavailable:
                pass
        self._held.drop(cid)

    @property
    def dropped(self) -> int:
        """Conversations left out with :meth:`drop`."""
        return len(self._held.dropped)

    def _maybe_flush(self, *, force: bool = False) -> None:
        """Write completed conversations when ``part_rows`` are ready or the interval passed;
        a failed write is kept in :attr:`error` (rows stay held, tried again later)."""
        due = self._held.done_rows >= self.part_rows or (
            time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        if self._held.done and (due or force):
            try:
                self.flush()
            except OSError:
                pass  # recorded in self.error by flush; the rows stay held

    @property
    def healthy(self) -> bool:
        """Whether the last write succeeded (or none failed yet)."""
        return self.error is None

    def _journal_append(self, event: dict[str, Any]) -> None:
        """Write ``event`` to the journal before the call is acknowledged; a journal that was
        removed (with its folder) is started again with every held row. LogUnavailable when
        it cannot be written: the call is then refused, not acknowledged."""
        journal = self._journal
        if journal is None:
            return
        try:
            if journal.unlinked:
                self.directory.mkdir(parents=True, exist_ok=True)
                journal.start(self._held.snapshot(full=True))
            journal.append(event)
        except OSError as exc:
            self.error = f"{self.directory}: journal: {exc.strerror or exc}"
            self.failed_writes += 1
            raise LogUnavailable(
                f"decision log {self.directory}: the journal cannot be written "
                f"({exc.strerror or exc}); not logged"
            ) from None
        if self.error is not None and self.error.startswith(f"{self.directory}: journal:"):
            self.error = None  # the journal is written again (parts report their own errors)

    def _replay(self, event: dict[str, Any]) -> None:
        """Apply one journal line (recovery)."""
        kind = event["e"]
        if kind == "d":
            c = event["c"]
            self.log_batch(
                c["conversation_id"],
                {name: c[name] for name in self._layout.state_names()},
                c["action"],
                c["propensity"],
                timestamps=np.asarray(c["timestamp"], dtype=np.int64).astype("datetime64[us]"),
                handle_time_s=c["handle_time_s"],
                arms=c.get("arm"),
                customer_ids=c.get("customer_id"),
                decision_ids=c.get("decision_id"),
            )
        elif kind == "o":
            handles = {
                cid: np.asarray(v, dtype=np.float64) for cid, v in event.get("h", {}).items()
            }
            self._record(event["ids"], event["outcomes"], event["csat"], handles)
        elif kind == "x":
            self.drop(event["id"])
        else:
            raise ValueError(f"unknown journal event {kind!r}")

    # ------------------------------------------------------------------ outcomes

    def record_outcome(
        self,
        conversation_id: str,
        outcome: str,
        csat: float | None = None,
        handle_time_s: Sequence[float] | float | None = None,
    ) -> bool:
        """Complete a conversation: ``outcome`` goes on its last logged row, ``csat`` (1-5) too.

        ``handle_time_s``: seconds each logged turn took, one number per turn in turn order
        (a single number for a one-turn conversation); they replace what the decisions
        logged. ``outcome="continue"`` marks a conversation cut off before it ended. False
        when the conversation was dropped (:meth:`drop`) and the outcome ignored.
        """
        cid = str(conversation_id)
        handles = {}
        if handle_time_s is not None and cid not in self._held.dropped:
            handles[cid] = self._held.handle_times(cid, handle_time_s)
        return 1 == self._record([cid], [outcome], None if csat is None else [csat], handles)

    def record_outcomes(
        self,
        conversation_ids: Sequence[str],
        outcomes: Sequence[str],
        csat: Sequence[float] | None = None,
    ) -> int:
        """:meth:`record_outcome` for many conversations; ``csat`` may hold NaN for "no survey".
        Returns how many were recorded (outcomes of dropped conversations are ignored)."""
        return self._record(conversation_ids, outcomes, csat, {})

    def _record(
        self,
        conversation_ids: Sequence[str],
        outcomes: Sequence[str],
        csat: Sequence[float] | None,
        handles: dict[str, np.ndarray],
    ) -> int:
        ids = [str(c) for c in conversation_ids]
        scores = np.full(len(ids), np.nan) if csat is None else np.asarray(csat, dtype=np.float64)
        if len(outcomes) != len(ids) or scores.shape != (len(ids),):
            raise ValueError("conversation_ids, outcomes and csat must have the same length")
        ids, outcomes, scores = self._held.live_outcomes(ids, outcomes, scores)
        handles = {c: h for c, h in handles.items() if c in ids}
        if ids:
            self._journal_append(outcomes_line(ids, outcomes, scores.tolist(), handles))
        self._held.complete(ids, outcomes, scores, handles)
        self._maybe_flush()
        return len(ids)

    @property
    def open_conversations(self) -> int:
        """Conversations with decisions logged and no outcome yet."""
        return self._held.open

    # ------------------------------------------------------------------ writing

    def flush(self) -> Path | None:
        """Write every completed conversation as one new part; returns it (None if none).

        Raises :class:`LogWriteError` (the rows stay held, :attr:`error` says why) when the
        part cannot be written; the folder is recreated first if it was removed.
        """
        self._last_flush = time.monotonic()
        if not self._held.done:
            return None
        rows, outcome, csat, ends, rest = self._held.split()
        self._seq += 1
        path = self.directory / f"part-{self._stamp}-{self._seq:05d}.parquet"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)  # recreated if it was removed
            if self._journal is not None:
                if self._journal.unlinked:  # removed with its folder: every held row again
                    self._journal.start(self._held.snapshot(full=True))
                held = [decisions_line(rest, snapshot=True)] if len(rest["conversation_id"]) else []
                self._journal.rotate(path.name, held)  # what stays held once the part exists
            self.rows_written += self._layout.write_part(path, rows, outcome, csat)
            self.parts.append(path)
        except OSError as exc:
            self.failed_writes += 1
            self.error = f"{self.directory}: {exc.strerror or exc}"
            raise LogWriteError(
                exc.errno, f"decision log: {len(outcome)} rows not written ({self.error})"
            ) from None
        self.error = None
        if self._journal is not None:
            self._journal.retire()
        self._held.written(ends, rest)
        return path

    @property
    def unwritten_rows(self) -> int:
        """Rows held in memory, not yet in a part."""
        return self._held.rows

    def close(self, *, censor_open: bool = True) -> None:
        """Flush; with ``censor_open`` conversations without an outcome are written as cut off
        (last row ``continue``), otherwise they are dropped.

        Raises :class:`LogWriteError` naming the folder and the number of rows lost when the
        last part cannot be written (the held rows are kept, so a caller may retry, and stay
        in the journal, so the next logger on the folder writes them).
        """
        if censor_open:
            self._held.cut_off_open()
        try:
            self.flush()
        except LogWriteError:
            if self._journal is not None:
                self._journal.close(remove=False)  # unlocked: recovered by the next logger
            raise
        if self._journal is not None:
            self._journal.close(remove=True)
        self._held.clear()

    def __enter__(self) -> DecisionLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
