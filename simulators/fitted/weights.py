"""Confounding weights of the logged decisions (the module docstring of
:mod:`supportrl.simulators.fitted`, Confounding, says why and which)."""

from __future__ import annotations

from typing import Any

import numpy as np
from supportrl.envs.conversations import LoggedConversations
from supportrl.simulators.fitted.behaviour import fit_behaviour_policy
from supportrl.simulators.fitted.config import FitConfig
from supportrl.simulators.fitted.features import Basis
from supportrl.simulators.logs import PROPENSITY_FLOOR


def propensity_weights(
    propensity: np.ndarray,
    action: np.ndarray,
    n_actions: int,
    clip: float,
    *,
    offsets: np.ndarray | None = None,
    behaviour: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Stabilised, clipped inverse-propensity weights, shape (n,), and their statistics.

    Per decision, the factor is ``behaviour_i / p_i`` when ``behaviour`` (the probability
    of the logged action under a behaviour-cloned logger that sees only the logged state,
    shape (n,)) is given, else ``(1 / p_i) / mean_{j: a_j = a_i}(1 / p_j)``. Without
    ``offsets`` that factor is the weight; with ``offsets`` (shape (n_conversations + 1,))
    the weight is the product of the factors over the conversation's decisions up to and
    including ``i``, divided by its mean. Then ``min(w, clip)``.
    """
    if behaviour is not None:
        w = np.asarray(behaviour, dtype=np.float64) / propensity
    else:
        inv = 1.0 / propensity
        mean = np.bincount(action, weights=inv, minlength=n_actions) / np.maximum(
            np.bincount(action, minlength=n_actions), 1
        )
        w = inv / mean[action]
    if offsets is not None and len(w):
        log_w = np.log(w)
        cum = np.cumsum(log_w)
        before = cum[offsets[:-1]] - log_w[offsets[:-1]]
        w = np.exp(cum - np.repeat(before, np.diff(offsets)))
        w = w / w.mean()
    clipped = w > clip
    w = np.minimum(w, clip)
    ess = float(w.sum() ** 2 / (w**2).sum()) if len(w) else 0.0
    stats = {
        "max_weight": float(w.max()) if len(w) else 0.0,
        "clipped_share": float(clipped.mean()) if len(w) else 0.0,
        "effective_sample_size": ess,
    }
    return w, stats


def decision_weights(
    logs: LoggedConversations,
    basis: Basis,
    phi: np.ndarray,
    config: FitConfig,
) -> tuple[np.ndarray, dict[str, Any] | None, list[str]]:
    """Row weights of the response-model fit under ``config.weighting``, shape (n_turns,).

    Missing propensities are estimated by a behaviour-cloned logger (noted). Returns the
    weights (all 1 for ``none``), their statistics (None for ``none``) and notes.
    """
    n, notes = logs.n_turns, []
    if config.weighting == "none":
        return np.ones(n), None, notes
    action = logs.action.astype(np.int64)
    propensity = np.asarray(logs.propensity, dtype=np.float64)
    missing = np.isnan(propensity)
    behaviour = None
    if missing.any() or config.weighting == "sequential":
        bc = fit_behaviour_policy(logs, basis)
        cloned = bc.probs_of_design(phi)[np.arange(n), action]
        behaviour = cloned if config.weighting == "sequential" else None
    if missing.any():
        propensity = propensity.copy()
        propensity[missing] = np.clip(cloned[missing], PROPENSITY_FLOOR, 1.0)
        notes.append(
            f"{int(missing.sum())} of {n} propensities missing: estimated by a behaviour-cloned "
            "logging policy (these carry no unlogged confounders)"
        )
    weights, stats = propensity_weights(
        propensity,
        action,
        len(logs.actions),
        config.weight_clip,
        offsets=logs.offsets if config.weighting == "sequential" else None,
        behaviour=behaviour,
    )
    if stats["clipped_share"] > 0.01:
        notes.append(
            f"{stats['clipped_share']:.1%} of propensity weights clipped at {config.weight_clip:g}"
        )
    return weights, stats, notes
