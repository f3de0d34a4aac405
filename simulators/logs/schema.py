"""Schema v1 of logged support data: its columns, limits, the action catalogue, and the error type."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


DEFAULT_ACTIONS: tuple[str, ...] = (
    "empathize",
    "direct_answer",
    "faq_link",
    "clarify",
    "offer_credit",
    "escalate_human",
)


REQUIRED_COLUMNS: tuple[str, ...] = (
    "conversation_id",
    "turn",
    "intent",
    "sentiment",
    "action",
    "outcome",
)


OPTIONAL_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "propensity",
    "csat",
    "handle_time_s",
    "timestamp",
    # decision logs of an experiment (docs/experiments.md): which arm decided, and the id
    # of the decision; neither is a context feature
    "arm",
    "decision_id",
)


RESERVED_COLUMNS: frozenset[str] = frozenset(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)


_SHOW_ROWS = 5


MAX_HANDLE_TIME_S = 7 * 86_400.0
"""Longest ``handle_time_s`` of one turn (a week): beyond it, a unit or typing error that
would swamp every reward (reward v1 charges per minute)."""


MAX_ABS_VALUE = 1e12
"""Largest magnitude of a numeric feature or a generic bandit reward: beyond it, sums and
squares lose every digit (or overflow) in fitting and estimation."""


PROPENSITY_FLOOR = 1e-3
"""Every estimated propensity (of a logged action, by a model of the logging policy) is
floored here: an importance weight of at most 1,000. The one floor of the simulators' behaviour
cloning and of OPE's propensity models."""


class LogValidationError(ValueError):
    """Logged data breaks schema v1; the message names the file, column and rows."""


@dataclass(frozen=True)
class LogLimits:
    """Bounds on string columns, checked on the distinct values before any per-row array.

    A label longer than ``max_label_length`` characters (any string column: ids, intents,
    features) and a categorical column (``intent``, categorical features) with more than
    ``max_levels`` distinct values are user errors naming the column and rows. Both are
    settable from the command line (``data.max_label_length``, ``data.max_levels``).
    """

    max_label_length: int = 200
    """Longest string value accepted in any column (characters)."""
    max_levels: int = 1_000
    """Most distinct values of a categorical column (intent or a categorical feature)."""

    def __post_init__(self) -> None:
        for name in ("max_label_length", "max_levels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be an integer >= 1, got {value!r}")


SCHEMA_ALIASES = {"propensity_score": "propensity", "pscore": "propensity"}
"""Other tools' names of schema-v1 columns (Open Bandit Pipeline: ``pscore``; its Open
Bandit Dataset files: ``propensity_score``)."""
