"""Typed results of off-policy evaluation: an estimate with its interval, bounds, the support
report and diagnostics of a policy, a policy's whole evaluation, and the statistics of one
fit that the point estimate and every resample produce (:class:`PolicyStatistics`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supportrl.ope.diagnostics import (
    WeightStatistics,
)


@dataclass(frozen=True)
class Estimate:
    """A value with its interval and the warnings that belong next to it."""

    estimate: float
    ci_low: float
    ci_high: float
    std_err: float
    """Standard deviation of the refitted bootstrap replicates."""
    flags: tuple[str, ...] = ()
    """Short warnings for the table: ``low ESS``, ``outside reward range``, ``unsupported``."""

    def as_dict(self) -> dict[str, Any]:
        """``{"estimate", "ci_low", "ci_high", "std_err", "flags"}`` for ``result.json``."""
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "std_err": self.std_err,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class Bounds:
    """Partial-identification bounds: the value if the unsupported part earns the worst /
    the best return the reward allows, each with its sampling interval."""

    lower: float
    upper: float
    ci_low: float
    """Lower end of the interval of ``lower``."""
    ci_high: float
    """Upper end of the interval of ``upper``."""


@dataclass(frozen=True)
class SupportReport:
    """How much of the target policy's behaviour the logs cover."""

    unsupported_decision: float
    """Mean target probability on actions the logger (almost) never takes in that state,
    over logged turns."""
    unsupported_conversation: float
    """Estimated probability that a conversation under the target policy takes such an
    action at some turn."""
    deficit: float
    """Target probability mass the sample does not represent: ``1 - mean_c rho_c`` of the
    clipped cumulative weights at the last turn (missing support, heavy tails, clipping)."""
    material: bool
    """``unsupported_conversation`` above ``material_support``: the value is then only
    partially identified and the selection interval includes ``bounds``."""
    bounds: Bounds
    """Partial-identification bounds for the unsupported part
    (:func:`ope.support.support_bounds`)."""
    deficit_bounds: Bounds
    """Model-free bounds for all the mass the sample misses (:func:`ope.support.deficit_bounds`)."""


@dataclass(frozen=True)
class PolicyDiagnostics:
    """Weights, effective sample sizes and warnings of one policy on the logs."""

    n_turns: int
    n_conversations: int
    ess_decision: float
    """Kish ESS of the per-turn weights ``pi(a_t|s_t) / p_t``."""
    ess_conversation: float
    """Kish ESS of the unclipped whole-conversation weights."""
    weights: WeightStatistics
    """Per-turn importance weights."""
    clipped_share: float
    """Share of conversations whose cumulative weight reached ``max_weight``."""
    disagreement: float
    """``fqe`` minus the importance-weighted selection estimate (``seq_dr`` when ``fqe``
    is the selection estimator): model bias the bootstrap does not see."""
    warnings: tuple[str, ...]
    max_weight: float | None = None
    """The clip of the cumulative weights in use (:attr:`OffPolicyEvaluation.clip`)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_weight": self.max_weight,
            "n_turns": self.n_turns,
            "n_conversations": self.n_conversations,
            "ess_decision": self.ess_decision,
            "ess_conversation": self.ess_conversation,
            "weights": {
                "mean": self.weights.mean,
                "max": self.weights.max,
                "share_zero": self.weights.share_zero,
                "quantiles": {str(q): v for q, v in self.weights.quantiles.items()},
            },
            "clipped_share": self.clipped_share,
            "fqe_minus_is": self.disagreement,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PolicyEvaluation:
    """Everything OPE says about one policy."""

    conversation: Mapping[str, Estimate]
    """Conversation-level estimators (expected conversation return) by name."""
    decision: Mapping[str, Estimate]
    """Per-decision estimators (expected reward of one decision) by name."""
    selection: Estimate
    """The selection estimator's interval widened by the FQE-vs-IS disagreement and, where
    support is missing, by the partial-identification bounds: choose policies on its
    ``ci_low``."""
    select: str
    support: SupportReport
    diagnostics: PolicyDiagnostics

    def rows(self) -> dict[str, dict[str, Any]]:
        """``{ESTIMATOR: {"estimate", "ci_low", "ci_high", ...}}`` (``result.json``'s layout)."""
        return {name: e.as_dict() for name, e in {**self.conversation, **self.decision}.items()}

    def as_dict(self) -> dict[str, Any]:
        """Diagnostics, support and the selection interval as plain data."""
        s = self.support
        return {
            **self.diagnostics.as_dict(),
            "selection": {"estimator": self.select, **self.selection.as_dict()},
            "support": {
                "unsupported_decision": s.unsupported_decision,
                "unsupported_conversation": s.unsupported_conversation,
                "deficit": s.deficit,
                "material": s.material,
                "bounds": dataclasses.asdict(s.bounds),
                "deficit_bounds": dataclasses.asdict(s.deficit_bounds),
            },
        }


@dataclass(frozen=True)
class PolicyStatistics:
    """Every statistic of one policy under one fit of the nuisance models (the point fit
    or a resample's): what :meth:`OffPolicyEvaluation.evaluate_reference` computes per
    resample and :func:`ope.streaming.finish` reads off the summed partitions, the one
    record between fitting and finishing (:meth:`OffPolicyEvaluation.finish_policy`)."""

    estimates: Mapping[str, float]
    """Estimator name -> value (conversation-level and per-decision)."""
    deficit_lower: float
    """Model-free lower bound of the value (:func:`ope.support.deficit_bounds`)."""
    deficit_upper: float
    deficit: float
    """Target probability mass the sample does not represent."""
    support_lower: float
    """Partial-identification lower bound for the unsupported part
    (:func:`ope.support.support_bounds`)."""
    support_upper: float
    unsupported: float
    """Probability that a conversation under the policy reaches an unsupported action."""

    def shifted(
        self, refit: PolicyStatistics, held: PolicyStatistics, scale: float
    ) -> PolicyStatistics:
        """``self + scale * (refit - held)``, statistic by statistic (a resample whose
        models' variation is measured on a refit subset)."""

        def f(a: float, b: float, c: float) -> float:
            return a + scale * (b - c)

        return PolicyStatistics(
            estimates={
                k: f(v, refit.estimates[k], held.estimates[k]) for k, v in self.estimates.items()
            },
            **{
                name: f(getattr(self, name), getattr(refit, name), getattr(held, name))
                for name in _BOUND_FIELDS
            },
        )


_BOUND_FIELDS = (
    "deficit_lower",
    "deficit_upper",
    "deficit",
    "support_lower",
    "support_upper",
    "unsupported",
)


def _with_warning(diag: PolicyDiagnostics, text: str) -> PolicyDiagnostics:
    from dataclasses import replace

    return replace(diag, warnings=(*diag.warnings, text))


def format_results(
    results: Mapping[str, PolicyEvaluation],
    *,
    estimators: Sequence[str] | None = None,
    truth: Mapping[str, float] | None = None,
    level: int = 95,
) -> list[str]:
    """Printable lines: one row per (policy, estimator) with its flags, then every policy's
    ESS, support and weight warnings. Call it wherever OPE numbers are printed.

    ``estimators``: the conversation/decision estimators to show (default: all evaluated,
    then the selection interval); ``truth``: known true values to print beside them.
    """
    lines = [
        f"{'policy':<26}{'estimator':<15}{'estimate':>10}   {level}% interval"
        + ("          true" if truth else "")
        + "   flags"
    ]
    for name, res in results.items():
        rows = {**res.conversation, **res.decision}
        shown = list(estimators) if estimators is not None else list(rows)
        rows = {k: rows[k] for k in shown if k in rows}
        rows[f"select:{res.select}"] = res.selection
        for est, e in rows.items():
            true = f"{truth[name]:>+14.3f}" if truth and name in truth else ""
            lines.append(
                f"{name:<26}{est:<15}{e.estimate:>+10.4f}   [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"
                f"{true}   {', '.join(e.flags)}"
            )
    for name, res in results.items():
        d, s = res.diagnostics, res.support
        lines.append(
            f"{name}: ESS per decision {d.ess_decision:.0f}, per conversation "
            f"{d.ess_conversation:.0f} of {d.n_conversations}; unsupported mass "
            f"{s.unsupported_decision:.1%} per decision, {s.unsupported_conversation:.1%} per "
            f"conversation; {s.deficit:.1%} of its mass unrepresented; fqe - is "
            f"{d.disagreement:+.3f}; weights clipped at "
            f"{'none' if d.max_weight is None else f'{d.max_weight:g}'}; model-free bounds "
            f"[{s.deficit_bounds.ci_low:+.3f}, {s.deficit_bounds.ci_high:+.3f}]"
        )
        lines.extend(f"  warning: {w}" for w in d.warnings)
    return lines


__all__ = [
    "Bounds",
    "Estimate",
    "PolicyDiagnostics",
    "PolicyEvaluation",
    "PolicyStatistics",
    "SupportReport",
    "format_results",
]
