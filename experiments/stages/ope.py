"""The evaluate stage: off-policy evaluation of candidate policies on logs, its typed result,
and how it prints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.experiments.errors import UserError
from supportrl.experiments.stages.settings import (
    OPESettings,
)
from supportrl.simulators.logs import (
    LoggedConversations,
    LoggedDecisions,
    all_propensities_one,
    data_warnings,
)


@dataclass(frozen=True)
class OPEResult:
    """What :func:`evaluate_stage` returns for every candidate."""

    policies: dict[str, dict[str, dict[str, float]]]
    """``{name: {estimator: {"estimate", "ci_low", "ci_high"}}}``."""
    diagnostics: dict[str, Any]
    notes: list[str]
    table: list[dict[str, Any]]
    """One row per (policy, scope, estimator)."""
    logging_value: dict[str, float]
    """The logging policy's value on its own logs (mean observed return per conversation,
    or mean reward per decision), with a normal 1 - alpha interval."""
    return_range: tuple[float, float] | None = None
    """(lowest, highest) logged conversation return (conversation logs only): where any
    policy's conversation value lies on the logs' support, up to sampling."""
    evaluated: Mapping[str, Any] = field(default_factory=dict)
    """Conversation logs: :class:`supportrl.ope.PolicyEvaluation` by candidate, with the
    honest selection interval (``.selection``), support and diagnostics."""

    def selection(self, name: str, select: str) -> dict[str, float]:
        """The interval the winner is chosen on: the widened selection interval where
        conversation logs were evaluated, else ``select``'s own interval."""
        if name in self.evaluated:
            return self.evaluated[name].selection.as_dict()
        return dict(self.policies[name][select])


def _mean_interval(values: np.ndarray, alpha: float) -> dict[str, float]:
    from scipy.stats import norm

    mean = float(values.mean())
    half = float(norm.ppf(1 - alpha / 2) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half}


def evaluate_stage(
    data: LoggedConversations | LoggedDecisions,
    reward: RewardSpec,
    candidates: Mapping[str, np.ndarray],
    settings: OPESettings,
    *,
    seed: int,
    prepared: Any = None,
) -> OPEResult:
    """Every configured estimator for every candidate (target probabilities, shape
    (n_rows, n_actions) in the data's row order) on the logs.

    The one place the commands call the ``ope`` package. ``prepared``: the conversations
    already prepared (rewards, propensities) by the caller, to reuse.
    """
    from supportrl.ope.evaluate import evaluate_decisions

    common = {"n_bootstrap": settings.n_bootstrap, "alpha": settings.alpha, "seed": seed}
    params = dict(settings.params)
    results: dict[str, dict[str, dict[str, float]]] = {}
    diagnostics: dict[str, Any] = {}
    notes: list[str] = []
    table: list[dict[str, Any]] = []
    evaluated: dict[str, Any] = {}
    if isinstance(data, LoggedConversations):
        if prepared is None:
            # missing CSAT imputed by the MNAR selection model, refitted in every resample
            prepared = prepare_for_ope(data, reward, seed=seed)
        notes.extend(prepared.notes)
        notes.extend(
            data_warnings(
                data.summary(), propensities_all_one=all_propensities_one(data.propensity)
            )
        )
        returns = np.add.reduceat(prepared.reward, prepared.logs.offsets[:-1])
        logging_value = _mean_interval(returns, settings.alpha)
        return_range = (float(returns.min()), float(returns.max())) if len(returns) else None
        evaluation = off_policy_evaluation(prepared, settings, seed=seed)
        evaluated = evaluation.evaluate(dict(candidates))
        share = evaluation.refit_share()
        if share < 1.0:
            notes.append(
                f"bootstrap: every resample's nuisance models refitted on a random {share:.3g} "
                f"of the conversations (ope.refit_turns={evaluation.refit_turns}), their "
                "variation scaled to the whole logs (docs/ope.md)"
            )
        for name, res in evaluated.items():
            results[name] = res.rows()
            diagnostics[name] = res.as_dict()
            for scope, rows in (("conversation", res.conversation), ("decision", res.decision)):
                for est, e in rows.items():
                    table.append({"policy": name, "scope": scope, "estimator": est, **e.as_dict()})
    else:
        return_range = None
        logging_value = _mean_interval(np.asarray(data.reward, dtype=float), settings.alpha)
        for name, probs in candidates.items():
            res = evaluate_decisions(
                data,
                probs,
                estimators=list(settings.decision_estimators),
                params=params,
                **common,
            )
            results[name] = res.rows()
            diagnostics[name] = res.diagnostics()
            notes.extend(n for n in res.notes if n not in notes)
            for est, row in res.rows().items():
                table.append({"policy": name, "scope": "decision", "estimator": est, **row})
    return OPEResult(results, diagnostics, notes, table, logging_value, return_range, evaluated)


def start_csat_fit(
    logs: LoggedConversations, reward: RewardSpec, *, workers: int | Literal["auto"]
) -> Any:
    """Start fitting the CSAT model that :func:`prepare_for_ope` fits on ``logs`` when it
    cannot reuse the simulator's (``fitted_on_all=False``), on a worker process
    (:func:`supportrl.workers.submit`), so the simulator fit and training run meanwhile;
    pass the result as ``prepare_for_ope(..., csat_fit=)``. None when the reward does not
    count CSAT or none is missing (nothing to fit)."""
    from supportrl.workers import n_workers, submit

    terminal = logs.outcome != CONTINUE
    if reward.csat_weight == 0 or not (terminal & np.isnan(logs.csat)).any():
        return None
    cut = logs.truncate(reward.max_turns)[0] if (logs.lengths > reward.max_turns).any() else logs
    return submit(_ope_csat_model, (cut,), workers=n_workers(workers, turns=cut.n_turns))


def _ope_csat_model(cut: LoggedConversations) -> Any:
    """The CSAT model :func:`prepare_for_ope` fits on the logs cut at ``max_turns``."""
    from supportrl.envs.rewards import DEFAULT_MAX_TURNS
    from supportrl.simulators.fitted.behaviour import logs_basis
    from supportrl.simulators.fitted.csat import CsatImputation

    return CsatImputation.from_basis(cut, logs_basis(cut, DEFAULT_MAX_TURNS)).model


def prepare_for_ope(
    logs: LoggedConversations,
    reward: RewardSpec,
    *,
    seed: int,
    model: Any = None,
    fitted_on_all: bool = True,
    csat_fit: Any = None,
) -> Any:
    """The logs prepared for OPE (:func:`supportrl.ope.evaluate.prepare_conversations`),
    missing CSAT imputed by the MNAR selection model and refitted in every resample.

    ``model``: a fitted simulator (``FittedCustomerModel``) fitted on these logs
    (``fitted_on_all``) or on part of them (``fit.holdout``, ``fit.sample_turns``): its CSAT
    model is reused instead of fitting a second one (the pipeline fits the simulator just
    before) when the simulator fitted it on all of them with OPE's settings
    (``selection``, ``l2=1``, the default ``max_turns``); otherwise one is fitted with those
    settings on the state basis of the logs at the default ``max_turns`` (the design the
    reused model has), so OPE's numbers depend neither on the simulator's settings nor on
    the share it was fitted on. Without ``model``, the per-outcome CSAT model is fitted here
    (:meth:`CsatImputation.from_logs`). ``csat_fit``: that refit already started by
    :func:`start_csat_fit` on these logs (its ``get()`` is the CSAT model).
    """
    from supportrl.envs.rewards import DEFAULT_MAX_TURNS
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.simulators.fitted.behaviour import logs_basis
    from supportrl.simulators.fitted.csat import CsatImputation

    csat_model, basis = getattr(model, "csat", None), getattr(model, "basis", None)
    if csat_model is None or basis is None:
        return prepare_conversations(logs, reward, csat_imputer=CsatImputation.from_logs, seed=seed)
    # Reused only when the simulator fitted it as OPE would (MNAR, prior precision 1, one
    # thread): OPE's numbers must not move with the simulator's settings.
    params = getattr(model, "params", None)
    same = (
        fitted_on_all
        and csat_model.method == "selection"
        and float(getattr(params, "l2", 1.0)) == 1.0
        and int(getattr(params, "torch_threads", 1)) == 1
        and int(getattr(model, "max_turns", DEFAULT_MAX_TURNS)) == DEFAULT_MAX_TURNS
    )

    def imputer(cut: LoggedConversations) -> CsatImputation:
        if same and cut.n_turns == logs.n_turns:
            return CsatImputation.from_model(cut, basis, csat_model)
        # the basis depends on the simulator's max_turns: OPE's is the default one
        ope_basis = logs_basis(cut, DEFAULT_MAX_TURNS)
        if csat_fit is not None:  # fitted on a worker as from_basis would have here
            return CsatImputation.from_model(cut, ope_basis, csat_fit.get())
        return CsatImputation.from_basis(cut, ope_basis)

    return prepare_conversations(logs, reward, csat_imputer=imputer, seed=seed)


def off_policy_evaluation(prepared: Any, settings: OPESettings, *, seed: int) -> Any:
    """The :class:`supportrl.ope.OffPolicyEvaluation` that ``settings`` describe: every
    nuisance model refitted in each of ``ope.n_refit`` resamples, the winner chosen on the
    widened interval of ``ope.select``. The library's names are the keys' (``n_refit``,
    ``select``, ``params``).
    """
    from supportrl.ope.meta import OffPolicyEvaluation

    from supportrl.workers import n_workers

    try:
        n_workers(settings.workers)  # a bad value stops here, before any work
        return OffPolicyEvaluation(
            prepared=prepared,
            conversation_estimators=settings.conversation_estimators,
            decision_estimators=settings.decision_estimators,
            params=dict(settings.params),
            select=settings.select,
            n_refit=settings.n_refit,
            alpha=settings.alpha,
            seed=seed,
            max_weight=settings.max_weight,
            weight_share=settings.weight_share,
            interval=settings.interval,
            se_multiplier=settings.se_multiplier,
            selection_interval=settings.selection_interval,
            max_deficit=settings.max_deficit,
            min_ess=settings.min_ess,
            min_support=settings.min_support,
            material_support=settings.material_support,
            refit_turns=settings.refit_turns,
            progress=settings.progress,
            workers=settings.workers,
        )
    except ValueError as exc:
        raise UserError(f"ope: {exc}") from exc


def print_ope(result: OPEResult, alpha: float) -> None:
    """The estimates table, ESS and support warnings, and notes (as ``evaluate`` prints).

    An estimate that cannot be computed (0/0: no logged support) is printed ``n/a`` with the
    reason; a conversation-level estimate outside the range of logged returns is flagged
    ``(!)`` in the table and warned about.
    """
    level = int(round(100 * (1 - alpha)))
    print(f"{'policy':<28}{'scope':<14}{'estimator':<11}{'estimate':>10}   {level}% interval")
    for row in result.table:
        shown, flag = estimate_text(row, result.diagnostics[row["policy"]], result.return_range)
        flags = ", ".join(row.get("flags", ()))
        print(f"{row['policy']:<28}{row['scope']:<14}{row['estimator']:<11}{shown}   {flags}")
        if flag:
            print(f"  warning: {row['policy']} {row['estimator']}: {flag}")
            result.notes.append(f"{row['policy']} {row['estimator']}: {flag}")
    if result.evaluated:
        from supportrl.ope.results import format_results

        # the selection intervals, then ESS, support, FQE-vs-IS and weight warnings
        for line in format_results(result.evaluated, estimators=[], level=level)[1:]:
            print(line)
        for note in result.notes:
            print(f"note: {note}")
        return
    for name, diag in result.diagnostics.items():
        ess = f"ESS per decision {diag['ess_decision']:.0f}"
        if "ess_conversation" in diag:
            ess += f", per conversation {diag['ess_conversation']:.0f} of {diag['n_conversations']}"
        print(f"{name}: {ess}")
        for warning in diag["warnings"]:
            print(f"  warning: {warning}")
    for note in result.notes:
        print(f"note: {note}")


def estimate_text(
    row: Mapping[str, Any], diag: Mapping[str, Any], bounds: tuple[float, float] | None
) -> tuple[str, str]:
    """(estimate and interval as printed, warning or ""): ``n/a`` with the reason where
    there is no estimate (0/0: no logged support), and a warning for a conversation-level
    estimate outside the range of logged returns."""
    est, lo, hi = row["estimate"], row["ci_low"], row["ci_high"]
    if not np.isfinite(est):
        return f"{'n/a':>10}   (no estimate: {row.get('reason', 'undefined, e.g. 0/0')})", ""
    if diag.get("ess_decision", 1.0) == 0 and row["estimator"] != "dm":
        why = "no logged support: the target gives zero probability to every logged action"
        return f"{'n/a':>10}   ({why})", why
    text = f"{est:>+10.4f}   [{lo:+.4f}, {hi:+.4f}]"
    if bounds is not None and row["scope"] == "conversation":
        low, high = bounds
        slack = 1e-9 + 1e-6 * (high - low)
        if est < low - slack or est > high + slack:
            return text + "  (!)", (
                f"estimate {est:+.4g} lies outside the logged returns [{low:+.4f}, {high:+.4f}]; "
                "unreliable (extreme importance weights?)"
            )
    return text, ""
