"""Off-policy evaluation of policies on logs: from logged data to estimates with intervals.

:func:`prepare_conversations` turns schema-v1 logs into what the estimators need
(per-turn reward v1, propensities, encoded features), imputing what is missing and
counting it. :class:`ope.meta.OffPolicyEvaluation` then runs, for every candidate policy,

* the **conversation-level** estimators (``pdis wpdis seq_dr wdr fqe``): the value is
  the expected conversation return under reward v1;
* the **per-decision** estimators (``dm ips snips dr sndr switch_dr dr_os``) on the
  turns with their immediate reward: the value is the expected reward of one decision.

Intervals bootstrap conversations (never turns, which are dependent within a
conversation) and refit the nuisance models in every resample. :func:`evaluate_decisions`
does the per-decision part for generic logged bandit feedback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from supportrl.agents.base import Policy
from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.ope.data import BanditFeedback
from supportrl.ope.diagnostics import (
    WeightStatistics,
    effective_sample_size,
    support_warning,
    weight_statistics,
)
from supportrl.ope.estimators import check_target_probs
from supportrl.ope.intervals import Interval
from supportrl.ope.models import (
    balancing_weights,
    cross_fit_propensity,
    cross_fit_reward,
)
from supportrl.ope.registry import make_estimator
from supportrl.ope.support import ReturnRange, behaviour_probs
from supportrl.simulators.logs import LoggedConversations, LoggedDecisions

DECISION_ESTIMATORS: tuple[str, ...] = ("dm", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os")
CONVERSATION_ESTIMATORS: tuple[str, ...] = ("pdis", "wpdis", "seq_dr", "wdr", "fqe")


class RefittableCsat(Protocol):
    """Imputed CSAT that can be refitted on a bootstrap resample of the conversations
    (``simulators.fitted.csat.CsatImputation``)."""

    @property
    def n_imputed(self) -> int:
        """Terminal turns whose CSAT was imputed."""
        ...

    def csat(self, counts: np.ndarray | None = None) -> np.ndarray:
        """CSAT of every turn (n_turns,); ``counts`` (n_conversations,) refits on a resample."""
        ...


CsatImputer = Callable[[LoggedConversations], "tuple[np.ndarray, int] | RefittableCsat"]
"""Returns (csat with every terminal row filled, number of rows imputed), or a
:class:`RefittableCsat` (then OPE intervals refit the CSAT model in every resample)."""


@dataclass(frozen=True)
class PreparedConversations:
    """Logged conversations ready for the estimators."""

    logs: LoggedConversations
    reward: np.ndarray
    """(n_turns,) reward v1 of each turn, after imputation."""
    propensity: np.ndarray
    """(n_turns,) logged propensities, or estimated ones (see ``propensity_estimated``)."""
    x: np.ndarray
    """(n_turns, d) encoded states for the reward / Q / propensity models."""
    feature_spec: FeatureSpec
    propensity_estimated: bool
    notes: list[str] = field(default_factory=list)
    """What was imputed or estimated, in words, for the report."""
    kept_rows: np.ndarray | None = None
    """When conversations were cut at ``max_turns``: the kept rows of the original logs."""
    n_source_turns: int = 0
    """Turns of the logs as given (target probabilities may be given for all of them)."""
    seed: int = 0
    """Seed of the cross-fitting folds."""
    reward_spec: RewardSpec | None = None
    """The reward the per-turn rewards were computed under."""
    handle_time_s: np.ndarray | None = None
    """(n_turns,) handle times after imputation."""
    csat: np.ndarray | None = None
    """(n_turns,) CSAT after imputation (read on terminal turns)."""
    csat_model: RefittableCsat | None = None
    """The CSAT imputation, refitted per bootstrap resample; None when CSAT was complete
    or imputed by a fixed rule."""

    def propensity_for(self, counts: np.ndarray | None) -> np.ndarray:
        """Propensities (n_turns,) with the propensity model refitted on a resample.

        Logged propensities are kept; only the estimated ones (``propensity_estimated``)
        are refitted, with each conversation counted ``counts[c]`` times.
        """
        if counts is None or not self.propensity_estimated:
            return self.propensity
        logs = self.logs
        fitted = cross_fit_propensity(
            self.x,
            logs.action,
            len(logs.actions),
            groups=logs.conversation_index,
            seed=self.seed,
            sample_weight=np.asarray(counts, dtype=np.float64)[logs.conversation_index],
        )
        return np.where(np.isnan(logs.propensity), fitted, self.propensity)

    def reward_for(self, counts: np.ndarray | None) -> np.ndarray:
        """Per-turn rewards (n_turns,) with the CSAT model refitted on a resample.

        ``counts`` (n_conversations,): how often each conversation is in the resample;
        ``None`` or no refittable CSAT model: :attr:`reward`.
        """
        if counts is None or self.csat_model is None or self.csat is None:
            return self.reward
        assert self.reward_spec is not None
        csat = self.csat_model.csat(counts)
        terminal = self.logs.outcome != CONTINUE
        shift = self.reward_spec.csat_weight * (csat - self.csat) / 2.0
        return self.reward + np.where(terminal, np.nan_to_num(shift), 0.0)

    @functools.cached_property
    def behaviour(self) -> np.ndarray:
        """The logger's modelled probability of every action in every logged state,
        shape (n_turns, n_actions) (:func:`ope.support.behaviour_probs`)."""
        return behaviour_probs(self.x, self.logs.action, len(self.logs.actions), seed=self.seed)

    @functools.cached_property
    def return_range(self) -> ReturnRange:
        """Worst and best returns reward v1 allows (:class:`ope.support.ReturnRange`)."""
        spec = self.reward_spec or RewardSpec()
        handle = self.handle_time_s if self.handle_time_s is not None else self.logs.handle_time_s
        handle = handle[np.isfinite(handle)] if np.isfinite(handle).any() else np.zeros(1)
        # the 1st..99th percentile of handle times: one outlier turn would otherwise set
        # the per-minute cost of every turn of the worst case
        return ReturnRange.from_reward(spec, self.logs.actions, np.quantile(handle, [0.01, 0.99]))

    @functools.cached_property
    def balancing_weights(self) -> np.ndarray:
        """Stabilised inverse-propensity weights of the turns (policy-independent), shape (n_turns,)."""
        return balancing_weights(self.propensity, self.logs.action, len(self.logs.actions))

    @functools.cached_property
    def reward_hat(self) -> np.ndarray:
        """Cross-fitted immediate-reward predictions for every action, shape (n_turns, n_actions).

        Fitted once per prepared logs (it does not depend on the evaluated policy); folds
        drawn from ``seed``.
        """
        return cross_fit_reward(
            self.x,
            self.logs.action,
            self.reward,
            len(self.logs.actions),
            groups=self.logs.conversation_index,
            seed=self.seed,
            sample_weight=self.balancing_weights,
        )

    def target_rows(self, target_probs: np.ndarray) -> np.ndarray:
        """``target_probs`` for the original logs' turns, restricted to the kept ones."""
        if self.kept_rows is not None and len(target_probs) == self.n_source_turns:
            return target_probs[self.kept_rows]
        return target_probs


def _impute_handle_time(logs: LoggedConversations, reward: RewardSpec) -> tuple[np.ndarray, int]:
    """Missing handle times get the median of the same action's observed ones."""
    handle = logs.handle_time_s.copy()
    missing = np.isnan(handle)
    if not missing.any():
        return handle, 0
    if missing.all():
        if reward.per_minute != 0:
            raise ValueError(
                "handle_time_s: no turn has a handle time, so the per-minute cost of reward v1 "
                "cannot be computed; set reward.per_minute=0 to evaluate without it"
            )
        return np.zeros_like(handle), 0
    overall = float(np.nanmedian(handle)) if (~missing).any() else 0.0
    for a in np.unique(logs.action[missing]):
        seen = handle[(logs.action == a) & ~missing]
        handle[missing & (logs.action == a)] = np.median(seen) if len(seen) else overall
    return handle, int(missing.sum())


def _imputed_csat(
    logs: LoggedConversations,
    reward: RewardSpec,
    csat_imputer: CsatImputer | None,
    notes: list[str],
) -> tuple[np.ndarray, Any]:
    """The logs' CSAT (n_turns,) with the missing terminal ones imputed by ``csat_imputer``
    (when the reward counts CSAT), and the imputer's model (None unless it returned one)."""
    terminal = logs.outcome != CONTINUE
    csat = logs.csat
    csat_model = None
    missing_csat = int((terminal & np.isnan(csat)).sum())
    if missing_csat and reward.csat_weight != 0:
        if csat_imputer is None:
            raise ValueError(
                f"csat: {missing_csat} terminal turn(s) lack CSAT and no CSAT model was given to impute them"
            )
        imputed = csat_imputer(logs)
        if isinstance(imputed, tuple):
            csat, n_imputed = imputed
        else:
            csat_model = imputed
            csat, n_imputed = imputed.csat(), imputed.n_imputed
        notes.append(
            f"imputed CSAT on {n_imputed} of {int(terminal.sum())} terminal turns with the fitted CSAT model"
        )
    return csat, csat_model


def prepare_conversations(
    logs: LoggedConversations,
    reward: RewardSpec,
    *,
    csat_imputer: CsatImputer | None = None,
    feature_spec: FeatureSpec | None = None,
    levels: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> PreparedConversations:
    """Rewards, propensities and features of every logged turn.

    Missing CSAT on terminal rows is imputed by ``csat_imputer`` (the fitted CSAT model)
    and never silently counted as neutral; without an imputer and with missing CSAT, a
    ValueError says so. Missing propensities are estimated by a cross-fitted multinomial
    logit on the state features, and the notes say so. ``levels`` (variable -> values) fixes
    the categories of the state encoding where the logs hold fewer (a sample of larger logs).
    """
    notes: list[str] = []
    n_source_turns = logs.n_turns
    kept_rows = None
    if (logs.lengths > reward.max_turns).any():
        n_cut = int((logs.lengths > reward.max_turns).sum())
        logs, kept_rows = logs.truncate(reward.max_turns)
        notes.append(
            f"{n_cut} conversations are longer than reward.max_turns={reward.max_turns}: "
            f"values count their first {reward.max_turns} turns ({n_source_turns - logs.n_turns} "
            "later turns left out, as the value of a policy is defined)"
        )
    csat, csat_model = _imputed_csat(logs, reward, csat_imputer, notes)
    handle, n_handle = _impute_handle_time(logs, reward)
    if n_handle:
        notes.append(f"imputed handle_time_s on {n_handle} turns with the per-action median")
    r = reward.rewards(
        actions=logs.action,
        outcomes=logs.outcome,
        handle_time_s=handle,
        csat=csat,
        catalogue=logs.actions,
    )
    states = logs.states()
    spec = feature_spec or build_feature_spec(
        states,
        actions=logs.actions,
        categorical=logs.categorical,
        numeric=logs.numeric,
        max_turns=reward.max_turns,
        levels=levels,
    )
    x = spec.encode(states).astype(np.float64)
    estimated = not logs.has_propensity
    propensity = logs.propensity
    if estimated:
        fitted = cross_fit_propensity(
            x, logs.action, len(logs.actions), groups=logs.conversation_index, seed=seed
        )
        missing = np.isnan(propensity)
        propensity = np.where(missing, fitted, propensity)
        notes.append(
            f"propensity: {int(missing.sum())} of {logs.n_turns} turns had none; estimated by a "
            "cross-fitted multinomial logit on the state features"
        )
    return PreparedConversations(
        logs=logs,
        reward=r,
        propensity=propensity,
        x=x,
        feature_spec=spec,
        propensity_estimated=estimated,
        notes=notes,
        kept_rows=kept_rows,
        n_source_turns=n_source_turns,
        seed=seed,
        reward_spec=reward,
        handle_time_s=handle,
        csat=csat,
        csat_model=csat_model,
    )


def target_probs_of(
    policy: Policy, states: Mapping[str, np.ndarray], actions: Sequence[str]
) -> np.ndarray:
    """A policy's action probabilities on logged states, columns in the logs' catalogue order."""
    check = getattr(policy, "check_variables", None)
    if check is not None:
        check(states.keys())
    needed = getattr(getattr(policy, "feature_spec", None), "variables", ())
    missing = [v for v in needed if v not in states]
    if missing:
        raise ValueError(
            f"policy {getattr(policy, 'name', type(policy).__name__)}: needs state variable(s) "
            f"{missing} that the logs do not have (they have {sorted(states)})"
        )
    if tuple(policy.actions) != tuple(actions):
        missing = sorted(set(policy.actions) - set(actions))
        if missing:
            raise ValueError(
                f"policy actions {missing} are not in the logs' catalogue {list(actions)}"
            )
        probs = policy.action_probs(states)
        out = np.zeros((len(probs), len(actions)))
        for j, a in enumerate(policy.actions):
            out[:, list(actions).index(a)] = probs[:, j]
        return out
    return policy.action_probs(states)


def _weight_summary(stats: WeightStatistics) -> dict[str, Any]:
    return {
        "mean": stats.mean,
        "max": stats.max,
        "share_zero": stats.share_zero,
        "quantiles": {str(q): v for q, v in stats.quantiles.items()},
    }


@dataclass(frozen=True)
class DecisionEvaluation:
    """Per-decision estimates of one policy on generic logged bandit feedback."""

    decision: Mapping[str, Interval]
    """Estimator name -> estimate with its bootstrap interval (expected reward per decision)."""
    ess_decision: float
    """Kish ESS of the importance weights."""
    n_decisions: int
    weights: WeightStatistics
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    """What was estimated (e.g. missing propensities), in words."""

    def rows(self) -> dict[str, dict[str, float]]:
        """``{ESTIMATOR: {"estimate", "ci_low", "ci_high", "std_err"}}`` for ``result.json``."""
        return {name: interval.as_dict() for name, interval in self.decision.items()}

    def diagnostics(self) -> dict[str, Any]:
        """ESS, weight summary and warnings as plain data."""
        return {
            "ess_decision": self.ess_decision,
            "n_decisions": self.n_decisions,
            "weights": _weight_summary(self.weights),
            "warnings": list(self.warnings),
        }


def evaluate_decisions(
    data: LoggedDecisions,
    target_probs: np.ndarray,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    estimators: Sequence[str] = DECISION_ESTIMATORS,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> DecisionEvaluation:
    """Per-decision estimators on generic logged bandit feedback.

    ``target_probs`` (n_rounds, n_actions) in the data's row order. Intervals: bootstrap
    over decisions with the cross-fitted reward model and propensities held fixed
    (sampling noise only; one-step data have no FQE or CSAT model to refit).
    """
    n_actions = len(data.actions)
    check_target_probs(target_probs, data.n_rounds, n_actions)
    by_estimator = {k: dict(v) for k, v in (params or {}).items()}
    notes = []
    spec = build_feature_spec(
        data.context,
        actions=data.actions,
        categorical=data.categorical,
        numeric=data.numeric,
        conversation=False,
    )
    x = (
        spec.encode(data.context).astype(np.float64)
        if spec.variables
        else np.zeros((data.n_rounds, 0))
    )
    propensity = data.propensity
    if not data.has_propensity:
        propensity = cross_fit_propensity(x, data.action, n_actions, seed=seed)
        notes.append(
            "propensity: none logged; estimated by a cross-fitted multinomial logit on the context"
        )
    feedback = BanditFeedback(
        action=data.action, reward=data.reward, propensity=propensity, n_actions=n_actions
    )
    reward_hat = cross_fit_reward(x, data.action, data.reward, n_actions, seed=seed)
    decision = {
        name: make_estimator(name, **by_estimator.get(name, {})).interval(
            feedback, target_probs, reward_hat, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed
        )
        for name in estimators
    }
    w = target_probs[np.arange(data.n_rounds), data.action] / propensity
    return DecisionEvaluation(
        decision=decision,
        ess_decision=float(effective_sample_size(w)),
        n_decisions=data.n_rounds,
        weights=weight_statistics(w),
        warnings=tuple(
            support_warning(
                target_probs,
                np.bincount(data.action, minlength=n_actions),
                action_names=data.actions,
            )
        ),
        notes=tuple(notes),
    )


def load_target_probs(path: str | Path, actions: Sequence[str], n_rows: int) -> np.ndarray:
    """Per-row action probabilities from a CSV/Parquet file, shape (n_rows, n_actions).

    One column per action label (matched by string form, so action ``14`` matches a
    column named ``14``), one row per logged row in the logs' file order; every row
    non-negative and summing to 1.
    """
    from supportrl.simulators.logs import LogValidationError, read_table

    try:
        table = read_table(path)
    except LogValidationError as exc:
        raise ValueError(f"target_probs: {exc}") from exc
    frame = table.frame
    columns = {str(c): c for c in frame.columns}
    missing = [a for a in actions if a not in columns]
    extra = sorted(set(columns) - set(actions))
    if missing or extra:
        raise ValueError(
            f"{path}: target_probs columns must be the action labels {list(actions)}; "
            f"missing {missing}, unexpected {extra}"
        )
    if len(frame) != n_rows:
        raise ValueError(f"{path}: target_probs has {len(frame)} rows; the logs have {n_rows}")
    probs = (
        frame[[columns[a] for a in actions]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    )
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: target_probs rows {bad[:5].tolist()} hold non-numbers or blanks")
    negative = np.flatnonzero((probs < 0).any(axis=1))
    if len(negative):
        raise ValueError(
            f"{path}: target_probs rows {negative[:5].tolist()} have negative probabilities"
        )
    off = np.flatnonzero(np.abs(probs.sum(axis=1) - 1.0) > 1e-6)
    if len(off):
        sums = ", ".join(f"{v:.4g}" for v in probs[off[:5]].sum(axis=1))
        raise ValueError(
            f"{path}: target_probs rows {off[:5].tolist()} do not sum to 1 (sums {sums})"
        )
    return probs
