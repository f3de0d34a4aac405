"""Logged support data, schema v1: the schema, loading and validation, and reading logs larger
than memory.

Modules: :mod:`~supportrl.simulators.logs.loading` (schema v1 loading and validation into
:class:`LoggedConversations` / :class:`LoggedDecisions`) and
:mod:`~supportrl.simulators.logs.bounded` (validation and sampling of Parquet logs in passes
of bounded memory, locally or on Ray Data). The loading names are importable from here.
"""

from __future__ import annotations

from supportrl.simulators.logs.loading import (
    DEFAULT_ACTIONS,
    MAX_ABS_VALUE,
    MAX_HANDLE_TIME_S,
    MAX_INFERRED_LEVELS,
    MAX_PARQUET_FOOTER_BYTES,
    MIN_ROWS_UNIQUE,
    OPTIONAL_COLUMNS,
    PROPENSITY_FLOOR,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    SCHEMA_ALIASES,
    SCHEMA_VERSION,
    LoggedConversations,
    LoggedDecisions,
    LogLimits,
    LogValidationError,
    all_propensities_one,
    data_warnings,
    load_conversations,
    load_decisions,
    read_table,
    reading_parquet,
    write_conversations,
)

__all__ = [
    "SCHEMA_VERSION",
    "DEFAULT_ACTIONS",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "RESERVED_COLUMNS",
    "MAX_HANDLE_TIME_S",
    "MAX_ABS_VALUE",
    "PROPENSITY_FLOOR",
    "LogValidationError",
    "reading_parquet",
    "LogLimits",
    "MAX_PARQUET_FOOTER_BYTES",
    "read_table",
    "MIN_ROWS_UNIQUE",
    "MAX_INFERRED_LEVELS",
    "SCHEMA_ALIASES",
    "load_conversations",
    "all_propensities_one",
    "data_warnings",
    "write_conversations",
    "LoggedDecisions",
    "load_decisions",
    "LoggedConversations",
]
