"""Always-valid analysis of an online A/B experiment (arms, control, guardrail).

The data are conversations in the order they started, each with its arm, the arm's
assignment share when it started, its return under the reward and a few outcome metrics,
and the state it started in (pre-treatment covariates: the first turn's state is seen
before any action).

**Difference of a treatment T against control C.** Every conversation contributes

    psi_i = (f_T(x_i) - f_C(x_i)) + 1[A_i = T] (Y_i - f_T(x_i)) / p_T,i
                                  - 1[A_i = C] (Y_i - f_C(x_i)) / p_C,i

(the augmented inverse-propensity form: ``p`` are the known assignment shares, ``f`` a
regression of the outcome on the covariates fitted only on *earlier* conversations, so
``psi`` are independent with mean ``mu_T - mu_C`` whatever ``f`` is; a good ``f`` removes
the variance the covariates explain: CUPED-style variance reduction that keeps validity).
``f`` is refitted at 200, 400, 800, ... conversations (ridge on the first turn's one-hot
categorical and standardized numeric state).

**Confidence sequence.** The running mean of ``psi`` gets the asymptotic confidence
sequence of Waudby-Smith, Arnold, Wu, Howard & Ramdas (2023, "Time-uniform central limit
theory and asymptotic confidence sequences", Thm 2.2; the normal-mixture boundary of
Howard, Ramdas, McAuliffe & Sekhon 2021):

    mean_t ± sd_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

with ``rho`` tuned for the tightest width at ``t_star`` conversations. It covers the true
difference at *all* times at once with probability about ``1 - alpha``: looking at it
after every conversation does not inflate false promotions (the always-valid p-values of
Johari, Pekelis & Walsh 2017 rest on the same mixture). With several treatments each
difference gets ``alpha / n_treatments``.

**Sample ratio mismatch.** A chi-square test of the assignment units per arm against the
declared shares; ``p < 0.001`` flags it, and no decision is taken while it is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SRM_THRESHOLD = 1e-3
"""SRM p-values below this flag the experiment (the usual platform threshold)."""
MIN_CONVERSATIONS = 100
"""Conversations each arm needs before a decision is taken."""
T_STAR = 10_000
"""Conversations at which the confidence sequence is tightest: fixed in advance (a boundary
tuned to the data seen so far would change with every look)."""
REFIT_START = 200
"""The outcome regression is first fitted at this many conversations, then at each doubling."""
DIRECTIONS = {
    "value": +1,
    "resolution": +1,
    "csat": +1,
    "escalation": -1,
    "abandonment": -1,
    "handle_time_s": -1,
}
"""Metrics and their good direction (+1: higher is better)."""


def cs_radius(t: np.ndarray, sd: np.ndarray, alpha: float, t_star: float) -> np.ndarray:
    """Half-width of the asymptotic confidence sequence at sample sizes ``t`` (module doc)."""
    t = np.asarray(t, dtype=np.float64)
    rho2 = (-2.0 * math.log(alpha) + math.log(-2.0 * math.log(alpha) + 1.0)) / float(t_star)
    a = t * rho2 + 1.0
    return np.asarray(sd) * np.sqrt(2.0 * a / (t * t * rho2) * np.log(np.sqrt(a) / alpha))


@dataclass(frozen=True)
class ConfidenceSequence:
    """A running estimate with its time-uniform interval, at every sample size 1..n."""

    estimate: np.ndarray
    """(n,) running mean."""
    low: np.ndarray
    high: np.ndarray
    alpha: float

    @property
    def n(self) -> int:
        return len(self.estimate)

    def last(self) -> dict[str, float]:
        if self.n == 0:
            return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan}
        return {
            "estimate": float(self.estimate[-1]),
            "ci_low": float(self.low[-1]),
            "ci_high": float(self.high[-1]),
        }


def confidence_sequence(
    values: np.ndarray, alpha: float = 0.05, *, t_star: float = T_STAR
) -> ConfidenceSequence:
    """The asymptotic confidence sequence for the mean of independent ``values`` in order.

    ``t_star``: the sample size the boundary is tightest at, fixed before the data are
    seen. The running standard deviation is floored at 1e-12. The interval at ``t`` depends
    on ``values[:t]`` only, so every look sees the same sequence.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        empty = np.empty(0)
        return ConfidenceSequence(empty, empty, empty, alpha)
    t = np.arange(1, n + 1, dtype=np.float64)
    mean = np.cumsum(x) / t
    second = np.cumsum(x * x) / t
    var = np.maximum(second - mean * mean, 0.0) * t / np.maximum(t - 1.0, 1.0)
    sd = np.maximum(np.sqrt(var), 1e-12)
    r = cs_radius(t, sd, alpha, t_star)
    return ConfidenceSequence(mean, mean - r, mean + r, alpha)


def conversations_needed(sd: float, effect: float, alpha: float, t_star: float) -> int | None:
    """Fewest conversations at which the sequence's half-width falls below ``|effect|``
    (None when the effect is 0 or more than 10^8 would be needed)."""
    if not (math.isfinite(effect) and abs(effect) > 0 and math.isfinite(sd)):
        return None
    lo, hi = 1, 2
    while cs_radius(np.array([hi]), sd, alpha, t_star)[0] >= abs(effect):
        hi *= 2
        if hi > 10**8:
            return None
    while lo < hi:
        mid = (lo + hi) // 2
        if cs_radius(np.array([mid]), sd, alpha, t_star)[0] < abs(effect):
            hi = mid
        else:
            lo = mid + 1
    return lo


def srm_test(counts: np.ndarray, expected_shares: np.ndarray) -> dict[str, Any]:
    """Chi-square goodness of fit of ``counts`` per arm against ``expected_shares``
    (rows may differ per unit: pass the summed expected counts' shares)."""
    from scipy.stats import chi2

    counts = np.asarray(counts, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    live = shares > 0
    n = counts.sum()
    if n == 0 or live.sum() < 2:
        return {"p_value": 1.0, "flag": False, "chi2": 0.0}
    expected = n * shares[live] / shares[live].sum()
    stat = float((((counts[live] - expected) ** 2) / expected).sum())
    stray = float(counts[~live].sum())  # units in arms declared at share 0
    p = float(chi2.sf(stat, int(live.sum()) - 1)) if stray == 0 else 0.0
    return {"p_value": p, "flag": bool(p < SRM_THRESHOLD), "chi2": stat}


@dataclass(frozen=True)
class ExperimentData:
    """One experiment's conversations in start order (arrays over conversations)."""

    arms: tuple[str, ...]
    arm: np.ndarray
    """(n,) int64 index into ``arms``."""
    shares: np.ndarray
    """(n, n_arms) assignment shares when each conversation started."""
    value: np.ndarray
    """(n,) the conversation's return under the reward."""
    metrics: Mapping[str, np.ndarray]
    """Name -> (n,) per-conversation outcome (NaN where unknown, e.g. an unanswered CSAT)."""
    covariates: np.ndarray
    """(n, d) pre-treatment covariates (the first turn's encoded state)."""
    units: np.ndarray | None = None
    """(n,) the assignment unit of each conversation (customer or conversation id)."""
    segments: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Feature -> (n,) str value at the first turn, for the per-segment breakdown."""


def _ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """Coefficients (d + 1,) of ridge regression with an unpenalized intercept (last)."""
    design = np.column_stack([x, np.ones(len(y))])
    gram = design.T @ design
    gram[np.diag_indices(x.shape[1])] += l2
    return np.linalg.solve(gram, design.T @ y)


def predictable_fit(
    x: np.ndarray, y: np.ndarray, in_arm: np.ndarray, *, adjust: bool = True
) -> np.ndarray:
    """``f(x_i)`` fitted on the arm's conversations *before* i (refits at 200, 400, ...).

    Without ``adjust`` (or before the first fit) ``f`` is the arm's running mean so far
    (0 before its first conversation): the plain difference, centred.
    """
    n = len(y)
    out = np.zeros(n)
    seen = np.cumsum(in_arm) - in_arm  # conversations of the arm before i
    sums = np.cumsum(np.where(in_arm, y, 0.0)) - np.where(in_arm, y, 0.0)
    out[:] = np.where(seen > 0, sums / np.maximum(seen, 1), 0.0)
    if not adjust or x.shape[1] == 0:
        return out
    start = REFIT_START
    while start < n:
        end = min(2 * start, n)
        rows = np.flatnonzero(in_arm[:start])
        if len(rows) >= 20:
            coef = _ridge(x[rows], y[rows])
            out[start:end] = x[start:end] @ coef[:-1] + coef[-1]
        start = end
    return out


def difference_terms(
    data: ExperimentData, treatment: int, control: int, y: np.ndarray, *, adjust: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``psi`` (module doc) of the conversations where both arms had a share, and their rows."""
    rows = np.flatnonzero((data.shares[:, treatment] > 0) & (data.shares[:, control] > 0))
    known = ~np.isnan(y[rows])
    rows = rows[known]
    arm, p_t, p_c = data.arm[rows], data.shares[rows, treatment], data.shares[rows, control]
    x, yy = data.covariates[rows], y[rows]
    is_t, is_c = arm == treatment, arm == control
    f_t = predictable_fit(x, yy, is_t, adjust=adjust)
    f_c = predictable_fit(x, yy, is_c, adjust=adjust)
    psi = (f_t - f_c) + is_t * (yy - f_t) / p_t - is_c * (yy - f_c) / p_c
    return psi, rows


def _arm_summary(data: ExperimentData, k: int, alpha: float, t_star: float) -> dict[str, Any]:
    rows = data.arm == k
    values = data.value[rows]
    cs = confidence_sequence(values, alpha, t_star=t_star)
    metrics = {}
    for name, arr in data.metrics.items():
        sub = arr[rows]
        sub = sub[~np.isnan(sub)]
        metrics[name] = float(sub.mean()) if len(sub) else None
    return {
        "n_conversations": int(rows.sum()),
        "value": cs.last()["estimate"],
        "ci_low": cs.last()["ci_low"],
        "ci_high": cs.last()["ci_high"],
        "metrics": metrics,
    }


def _difference(
    data: ExperimentData,
    k: int,
    c: int,
    level: float,
    guardrail_metric: str,
    max_drop: float,
    enough: bool,
    *,
    adjust: bool,
    t_star: float,
) -> tuple[dict[str, Any], Any]:
    """Treatment ``k`` against control ``c``: the row of result.json's ``differences`` (the
    value difference's confidence sequence at its last point, the variance reduction, the
    guardrail, the conversations still needed) and the value difference's sequence.
    ``enough``: both arms have enough conversations to call a guardrail breached."""
    psi, _ = difference_terms(data, k, c, data.value, adjust=adjust)
    cs = confidence_sequence(psi, level, t_star=t_star)
    plain, _ = difference_terms(data, k, c, data.value, adjust=False)
    row = {
        **cs.last(),
        "n_conversations": int(len(psi)),
        "alpha": level,
        "variance_reduction": float(1.0 - psi.var() / plain.var())
        if len(psi) > 2 and plain.var() > 0
        else 0.0,
    }
    sd = float(psi.std(ddof=1)) if len(psi) > 1 else math.nan
    if guardrail_metric == "value":
        guard = row
    else:
        gpsi, _ = difference_terms(data, k, c, data.metrics[guardrail_metric], adjust=adjust)
        guard = confidence_sequence(gpsi, level, t_star=t_star).last()
        row["guardrail"] = {"metric": guardrail_metric, **guard}
    direction = DIRECTIONS.get(guardrail_metric, +1)
    worst = guard["ci_high"] if direction > 0 else -guard["ci_low"]
    row["guardrail_breached"] = bool(enough and worst < -max_drop)
    needed = conversations_needed(sd, row["estimate"], level, t_star)
    row["conversations_needed"] = None if needed is None else max(int(needed) - len(psi), 0)
    return row, cs


def analyse(
    data: ExperimentData,
    *,
    control: str,
    alpha: float = 0.05,
    guardrail_metric: str = "value",
    max_drop: float = 0.0,
    adjust: bool = True,
    curve_points: int = 200,
    t_star: float = T_STAR,
) -> dict[str, Any]:
    """The analysis of ``data`` (result.json's ``arms``, ``differences``, ``srm``,
    ``decision``; plus ``curves``: each difference's sequence at up to ``curve_points`` times).

    Decision: ``promote`` the treatment with the highest estimate whose value difference
    has its lower bound above 0 and whose guardrail is not breached; ``roll_back`` a
    treatment whose guardrail difference is, with confidence, worse than ``-max_drop``
    (every treatment breached: the decision is ``roll_back``); otherwise ``continue``,
    with the conversations the leading treatment still needs at its current effect.
    Nothing is decided before every arm has :data:`MIN_CONVERSATIONS` or while the
    sample ratio is flagged. ``t_star``: where the sequences are tightest (the planned
    horizon, fixed in advance).
    """
    if control not in data.arms:
        raise ValueError(f"control: {control!r} is not an arm of {list(data.arms)}")
    if guardrail_metric != "value" and guardrail_metric not in data.metrics:
        raise ValueError(f"guardrail.metric: no metric {guardrail_metric!r} in the data")
    c = data.arms.index(control)
    treatments = [k for k in range(len(data.arms)) if k != c]
    level = alpha / max(len(treatments), 1)
    arms = {name: _arm_summary(data, k, alpha, t_star) for k, name in enumerate(data.arms)}
    n = len(data.value)
    units = data.units if data.units is not None else np.arange(n).astype(str)
    _, first = np.unique(units, return_index=True)
    counts = np.bincount(data.arm[first], minlength=len(data.arms))
    srm = srm_test(counts, data.shares[first].mean(axis=0))
    differences: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    promote, breached, leading = [], [], None
    for k in treatments:
        name = data.arms[k]
        enough = (
            arms[name]["n_conversations"] >= MIN_CONVERSATIONS
            and arms[control]["n_conversations"] >= MIN_CONVERSATIONS
        )
        row, cs = _difference(
            data, k, c, level, guardrail_metric, max_drop, enough, adjust=adjust, t_star=t_star
        )
        differences[name] = row
        n_psi = row["n_conversations"]
        step = max(1, n_psi // curve_points)
        at = np.arange(step - 1, n_psi, step)
        curves[name] = {
            "n": (at + 1).tolist(),
            "estimate": cs.estimate[at].tolist(),
            "ci_low": cs.low[at].tolist(),
            "ci_high": cs.high[at].tolist(),
        }
        if not enough:
            continue
        if row["guardrail_breached"]:
            breached.append(name)
        elif row["ci_low"] > 0:
            promote.append(name)
        if leading is None or row["estimate"] > differences[leading]["estimate"]:
            leading = name
    decision = _decide(
        promote, breached, leading, differences, treatments, srm, data, arms, control
    )
    return {
        "arms": arms,
        "differences": differences,
        "srm": srm,
        "decision": decision,
        "curves": curves,
        "alpha": alpha,
    }


def _decide(promote, breached, leading, differences, treatments, srm, data, arms, control):
    short = [a for a in arms if arms[a]["n_conversations"] < MIN_CONVERSATIONS]
    if short:
        return {
            "action": "continue",
            "arm": leading,
            "reason": f"fewer than {MIN_CONVERSATIONS} conversations in {short}",
        }
    if srm["flag"]:
        return {
            "action": "continue",
            "arm": leading,
            "reason": f"sample ratio mismatch (p = {srm['p_value']:.2g}): check the assignment before deciding",
        }
    if promote:
        best = max(promote, key=lambda a: differences[a]["estimate"])
        d = differences[best]
        return {
            "action": "promote",
            "arm": best,
            "reason": f"{best} - {control} = {d['estimate']:+.3f}, always-valid interval [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] above 0",
        }
    if breached and len(breached) == len(treatments):
        worst = min(breached, key=lambda a: differences[a]["estimate"])
        return {
            "action": "roll_back",
            "arm": worst,
            "reason": f"guardrail breached: {', '.join(breached)} worse than {control} with confidence",
        }
    d = differences.get(leading) if leading else None
    needed = None if d is None else d["conversations_needed"]
    reason = "no treatment is yet better than control with confidence"
    if needed is not None:
        reason += f"; about {needed} more conversations at the current effect"
    out = {"action": "continue", "arm": leading, "reason": reason, "conversations_needed": needed}
    if breached:
        out["stop"] = breached
    return out


def segment_breakdown(
    data: ExperimentData, by: Sequence[str], *, control: str, alpha: float = 0.05
) -> dict[str, Any]:
    """Per segment (first-turn value of each feature in ``by``): each arm's conversations and
    value, and each treatment's difference with a fixed-sample interval (for reading, not
    for deciding: segments are many looks)."""
    from scipy.stats import norm

    c = data.arms.index(control)
    z = float(norm.ppf(1 - alpha / 2))
    out: dict[str, Any] = {}
    for feature in by:
        if feature not in data.segments:
            raise ValueError(f"report.segment_by: no feature {feature!r} in the log")
        col = data.segments[feature]
        out[feature] = {}
        for value in sorted(set(col.tolist())):
            rows = col == value
            seg = {}
            for k, name in enumerate(data.arms):
                v = data.value[rows & (data.arm == k)]
                seg[name] = {
                    "n_conversations": int(len(v)),
                    "value": float(v.mean()) if len(v) else None,
                }
                if k != c and len(v) > 1:
                    base = data.value[rows & (data.arm == c)]
                    if len(base) > 1:
                        diff = v.mean() - base.mean()
                        se = math.sqrt(v.var(ddof=1) / len(v) + base.var(ddof=1) / len(base))
                        seg[name]["difference"] = {
                            "estimate": float(diff),
                            "ci_low": float(diff - z * se),
                            "ci_high": float(diff + z * se),
                        }
            out[feature][str(value)] = seg
    return out
