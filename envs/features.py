"""Observation encoding: raw named states -> flat float32 vectors.

One :class:`FeatureSpec` is shared by the env (observations), the linear bandits and DQN
(inputs), and the serving artifact (the manifest stores it), so a policy sees the same
numbers in training and in production.

Encoding, in this order:

* every categorical variable as a one-hot block over its levels (an unknown level is an
  error, so a typo in production input is never silently encoded as "all zeros");
* every numeric variable as ``(x - center) / scale``.

``turn`` and ``sentiment`` are numeric; ``intent`` and ``previous_action`` (``"none"``
at turn 0) are categorical. Context features are added as declared in the data config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from supportrl.envs.rewards import DEFAULT_MAX_TURNS

NO_PREVIOUS_ACTION = "none"
_SMALL_BATCH = 16


@dataclass(frozen=True)
class FeatureSpec:
    """How raw named states become a float32 observation of length :attr:`dim`."""

    categorical: Mapping[str, tuple[str, ...]]
    """Categorical state variable -> its levels, in one-hot order."""
    numeric: Mapping[str, tuple[float, float]]
    """Numeric state variable -> (center, scale)."""
    _sorted: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sorted_levels = {}
        for name, levels in self.categorical.items():
            if len(set(levels)) != len(levels) or not levels:
                raise ValueError(f"categorical[{name!r}]: levels must be non-empty and unique")
            arr = np.asarray(levels, dtype=str)
            order = np.argsort(arr)
            sorted_levels[name] = (arr[order], order)
        for name, (_, scale) in self.numeric.items():
            if not np.isfinite(scale) or scale <= 0:
                raise ValueError(f"numeric[{name!r}]: scale must be finite and > 0, got {scale}")
        object.__setattr__(self, "_sorted", sorted_levels)
        index = {
            name: {lv: i for i, lv in enumerate(levels)}
            for name, levels in self.categorical.items()
        }
        object.__setattr__(self, "_index", index)

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of the encoded observation, e.g. ``intent=billing``, ``sentiment``."""
        cols = [f"{name}={level}" for name, levels in self.categorical.items() for level in levels]
        return tuple(cols) + tuple(self.numeric)

    @property
    def dim(self) -> int:
        return sum(len(levels) for levels in self.categorical.values()) + len(self.numeric)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every raw state variable the encoding reads."""
        return tuple(self.categorical) + tuple(self.numeric)

    def level_codes(self, name: str, values: np.ndarray) -> np.ndarray:
        """Index of each value among ``categorical[name]``; unknown values raise ValueError."""
        if len(values) <= _SMALL_BATCH:  # a dict lookup beats array searching for a few rows
            index = self._index[name]
            try:
                return np.array([index[str(v)] for v in values], dtype=np.int64)
            except KeyError:
                pass  # fall through to the vectorised path for the error message
        sorted_levels, order = self._sorted[name]
        values = np.asarray(values).astype(str)
        pos = np.searchsorted(sorted_levels, values)
        pos = np.minimum(pos, len(sorted_levels) - 1)
        bad = sorted_levels[pos] != values
        if bad.any():
            unknown = sorted(set(values[bad].tolist()))[:5]
            raise ValueError(
                f"state variable {name!r}: unknown value(s) {unknown}; "
                f"known levels are {list(self.categorical[name])}"
            )
        return order[pos]

    def encode(self, states: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encode a state batch; returns float32 of shape (n, dim)."""
        missing = [name for name in self.variables if name not in states]
        if missing:
            raise ValueError(f"states: missing state variable(s) {missing}")
        n = len(states[self.variables[0]]) if self.variables else 0
        out = np.zeros((n, self.dim), dtype=np.float32)
        col = 0
        rows = np.arange(n)
        for name, levels in self.categorical.items():
            out[rows, col + self.level_codes(name, states[name])] = 1.0
            col += len(levels)
        for name, (center, scale) in self.numeric.items():
            values = np.asarray(states[name], dtype=np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"state variable {name!r}: non-finite values")
            out[:, col] = (values - center) / scale
            col += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "numeric": {k: {"center": c, "scale": s} for k, (c, s) in self.numeric.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        try:
            categorical = {str(k): tuple(map(str, v)) for k, v in data["categorical"].items()}
            numeric = {
                str(k): (float(v["center"]), float(v["scale"])) for k, v in data["numeric"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"feature spec: malformed ({exc!r})") from exc
        return cls(categorical=categorical, numeric=numeric)


def build_feature_spec(
    states: Mapping[str, np.ndarray],
    *,
    actions: Sequence[str],
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    max_turns: int = DEFAULT_MAX_TURNS,
    levels: Mapping[str, Sequence[str]] | None = None,
    conversation: bool = True,
) -> FeatureSpec:
    """Fit a :class:`FeatureSpec` to a state batch.

    ``intent`` and ``previous_action`` are always categorical, ``turn`` and ``sentiment``
    always numeric; ``categorical``/``numeric`` name the context features. Levels come
    from the data (sorted) unless given in ``levels``; numeric features are standardised
    by their mean and standard deviation (scale 1 when constant). With
    ``conversation=False`` (generic bandit feedback) only the named features are encoded.
    """
    levels = dict(levels or {})
    cat: dict[str, tuple[str, ...]] = {}
    num: dict[str, tuple[float, float]] = {}
    if conversation:
        cat["intent"] = tuple(
            levels.get("intent") or sorted(set(np.asarray(states["intent"]).astype(str)))
        )
        cat["previous_action"] = (NO_PREVIOUS_ACTION, *actions)
        num["turn"] = (0.0, float(max_turns))
        num["sentiment"] = (0.0, 1.0)
    for name in categorical:
        cat[name] = tuple(levels.get(name) or sorted(set(np.asarray(states[name]).astype(str))))
    for name in numeric:
        values = np.asarray(states[name], dtype=np.float64)
        std = float(values.std()) if len(values) else 0.0
        num[name] = (float(values.mean()) if len(values) else 0.0, std if std > 0 else 1.0)
    return FeatureSpec(categorical=cat, numeric=num)
