"""The *finish* step of off-policy evaluation in partitions (:mod:`supportrl.ope.streaming`):
the summed statistics of every partition turned into the estimates, intervals and
diagnostics of :class:`~supportrl.ope.meta.OffPolicyEvaluation`, by its own finishing code."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.ope.diagnostics import WeightStatistics, support_warning
from supportrl.ope.nuisance import NuisanceFits
from supportrl.ope.results import PolicyDiagnostics, PolicyEvaluation, PolicyStatistics
from supportrl.ope.sums import (
    DIAG_FIELDS,
    FIXED_PREFIX,
    MIN_SUFFIX,
    N_WEIGHT_BINS,
    REFIT_PREFIX,
    WEIGHT_BIN_RANGE,
    WEIGHT_BIN_RATIO,
    PartitionSums,
)
from supportrl.ope.support import support_mask

if TYPE_CHECKING:
    from supportrl.ope.meta import OffPolicyEvaluation


def _weight_statistics(
    diag: Mapping[str, float],
    weight_max: float,
    bins: tuple[np.ndarray, np.ndarray, np.ndarray],
    levels: Sequence[float],
) -> WeightStatistics:
    """:func:`weight_statistics` of the whole logs from the summed statistics: exact count,
    mean, maximum, share of zeros and ESS; quantiles from the histogram ``bins`` (counts,
    smallest and minus the largest weight per bin): exact where the order statistics' bins
    hold one distinct value, else within the bin's 0.5% of it."""
    n, total, zero = diag["n_turns"], diag["weight_sum"], diag["zero_weights"]
    counts, low, neg_high = bins
    ranks = np.cumsum(counts) + zero

    def order_statistic(k: int) -> float:  # the k-th smallest weight (1-based), binned
        if k <= zero:
            return 0.0
        b = min(int(np.searchsorted(ranks, k)), N_WEIGHT_BINS - 1)
        if low[b] == -neg_high[b]:
            return float(low[b])  # every weight of the bin is this one
        middle = WEIGHT_BIN_RANGE[0] * WEIGHT_BIN_RATIO ** (b + 0.5)
        return float(np.clip(middle, low[b], -neg_high[b]))

    quantiles = {}
    for q in levels:
        # np.quantile's linear interpolation between neighbouring order statistics
        position = q * (n - 1) + 1
        below, frac = int(np.floor(position)), position - np.floor(position)
        value = order_statistic(below)
        if frac > 0:
            value += frac * (order_statistic(below + 1) - value)
        quantiles[float(q)] = value
    return WeightStatistics(
        n=int(n),
        mean=float(total / n) if n else 0.0,
        max=float(weight_max),
        quantiles=quantiles,
        share_zero=float(zero / n) if n else 0.0,
        ess=float(_ess(total, diag["weight_sq"])),
    )


def _values(
    sums: PartitionSums, fits: NuisanceFits, p: int, i: int, prefix: str = ""
) -> PolicyStatistics:
    """Every statistic of policy ``p`` on fit ``i``: the record
    ``OffPolicyEvaluation.evaluate_reference`` computes per fit."""
    from supportrl.ope.intervals import _safe_ratio

    a, key = sums.arrays, f"{prefix}{p}/"

    def ratio(name: str) -> float:
        num, den = a[f"{key}{name}/num"][i], a[f"{key}{name}/den"][i]
        return float(_safe_ratio(num, den).sum())

    total = max(float(a[f"{key}_deficit/n"][i][0]), 1e-300)
    base = float(a[f"{key}_deficit/pdis"][i][0]) / total
    delta = a[f"{key}_deficit/drop"][i] / total
    low, high = np.minimum(fits.return_range.low, 0.0), np.maximum(fits.return_range.high, 0.0)
    return PolicyStatistics(
        estimates={name: ratio(name) for name in (*fits.conversation, *fits.decision)},
        deficit_lower=base + float(np.minimum(delta * low, delta * high).sum()),
        deficit_upper=base + float(np.maximum(delta * low, delta * high).sum()),
        deficit=float(delta.sum()),
        support_lower=ratio("_support_lower"),
        support_upper=ratio("_support_upper"),
        unsupported=ratio("_unsupported"),
    )


def _whole_logs_diagnostics(
    ope: OffPolicyEvaluation,
    probs: np.ndarray,
    supported: np.ndarray,
    point: PolicyStatistics,
    d: Mapping[str, Any],
) -> PolicyDiagnostics:
    """The diagnostics of ``ope`` on the sample, with every figure and warning from the
    whole logs' sums ``d`` instead of the sample's rows: the support warning reads the
    policy's mean probabilities and the logged counts."""
    diag = ope.policy_diagnostics(probs, supported, point)
    s = dict(zip(DIAG_FIELDS, d["diag"], strict=True))
    n_conversations = int(s["n_conversations"])
    ess = float(_ess(s["conversation_weight_sum"], s["conversation_weight_sq"]))
    clipped = float(s["clipped"] / n_conversations) if n_conversations else 0.0
    logs = ope.prepared.logs
    mean_probs = (d["target_mass"] / max(s["n_turns"], 1.0))[None]
    warnings = support_warning(mean_probs, d["actions"], action_names=logs.actions)
    warnings += ope.weight_warnings(ess, n_conversations, clipped, diag.disagreement)
    weights = _weight_statistics(s, d["weight_max"], d["bins"], list(diag.weights.quantiles))
    return dataclasses.replace(
        diag,
        n_turns=int(s["n_turns"]),
        n_conversations=n_conversations,
        ess_decision=float(_ess(s["weight_sum"], s["weight_sq"])),
        ess_conversation=ess,
        weights=weights,
        clipped_share=clipped,
        warnings=tuple(warnings),
    )


def _resample_values(sums: PartitionSums, fits: NuisanceFits, p: int, i: int) -> PolicyStatistics:
    """The statistics of resample ``i``: as refitted when every conversation is refitted;
    otherwise the resample with the point fit's models plus, measured on the refit subset,
    what refitting changes (its refitted value minus its value with the point fit's models).
    The two agree when the subset is all the logs; the second term adds the nuisance
    models' own variation, which a resample that keeps them fixed leaves out."""
    fixed = _values(sums, fits, p, i)
    if fits.refit_share >= 1.0:
        return fixed
    if not any(k.startswith(REFIT_PREFIX) for k in sums.arrays):
        raise ValueError(
            "ope.refit_turns: the refit subset holds no conversation; raise ope.refit_turns"
        )
    refit = _values(sums, fits, p, i, REFIT_PREFIX)
    held = _values(sums, fits, p, i, FIXED_PREFIX)
    return fixed.shifted(refit, held, fits.refit_scale)


def _ess(total: float, sum_sq: float) -> float:
    """Kish's ESS from the sum and the sum of squares of the weights."""
    return total**2 / sum_sq if sum_sq > 0 else 0.0


def finish(
    ope: OffPolicyEvaluation,
    fits: NuisanceFits,
    sample_probs: np.ndarray,
    sums: PartitionSums,
    *,
    whole_logs: bool = False,
) -> dict[str, PolicyEvaluation]:
    """Estimates, intervals and diagnostics from the summed statistics of all partitions.

    ``ope``: the evaluation on the sample that :func:`fit_nuisance` was given (its interval
    settings and its own interval code are used); ``sample_probs`` (m, n_sample_turns, K).
    ``whole_logs``: the sample is all the logs (in memory), so the diagnostics come from
    its rows (exact weight quantiles) instead of the summed histograms.
    """
    prep = ope.prepared
    x = prep.x
    supported = support_mask(
        fits.behaviour.predict(x), prep.logs.action, min_probability=ope.min_support
    )
    out = {}
    for p, name in enumerate(fits.policy_names):
        point = _values(sums, fits, p, 0)
        reps = [_resample_values(sums, fits, p, i) for i in range(1, 1 + fits.n_resamples)]
        if whole_logs:
            out[name] = ope.finish_policy(sample_probs[p], supported, point, reps)
            continue
        a = sums.arrays
        s = dict(zip(DIAG_FIELDS, a[f"{p}/_diag"][0], strict=True))
        sums_of_p = dict(
            diag=a[f"{p}/_diag"][0],
            target_mass=a[f"{p}/_target_mass"][0],
            actions=a["_actions"][0],
            weight_max=-float(a.get(f"{p}/_weight_max{MIN_SUFFIX}", np.zeros((1, 1)))[0][0]),
            bins=tuple(
                a[f"{p}/_weight_bins{suffix}"][0]
                for suffix in ("", f"_low{MIN_SUFFIX}", f"_high{MIN_SUFFIX}")
            ),
        )
        diag = _whole_logs_diagnostics(ope, sample_probs[p], supported, point, sums_of_p)
        res = ope.finish_policy(sample_probs[p], supported, point, reps, diagnostics=diag)
        share = float(s["unsupported_mass"] / s["n_turns"])
        support = dataclasses.replace(res.support, unsupported_decision=share)
        out[name] = dataclasses.replace(res, support=support)
    return out


__all__ = ["finish"]
