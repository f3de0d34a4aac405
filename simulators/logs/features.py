"""Context features of the logs: which extra columns are categorical or numeric (declared or
inferred), refusing inferred columns that are surely not features (ids, indexes, personal data)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.columns import (
    _check_range,
    _codes,
    _numbers,
)
from supportrl.simulators.logs.reading import _Table
from supportrl.simulators.logs.schema import (
    MAX_ABS_VALUE,
    RESERVED_COLUMNS,
    SCHEMA_ALIASES,
    LogValidationError,
)


def _infer_features(
    dtypes: Mapping[str, Any],
    categorical: Sequence[str] | None,
    numeric: Sequence[str] | None,
    path: Path,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split the extra columns (name -> dtype) into categorical and numeric features.

    Declared lists are checked against the data; otherwise numbers are numeric and
    everything else (strings, booleans) categorical.
    """
    columns = list(dtypes)
    if categorical is not None or numeric is not None:
        categorical, numeric = tuple(categorical or ()), tuple(numeric or ())
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise LogValidationError(
                f"data config: column(s) {both} declared both categorical and numeric"
            )
        reserved = sorted((set(categorical) | set(numeric)) & RESERVED_COLUMNS)
        if reserved:
            raise LogValidationError(
                f"data config: {reserved} are schema columns, not context features"
            )
        missing = [c for c in categorical + numeric if c not in dtypes]
        if missing:
            raise LogValidationError(
                f"{path}: declared feature column(s) {missing} not found; extra columns are {columns}"
            )
        undeclared = [c for c in columns if c not in categorical + numeric]
        if undeclared:
            raise LogValidationError(
                f"{path}: column(s) {undeclared} are neither schema columns nor declared features; "
                "declare them in data.categorical / data.numeric"
            )
        return categorical, numeric
    cat, num = [], []
    for c, dtype in dtypes.items():
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            num.append(c)
        else:
            cat.append(c)
    return tuple(cat), tuple(num)


MIN_ROWS_UNIQUE = 20
"""From this many rows, an inferred categorical column unique on every row is refused."""


MAX_INFERRED_LEVELS = 200
"""An inferred categorical feature with more levels than this is refused (an id or a date?)."""


_PERSONAL_NAME = re.compile(
    r"e_?mail|phone|mobile|msisdn|first_?name|last_?name|full_?name|surname|given_?name|"
    r"^name$|customer_?name|street|address|postcode|zip_?code|ssn|passport|birth",
    re.IGNORECASE,
)


_PERSONAL_VALUES = {
    "e-mail addresses": r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$",
    "phone numbers": r"^\+?[0-9][0-9 ().\-]{6,}[0-9]$",
}


_EMAIL_IN_TEXT = r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"


_PERSON_NAME = r"^[A-Z][a-z]+(?: [A-Z]\.)?(?: [A-Z][a-z'\-]+)+$"


_MIN_NAMES = 3
"""Distinct values that must look like "First Last" before a column counts as names."""


_FREE_TEXT_WORDS = 4
"""Values of this many words or more are free text, not a category."""


def _free_text_reason(sample: pd.Series) -> str:
    """Why distinct values ``sample`` (str) are free text or names, not categories; "" if not.

    Any e-mail address inside a value; half the values or more "First Last" names (at
    least :data:`_MIN_NAMES` of them) or sentences of :data:`_FREE_TEXT_WORDS` words.
    """
    if sample.str.contains(_EMAIL_IN_TEXT, regex=True).any():
        return "its values contain e-mail addresses"
    names = sample.str.match(_PERSON_NAME)
    if names.sum() >= _MIN_NAMES and names.mean() >= 0.5:
        return "its values look like people's names"
    if (sample.str.split().str.len() >= _FREE_TEXT_WORDS).mean() >= 0.5:
        return "its values are free text"
    return ""


def _check_personal(table: _Table, columns: Sequence[str]) -> None:
    """Refuse columns that look like personal data (by name, or by their values).

    Support logs carry personal data; a feature built from an e-mail address, a phone
    number or a name would end up in models, artifacts and reports. Declaring the
    features explicitly (``data.categorical`` / ``data.numeric``) overrides this check.
    """
    for c in columns:
        reason = ""
        if _PERSONAL_NAME.search(str(c)):
            reason = "its name suggests personal data"
        elif not pd.api.types.is_numeric_dtype(table.frame[c]):
            sample = pd.Series(table.frame[c].dropna().unique()[:1000]).astype(str)
            for what, pattern in _PERSONAL_VALUES.items():
                if len(sample) and sample.str.match(pattern).mean() >= 0.5:
                    reason = f"its values look like {what}"
            if not reason and len(sample):
                reason = _free_text_reason(sample)
        if reason:
            raise LogValidationError(
                f"{table.path}, column {c!r}: {reason}; personal data is not used as a feature. "
                "Drop the column, or declare the features explicitly (data.categorical=[..] "
                "data.numeric=[..], or data.context=[..] for bandit feedback)"
            )


def _check_inferred(table: _Table, categorical: Sequence[str], numeric: Sequence[str]) -> None:
    """Refuse inferred features that are surely not features: indexes, ids, personal data."""
    _check_personal(table, [*categorical, *numeric])
    for c in (*categorical, *numeric):
        if str(c).startswith("Unnamed: "):
            raise LogValidationError(
                f"{table.path}, column {c!r}: looks like a saved DataFrame index, not a feature; "
                "drop it or declare the features (data.categorical=[..] data.numeric=[..], "
                "or data.context=[..] for bandit feedback)"
            )
    for c in categorical:
        levels = table.frame[c].nunique()
        if levels > MAX_INFERRED_LEVELS:
            raise LogValidationError(
                f"{table.path}, column {c!r}: {levels} distinct values, too many for a categorical "
                "feature (an id, a date or free text?); declare the features (data.categorical=[..] "
                "data.numeric=[..], or data.context=[..] for bandit feedback)"
            )

        if levels == len(table.frame) >= MIN_ROWS_UNIQUE:
            raise LogValidationError(
                f"{table.path}, column {c!r}: a different value on every row (an id, an e-mail "
                "address?), not a feature; drop it or declare the features "
                "(data.categorical=[..] data.numeric=[..])"
            )
    _check_schema_aliases(table, [*categorical, *numeric])


def _check_schema_aliases(table: _Table, features: Sequence[str]) -> None:
    """Refuse an inferred feature that is another tool's name for a schema column (a
    logging propensity read as a context feature would be estimated instead, silently)."""
    for c in features:
        meant = SCHEMA_ALIASES.get(str(c).lower())
        if meant is not None and meant not in table.frame.columns:
            raise LogValidationError(
                f"{table.path}, column {c!r}: did you mean {meant}? It looks like the logging "
                f"propensity under Open Bandit Pipeline's name; rename the column to {meant!r} "
                f"(schema v1), pass data.propensity_col={c} (data=bandit), or declare the "
                "features (data.categorical=[..] data.numeric=[..]) to keep it as a feature"
            )


def _feature_arrays(
    table: _Table,
    categorical: Sequence[str],
    numeric: Sequence[str],
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Feature name -> values of ``table`` at ``rows`` (default: every row in order).

    Categorical columns come back as str arrays, numeric ones as float64; the whole
    column is validated, and only the selected rows are expanded into strings.
    """
    features: dict[str, np.ndarray] = {}
    for c in categorical:
        codes, labels = _codes(table, c, categorical=True)
        features[c] = labels[codes if rows is None else codes[rows]]
    for c in numeric:
        values = _numbers(table, c, allow_missing=False)
        _check_range(
            table, c, values, np.abs(values) > MAX_ABS_VALUE, f"within +-{MAX_ABS_VALUE:g}"
        )
        # a copy: values may be a read-only view of the frame
        features[c] = values.copy() if rows is None else values[rows]
    return features
