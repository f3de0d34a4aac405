"""Pure computation behind ``report`` and the pipeline's choice (no Hydra, no plotting).

- :func:`select_winner`: the candidate with the highest lower confidence bound of the
  headline estimator, and only if that bound beats the logging policy's value (safe
  policy improvement); otherwise no winner, and the reason.
- :func:`aggregate`: runs grouped by configuration (their overrides without ``seed``),
  mean and a t-interval over seeds for every numeric column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval (same units: value per conversation)."""

    estimate: float
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, row: Mapping[str, float]) -> Interval:
        return cls(float(row["estimate"]), float(row["ci_low"]), float(row["ci_high"]))


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_winner`."""

    winner: str | None
    """The safely better candidate, or None when none beats the logging policy."""
    best_lower_bound: str | None
    """The candidate with the highest lower bound (whether or not it is safe)."""
    reason: str
    """One sentence for the report and the pipeline's summary."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "best_lower_bound": self.best_lower_bound,
            "reason": self.reason,
        }


def select_winner(
    candidates: Mapping[str, Interval], logging_value: float | None, *, estimator: str = "estimate"
) -> Selection:
    """Highest lower bound among ``candidates``, if it exceeds ``logging_value``.

    ``logging_value`` None (unknown) skips the safety check. Ties go to the first name.
    """
    finite = {k: v for k, v in candidates.items() if math.isfinite(v.ci_low)}
    if not finite:
        return Selection(None, None, "no candidate has a finite interval")
    best = max(finite, key=lambda k: finite[k].ci_low)
    low = finite[best].ci_low
    if logging_value is None:
        return Selection(best, best, f"{best} has the highest {estimator} lower bound ({low:+.4f})")
    if low > logging_value:
        return Selection(
            best,
            best,
            f"{best}: highest {estimator} lower bound {low:+.4f} > logging policy "
            f"{logging_value:+.4f} (safe improvement)",
        )
    return Selection(
        None,
        best,
        f"no candidate is safely better than the logging policy: the highest {estimator} "
        f"lower bound ({best}, {low:+.4f}) is not above its value {logging_value:+.4f}",
    )


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval over ``values`` (NaN bounds for one value)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(x) == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if len(x) < 2:
        return (mean, math.nan, math.nan)
    half = float(t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return (mean, mean - half, mean + half)


@dataclass
class RunRecord:
    """One candidate of one run, as the report reads it."""

    path: str
    """The run directory."""
    config: str
    """Configuration label: the run's overrides without ``seed`` (and the policy name for
    a pipeline's rule baselines)."""
    agent: str
    overrides: list[str]
    seed: int | None
    values: dict[str, float] = field(default_factory=dict)
    """Numeric columns: simulated_value, ope_estimate, ope_low, ope_high, true_value,
    logging_value, env_steps, wall_s."""
    curve: dict[str, np.ndarray] | None = None
    segments: dict[str, Any] | None = None
    """A pipeline's per-segment breakdown (``report.segment_by``), as its result.json has it."""


VALUE_COLUMNS = (
    "simulated_value",
    "ope_estimate",
    "ope_low",
    "ope_high",
    "ope_ci_low",
    "ope_ci_high",
    "true_value",
    "logging_value",
    "env_steps",
    "wall_s",
)
"""The numeric columns of a report row (each gets mean, low, high over seeds)."""


def aggregate(records: Sequence[RunRecord], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per configuration: ``config, agent, overrides, n_runs, seeds`` and for each
    of :data:`VALUE_COLUMNS` the mean over runs and its t-interval (``_low``, ``_high``).

    Rows keep the order in which configurations first appear in ``records``.
    """
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.config, []).append(rec)
    rows = []
    for config, recs in groups.items():
        row: dict[str, Any] = {
            "config": config,
            "agent": recs[0].agent,
            "overrides": " ".join(o for o in recs[0].overrides if not o.startswith("seed=")),
            "n_runs": len(recs),
            "seeds": sorted({r.seed for r in recs if r.seed is not None}),
        }
        for col in VALUE_COLUMNS:
            values = [r.values.get(col) for r in recs]
            values = [v for v in values if v is not None]
            if not values:
                continue
            mean, low, high = t_interval(values, confidence)
            row[col] = mean
            if col not in (
                "ope_low",
                "ope_high",
                "ope_ci_low",
                "ope_ci_high",
                "env_steps",
                "wall_s",
            ):
                row[f"{col}_seed_low"] = low
                row[f"{col}_seed_high"] = high
        rows.append(row)
    return rows


def flag_disagreement(row: Mapping[str, Any]) -> bool:
    """The simulated value lies outside the (seed-averaged) OPE interval."""
    sim, low, high = (row.get(k) for k in ("simulated_value", "ope_low", "ope_high"))
    if sim is None or low is None or high is None:
        return False
    if not all(math.isfinite(v) for v in (sim, low, high)):
        return False
    return not low <= sim <= high


def curve_band(
    curves: Sequence[Mapping[str, np.ndarray]],
    metric: str = "charts/episodic_return",
    confidence: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(env_steps, mean, low, high) of a metric across seeds, on the shortest run's steps.

    Curves are interpolated onto the steps of the first curve (cut at the shortest run);
    the band is the min..max over seeds, or with ``confidence`` the t-interval of the mean
    over seeds at each step (as :func:`aggregate` gives the tables). None when no curve has
    the metric.
    """
    usable = [c for c in curves if metric in c and len(c["env_steps"]) > 0]
    if not usable:
        return None
    end = min(float(c["env_steps"][-1]) for c in usable)
    steps = np.asarray(usable[0]["env_steps"], dtype=float)
    steps = steps[steps <= end]
    stacked = np.vstack(
        [
            np.interp(steps, np.asarray(c["env_steps"], float), np.asarray(c[metric], float))
            for c in usable
        ]
    )
    mean = stacked.mean(axis=0)
    if confidence is None or len(stacked) < 2:
        return steps, mean, stacked.min(axis=0), stacked.max(axis=0)
    from scipy.stats import t as student_t

    n = len(stacked)
    half = student_t.ppf(0.5 + confidence / 2, n - 1) * stacked.std(axis=0, ddof=1) / np.sqrt(n)
    return steps, mean, mean - half, mean + half


def segment_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Per (configuration, segment, policy): mean over runs of the OPE estimate and its
    interval, and of the action mix, beside the logging policy's value and mix."""
    groups: dict[tuple[str, str, str, str], list[tuple[dict, dict]]] = {}
    for rec in records:
        for feature, values in (rec.segments or {}).items():
            for value, seg in values.items():
                for policy, row in seg["policies"].items():
                    key = (rec.config, f"{feature}={value}", policy, feature)
                    groups.setdefault(key, []).append((row, seg))
    out = []
    for (config, segment, policy, _), items in groups.items():
        rows = [r for r, _ in items]
        segs = [s for _, s in items]
        mix = {a: float(np.mean([r["action_mix"][a] for r in rows])) for a in rows[0]["action_mix"]}
        logged = {
            a: float(np.mean([s["logging"]["action_mix"][a] for s in segs]))
            for a in segs[0]["logging"]["action_mix"]
        }
        out.append(
            {
                "config": config,
                "segment": segment,
                "policy": policy,
                "n_runs": len(items),
                "n_conversations": float(np.mean([s["n_conversations"] for s in segs])),
                "estimate": float(np.mean([r["estimate"] for r in rows])),
                "ci_low": float(np.mean([r["ci_low"] for r in rows])),
                "ci_high": float(np.mean([r["ci_high"] for r in rows])),
                "logging_value": float(np.mean([s["logging"]["value"]["estimate"] for s in segs])),
                "action_mix": mix,
                "logging_action_mix": logged,
            }
        )
    return out
