"""The fit: :func:`fit_customer_model` turns logged conversations into a
:class:`~supportrl.simulators.fitted.model.FittedCustomerModel` (the package docstring,
:mod:`supportrl.simulators.fitted`, describes what is fitted and how)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import numpy as np
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import CONTINUE, DEFAULT_MAX_TURNS
from supportrl.simulators.fitted.behaviour import logs_basis
from supportrl.simulators.fitted.config import (
    FamilyParams,
    FitConfig,
    FitWarning,
    GLMParams,
    fit_settings,
)
from supportrl.simulators.fitted.csat import CsatModel, csat_design, fit_csat, impute_terminal_csat
from supportrl.simulators.fitted.dynamics import (
    Dynamics,
    EnsembleDynamics,
    GLMDynamics,
    fit_glm,
)
from supportrl.simulators.fitted.ensemble import fit_ensemble
from supportrl.simulators.fitted.features import Basis, FittedState, support_counts
from supportrl.simulators.fitted.glm import GaussianFit
from supportrl.simulators.fitted.model import FittedCustomerModel
from supportrl.simulators.fitted.weights import decision_weights

from supportrl.workers import n_workers, submit


def fit_customer_model(
    logs: LoggedConversations,
    family: str = "glm",
    *,
    seed: int = 0,
    weighting: str = "none",
    penalty: float = 0.0,
    min_support: int = 0,
    max_turns: int = DEFAULT_MAX_TURNS,
    weight_clip: float = 50.0,
    csat_missing: str = "selection",
    conversation_weights: np.ndarray | None = None,
    workers: int | Literal["auto"] = 0,
    **params: Any,
) -> FittedCustomerModel:
    """Fit a customer model of ``family`` (``glm`` or ``ensemble``) to logged conversations.

    Args:
        logs: validated schema-v1 conversations.
        family: ``glm`` (regularised multinomial / linear-Gaussian models) or ``ensemble``
            (K torch MLPs with a disagreement-based uncertainty).
        seed: drives every random choice of the fit (the ensemble's initial weights,
            bootstrap and batches).
        weighting: ``none``, ``propensity`` or ``sequential`` (see the module docstring,
            Confounding).
        penalty, min_support: pessimism (see the module docstring); they act at
            simulation time and can be changed later with :meth:`FittedCustomerModel.with_pessimism`.
        max_turns: conversations are cut off after this many decisions.
        weight_clip: upper clip of the stabilised inverse-propensity weights.
        csat_missing: ``selection`` (MNAR-corrected) or ``respondents``.
        conversation_weights: (n_conversations,) sampling weights of a sample of the logs
            (inverse inclusion probabilities, e.g. a stratified sample that keeps rare
            intents more often): the response, CSAT and intent-change models weigh every
            turn by its conversation's weight, and the pool of first states is redrawn in
            proportion to them, so the model describes the logs the sample was drawn from.
            ``None``: all 1.
        workers: worker processes (:func:`supportrl.workers.n_workers`; ``auto``: one per
            core on logs of at least ``AUTO_MIN_TURNS`` turns); above 1, the CSAT model is
            fitted on one while this process fits the response models (the same model:
            nothing of the fit depends on where it runs). 0 or 1: all in this process.
        **params: the family's hyperparameters (:class:`GLMParams` or
            :class:`~supportrl.simulators.fitted.ensemble.EnsembleParams` fields).

    What the logs could not teach (an action never taken, a single intent, no CSAT, ...)
    is listed in ``model.warnings`` and issued as :class:`FitWarning`.
    """
    config, family_params = fit_settings(
        family,
        seed=int(seed),
        weighting=weighting,
        penalty=float(penalty),
        min_support=int(min_support),
        max_turns=int(max_turns),
        weight_clip=float(weight_clip),
        csat_missing=csat_missing,
        **params,
    )
    if not isinstance(logs, LoggedConversations):
        raise TypeError(f"logs must be LoggedConversations, got {type(logs).__name__}")
    if logs.n_turns == 0:
        raise ValueError("logs: no turns to fit")
    return _fit(
        logs, config, family_params, conversation_weights, n_workers(workers, turns=logs.n_turns)
    )


def _fit(
    logs: LoggedConversations,
    config: FitConfig,
    family_params: FamilyParams,
    conversation_weights: np.ndarray | None,
    workers: int = 0,
) -> FittedCustomerModel:
    """:func:`fit_customer_model` on checked arguments: basis, weights, the response
    models, CSAT, intent changes, the first-state pool and support counts."""

    sampling = _sampling_weights(logs, conversation_weights)
    basis = logs_basis(logs, config.max_turns)
    state = basis.state_from_named(logs.states())
    phi = basis.phi(state)
    turn_sampling = None if sampling is None else sampling[logs.conversation_index]
    # the CSAT model needs neither the weights nor the response models: with workers it
    # is fitted on one meanwhile
    csat_job = submit(
        _csat_model, _csat_inputs(logs, phi, state, config, family_params, turn_sampling),
        workers=workers,
    )  # fmt: skip
    info: dict[str, Any] = {
        "source": logs.source,
        "conversations": logs.n_conversations,
        "turns": logs.n_turns,
        "basis": list(basis.names),
    }
    notes = _coverage_notes(logs, basis)
    weights, turn_sampling = _fit_weights(logs, basis, phi, config, sampling, info, notes)
    dynamics, handle_known = _fit_dynamics(
        logs, basis, phi, weights, config, family_params, info, notes
    )
    csat = _fit_terminal_csat(logs, info, notes, csat_job.get())
    trans = _intent_transitions(logs, basis, state, info, notes, sampling=turn_sampling)
    for note in notes:
        warnings.warn(note, FitWarning, stacklevel=3)
    return FittedCustomerModel(
        actions=tuple(logs.actions),
        config=config,
        params=family_params,
        feature_spec=basis.spec,
        dynamics=dynamics,
        csat=csat,
        intent_transition=trans,
        pool=state.take(_pool_rows(logs, sampling, config.seed)),
        support=support_counts(basis, state, logs.action.astype(np.int64), len(logs.actions)),
        handle_time_known=handle_known,
        warnings=notes,
        info=info,
    )


def _fit_weights(
    logs: LoggedConversations,
    basis: Basis,
    phi: np.ndarray,
    config: FitConfig,
    sampling: np.ndarray | None,
    info: dict[str, Any],
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each decision's fitting weight, shape (n_turns,): its confounding weight
    (:func:`decision_weights`) times its conversation's sampling weight; and each turn's
    sampling weight (None: all 1). Statistics go to ``info``, notes to ``notes``."""
    weights, stats, weight_notes = decision_weights(logs, basis, phi, config)
    if stats is not None:
        info["weights"] = stats
    notes.extend(weight_notes)
    turn_sampling = None if sampling is None else sampling[logs.conversation_index]
    if turn_sampling is not None:
        weights = weights * turn_sampling
        info["conversation_weights"] = {
            "min": float(sampling.min()),
            "max": float(sampling.max()),
            "effective_conversations": float(sampling.sum() ** 2 / (sampling**2).sum()),
        }
    return weights, turn_sampling


def _sampling_weights(
    logs: LoggedConversations, conversation_weights: np.ndarray | None
) -> np.ndarray | None:
    """Sampling weights per conversation scaled to mean 1, or None when absent or all equal."""
    if conversation_weights is None:
        return None
    w = np.asarray(conversation_weights, dtype=np.float64)
    if w.shape != (logs.n_conversations,):
        raise ValueError(
            f"conversation_weights: shape {w.shape}, expected ({logs.n_conversations},), one "
            "per conversation"
        )
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError("conversation_weights: every weight must be finite and above 0")
    if np.ptp(w) == 0:
        return None
    return w / w.mean()


def _pool_rows(logs: LoggedConversations, sampling: np.ndarray | None, seed: int) -> np.ndarray:
    """First turns of the pool: every conversation's, or, with sampling weights, as many
    drawn in proportion to the weights (the logs' mix of first states) by systematic
    resampling: each conversation appears floor or ceil of n x its weight share times."""
    first = logs.offsets[:-1]
    if sampling is None:
        return first
    n = logs.n_conversations
    start = np.random.default_rng([seed, 0x9001]).random()
    edges = np.cumsum(sampling) / sampling.sum()
    drawn = np.searchsorted(edges, (start + np.arange(n)) / n, side="right")
    return first[np.minimum(drawn, n - 1)]


def _coverage_notes(logs: LoggedConversations, basis: Basis) -> list[str]:
    """What the logs cannot teach: actions never or rarely taken, a single intent."""
    notes: list[str] = []
    counts = np.bincount(logs.action, minlength=len(logs.actions))
    for a, c in zip(logs.actions, counts, strict=True):
        if c == 0:
            notes.append(
                f"action {a!r} never occurs in the logs: its responses are extrapolated "
                "from the other actions (shared effects only)"
            )
        elif c < 50:
            notes.append(
                f"action {a!r} occurs only {c} times: its specific effects are mostly prior"
            )
    if len(basis.intents) == 1:
        notes.append(
            f"only one intent ({basis.intents[0]!r}) in the logs: intent effects and intent "
            "changes cannot be learned"
        )
    return notes


def _fit_dynamics(
    logs: LoggedConversations,
    basis: Basis,
    phi: np.ndarray,
    weights: np.ndarray,
    config: FitConfig,
    family_params: FamilyParams,
    info: dict[str, Any],
    notes: list[str],
) -> tuple[Dynamics, bool]:
    """The response model of ``config.family`` and whether handle times were logged.

    Targets: the outcome of each turn, the next turn's sentiment (NaN on last turns) and
    ``log1p(handle_time_s)`` (NaN where missing). Appends to ``info`` and ``notes``.
    """
    n, n_actions = logs.n_turns, len(logs.actions)
    action = logs.action.astype(np.int64)
    outcome = logs.outcome.astype(np.int64)
    has_next = ~logs.is_last
    next_sentiment = np.full(n, np.nan)
    next_sentiment[np.flatnonzero(has_next)] = logs.sentiment[np.flatnonzero(has_next) + 1]
    handle = np.asarray(logs.handle_time_s, dtype=np.float64)
    log_handle = np.log1p(np.maximum(handle, 0.0))
    handle_known = bool((~np.isnan(handle)).any())
    if not handle_known:
        notes.append("handle_time_s never logged: simulated handle time is 0 s (no time cost)")
    elif np.isnan(handle).any():
        notes.append(f"{int(np.isnan(handle).sum())} handle times missing: fitted on the rest")
    if not has_next.any():
        notes.append("no conversation has a second turn: sentiment and intent never change")
    dynamics: Dynamics
    if isinstance(family_params, GLMParams):
        dynamics = fit_glm(
            phi,
            action,
            outcome,
            next_sentiment,
            log_handle,
            weights,
            n_actions,
            family_params,
            info,
        )
    else:
        net = fit_ensemble(
            phi,
            action,
            outcome,
            next_sentiment,
            log_handle,
            logs.conversation_index,
            n_actions=n_actions,
            weights=weights,
            params=family_params,
            seed=config.seed,
        )
        dynamics = EnsembleDynamics(net=net)
    if not has_next.any() and isinstance(dynamics, GLMDynamics):
        # Nothing to regress on: sentiment stays as it is.
        coef = np.zeros_like(dynamics.sentiment.coef)
        coef[:, basis.names.index("sentiment")] = 1.0
        dynamics = dataclasses.replace(
            dynamics, sentiment=GaussianFit(coef=coef, sd=np.full(n_actions, 1e-6))
        )
    return dynamics, handle_known


def _csat_inputs(
    logs: LoggedConversations,
    phi: np.ndarray,
    state: FittedState,
    config: FitConfig,
    family_params: FamilyParams,
    sampling: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str, float, int]:
    """The arguments of :func:`_csat_model`: the CSAT design of the terminal turns, their
    logged CSAT, their sampling weights (``sampling``: per turn, None: all 1), the method,
    prior precision and torch threads."""
    action = logs.action.astype(np.int64)
    outcome = logs.outcome.astype(np.int64)
    terminal = np.flatnonzero(logs.is_last & (outcome != CONTINUE))
    psi = csat_design(
        phi[terminal],
        state.sentiment[terminal],
        action[terminal],
        outcome[terminal],
        len(logs.actions),
    )
    weights = None if sampling is None else sampling[terminal]
    return (
        psi,
        logs.csat[terminal],
        weights,
        config.csat_missing,
        family_params.l2,
        family_params.torch_threads,
    )


def _csat_model(
    psi: np.ndarray,
    csat: np.ndarray,
    weights: np.ndarray | None,
    method: str,
    l2: float,
    threads: int,
) -> CsatModel:
    """The CSAT model on terminal turns (MNAR-corrected unless ``method`` says not).

    Without confounding weights on purpose: the CSAT model conditions on the final state,
    action and outcome, OPE imputes *logged* rows with it (the observational conditional),
    and confounding weights make the answer rates g_k poorly identified. Sampling weights
    only restore the logs' mix of those rows."""
    return fit_csat(psi, csat, weights=weights, method=method, l2=l2, threads=threads)


def _fit_terminal_csat(
    logs: LoggedConversations, info: dict[str, Any], notes: list[str], csat: CsatModel
) -> CsatModel:
    """``csat`` (:func:`_csat_model` on the terminal turns) with its notes and ``info``."""
    outcome = logs.outcome.astype(np.int64)
    terminal = np.flatnonzero(logs.is_last & (outcome != CONTINUE))
    if len(terminal) == 0:
        notes.append(
            "no conversation ends (all cut off): CSAT cannot be learned and is uniform on 1..5"
        )
    n_answered = int((~np.isnan(logs.csat[terminal])).sum())
    if len(terminal) and n_answered == 0:
        notes.append(
            "no CSAT answer in the logs: CSAT cannot be learned and is uniform on 1..5 (mean 3); "
            "the CSAT part of any value is uninformative"
        )
    info["csat"] = {
        "terminal_turns": int(len(terminal)),
        "answered": n_answered,
        "method": csat.method,
        "response_rate_by_level": csat.response.round(4).tolist(),
    }
    return csat


def _intent_transitions(
    logs: LoggedConversations,
    basis: Basis,
    state: FittedState,
    info: dict[str, Any],
    notes: list[str],
    sampling: np.ndarray | None = None,
) -> np.ndarray:
    """P(next detected intent | intent, action) counted on consecutive logged turns (each
    weighted by its per-turn sampling weight when given).

    Shape (n_intents, n_actions, n_intents); one pseudo-count of "unchanged" per pair, so
    pairs never seen continuing keep their intent.
    """
    n_int, n_actions = len(basis.intents), len(logs.actions)
    action = logs.action.astype(np.int64)
    has_next = ~logs.is_last
    trans = np.zeros((n_int, n_actions, n_int))
    src = np.flatnonzero(has_next)
    counts = 1.0 if sampling is None else sampling[src]
    np.add.at(trans, (state.intent[src], action[src], state.intent[src + 1]), counts)
    seen = trans.sum(axis=2) > 0
    trans[np.arange(n_int), :, np.arange(n_int)] += 1.0  # one pseudo-count of "unchanged"
    trans /= trans.sum(axis=2, keepdims=True)
    unseen = int((~seen).sum())
    if unseen and n_int > 1 and has_next.any():
        info["unseen_intent_action_pairs"] = unseen
        notes.append(
            f"{unseen} of {n_int * n_actions} (intent, action) pairs never continue in the logs: "
            "their intent is assumed unchanged"
        )
    return trans


def impute_csat(
    logs: LoggedConversations,
    *,
    max_turns: int = DEFAULT_MAX_TURNS,
    l2: float = 1.0,
    threads: int = 1,
) -> tuple[np.ndarray, int]:
    """Impute missing terminal CSAT with a CSAT model fitted on ``logs`` alone.

    The same MNAR selection model as a fitted simulator's (``csat_missing="selection"``),
    without fitting the rest of the simulator: what off-policy evaluation needs. Returns
    the CSAT array (n_turns,) with every terminal turn filled and the number imputed.
    """
    terminal = np.flatnonzero(logs.outcome != CONTINUE)
    answered = ~np.isnan(logs.csat[terminal])
    if answered.all():
        return np.array(logs.csat, dtype=np.float64, copy=True), 0
    if not answered.any():
        raise ValueError(
            "csat: no conversation in the logs has a CSAT answer, so missing CSAT cannot be "
            "imputed; set reward.csat_weight=0 to evaluate without the CSAT term"
        )
    basis = logs_basis(logs, max_turns)
    state = basis.state_from_named(logs.states()).take(terminal)
    psi = csat_design(
        basis.phi(state),
        state.sentiment,
        logs.action[terminal],
        logs.outcome[terminal],
        len(logs.actions),
    )
    model = fit_csat(psi, logs.csat[terminal], method="selection", l2=l2, threads=threads)
    return impute_terminal_csat(logs, basis, model)
