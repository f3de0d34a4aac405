"""Learn a bandit from logged decisions, without a simulator.

Two targets:

* ``"ips"``: importance-weighted updates. Row ``i`` (state ``x_i``, logged action ``a_i``,
  reward ``r_i``, logging propensity ``p_i``) updates action ``a_i``'s statistics with
  weight ``w_i = min(1 / p_i, clip)``; with ``normalize=True`` the weights are then scaled
  to mean 1 (``w_i * n / sum_j w_j``), which leaves every weighted mean unchanged and keeps
  the total weight, and so the strength of priors and ridge penalties, equal to ``n``.
  Weighting by ``1 / p`` makes the rows each action learns from look like a sample from the
  whole state distribution, rather than from the states where the logging policy liked
  that action (confounding).
* ``"dr"``: doubly robust pseudo-rewards (Dudik, Langford & Li 2011). With a reward model
  ``reward_hat`` (shape (n, K)), every row gives every action ``a`` the pseudo-reward
  ``reward_hat[i, a] + 1{a == a_i} * min(1 / p_i, clip) * (r_i - reward_hat[i, a_i])``, and
  every action's model is updated with all ``n`` rows (``n * K`` updates of weight 1). The
  pseudo-reward is unbiased for the action's reward when either the propensities or the
  reward model are right. Its values can leave the reward range (Bernoulli Thompson then
  needs a wide enough ``reward_range``).

The bandit learns from whatever rewards are given (immediate or conversation return).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from supportrl.agents.bandits._base import Bandit, check_real, check_vector
from supportrl.agents.bandits.linear import _LinearBandit
from supportrl.agents.base import States, batch_size

TARGETS = ("ips", "dr")


@dataclass(frozen=True)
class OfflineFitStats:
    """Diagnostics of one :func:`fit_offline` call."""

    target: str
    """``"ips"`` or ``"dr"``."""
    n_rows: int
    """Logged decisions used."""
    effective_sample_size: float
    """``(sum w)**2 / sum w**2`` of the clipped importance weights ``min(1/p, clip)``."""
    max_weight: float
    """Largest clipped importance weight."""
    n_clipped: int
    """Rows whose weight ``1/p`` exceeded ``clip``."""


def check_propensity(propensity: Any, n: int) -> np.ndarray:
    """Propensities as float64 (n,) in (0, 1]; ValueError naming the first bad rows."""
    p = np.asarray(propensity, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"propensity: expected shape ({n},), got {p.shape}")
    bad = ~((p > 0) & (p <= 1))  # NaN fails both comparisons
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"propensity: must be in (0, 1] (not NaN); first offending rows {rows} "
            f"(values {p[rows].tolist()})"
        )
    return p


def fit_offline(
    bandit: Bandit,
    states: States,
    actions: Any,
    rewards: Any,
    propensity: Any,
    *,
    target: Literal["ips", "dr"] = "ips",
    reward_hat: np.ndarray | None = None,
    clip: float | None = 100.0,
    normalize: bool = True,
) -> OfflineFitStats:
    """Update ``bandit`` in place from logged decisions; see the module docstring.

    Args:
        bandit: any registered bandit.
        states: raw named states of the logged decisions, arrays of shape (n,).
        actions: logged actions, shape (n,): indices into ``bandit.actions`` or labels.
        rewards: observed rewards, shape (n,).
        propensity: probability the logging policy gave the logged action, shape (n,), in (0, 1].
        target: ``"ips"`` (importance-weighted updates) or ``"dr"`` (doubly robust
            pseudo-rewards for every action).
        reward_hat: reward model predictions for every action, shape (n, K); required for
            ``"dr"``, ignored for ``"ips"``.
        clip: upper bound on the importance weight ``1 / p`` (None: no clipping).
        normalize: for ``"ips"``, scale the clipped weights to mean 1.

    Returns:
        Diagnostics of the importance weights.
    """
    if target not in TARGETS:
        raise ValueError(f"target: must be one of {TARGETS}, got {target!r}")
    if clip is not None:
        clip = check_real(clip, "clip", low=0.0, low_open=True)
    n = batch_size(states)
    idx = bandit.action_indices(actions, n)
    r = check_vector(rewards, "rewards", n)
    p = check_propensity(propensity, n)

    raw = 1.0 / p
    w = raw if clip is None else np.minimum(raw, clip)
    stats = OfflineFitStats(
        target=target,
        n_rows=n,
        effective_sample_size=float(w.sum() ** 2 / (w**2).sum()),
        max_weight=float(w.max()),
        n_clipped=0 if clip is None else int((raw > clip).sum()),
    )

    if target == "ips":
        if normalize:
            w = w * (n / w.sum())
        bandit.update(states, idx, r, weights=w)
        return stats

    k = bandit.n_actions
    if reward_hat is None:
        raise ValueError("reward_hat: required for target='dr' (shape (n, n_actions))")
    q = np.asarray(reward_hat, dtype=np.float64)
    if q.shape != (n, k):
        raise ValueError(f"reward_hat: expected shape ({n}, {k}), got {q.shape}")
    if not np.isfinite(q).all():
        rows = np.flatnonzero(~np.isfinite(q).all(axis=1))[:5].tolist()
        raise ValueError(f"reward_hat: non-finite values in rows {rows}")
    rows = np.arange(n)
    pseudo = q.copy()
    pseudo[rows, idx] += w * (r - q[rows, idx])
    # Row block a of the tiled batch holds every logged state, labelled with action a.
    tiled_actions = np.repeat(np.arange(k), n)
    tiled_rewards = pseudo.T.ravel()
    if isinstance(bandit, _LinearBandit):
        assert bandit.feature_spec is not None
        features = bandit.feature_spec.encode(states)
        bandit.update_encoded(np.tile(features, (k, 1)), tiled_actions, tiled_rewards)
    else:
        tiled = {name: np.tile(np.asarray(values), k) for name, values in states.items()}
        bandit.update(tiled, tiled_actions, tiled_rewards)
    return stats
