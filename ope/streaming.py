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

Modules: :mod:`~supportrl.ope.nuisance` (the fit), this module (the sums of one partition),
:mod:`~supportrl.ope.sums` (the sums' record and how they combine) and
:mod:`~supportrl.ope.finish` (the finish).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from supportrl.envs.rewards import CONTINUE
from supportrl.ope.data import BanditFeedback, SequentialFeedback
from supportrl.ope.estimators import check_target_probs
from supportrl.ope.evaluate import PreparedConversations, target_probs_of
from supportrl.ope.models import (
    PROPENSITY_FLOOR,
    fold_ids,
    logged_action_probs,
)
from supportrl.ope.nuisance import CROSS_FIT_FOLDS, NuisanceFits, _predict_q
from supportrl.ope.resample import id_hash, id_uniform, poisson_weights
from supportrl.ope.sums import (
    FIXED_PREFIX,
    RANGE_KEY,
    REFIT_PREFIX,
    PartitionSums,
    _add_diagnostics,
)
from supportrl.ope.support import (
    deficit_bounds,
    support_bounds,
    support_mask,
    unsupported_statistic,
)
from supportrl.simulators.logs import LoggedConversations
from supportrl.simulators.logs.bounded import find_sorted

from supportrl.workers import worker_map

__all__ = [
    "memory_sums",
    "partition_sums",
    "select_prepared",
]


REFIT_STREAM = 2**32
"""``id_uniform`` stream of the refit subset (stream 0 draws the nuisance sample, streams
1 .. n_resamples the resample counts)."""


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
    from supportrl.simulators.fitted.csat import csat_outcome_design

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
    supported: np.ndarray, prefix: str = "", map_calls: Callable[..., list[Any]] | None = None,
    n_chunks: int = 1,
) -> None:  # fmt: skip
    """Every fit's statistics, each weighted by its own resample's counts (the refit
    bootstrap, as in memory): 1 + n_resamples evaluations of every estimator.
    ``map_calls(fn, args, shared)``: the fits in ``n_chunks`` chunks by it (e.g. on worker
    processes); each fit's row of the sums is computed as in this process."""
    n_fits = 1 + fits.n_resamples
    if map_calls is None:
        _refit_rows(fits, part, probs, supported, prefix, range(n_fits), sums)
        return
    chunks = [(c.tolist(),) for c in np.array_split(np.arange(n_fits), max(1, n_chunks))]
    for partial in map_calls(_refit_rows, chunks, (fits, part, probs, supported, prefix)):
        # every row is filled by one chunk and zero in the others: the sum is exact
        for key, value in partial.arrays.items():
            if key in sums.arrays:
                sums.arrays[key] += value
            else:
                sums.arrays[key] = value


def _refit_rows(
    fits: NuisanceFits, part: _Part, probs: np.ndarray, supported: np.ndarray, prefix: str,
    indices: Iterable[int], sums: PartitionSums | None = None,
) -> PartitionSums:  # fmt: skip
    """The rows ``indices`` (fits) of :func:`_refit_sums` added to ``sums`` (new ones by
    default, zero in the other rows); returns ``sums``."""
    sums = PartitionSums() if sums is None else sums
    n_fits = 1 + fits.n_resamples
    for i in indices:
        c = np.ones(part.logs.n_conversations) if i == 0 else part.counts[i - 1]
        turn_c = c[part.logs.conversation_index]
        for stat in _statistics(fits, part, probs, supported, i):
            _add(sums, stat, turn_c if stat.per_turn else c, i, n_fits, prefix)
    return sums


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


def _log_totals(part: _Part, n_actions: int) -> PartitionSums:
    """New sums holding the logs' own totals: the count, sum and sum of squares of the
    conversations' returns, their range, and the logged action counts."""
    sums = PartitionSums()
    logs = part.logs
    returns = np.add.reduceat(part.reward, logs.offsets[:-1])
    sums.add("_returns", 0, np.array([len(returns), returns.sum(), returns @ returns]), 1)
    if len(returns):
        sums.add(RANGE_KEY, 0, np.array([returns.min(), -returns.max()]), 1)
    sums.add("_actions", 0, np.bincount(logs.action, minlength=n_actions), 1)
    return sums


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
    sums = _log_totals(part, len(fits.actions))
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
    *,
    workers: int | Literal["auto"] = 0,
) -> PartitionSums:
    """:func:`partition_sums` of logs held in memory that are the sample itself
    (``probs`` (m, n_turns, K) the policies' target probabilities, ``supported``
    (n_turns, K) the support mask). ``subset``: (its fits, its prepared logs, its turns
    mask) of a refit subset whose resamples' models were fitted on it; then the whole
    logs' resamples hold ``fits`` (the point fit) and the subset adds what refitting
    changes (keys ``refit:`` and ``fixed:``, both under the subset's own fits).
    ``workers``: processes for the resamples' statistics (:func:`supportrl.workers.worker_map`)."""
    part = _part_of_prepared(fits, prep)
    sums = _log_totals(part, len(fits.actions))
    if subset is None:
        on = worker_map(workers, turns=part.logs.n_turns)
        _refit_sums(sums, fits, part, probs, supported, "", *on)
    else:
        sub_fits, sub_prep, turns = subset
        sub = _part_of_prepared(sub_fits, sub_prep)
        _fixed_sums(sums, fits, part, probs, supported)
        args = (sub_fits, sub, probs[:, turns], supported[turns])
        _refit_sums(sums, *args, REFIT_PREFIX, *worker_map(workers, turns=sub.logs.n_turns))
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
