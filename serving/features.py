"""Validate raw named states against the manifest's feature spec and encode them.

The encoding is the framework's (one-hot blocks for categorical variables in manifest
order, then ``(x - center) / scale`` for numeric ones, float32), reimplemented here on
numpy alone so that serving needs nothing from the training stack.

Checks, per row: every variable present; a categorical value is a string among the
known levels; a numeric value is a finite number (not a boolean) inside the variable's
``[min, max]`` when those are set, and a whole number where ``integer`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()
"""Placeholder for a key a record does not have (records are turned into columns)."""

_SMALL = 16
ENCODED_LIMIT = 1e30
"""Largest magnitude of an encoded numeric value (float32 holds 3.4e38): beyond it, out of range."""


class InvalidStateError(ValueError):
    """A state that cannot be decided on; ``field`` names the state variable, ``rows`` the rows."""

    def __init__(self, message: str, field: str, rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.rows = tuple(int(r) for r in rows)


@dataclass(frozen=True)
class Encoded:
    """A validated and encoded batch of ``n`` states."""

    obs: np.ndarray
    """Encoded states, float32 (n, dim); rows of invalid states are zeros."""
    columns: dict[str, np.ndarray]
    """Clean raw columns: categorical as an object array of str (n,) (``""`` where not a
    string), numeric as float64 (n,)."""
    invalid: np.ndarray
    """bool (n,): the row failed a check."""
    reasons: dict[int, tuple[str, str]]
    """Row -> (field, message) of its first failed check."""


class StateEncoder:
    """Validates and encodes state batches as the manifest's ``features`` describe them."""

    def __init__(self, features: Mapping[str, Any]) -> None:
        try:
            cat = {
                str(k): tuple(str(v) for v in levels)
                for k, levels in features["categorical"].items()
            }
            num = {
                str(k): (
                    float(v["center"]),
                    float(v["scale"]),
                    -np.inf if v.get("min") is None else float(v["min"]),
                    np.inf if v.get("max") is None else float(v["max"]),
                    bool(v.get("integer", False)),
                )
                for k, v in features["numeric"].items()
            }
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"features: malformed feature spec ({exc!r})") from exc
        self.categorical = cat
        self.numeric = num
        self.index = {name: {lv: i for i, lv in enumerate(levels)} for name, levels in cat.items()}
        offsets, col = {}, 0
        for name, levels in cat.items():
            offsets[name] = col
            col += len(levels)
        for name in num:
            offsets[name] = col
            col += 1
        self.offsets = offsets
        self.dim = col
        self._categorical_items = [(k, self.index[k], offsets[k]) for k in cat]
        self._numeric_items = [(k, *num[k], offsets[k]) for k in num]
        self.variables: tuple[str, ...] = tuple(cat) + tuple(num)

    # ------------------------------------------------------------------ one state

    def encode_one(self, state: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """One state dict -> (obs float32 (1, dim), clean values); InvalidStateError if invalid."""
        if not isinstance(state, Mapping):
            raise InvalidStateError(
                f"state: expected a mapping of state variables, got {type(state).__name__}",
                "state",
            )
        row = [0.0] * self.dim  # a Python list, then one array: cheaper than item writes
        clean: dict[str, Any] = {}
        for name, index, offset in self._categorical_items:
            value = state.get(name, MISSING)
            code = index.get(value) if isinstance(value, str) else None
            if code is None:
                raise InvalidStateError(self._categorical_problem(name, value), name, (0,))
            row[offset + code] = 1.0
            clean[name] = value
        for name, center, scale, lo, hi, integer, offset in self._numeric_items:
            value = state.get(name, MISSING)
            kind = type(value)
            if (
                kind is not float
                and kind is not int
                and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float | np.integer | np.floating)
                )
            ):
                raise InvalidStateError(self._numeric_type_problem(name, value), name, (0,))
            try:
                x = float(value)
            except OverflowError:  # an int beyond float range
                x = math.inf if value > 0 else -math.inf
            if (
                not math.isfinite(x)
                or not lo <= x <= hi
                or (integer and not x.is_integer())
                or abs(x - center) > ENCODED_LIMIT * scale
            ):
                raise InvalidStateError(self._numeric_range_problem(name, x), name, (0,))
            row[offset] = (x - center) / scale
            clean[name] = x
        return np.array(row, dtype=np.float32).reshape(1, self.dim), clean

    # ------------------------------------------------------------------ batches

    def encode_columns(self, columns: Mapping[str, Any], n: int) -> Encoded:
        """Validate and encode ``n`` states given as columns (sequences of length ``n``).

        Invalid rows are flagged, not raised: the caller decides between an error and the
        fallback action.
        """
        obs = np.zeros((n, self.dim), dtype=np.float32)
        invalid = np.zeros(n, dtype=bool)
        reasons: dict[int, tuple[str, str]] = {}
        clean: dict[str, np.ndarray] = {}
        rows = np.arange(n)

        def flag(name: str, bad: np.ndarray, describe: Any) -> None:
            for r in np.flatnonzero(bad & ~invalid)[:_SMALL].tolist():
                reasons[r] = (name, describe(r))
            for r in np.flatnonzero(bad & ~invalid)[_SMALL:].tolist():
                reasons[r] = (name, f"state variable {name!r}: invalid value")
            invalid[:] |= bad

        for name in self.categorical:
            values = self._column(columns, name, n)
            strings, ok = _as_strings(values)
            codes, known = self._codes(name, strings)
            bad = ~(ok & known)
            flag(name, bad, lambda r, v=values, nm=name: self._categorical_problem(nm, v[r]))
            good = ~bad
            obs[rows[good], self.offsets[name] + codes[good]] = 1.0
            clean[name] = strings
        for name, (center, scale, lo, hi, integer) in self.numeric.items():
            values = self._column(columns, name, n)
            x, ok = _as_floats(values)
            with np.errstate(invalid="ignore"):
                in_range = np.isfinite(x) & (x >= lo) & (x <= hi)
                in_range &= np.abs(x - center) <= ENCODED_LIMIT * scale
                if integer:
                    in_range &= np.floor(x) == x
            bad = ~ok | ~in_range
            flag(
                name,
                bad,
                lambda r, v=values, xx=x, okk=ok, nm=name: (
                    self._numeric_range_problem(nm, xx[r])
                    if okk[r]
                    else self._numeric_type_problem(nm, v[r])
                ),
            )
            obs[:, self.offsets[name]] = np.where(
                bad, 0.0, (np.where(bad, 0.0, x) - center) / scale
            )
            clean[name] = x
        return Encoded(obs=obs, columns=clean, invalid=invalid, reasons=reasons)

    def _column(self, columns: Mapping[str, Any], name: str, n: int) -> np.ndarray | list[Any]:
        """The column as given (an array, or a list kept as a list for the fast type check)."""
        if name not in columns:
            return [MISSING] * n
        values = columns[name]
        if isinstance(values, tuple):
            values = list(values)
        if not isinstance(values, list):
            values = (
                np.asarray(values)
                if isinstance(values, np.ndarray)
                else np.asarray(values, dtype=object)
            )
        shape = (len(values),) if isinstance(values, list) else values.shape
        if shape != (n,):
            raise InvalidStateError(
                f"state variable {name!r}: expected {n} values (one per state), got shape {shape}",
                name,
            )
        return values

    def _codes(self, name: str, strings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level index of each string (0 where unknown) and whether it is a known level.

        ``strings`` is an object array of str; one dict lookup per value (C-level ``map``).
        """
        index = self.index[name]
        codes = np.fromiter(
            map(index.get, strings, repeat(-1, len(strings))), dtype=np.int64, count=len(strings)
        )
        known = codes >= 0
        return np.where(known, codes, 0), known

    # ------------------------------------------------------------------ messages

    def _categorical_problem(self, name: str, value: Any) -> str:
        if value is MISSING:
            return f"state: missing key {name!r} (a categorical state variable)"
        if not isinstance(value, str | np.str_):
            return (
                f"state variable {name!r}: expected a string, got {type(value).__name__} {value!r}"
            )
        levels = list(self.categorical[name])
        return f"state variable {name!r}: unknown category {str(value)!r}; known: {levels}"

    def _numeric_type_problem(self, name: str, value: Any) -> str:
        if value is MISSING:
            return f"state: missing key {name!r} (a numeric state variable)"
        return f"state variable {name!r}: expected a number, got {type(value).__name__} {value!r}"

    def _numeric_range_problem(self, name: str, x: float) -> str:
        center, scale, lo, hi, integer = self.numeric[name]
        if not np.isfinite(x):
            return f"state variable {name!r}: must be finite, got {x}"
        if lo <= x <= hi and abs(x - center) > ENCODED_LIMIT * scale:
            return f"state variable {name!r}: out of range, {x:g} is too large to encode"
        what = f"in [{lo:g}, {hi:g}]" + (" and a whole number" if integer else "")
        return f"state variable {name!r}: out of range, must be {what}, got {x:g}"


def _as_strings(values: np.ndarray | list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(object array of str, ok mask): ``ok`` is False where a value is not a string.

    Object arrays, never fixed-width numpy strings: one 60,000-character value would make
    a fixed-width array of the whole batch 240 kB per row. Non-strings become ``""``.
    """
    n = len(values)
    if isinstance(values, np.ndarray) and values.dtype.kind == "U":
        return values.astype(object), np.ones(n, dtype=bool)
    items = values if isinstance(values, list) else _objects(list(values))
    if isinstance(values, list) and set(map(type, values)) <= {str}:  # the common case
        return _objects(values), np.ones(n, dtype=bool)
    objects = items if isinstance(items, np.ndarray) else _objects(items)
    ok = np.fromiter(map(isinstance, objects, repeat(str, n)), dtype=bool, count=n)
    strings = objects.copy()
    strings[~ok] = ""
    return strings, ok


def _as_floats(values: np.ndarray | list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 array, ok mask): ``ok`` is False where a value is not a number (or is a bool)."""
    n = len(values)
    if isinstance(values, list):
        if set(map(type, values)) <= {int, float}:  # no bools, strings or None: C speed
            try:
                return np.array(values, dtype=np.float64), np.ones(n, dtype=bool)
            except OverflowError:  # an int beyond float range: the slow path flags it
                pass
        values = _objects(values)
    kind = values.dtype.kind
    if kind in "iuf":
        return values.astype(np.float64, copy=False), np.ones(n, dtype=bool)
    if kind == "O":
        ok = np.fromiter(
            (
                isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
                for v in values
            ),
            dtype=bool,
            count=n,
        )
        x = np.fromiter(
            (_float(v) if good else np.nan for v, good in zip(values, ok, strict=True)),
            np.float64,
            n,
        )
        return x, ok
    return np.full(n, np.nan), np.zeros(n, dtype=bool)


def _float(value: Any) -> float:
    """``float(value)``, or +-inf for an int beyond float range (flagged out of range)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of the list's items, never a 2-D one (items may be lists)."""
    return np.fromiter(values, dtype=object, count=len(values))
