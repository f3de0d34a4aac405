"""Nuisance models of off-policy evaluation on logs larger than memory, fitted on a sample of
whole conversations (the *fit* step of :mod:`supportrl.ope.streaming`): once on the sample
and once per refit-bootstrap resample, returned as :class:`NuisanceFits` (coefficients
only, sent to every partition)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.ope.estimators import BanditEstimator
from supportrl.ope.evaluate import PreparedConversations
from supportrl.ope.models import (
    PROPENSITY_FLOOR,
    MultinomialLogit,
    PerActionRidge,
    RidgeSystem,
    add_intercept,
    balancing_weights,
    fold_ids,
    logged_action_probs,
    propensity_models,
)
from supportrl.ope.resample import id_hash, poisson_weights
from supportrl.ope.sequential import SequentialEstimator
from supportrl.ope.support import (
    ReturnRange,
    support_mask,
)
from supportrl.simulators.logs import LoggedConversations

from supportrl.workers import worker_map

if TYPE_CHECKING:
    from supportrl.ope.meta import OffPolicyEvaluation

CROSS_FIT_FOLDS = 5
"""Folds of the cross-fitted reward model (as :func:`ope.models.cross_fit_reward`)."""


BEHAVIOUR_ROWS = 50_000
"""Rows of the behaviour model fit (as :func:`ope.support.behaviour_probs`)."""


@dataclass(frozen=True)
class NuisanceFits:
    """Every fitted nuisance model a partition needs; index 0 is the point fit, ``1 + k``
    resample ``k``. Coefficients only: a few kB per resample and policy."""

    actions: tuple[str, ...]
    reward_spec: RewardSpec
    feature_spec: FeatureSpec
    csat_spec: FeatureSpec | None
    """Encoding of the CSAT model's design (``None``: no CSAT to impute)."""
    csat_models: tuple[Any, ...]
    """``simulators.fitted.csat.CsatModel`` per fit; empty: no CSAT to impute."""
    handle_median: np.ndarray
    """(n_actions,) median handle time of each action on the sample (imputes missing ones)."""
    behaviour: MultinomialLogit
    q_coef: tuple[np.ndarray, ...]
    """FQE coefficients per fit, (n_actions, d + 1, 2 m): ``m`` policies, then their
    supported parts."""
    reward_models: tuple[tuple[PerActionRidge, ...], ...]
    """Per fit: the reward model of each cross-fitting fold, then the whole-sample one;
    empty without per-decision estimators."""
    propensity_models: tuple[tuple[MultinomialLogit, ...], ...]
    """Per fit: the propensity model of each cross-fitting fold, then the whole-sample one;
    empty when the logs carry every propensity (none is estimated)."""
    sample_hash: np.ndarray
    """Sorted id hashes of the sample's conversations, (n_sample,) uint64."""
    sample_fold: np.ndarray
    """Cross-fitting fold of each, (n_sample,) int."""
    policy_names: tuple[str, ...]
    n_resamples: int
    seed: int
    min_support: float
    max_weight: float | None
    horizon: int
    """``reward.max_turns``: statistics are laid out over this many turns everywhere."""
    conversation: Mapping[str, SequentialEstimator]
    decision: Mapping[str, BanditEstimator]
    return_range: ReturnRange
    """Worst and best returns, from the sample's handle times."""
    refit_share: float = 1.0
    """Share of the conversations (drawn by id hash) on which every resample's refitted
    models are evaluated; the others' resamples hold the models at the point fit (1: all
    are refitted, as in memory; see :func:`partition_sums`)."""
    refit_scale: float = 1.0
    """Factor on what refitting changes on the refit subset (:func:`finish`): 1 when the
    resamples' models were fitted on the whole sample; ``sqrt(refit_share)`` when they were
    fitted on the refit subset itself (in memory, :meth:`OffPolicyEvaluation.evaluate`):
    models fitted on a ``share`` of the conversations vary ``1 / share`` times as much."""


def _fqe_coef(
    system: RidgeSystem, rewards: np.ndarray, offsets: np.ndarray, probs: np.ndarray
) -> np.ndarray:
    """:func:`ope.models.fitted_q_many`, returning the last iteration's coefficients
    (n_actions, d + 1, m) instead of the predictions, so other rows can be predicted."""
    m, n, n_actions = probs.shape
    has_next = np.ones(n, dtype=bool)
    has_next[offsets[1:] - 1] = False
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    horizon = int(np.diff(offsets).max()) if len(offsets) > 1 else 1
    q = np.zeros((m, n, n_actions))
    coef = np.zeros((n_actions, system.xi.shape[1], m))
    for _ in range(horizon):
        v_next = np.einsum("mna,mna->mn", probs, q)[:, nxt]
        y = rewards[None, :] + np.where(has_next[None, :], v_next, 0.0)
        coef = system.solve(y.T)
        q = system.predict(coef)
    return coef


def _predict_q(x: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Q of rows ``x`` (n, d) under coefficients (n_actions, d + 1, m): (m, n, n_actions),
    computed as :meth:`RidgeSystem.predict` does."""
    n_actions, d, m = coef.shape
    flat = add_intercept(x) @ coef.transpose(1, 0, 2).reshape(d, n_actions * m)
    return flat.reshape(-1, n_actions, m).transpose(2, 0, 1)


def _reward_models(
    prep: PreparedConversations, reward: np.ndarray, weight: np.ndarray, folds: np.ndarray
) -> tuple[PerActionRidge, ...]:
    """The models of :func:`ope.models.cross_fit_reward` (one per fold), then the
    whole-sample one."""
    logs = prep.logs
    n_actions = len(logs.actions)
    turn_fold = folds[logs.conversation_index]
    models = []
    for f in range(int(folds.max()) + 1):
        test = turn_fold == f
        train = ~test if (~test).any() else test
        models.append(
            PerActionRidge.fit(
                prep.x[train],
                logs.action[train],
                reward[train],
                n_actions,
                sample_weight=weight[train],
            )  # fmt: skip
        )
    models.append(PerActionRidge.fit(prep.x, logs.action, reward, n_actions, sample_weight=weight))
    return tuple(models)


def _csat_model(prep: PreparedConversations, counts: np.ndarray | None) -> Any:
    """The CSAT model of the point fit (``counts`` None) or of a resample (as
    ``CsatImputation.csat``); None without CSAT to impute."""
    from supportrl.simulators.fitted.csat import fit_csat

    imp = prep.csat_model
    if imp is None:
        return None
    if counts is None or not np.isnan(imp.observed).any():  # type: ignore[attr-defined]
        return imp.model  # type: ignore[attr-defined]  # nothing imputed: no refit in memory either
    return fit_csat(
        imp.psi,  # type: ignore[attr-defined]
        imp.observed,  # type: ignore[attr-defined]
        weights=np.asarray(counts, dtype=np.float64)[imp.conversation],  # type: ignore[attr-defined]
        method=imp.method,  # type: ignore[attr-defined]
        l2=imp.l2,  # type: ignore[attr-defined]
        max_iter=imp.refit_iter,  # type: ignore[attr-defined]
        init=imp.model,  # type: ignore[attr-defined]
    )


def _sample_reward(prep: PreparedConversations, csat_model: Any, refit: bool) -> np.ndarray:
    """``prep.reward_for(counts)`` with the CSAT model already refitted (``refit``: a
    resample's): the same arithmetic as ``CsatImputation.csat`` and
    ``PreparedConversations.reward_for``."""
    imp = prep.csat_model
    if not refit or imp is None or prep.csat is None or prep.reward_spec is None:
        return prep.reward
    csat = imp.logged.copy()  # type: ignore[attr-defined]
    missing = np.isnan(imp.observed)  # type: ignore[attr-defined]
    if missing.any():
        psi = imp.psi[missing]  # type: ignore[attr-defined]
        csat[imp.rows[missing]] = csat_model.imputed(psi)  # type: ignore[attr-defined]
    terminal = prep.logs.outcome != CONTINUE
    shift = prep.reward_spec.csat_weight * (csat - prep.csat) / 2.0
    return prep.reward + np.where(terminal, np.nan_to_num(shift), 0.0)


def fit_chunk(
    prep: PreparedConversations,
    targets: np.ndarray,
    folds: np.ndarray,
    decision: bool,
    indices: Sequence[int],
    counts: np.ndarray,
    refit_point: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[Any, np.ndarray, tuple[PerActionRidge, ...], tuple[MultinomialLogit, ...]]]:
    """The fits ``indices`` (0: the point fit; ``1 + k``: resample ``k``, counted by the row
    of ``counts`` (len(indices), n_conversations) at the same position): for each, the CSAT
    model, the FQE coefficients of every target, the reward models (with ``decision``) and
    the propensity models (when propensities are estimated). Fits are independent: chunks
    of them can run in any process. ``refit_point``: the point fit refits the CSAT model on
    ``prep`` too (a refit subset's own point fit) instead of taking ``prep``'s model;
    ``progress(1)`` is called after every fit."""
    logs = prep.logs
    n_actions = len(logs.actions)
    out = []
    for i, c in zip(indices, counts, strict=True):
        refit = i > 0 or refit_point
        csat_model = _csat_model(prep, c if refit else None)
        reward = _sample_reward(prep, csat_model, refit)
        turn_counts = np.asarray(c, dtype=np.float64)[logs.conversation_index]
        propensity, p_models = _sample_propensity(prep, folds, turn_counts)
        balance = balancing_weights(propensity, logs.action, n_actions, counts=turn_counts)
        weight = turn_counts * balance
        system = RidgeSystem.build(prep.x, logs.action, n_actions, sample_weight=weight)
        q_coef = _fqe_coef(system, reward, logs.offsets, targets)
        models = _reward_models(prep, reward, weight, folds) if decision else ()
        out.append((csat_model, q_coef, models, p_models))
        if progress is not None:
            progress(1)
    return out


def _sample_propensity(
    prep: PreparedConversations, folds: np.ndarray, turn_counts: np.ndarray
) -> tuple[np.ndarray, tuple[MultinomialLogit, ...]]:
    """The sample's propensities under one fit and the models behind them: logged ones
    kept; missing ones estimated out of fold as ``PreparedConversations.propensity_for``
    does (every fold's model, then the whole sample's for conversations outside it)."""
    if not prep.propensity_estimated:
        return prep.propensity, ()
    logs = prep.logs
    n_actions = len(logs.actions)
    turn_fold = folds[logs.conversation_index]
    models = propensity_models(
        prep.x, logs.action, n_actions, turn_fold, sample_weight=turn_counts
    ) + (MultinomialLogit.fit(prep.x, logs.action, n_actions, sample_weight=turn_counts),)
    estimated = np.clip(
        logged_action_probs(models, prep.x, logs.action, turn_fold), PROPENSITY_FLOOR, 1.0
    )
    return np.where(np.isnan(logs.propensity), estimated, logs.propensity), models


def _behaviour_model(prep: PreparedConversations) -> MultinomialLogit:
    """The model of :func:`ope.support.behaviour_probs` (same rows, same seed)."""
    x, actions = prep.x, prep.logs.action
    rows = np.arange(len(actions))
    if len(actions) > BEHAVIOUR_ROWS:
        rng = np.random.default_rng(prep.seed)
        rows = np.sort(rng.choice(len(actions), BEHAVIOUR_ROWS, replace=False))
    return MultinomialLogit.fit(x[rows], actions[rows], len(prep.logs.actions), l2=1.0)


def _handle_medians(logs: LoggedConversations, n_actions: int) -> np.ndarray:
    """Per-action median of the observed handle times (how ``prepare_conversations``
    imputes missing ones); the overall median for an action never observed, 0 with none."""
    handle = logs.handle_time_s
    seen = ~np.isnan(handle)
    if not seen.any():
        return np.zeros(n_actions)
    overall = float(np.median(handle[seen]))
    return np.array(
        [np.median(handle[seen & (logs.action == a)]) if (seen & (logs.action == a)).any()
         else overall for a in range(n_actions)]
    )  # fmt: skip


def _fit_chunks(
    shared: tuple[Any, ...],
    all_counts: np.ndarray,
    n_fits: int,
    n_chunks: int,
    refit_point: bool,
    map_fits: Callable[..., list[Any]] | None,
    *,
    show_progress: bool = True,
) -> list[Any]:
    """Fits ``0 .. n_fits - 1`` by :func:`fit_chunk` in ``n_chunks`` chunks of consecutive
    fits, in this process with a progress report (``show_progress``) or by ``map_fits``; in
    fit order."""
    from supportrl.ope.progress import progress

    chunks = [list(c) for c in np.array_split(np.arange(n_fits), min(n_fits, max(1, n_chunks)))]
    if map_fits is None:
        with progress(n_fits, "OPE nuisance fits", enabled=show_progress) as bar:
            done = [fit_chunk(*shared, c, all_counts[c], refit_point, bar.update) for c in chunks]
    else:
        done = map_fits(fit_chunk, [(c, all_counts[c], refit_point) for c in chunks], shared)
    return [f for chunk in done for f in chunk]


def fit_nuisance(
    ope: OffPolicyEvaluation,
    probs: np.ndarray,
    policy_names: Sequence[str],
    *,
    refit_share: float = 1.0,
    map_fits: Callable[..., list[Any]] | None = None,
    n_chunks: int = 1,
    resamples: bool = True,
    refit_point: bool = False,
    behaviour: MultinomialLogit | None = None,
) -> NuisanceFits:
    """Fit every nuisance model on ``ope.prepared`` (the sample) for the point estimate and
    each of ``ope.n_refit`` resamples, as :meth:`OffPolicyEvaluation.evaluate` does.

    ``probs``: the policies' target probabilities on the sample, (m, n_turns, n_actions).
    ``map_fits(fn, args, shared)``: ``[fn(*shared, *a) for a in args]`` somewhere (e.g. as
    Ray tasks, ``simulators.logs.partitioned.map_passes``); the fits are split into ``n_chunks``
    chunks of consecutive fits (:func:`fit_chunk`). Default: on ``ope.workers`` worker
    processes (:func:`supportrl.workers.worker_map`), else in this process with a progress
    report (:func:`ope.progress.progress`). ``resamples=False``: the point fit
    only (the resamples' models are fitted elsewhere, on the refit subset);
    ``refit_point``: see :func:`fit_chunk`; ``behaviour``: the logger's model when already
    fitted.
    """
    prep = ope.prepared
    logs = prep.logs
    assert prep.reward_spec is not None
    if map_fits is None:
        map_fits, n_chunks = worker_map(ope.workers, turns=logs.n_turns)
    n_actions = len(logs.actions)
    hashes = id_hash(logs.conversation_id)
    counts = poisson_weights(logs.conversation_id, ope.n_refit, ope.seed, hashes=hashes)
    behaviour = _behaviour_model(prep) if behaviour is None else behaviour
    supported = support_mask(
        behaviour.predict(prep.x), logs.action, min_probability=ope.min_support
    )
    sub = np.where(supported[None], probs, 0.0)
    targets = np.concatenate([probs, sub])
    folds = fold_ids(np.arange(logs.n_conversations), CROSS_FIT_FOLDS, prep.seed)
    n_fits = 1 + int(ope.n_refit) if resamples else 1
    all_counts = np.concatenate([np.ones((1, logs.n_conversations)), counts])
    shared = (prep, targets, folds, bool(ope.decision_estimators))
    fitted = _fit_chunks(
        shared, all_counts, n_fits, n_chunks, refit_point, map_fits, show_progress=ope.progress
    )
    csat_models = tuple(f[0] for f in fitted) if prep.csat_model is not None else ()
    q_coef = [f[1] for f in fitted]
    reward_models = [f[2] for f in fitted] if ope.decision_estimators else []
    p_models = tuple(f[3] for f in fitted) if prep.propensity_estimated else ()
    order = np.argsort(hashes)
    median = _handle_medians(logs, n_actions)
    # partitions encode their CSAT design as the imputer encoded the sample's
    csat_spec = getattr(prep.csat_model, "spec", None)
    conversation = ope._conversation_estimators()
    return NuisanceFits(
        actions=logs.actions,
        reward_spec=prep.reward_spec,
        feature_spec=prep.feature_spec,
        csat_spec=csat_spec,
        csat_models=csat_models,
        handle_median=median,
        behaviour=behaviour,
        q_coef=tuple(q_coef),
        reward_models=tuple(reward_models),
        propensity_models=p_models,
        sample_hash=hashes[order],
        sample_fold=folds[order],
        policy_names=tuple(policy_names),
        n_resamples=int(ope.n_refit),
        seed=ope.seed,
        min_support=ope.min_support,
        max_weight=ope.clip,
        horizon=prep.reward_spec.max_turns,
        conversation=conversation,
        decision=ope._decision_estimators(),
        return_range=prep.return_range,
        refit_share=float(refit_share),
    )


__all__ = ["NuisanceFits", "fit_chunk", "fit_nuisance"]
