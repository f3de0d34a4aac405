"""LoggedConversations: support conversations as per-turn arrays plus conversation offsets.

The one per-turn-arrays type of the project: logs loaded from schema-v1 files
(:func:`supportrl.simulators.logs.load_conversations`), conversations simulated by the
collector (:mod:`supportrl.envs.collect`) and the input of off-policy evaluation all use
it. It lives beside the env, at the bottom of the layering, so the collector can return
it; loading and validation stay in :mod:`supportrl.simulators.logs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.envs.features import NO_PREVIOUS_ACTION
from supportrl.envs.rewards import CONTINUE, OUTCOMES

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class LoggedConversations:
    """Validated support conversations as per-turn arrays plus conversation offsets.

    Turns are sorted by conversation, then turn; conversation ``c`` is rows
    ``offsets[c]:offsets[c + 1]``. Every per-turn array has shape (n_turns,).
    """

    actions: tuple[str, ...]
    """Action catalogue; ``action`` holds indices into it."""
    conversation_id: np.ndarray
    """(n_conversations,) str."""
    offsets: np.ndarray
    """(n_conversations + 1,) int64."""
    turn: np.ndarray
    """(n_turns,) int64, 0, 1, ... within each conversation."""
    intent: np.ndarray
    """(n_turns,) str."""
    sentiment: np.ndarray
    """(n_turns,) float64 in [-1, 1]."""
    action: np.ndarray
    """(n_turns,) int64 index into ``actions``."""
    outcome: np.ndarray
    """(n_turns,) int64 index into ``envs.rewards.OUTCOMES``."""
    propensity: np.ndarray
    """(n_turns,) float64 in (0, 1]; NaN where not logged."""
    csat: np.ndarray
    """(n_turns,) float64 in [1, 5]; NaN where missing (always NaN before the last turn)."""
    handle_time_s: np.ndarray
    """(n_turns,) float64 seconds; NaN where missing."""
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Context feature -> (n_turns,) array (str for categorical, float64 for numeric)."""
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    customer_id: np.ndarray | None = None
    """(n_turns,) str, when logged."""
    timestamp: np.ndarray | None = None
    """(n_turns,) datetime64[ns], when logged."""
    source: str = ""
    """Where the data came from (for messages and reports)."""
    source_row: np.ndarray | None = None
    """(n_turns,) 0-based row of each turn in the source table (rows are sorted on load)."""

    @property
    def n_turns(self) -> int:
        return len(self.turn)

    @property
    def n_conversations(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Turns per conversation, shape (n_conversations,)."""
        return np.diff(self.offsets)

    @property
    def conversation_index(self) -> np.ndarray:
        """Conversation of each turn, shape (n_turns,)."""
        return np.repeat(np.arange(self.n_conversations), self.lengths)

    @property
    def is_last(self) -> np.ndarray:
        """Whether each turn is its conversation's last row, shape (n_turns,) bool."""
        last = np.zeros(self.n_turns, dtype=bool)
        last[self.offsets[1:] - 1] = True
        return last

    @property
    def previous_action(self) -> np.ndarray:
        """Previous action label of each turn (``"none"`` at turn 0), shape (n_turns,) str."""
        labels = np.asarray((NO_PREVIOUS_ACTION, *self.actions), dtype=str)
        prev = np.empty(self.n_turns, dtype=np.int64)
        prev[1:] = self.action[:-1] + 1
        prev[self.turn == 0] = 0
        return labels[prev]

    @property
    def has_propensity(self) -> bool:
        """True when every turn has a logged propensity."""
        return bool(np.isfinite(self.propensity).all())

    def states(self) -> dict[str, np.ndarray]:
        """The raw named state of every turn: what a policy sees at decision time."""
        states = {
            "turn": self.turn,
            "previous_action": self.previous_action,
            "intent": self.intent,
            "sentiment": self.sentiment,
        }
        states.update(self.features)
        return states

    def _take_rows(
        self, rows: np.ndarray, offsets: np.ndarray, **replace: Any
    ) -> LoggedConversations:
        """The turns at ``rows`` (in order) regrouped by ``offsets``; ``replace`` overrides fields."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        fields: dict[str, Any] = {
            "actions": self.actions,
            "conversation_id": self.conversation_id,
            "offsets": offsets,
            **{
                name: getattr(self, name)[rows]
                for name in (
                    "turn", "intent", "sentiment", "action", "outcome",
                    "propensity", "csat", "handle_time_s",
                )
            },
            "features": {k: v[rows] for k, v in self.features.items()},
            "categorical": self.categorical,
            "numeric": self.numeric,
            "customer_id": take(self.customer_id),
            "timestamp": take(self.timestamp),
            "source": self.source,
            "source_row": take(self.source_row),
        }  # fmt: skip
        fields.update(replace)
        return LoggedConversations(**fields)

    @staticmethod
    def concat(parts: list[LoggedConversations], source: str = "") -> LoggedConversations:
        """Logs pooled from several sources (e.g. several logging policies: per-decision
        propensities keep pooled logs valid for OPE). Every part needs the same action
        catalogue and context features; conversation ids must be distinct across parts.
        ``customer_id``/``timestamp`` are kept only when every part has them."""
        if not parts:
            raise ValueError("concat: no logs given")
        first = parts[0]
        for part in parts[1:]:
            if part.actions != first.actions:
                raise ValueError(f"concat: action catalogues differ ({part.source})")
            if set(part.categorical) != set(first.categorical) or set(part.numeric) != set(
                first.numeric
            ):
                raise ValueError(
                    f"concat: context features differ: {sorted(part.features)} vs "
                    f"{sorted(first.features)} ({part.source})"
                )
        ids = np.concatenate([p.conversation_id.astype(str) for p in parts])
        if len(np.unique(ids)) != len(ids):
            raise ValueError("concat: conversation ids repeat across the parts")
        lengths = np.concatenate([p.lengths for p in parts])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        def optional(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return LoggedConversations(
            actions=first.actions,
            conversation_id=ids,
            offsets=offsets,
            **{
                name: cat(name)
                for name in (
                    "turn", "intent", "sentiment", "action", "outcome",
                    "propensity", "csat", "handle_time_s",
                )
            },
            features={
                k: np.concatenate(
                    [p.features[k].astype(str if k in first.categorical else np.float64) for p in parts]
                )
                for k in first.features
            },
            categorical=first.categorical,
            numeric=first.numeric,
            customer_id=optional("customer_id"),
            timestamp=optional("timestamp"),
            source=source or " + ".join(p.source for p in parts),
        )  # fmt: skip

    def select(self, conversations: np.ndarray) -> LoggedConversations:
        """The subset of conversations given by index array or boolean mask (kept in order)."""
        conversations = np.asarray(conversations)
        if conversations.dtype == bool:
            conversations = np.flatnonzero(conversations)
        lengths = self.lengths[conversations]
        starts = self.offsets[conversations]
        rows = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return self._take_rows(rows, offsets, conversation_id=self.conversation_id[conversations])

    def truncate(self, max_turns: int) -> tuple[LoggedConversations, np.ndarray]:
        """The first ``max_turns`` turns of every conversation, and the kept row indices.

        A conversation that was longer becomes cut off (censored): its last kept turn gets
        outcome ``continue`` and no CSAT, as the value of a policy is defined up to
        ``max_turns`` (docs/reward.md).
        """
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        kept = np.flatnonzero(self.turn < max_turns)
        lengths = np.minimum(self.lengths, max_turns)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        last_kept = offsets[np.flatnonzero(self.lengths > max_turns) + 1] - 1
        outcome = self.outcome[kept]
        csat = self.csat[kept]
        outcome[last_kept] = CONTINUE
        csat[last_kept] = np.nan
        return self._take_rows(kept, offsets, outcome=outcome, csat=csat), kept

    def to_frame(self) -> pd.DataFrame:
        """The turns as a schema-v1 DataFrame (context features joined in)."""
        import pandas as pd  # here, so that importing envs never pulls pandas (serving)

        columns: dict[str, Any] = {
            "conversation_id": np.repeat(self.conversation_id, self.lengths),
            "turn": self.turn,
        }
        if self.customer_id is not None:
            columns["customer_id"] = self.customer_id
        columns.update(
            intent=self.intent,
            sentiment=self.sentiment,
            action=np.asarray(self.actions, dtype=str)[self.action],
            propensity=self.propensity,
            outcome=np.asarray(OUTCOMES, dtype=str)[self.outcome],
            csat=self.csat,
            handle_time_s=self.handle_time_s,
        )
        if self.timestamp is not None:
            columns["timestamp"] = self.timestamp
        columns.update(self.features)
        frame = pd.DataFrame(columns)
        for name in (
            "conversation_id",
            "customer_id",
            "intent",
            "action",
            "outcome",
            *self.categorical,
        ):
            if name in frame:
                frame[name] = frame[name].astype(object)
        return frame

    def summary(self) -> dict[str, Any]:
        """Counts a person checks first: sizes, actions, outcomes and what is missing."""
        last = self.is_last
        outcome_counts = np.bincount(self.outcome[last], minlength=len(OUTCOMES))
        outcomes = {o: int(c) for o, c in zip(OUTCOMES, outcome_counts, strict=True)}
        outcomes["censored"] = outcomes.pop("continue")
        return {
            "source": self.source,
            "conversations": self.n_conversations,
            "turns": self.n_turns,
            "mean_turns": round(float(self.lengths.mean()), 3),
            "actions": {
                a: int(c)
                for a, c in zip(
                    self.actions, np.bincount(self.action, minlength=len(self.actions)), strict=True
                )
            },
            "outcomes": outcomes,
            "intents": {
                str(k): int(v)
                for k, v in zip(*np.unique(self.intent, return_counts=True), strict=True)
            },
            "missing_propensity": int(np.isnan(self.propensity).sum()),
            "missing_csat": int(np.isnan(self.csat[last]).sum()),
            "missing_handle_time": int(np.isnan(self.handle_time_s).sum()),
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
        }
