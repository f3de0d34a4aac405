"""Generic logged bandit feedback: one row per decision, with named action, reward, propensity
and context columns (docs/log-schema.md), loaded into :class:`LoggedDecisions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from supportrl.simulators.logs.columns import (
    _check_labels,
    _check_range,
    _factorize,
    _no_nulls,
    _numbers,
    _require_columns,
)
from supportrl.simulators.logs.features import _check_inferred, _feature_arrays, _infer_features
from supportrl.simulators.logs.reading import read_table
from supportrl.simulators.logs.schema import (
    MAX_ABS_VALUE,
    LogLimits,
    LogValidationError,
)


@dataclass(frozen=True)
class LoggedDecisions:
    """Generic logged bandit feedback: one row per decision.

    Actions are labelled by their string form (integer action 14 is ``"14"``), sorted
    numerically when every label is a number, else alphabetically.
    """

    actions: tuple[str, ...]
    action: np.ndarray
    """(n,) int64 index into ``actions``."""
    reward: np.ndarray
    """(n,) float64."""
    propensity: np.ndarray
    """(n,) float64 in (0, 1]; NaN when the data has no propensity column."""
    context: Mapping[str, np.ndarray] = field(default_factory=dict)
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    source: str = ""

    @property
    def n_rounds(self) -> int:
        return len(self.action)

    @property
    def has_propensity(self) -> bool:
        return bool(np.isfinite(self.propensity).all())

    def states(self) -> dict[str, np.ndarray]:
        return dict(self.context)

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.action, minlength=len(self.actions))
        return {
            "source": self.source,
            "decisions": self.n_rounds,
            "actions": {a: int(c) for a, c in zip(self.actions, counts, strict=True)},
            "mean_reward": float(self.reward.mean()),
            "missing_propensity": int(np.isnan(self.propensity).sum()),
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
        }


def _action_labels(values: pd.Series) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """An action column as ``(codes, labels)`` (see :func:`_factorize`) and its sorted catalogue."""
    codes, index = _factorize(values)
    labels = np.asarray(index, dtype=str)
    uniq = np.sort(labels)
    numeric = pd.to_numeric(pd.Series(uniq), errors="coerce")
    if numeric.notna().all():
        uniq = uniq[np.argsort(numeric.to_numpy(), kind="stable")]
    return codes, labels, tuple(uniq.tolist())


def load_decisions(
    path: str | Path,
    *,
    action_col: str = "action",
    reward_col: str = "reward",
    propensity_col: str | None = "propensity",
    context: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    limits: LogLimits | None = None,
) -> LoggedDecisions:
    """Load generic logged bandit feedback.

    ``context`` names the context columns (default: every other column);
    ``categorical``/``numeric`` split them (default: by dtype). ``actions`` fixes the
    catalogue (default: the labels present, see :class:`LoggedDecisions`).
    """
    table = read_table(path, limits)
    frame = table.frame
    _require_columns(table, [action_col, reward_col])
    if propensity_col is not None and propensity_col not in frame:
        raise LogValidationError(
            f"{table.path}: propensity column {propensity_col!r} not found; found {list(frame.columns)} "
            "(set data.propensity_col=null when the logs have none)"
        )
    _no_nulls(table, action_col)
    codes, labels, present = _action_labels(frame[action_col])
    catalogue = tuple(str(a) for a in actions) if actions is not None else present
    action = _check_labels(table, action_col, codes, labels, catalogue, "action(s)")
    reward = _numbers(table, reward_col, allow_missing=False)
    _check_range(
        table, reward_col, reward, np.abs(reward) > MAX_ABS_VALUE, f"within +-{MAX_ABS_VALUE:g}"
    )
    if propensity_col is not None:
        propensity = _numbers(table, propensity_col, allow_missing=False)
        _check_range(
            table, propensity_col, propensity, (propensity <= 0) | (propensity > 1), "in (0, 1]"
        )
    else:
        propensity = np.full(len(frame), np.nan)
    used = {action_col, reward_col, propensity_col}
    if context is None:
        context = [c for c in frame.columns if c not in used]
    else:
        _require_columns(table, list(context), "context")
    context = list(context)
    clash = sorted(set(context) & {c for c in used if c is not None})
    if clash:
        raise LogValidationError(
            f"{table.path}: context column(s) {clash} are the action, reward or propensity column"
        )
    if categorical is None and numeric is None:
        cat, num = _infer_features({c: frame[c].dtype for c in context}, None, None, table.path)
        _check_inferred(table, cat, num)
    else:
        cat, num = tuple(categorical or ()), tuple(numeric or ())
        outside = [c for c in cat + num if c not in context]
        if outside:
            raise LogValidationError(
                f"{table.path}: declared feature column(s) {outside} are not context columns "
                f"(context: {context}; columns: {list(frame.columns)})"
            )
        undeclared = [c for c in context if c not in cat + num]
        if undeclared:
            raise LogValidationError(
                f"{table.path}: context column(s) {undeclared} not declared categorical or numeric"
            )
    return LoggedDecisions(
        actions=catalogue,
        action=action,
        reward=reward,
        propensity=propensity,
        context=_feature_arrays(table, cat, num),
        categorical=cat,
        numeric=num,
        source=str(path),
    )
