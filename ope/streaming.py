"""Off-policy evaluation of logs larger than memory: models fitted on a sample, sums over partitions.

:class:`~supportrl.ope.meta.OffPolicyEvaluation` holds all the logs. Here the work splits
in two (``docs/scale.md``):

1. **Fit** (in memory; its fits independent, so in chunks on Ray tasks with
   ``engine=ray``): every nuisance model of the refit bootstrap (CSAT imputation, estimated
   propensities, balancing weights, the cross-fitted reward model, fitted Q evaluation of
   every policy) is fitted on a *sample* of whole conversations, once on the sample as it
   is and once per resample ``k`` with the sample's Poisson counts of resample ``k``
   (:func:`ope.resample.poisson_weights`, keyed by conversation id), plus the logger's
   behaviour model for support. :func:`fit_nuisance` returns them as :class:`NuisanceFits`:
   small coefficient arrays, sent to every partition.
2. **Sums** (any number of processes or Ray tasks): each partition of whole conversations
   computes the numerators and denominators of every estimator
   (:class:`~supportrl.ope.intervals.RatioStatistic`) under the point fit, weighted by its
   conversations' counts of every resample at once (a matrix product), and, on the refit
   subset (``refit_share`` of the conversations by id hash), under every resample's
   refitted models (:func:`partition_sums`). Sums add up across partitions exactly;
   :func:`finish` turns the total into the estimates and intervals of
   ``OffPolicyEvaluation`` (its own interval code), resample ``k`` being (all, point fit) +
   (subset, refit ``k``) - (subset, point fit).

A conversation that is in the sample is predicted by the out-of-fold models of its
cross-fitting fold, as in memory; one outside the sample by the models fitted on the whole
sample (neither saw it). When the sample and the refit subset are all the logs, every
number equals ``OffPolicyEvaluation`` on the same logs (to rounding, 1e-12), in one process
or many (with one BLAS thread per process, as the command line sets). The estimates,
intervals, ESS, clipped shares, unsupported mass, weight statistics and support warnings
come from all the logs; the handle-time medians and the return range of the support bounds
from the sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.ope.data import BanditFeedback, SequentialFeedback
from supportrl.ope.diagnostics import WeightStatistics, support_warning
from supportrl.ope.estimators import BanditEstimator, check_target_probs
from supportrl.ope.evaluate import PreparedConversations, target_probs_of
from supportrl.ope.meta import (
    OffPolicyEvaluation,
    PolicyDiagnostics,
    PolicyEvaluation,
    PolicyStatistics,
)
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
from supportrl.ope.resample import id_hash, id_uniform, poisson_weights
from supportrl.ope.sequential import SequentialEstimator, cumulative_weights
from supportrl.ope.support import (
    ReturnRange,
    deficit_bounds,
    support_bounds,
    support_mask,
    unsupported_mass,
    unsupported_statistic,
)
from supportrl.simulators.logs import LoggedConversations
from supportrl.simulators.logs_bounded import find_sorted

__all__ = [
    "NuisanceFits",
    "PartitionSums",
    "add_sums",
    "finish",
    "fit_nuisance",
    "memory_sums",
    "partition_sums",
    "select_prepared",
]

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
    """``simulators.fitted_csat.CsatModel`` per fit; empty: no CSAT to impute."""
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


REFIT_STREAM = 2**32
"""``id_uniform`` stream of the refit subset (stream 0 draws the nuisance sample, streams
1 .. n_resamples the resample counts)."""
REFIT_PREFIX, FIXED_PREFIX = "refit:", "fixed:"
"""Key prefixes of the refit subset's statistics under every fit and under the point fit."""

RANGE_KEY = "_return_range"
"""Key of (lowest return, -highest return), shape (1, 2): combined by minimum, not summed."""
MIN_SUFFIX = "/min"
"""Keys ending so are combined by minimum (a maximum is kept as its negative)."""

DIAG_FIELDS = (
    "n_turns",
    "weight_sum",
    "weight_sq",
    "n_conversations",
    "conversation_weight_sum",
    "conversation_weight_sq",
    "clipped",
    "unsupported_mass",
    "zero_weights",
)
"""The sums behind each policy's diagnostics, in the order of its ``_diag`` array
(per-turn weights ``w``, conversation weights, clipped conversations, unsupported mass)."""

WEIGHT_BIN_RATIO = 1.005
"""Bins of the decision-weight histogram: geometric, this ratio wide (0.5% resolution)."""
WEIGHT_BIN_RANGE = (1e-6, 1e9)
"""Positive weights below / above are counted in the first / last bin."""
N_WEIGHT_BINS = int(
    np.ceil(np.log(WEIGHT_BIN_RANGE[1] / WEIGHT_BIN_RANGE[0]) / np.log(WEIGHT_BIN_RATIO))
)


@dataclass
class PartitionSums:
    """Additive statistics of some partitions: ``arrays[key]`` has shape (1 + n_resamples, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, key: str, k: int, value: np.ndarray | float, n_fits: int) -> None:
        value = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if key not in self.arrays:
            self.arrays[key] = np.zeros((n_fits, *value.shape))
        self.arrays[key][k] += value


def add_sums(parts: Sequence[PartitionSums]) -> PartitionSums:
    """Sum of partition statistics (the reduce step; ``RANGE_KEY`` and keys ending in
    :data:`MIN_SUFFIX` by minimum)."""
    out = PartitionSums()
    for part in parts:
        for key, value in part.arrays.items():
            if key in out.arrays and (key == RANGE_KEY or key.endswith(MIN_SUFFIX)):
                out.arrays[key] = np.minimum(out.arrays[key], value)
            elif key in out.arrays:
                out.arrays[key] = out.arrays[key] + value
            else:
                out.arrays[key] = value.copy()
    return out


# --------------------------------------------------------------------------- fit


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
    from supportrl.simulators.fitted_csat import fit_csat

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
    Ray tasks, ``simulators.logs_bounded.map_passes``); the fits are split into ``n_chunks``
    chunks of consecutive fits (:func:`fit_chunk`). Default: in this process, with a
    progress report (:func:`ope.progress.progress`). ``resamples=False``: the point fit
    only (the resamples' models are fitted elsewhere, on the refit subset);
    ``refit_point``: see :func:`fit_chunk`; ``behaviour``: the logger's model when already
    fitted.
    """
    from supportrl.ope.progress import progress

    prep = ope.prepared
    logs = prep.logs
    assert prep.reward_spec is not None
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
    chunks = [list(c) for c in np.array_split(np.arange(n_fits), min(n_fits, max(1, n_chunks)))]
    shared = (prep, targets, folds, bool(ope.decision_estimators))
    if map_fits is None:
        with progress(n_fits, "OPE nuisance fits", enabled=ope.progress) as bar:
            done = [fit_chunk(*shared, c, all_counts[c], refit_point, bar.update) for c in chunks]
    else:
        done = map_fits(fit_chunk, [(c, all_counts[c], refit_point) for c in chunks], shared)
    fitted = [f for chunk in done for f in chunk]
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


# --------------------------------------------------------------------------- partitions


@dataclass(frozen=True)
class _Part:
    """One partition prepared under the sample's models (point fit)."""

    logs: LoggedConversations
    x: np.ndarray
    reward: np.ndarray
    csat: np.ndarray
    psi_missing: np.ndarray | None
    """CSAT design of the terminal turns whose CSAT is imputed."""
    rows_missing: np.ndarray
    fold: np.ndarray
    """Reward-model index of each turn: its sample fold, or the whole-sample model."""
    counts: np.ndarray
    """(n_resamples, n_conversations) Poisson counts."""
    propensity: np.ndarray
    """(n_turns,) logged propensities, missing ones estimated by the point fit's models."""
    propensity_missing: np.ndarray
    """Rows whose propensity is estimated."""


def _propensity_for(fits: NuisanceFits, part: _Part, i: int) -> np.ndarray:
    """Per-turn propensities under fit ``i``'s propensity models (``propensity_for``)."""
    rows = part.propensity_missing
    if i == 0 or not len(rows):
        return part.propensity
    out = part.propensity.copy()
    out[rows] = _estimate_propensity(fits, part.x[rows], part.logs.action[rows], part.fold[rows], i)
    return out


def _estimate_propensity(
    fits: NuisanceFits, x: np.ndarray, action: np.ndarray, fold: np.ndarray, i: int
) -> np.ndarray:
    """Fit ``i``'s estimate of the logged actions' propensities (model of each row's fold)."""
    models = fits.propensity_models[i]
    return np.clip(logged_action_probs(models, x, action, fold), PROPENSITY_FLOOR, 1.0)


def _prepare(fits: NuisanceFits, logs: LoggedConversations) -> _Part:
    """A partition's rewards (CSAT imputed by the point fit), features and counts, as
    :func:`ope.evaluate.prepare_conversations` prepares the whole logs."""
    from supportrl.simulators.fitted_csat import csat_outcome_design

    spec = fits.reward_spec
    if (logs.lengths > spec.max_turns).any():
        logs, _ = logs.truncate(spec.max_turns)
    if not logs.has_propensity and not fits.propensity_models:
        bad = np.flatnonzero(~np.isfinite(logs.propensity))[:5]
        rows = logs.source_row[bad] if logs.source_row is not None else bad
        raise ValueError(
            f"{logs.source}, column 'propensity': rows {rows.tolist()} have none, but every "
            "turn of the nuisance sample had one, so no propensity model was fitted; raise "
            "ope.sample_turns or use engine=memory"
        )
    handle = np.where(
        np.isnan(logs.handle_time_s), fits.handle_median[logs.action], logs.handle_time_s
    )
    terminal = logs.outcome != CONTINUE
    csat = logs.csat.copy()
    rows_missing = np.flatnonzero(terminal & np.isnan(csat))
    psi = None
    if len(rows_missing) and fits.csat_models and spec.csat_weight != 0:
        assert fits.csat_spec is not None
        states = {k: np.asarray(v)[rows_missing] for k, v in logs.states().items()}
        psi = csat_outcome_design(
            fits.csat_spec.encode(states).astype(np.float64),
            np.asarray(states["sentiment"], dtype=np.float64),
            logs.action[rows_missing],
            logs.outcome[rows_missing],
            len(logs.actions),
        )
        csat[rows_missing] = fits.csat_models[0].imputed(psi)
    elif len(rows_missing) and spec.csat_weight != 0:
        raise ValueError(
            f"csat: {len(rows_missing)} terminal turn(s) lack CSAT and no CSAT model was given to impute them"
        )
    reward = spec.rewards(
        actions=logs.action, outcomes=logs.outcome, handle_time_s=handle, csat=csat,
        catalogue=logs.actions,
    )  # fmt: skip
    hashes = id_hash(logs.conversation_id)
    in_sample, pos = find_sorted(fits.sample_hash, hashes)
    n_folds = int(fits.sample_fold.max()) + 1 if len(fits.sample_fold) else 0
    fold = np.where(in_sample, fits.sample_fold[pos], n_folds)[logs.conversation_index]
    x = fits.feature_spec.encode(logs.states()).astype(np.float64)
    propensity = np.asarray(logs.propensity, dtype=np.float64)
    missing = np.flatnonzero(np.isnan(propensity))
    if len(missing):
        propensity = propensity.copy()
        propensity[missing] = _estimate_propensity(
            fits, x[missing], logs.action[missing], fold[missing], 0
        )
    return _Part(
        logs=logs,
        x=x,
        reward=reward,
        csat=csat,
        psi_missing=psi if len(rows_missing) else None,
        rows_missing=rows_missing,
        fold=fold,
        counts=poisson_weights(logs.conversation_id, fits.n_resamples, fits.seed, hashes=hashes),
        propensity=propensity,
        propensity_missing=missing,
    )


def _reward_for(fits: NuisanceFits, part: _Part, i: int) -> np.ndarray:
    """Per-turn rewards under fit ``i``'s CSAT model (``PreparedConversations.reward_for``)."""
    if i == 0 or part.psi_missing is None:
        return part.reward
    csat = part.csat.copy()
    csat[part.rows_missing] = fits.csat_models[i].imputed(part.psi_missing)
    terminal = part.logs.outcome != CONTINUE
    shift = fits.reward_spec.csat_weight * (csat - part.csat) / 2.0
    return part.reward + np.where(terminal, np.nan_to_num(shift), 0.0)


def _reward_hat(fits: NuisanceFits, part: _Part, i: int) -> np.ndarray:
    out = np.empty((part.logs.n_turns, len(fits.actions)))
    for f in np.unique(part.fold):
        rows = part.fold == f
        out[rows] = fits.reward_models[i][f].predict(part.x[rows])
    return out


@dataclass(frozen=True)
class _Statistic:
    """One statistic of a partition under one fit, before the resample counts weigh it.

    ``values``: (n_terms, n_units) per-unit terms, units being conversations or, with
    ``per_turn``, turns. ``ratio``: a :class:`~supportrl.ope.intervals.RatioStatistic`
    (``values`` its numerators, ``denominators`` its denominators or ``None`` for plain
    means), summed as ``key/num`` and ``key/den`` laid out over ``terms`` terms; otherwise
    ``values`` is summed as it is under ``key``.
    """

    key: str
    values: np.ndarray
    denominators: np.ndarray | None = None
    terms: int = 1
    per_turn: bool = False
    ratio: bool = True


def _statistics(
    fits: NuisanceFits, part: _Part, probs: np.ndarray, supported: np.ndarray, i: int
) -> list[_Statistic]:
    """Every statistic of every policy under fit ``i`` (0: the point fit)."""
    logs = part.logs
    n_actions = len(fits.actions)
    reward = _reward_for(fits, part, i)
    propensity = _propensity_for(fits, part, i)
    seq = SequentialFeedback(
        action=logs.action, reward=reward, propensity=propensity,
        offsets=logs.offsets, n_actions=n_actions,
    )  # fmt: skip
    bandit = BanditFeedback(
        action=logs.action, reward=reward, propensity=propensity, n_actions=n_actions
    )
    q_all = _predict_q(part.x, fits.q_coef[i])
    reward_hat = _reward_hat(fits, part, i) if fits.decision else None
    m, h = len(fits.policy_names), fits.horizon
    out = []
    for p in range(m):
        for name, est in fits.conversation.items():
            stat = est._validated_statistic(seq, probs[p], q_all[p])
            extra = stat.numerators.shape[0] - seq.max_length
            terms = h + extra if stat.denominators is not None else stat.numerators.shape[0]
            out.append(_Statistic(f"{p}/{name}", stat.numerators, stat.denominators, terms))
        bounds = deficit_bounds(seq, probs[p], fits.return_range, max_weight=fits.max_weight)
        out.append(_Statistic(f"{p}/_deficit/n", np.ones((1, logs.n_conversations)), ratio=False))
        out.append(_Statistic(f"{p}/_deficit/pdis", bounds.pdis[None], ratio=False))
        drop = _dense_drop(bounds.drop, len(fits.return_range.low))
        out.append(_Statistic(f"{p}/_deficit/drop", drop.T, ratio=False))
        s_low, s_high = support_bounds(
            seq, probs[p], supported, q_all[m + p], fits.return_range, max_weight=fits.max_weight
        )
        mass = unsupported_statistic(seq, probs[p], supported, max_weight=fits.max_weight)
        for key, stat in (
            ("_support_lower", s_low), ("_support_upper", s_high), ("_unsupported", mass)
        ):  # fmt: skip
            out.append(_Statistic(f"{p}/{key}", stat.numerators, stat.denominators))
        for name, est in fits.decision.items():
            stat = est._validated_statistic(bandit, probs[p], reward_hat)
            out.append(
                _Statistic(
                    f"{p}/{name}",
                    stat.numerators,
                    stat.denominators,
                    stat.numerators.shape[0],
                    per_turn=True,
                )  # fmt: skip
            )
    return out


def _add(
    sums: PartitionSums, stat: _Statistic, c: np.ndarray, rows: int | slice, n_fits: int,
    prefix: str = "",
) -> None:  # fmt: skip
    """Add ``stat`` weighted by counts ``c`` to rows ``rows`` of ``sums``: ``c`` is (n_units,)
    for one fit (``rows`` an index) or (n_rows, n_units) for several (``rows`` a slice). A
    ratio laid out over more terms than it has (a partition of shorter conversations) adds
    numerator 0 and the carried weight of its last term, as its turns would in the whole
    logs."""
    key = prefix + stat.key
    if not stat.ratio:
        _put(sums, key, rows, c @ stat.values.T, n_fits)
        return
    num = c @ stat.values.T
    if stat.denominators is None:
        den = np.repeat(np.sum(c, axis=-1)[..., None], num.shape[-1], axis=-1)
    else:
        den = c @ stat.denominators.T
    missing = stat.terms - num.shape[-1]
    if missing > 0:
        num = np.concatenate([num, np.zeros((*num.shape[:-1], missing))], axis=-1)
        den = np.concatenate([den, np.repeat(den[..., -1:], missing, axis=-1)], axis=-1)
    _put(sums, key + "/num", rows, num, n_fits)
    _put(sums, key + "/den", rows, den, n_fits)


def _put(sums: PartitionSums, key: str, rows: int | slice, value: np.ndarray, n_fits: int) -> None:
    value = np.asarray(value, dtype=np.float64)
    if key not in sums.arrays:
        shape = value.shape if isinstance(rows, int) else value.shape[1:]
        sums.arrays[key] = np.zeros((n_fits, *shape))
    sums.arrays[key][rows] += value


def _dense_drop(drop: np.ndarray, horizon: int) -> np.ndarray:
    return np.concatenate([drop, np.zeros((drop.shape[0], horizon - drop.shape[1]))], axis=1)


def _refit_sums(
    sums: PartitionSums, fits: NuisanceFits, part: _Part, probs: np.ndarray,
    supported: np.ndarray, prefix: str = "",
) -> None:  # fmt: skip
    """Every fit's statistics, each weighted by its own resample's counts (the refit
    bootstrap, as in memory): 1 + n_resamples evaluations of every estimator."""
    n_fits = 1 + fits.n_resamples
    for i in range(n_fits):
        c = np.ones(part.logs.n_conversations) if i == 0 else part.counts[i - 1]
        turn_c = c[part.logs.conversation_index]
        for stat in _statistics(fits, part, probs, supported, i):
            _add(sums, stat, turn_c if stat.per_turn else c, i, n_fits, prefix)


def _fixed_sums(
    sums: PartitionSums, fits: NuisanceFits, part: _Part, probs: np.ndarray,
    supported: np.ndarray, prefix: str = "",
) -> None:  # fmt: skip
    """The point fit's statistics weighted by every resample's counts at once (one
    evaluation of every estimator, then a matrix product): resamples with the nuisance
    models held at the point fit."""
    counts = np.concatenate([np.ones((1, part.logs.n_conversations)), part.counts])
    starts = part.logs.offsets[:-1]
    for stat in _statistics(fits, part, probs, supported, 0):
        if stat.per_turn:  # a conversation's turns share its count: sum them first
            den = stat.denominators
            stat = dataclasses.replace(
                stat,
                values=np.add.reduceat(stat.values, starts, axis=1),
                denominators=None if den is None else np.add.reduceat(den, starts, axis=1),
            )
            if den is None:  # a plain mean over turns: its denominator counts turns
                lengths = part.logs.lengths[None].astype(np.float64)
                stat = dataclasses.replace(
                    stat, denominators=np.repeat(lengths, stat.values.shape[0], axis=0)
                )
        _add(sums, stat, counts, slice(None), counts.shape[0], prefix)


def refit_subset(conversation_id: np.ndarray, seed: int, share: float) -> np.ndarray:
    """Whether each conversation is in the refit subset (:data:`REFIT_STREAM`), (n,) bool."""
    if share >= 1.0:
        return np.ones(len(conversation_id), dtype=bool)
    return id_uniform(id_hash(conversation_id), seed, REFIT_STREAM) < share


def partition_sums(
    fits: NuisanceFits, logs: LoggedConversations, policies: Mapping[str, Any]
) -> PartitionSums:
    """Additive statistics of one partition of whole conversations for every fit.

    ``policies``: name -> policy (``action_probs`` on the logs' states), in
    ``fits.policy_names`` order. With ``fits.refit_share`` 1 every fit is evaluated on every
    conversation. Below 1, the resamples of all conversations hold the models at the point
    fit (keys as they are), and the refit subset adds what refitting changes: its
    statistics under every fit (keys ``refit:``) and under the point fit (keys ``fixed:``);
    :func:`finish` combines them.
    """
    part = _prepare(fits, logs)
    logs = part.logs
    probs = _target_probs(fits, logs, policies)
    supported = support_mask(
        fits.behaviour.predict(part.x), logs.action, min_probability=fits.min_support
    )
    sums = PartitionSums()
    returns = np.add.reduceat(part.reward, logs.offsets[:-1])
    sums.add("_returns", 0, np.array([len(returns), returns.sum(), returns @ returns]), 1)
    if len(returns):
        sums.add(RANGE_KEY, 0, np.array([returns.min(), -returns.max()]), 1)
    sums.add("_actions", 0, np.bincount(logs.action, minlength=len(fits.actions)), 1)
    if fits.refit_share >= 1.0:
        _refit_sums(sums, fits, part, probs, supported)
    else:
        _fixed_sums(sums, fits, part, probs, supported)
        inner = refit_subset(logs.conversation_id, fits.seed, fits.refit_share)
        if inner.any():
            sub = _prepare(fits, logs.select(inner))
            turns = inner[logs.conversation_index]
            args = (fits, sub, probs[:, turns], supported[turns])
            _refit_sums(sums, *args, prefix=REFIT_PREFIX)
            _fixed_sums(sums, *args, prefix=FIXED_PREFIX)
    seq = SequentialFeedback(
        action=logs.action, reward=part.reward, propensity=part.propensity,
        offsets=logs.offsets, n_actions=len(fits.actions),
    )  # fmt: skip
    for p in range(len(fits.policy_names)):
        _add_diagnostics(sums, fits, seq, probs[p], supported, p)
    return sums


def select_prepared(prep: PreparedConversations, keep: np.ndarray) -> PreparedConversations:
    """The prepared logs of the conversations ``keep`` ((n_conversations,) bool), with the
    CSAT imputation restricted to them (its refits then fit on them only)."""
    logs = prep.logs
    turns = keep[logs.conversation_index]
    csat_model = prep.csat_model
    if csat_model is not None:
        imp: Any = csat_model
        rows = keep[imp.conversation]
        csat_model = dataclasses.replace(
            imp,
            psi=imp.psi[rows],
            observed=imp.observed[rows],
            rows=(np.cumsum(turns) - 1)[imp.rows[rows]],
            conversation=(np.cumsum(keep) - 1)[imp.conversation[rows]],
            logged=imp.logged[turns],
        )
    return dataclasses.replace(
        prep,
        logs=logs.select(keep),
        reward=prep.reward[turns],
        propensity=prep.propensity[turns],
        x=prep.x[turns],
        notes=[],
        kept_rows=None,
        n_source_turns=int(turns.sum()),
        handle_time_s=None if prep.handle_time_s is None else prep.handle_time_s[turns],
        csat=None if prep.csat is None else prep.csat[turns],
        csat_model=csat_model,
    )


def _part_of_prepared(fits: NuisanceFits, prep: PreparedConversations) -> _Part:
    """:func:`_prepare` of logs that are the sample itself, from what ``prep`` holds
    (every conversation predicted by its fold's out-of-fold models)."""
    logs = prep.logs
    fold = fold_ids(np.arange(logs.n_conversations), CROSS_FIT_FOLDS, prep.seed)
    imp: Any = prep.csat_model
    missing_csat = np.isnan(imp.observed) if imp is not None else np.zeros(0, dtype=bool)
    psi = None
    if imp is not None and missing_csat.any() and fits.csat_models:
        psi = imp.psi[missing_csat]
    rows_missing = imp.rows[missing_csat] if imp is not None else np.zeros(0, dtype=np.int64)
    csat = prep.csat if prep.csat is not None else logs.csat
    reward = prep.reward
    if psi is not None and fits.csat_models[0] is not imp.model:
        # a refit subset's own point fit (refit_point): its CSAT model imputes
        assert prep.csat is not None
        csat = csat.copy()
        csat[rows_missing] = fits.csat_models[0].imputed(psi)
        shift = fits.reward_spec.csat_weight * (csat - prep.csat) / 2.0
        reward = reward + np.where(logs.outcome != CONTINUE, np.nan_to_num(shift), 0.0)
    turn_fold = fold[logs.conversation_index]
    missing = np.flatnonzero(np.isnan(logs.propensity))
    propensity = prep.propensity
    if len(missing) and fits.propensity_models:
        propensity = propensity.copy()
        propensity[missing] = _estimate_propensity(
            fits, prep.x[missing], logs.action[missing], turn_fold[missing], 0
        )
    return _Part(
        logs=logs,
        x=prep.x,
        reward=reward,
        csat=csat,
        psi_missing=psi,
        rows_missing=rows_missing,
        fold=turn_fold,
        counts=poisson_weights(logs.conversation_id, fits.n_resamples, fits.seed),
        propensity=propensity,
        propensity_missing=missing,
    )


def memory_sums(
    fits: NuisanceFits,
    prep: PreparedConversations,
    probs: np.ndarray,
    supported: np.ndarray,
    subset: tuple[NuisanceFits, PreparedConversations, np.ndarray] | None = None,
) -> PartitionSums:
    """:func:`partition_sums` of logs held in memory that are the sample itself
    (``probs`` (m, n_turns, K) the policies' target probabilities, ``supported``
    (n_turns, K) the support mask). ``subset``: (its fits, its prepared logs, its turns
    mask) of a refit subset whose resamples' models were fitted on it; then the whole
    logs' resamples hold ``fits`` (the point fit) and the subset adds what refitting
    changes (keys ``refit:`` and ``fixed:``, both under the subset's own fits)."""
    logs = prep.logs
    part = _part_of_prepared(fits, prep)
    sums = PartitionSums()
    returns = np.add.reduceat(part.reward, logs.offsets[:-1])
    sums.add("_returns", 0, np.array([len(returns), returns.sum(), returns @ returns]), 1)
    if len(returns):
        sums.add(RANGE_KEY, 0, np.array([returns.min(), -returns.max()]), 1)
    sums.add("_actions", 0, np.bincount(logs.action, minlength=len(fits.actions)), 1)
    if subset is None:
        _refit_sums(sums, fits, part, probs, supported)
    else:
        sub_fits, sub_prep, turns = subset
        sub = _part_of_prepared(sub_fits, sub_prep)
        _fixed_sums(sums, fits, part, probs, supported)
        args = (sub_fits, sub, probs[:, turns], supported[turns])
        _refit_sums(sums, *args, prefix=REFIT_PREFIX)
        _fixed_sums(sums, *args, prefix=FIXED_PREFIX)
    # no diagnostics' sums: finish(whole_logs=True) reads the diagnostics off the rows
    return sums


def _target_probs(
    fits: NuisanceFits, logs: LoggedConversations, policies: Mapping[str, Any]
) -> np.ndarray:
    """Every policy's probabilities on the partition, (m, n_turns, n_actions), validated
    once here so that every estimator and fit skips the checks (as meta.py does)."""
    states = logs.states()
    return np.stack(
        [
            check_target_probs(
                target_probs_of(policies[k], states, logs.actions),
                logs.n_turns,
                len(fits.actions),
                name=f"target_probs of {k!r}",
            )
            for k in fits.policy_names
        ]
    )


def _add_diagnostics(
    sums: PartitionSums, fits: NuisanceFits, seq: SequentialFeedback, probs: np.ndarray,
    supported: np.ndarray, p: int,
) -> None:  # fmt: skip
    """Sums behind the ESS, clipped share, unsupported mass, weight statistics and support
    warnings of the whole logs."""
    w = probs[np.arange(seq.n_turns), seq.action] / seq.propensity
    last = seq.offsets[1:] - 1
    conv_w = cumulative_weights(seq, probs)[last]
    clipped = 0.0
    if fits.max_weight is not None:
        clipped = float(
            (
                cumulative_weights(seq, probs, max_weight=fits.max_weight)[last] >= fits.max_weight
            ).sum()
        )
    values = {
        "n_turns": len(w), "weight_sum": w.sum(), "weight_sq": w @ w,
        "n_conversations": len(conv_w), "conversation_weight_sum": conv_w.sum(),
        "conversation_weight_sq": conv_w @ conv_w, "clipped": clipped,
        "unsupported_mass": unsupported_mass(probs, supported).sum(), "zero_weights": (w == 0).sum(),
    }  # fmt: skip
    sums.add(f"{p}/_diag", 0, np.array([values[k] for k in DIAG_FIELDS]), 1)
    sums.add(f"{p}/_target_mass", 0, probs.sum(axis=0), 1)
    if len(w):
        sums.add(f"{p}/_weight_max{MIN_SUFFIX}", 0, -w.max(), 1)
    counts, low, neg_high = _weight_bins(w)
    sums.add(f"{p}/_weight_bins", 0, counts, 1)
    sums.add(f"{p}/_weight_bins_low{MIN_SUFFIX}", 0, low, 1)
    sums.add(f"{p}/_weight_bins_high{MIN_SUFFIX}", 0, neg_high, 1)


def _weight_bins(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positive weights in the geometric bins: count, smallest and minus the largest
    weight of every bin (inf where empty), each (N_WEIGHT_BINS,)."""
    positive = w[w > 0]
    step = np.log(WEIGHT_BIN_RATIO)
    index = np.floor((np.log(positive) - np.log(WEIGHT_BIN_RANGE[0])) / step)
    index = np.clip(index, 0, N_WEIGHT_BINS - 1).astype(np.int64)
    low, neg_high = np.full(N_WEIGHT_BINS, np.inf), np.full(N_WEIGHT_BINS, np.inf)
    np.minimum.at(low, index, positive)
    np.minimum.at(neg_high, index, -positive)
    return np.bincount(index, minlength=N_WEIGHT_BINS).astype(np.float64), low, neg_high


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


# --------------------------------------------------------------------------- finish


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


@dataclass(frozen=True, kw_only=True)
class _Finisher(OffPolicyEvaluation):
    """``OffPolicyEvaluation`` on the sample whose diagnostics take the whole logs' sums."""

    diag_sums: dict[str, np.ndarray] = field(default_factory=dict)

    def _diagnostics(
        self, probs: np.ndarray, supported: np.ndarray, point: PolicyStatistics
    ) -> PolicyDiagnostics:
        diag = super()._diagnostics(probs, supported, point)
        d = self.diag_sums
        s = dict(zip(DIAG_FIELDS, d["diag"], strict=True))
        n_conversations = int(s["n_conversations"])
        ess = float(_ess(s["conversation_weight_sum"], s["conversation_weight_sq"]))
        clipped = float(s["clipped"] / n_conversations) if n_conversations else 0.0
        # every figure and warning from the whole logs' sums, not the sample's rows: the
        # support warning reads the policy's mean probabilities and the logged counts
        logs = self.prepared.logs
        mean_probs = (d["target_mass"] / max(s["n_turns"], 1.0))[None]
        warnings = support_warning(mean_probs, d["actions"], action_names=logs.actions)
        warnings += self._weight_warnings(ess, n_conversations, clipped, diag.disagreement)
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
    fin = _Finisher(
        **{f.name: getattr(ope, f.name) for f in dataclasses.fields(OffPolicyEvaluation)}
    )
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
        fin.diag_sums.update(
            diag=a[f"{p}/_diag"][0],
            target_mass=a[f"{p}/_target_mass"][0],
            actions=a["_actions"][0],
            weight_max=-float(a.get(f"{p}/_weight_max{MIN_SUFFIX}", np.zeros((1, 1)))[0][0]),
            bins=tuple(
                a[f"{p}/_weight_bins{suffix}"][0]
                for suffix in ("", f"_low{MIN_SUFFIX}", f"_high{MIN_SUFFIX}")
            ),
        )
        res = fin.finish_policy(sample_probs[p], supported, point, reps)
        share = float(s["unsupported_mass"] / s["n_turns"])
        support = dataclasses.replace(res.support, unsupported_decision=share)
        out[name] = dataclasses.replace(res, support=support)
    return out
