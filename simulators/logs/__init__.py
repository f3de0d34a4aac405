"""Logged support data, schema v1: loading, validation and the typed arrays the rest uses.

Two kinds of log (docs/log-schema.md):

* **conversations**: a *turns* table (one row per bot decision) and optionally a
  *customers* table joined on ``customer_id``, loaded into :class:`LoggedConversations`;
* **generic logged bandit feedback**: one row per decision with named action, reward,
  propensity and context columns, loaded into :class:`LoggedDecisions`.

Both loaders read CSV, a Parquet file, or a directory of Parquet parts, validate every
rule of the schema with vectorised checks, and raise :class:`LogValidationError` naming
the file, the column and the first offending rows (0-based data rows of that file; for
CSV the line number is row + 2). Nothing is dropped or repaired silently. Rows may come in
any order: they are sorted by (``conversation_id``, ``turn``) on load.

Modules: :mod:`~supportrl.simulators.logs.schema` (columns, limits, the error type),
:mod:`~supportrl.simulators.logs.reading` (files into tables), :mod:`~supportrl.simulators.logs.columns`
(per-column checks), :mod:`~supportrl.simulators.logs.features` (context features),
:mod:`~supportrl.simulators.logs.loading` (conversations), :mod:`~supportrl.simulators.logs.decisions`
(bandit feedback), :mod:`~supportrl.simulators.logs.bounded` (logs larger than memory, in
passes) and :mod:`~supportrl.simulators.logs.partitioned` (the same on Ray Data). The
loading names are importable from here.
"""

from __future__ import annotations

from supportrl.simulators.logs.decisions import LoggedDecisions, load_decisions
from supportrl.simulators.logs.features import MAX_INFERRED_LEVELS, MIN_ROWS_UNIQUE
from supportrl.simulators.logs.loading import (
    LoggedConversations,
    all_propensities_one,
    data_warnings,
    load_conversations,
    write_conversations,
)
from supportrl.simulators.logs.reading import MAX_PARQUET_FOOTER_BYTES, read_table, reading_parquet
from supportrl.simulators.logs.schema import (
    DEFAULT_ACTIONS,
    MAX_ABS_VALUE,
    MAX_HANDLE_TIME_S,
    OPTIONAL_COLUMNS,
    PROPENSITY_FLOOR,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    SCHEMA_ALIASES,
    SCHEMA_VERSION,
    LogLimits,
    LogValidationError,
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
