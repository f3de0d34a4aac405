"""Bandit agents: each support turn is one contextual decision.

Non-contextual bandits (:class:`EpsilonGreedy`, :class:`Softmax`, :class:`UCB1`,
:class:`BernoulliThompson`, :class:`GaussianThompson`) keep per-action statistics and ignore
the state; linear contextual bandits (:class:`LinUCB`, :class:`LinTS`) fit one ridge
regression per action on ``feature_spec.encode(states)`` plus an intercept.

Every bandit is a :class:`agents.base.Policy` over raw named state batches and learns with
``update(states, actions, rewards, weights=None)``. **Reward choice is the caller's:** a
bandit learns from whatever rewards it is given, whether the immediate per-turn reward
(reward contract v1, docs/reward.md) or the conversation's return from that turn on;
nothing here looks at outcomes or CSAT.

Build one by name with :func:`make_bandit` (kinds in :data:`BANDITS`), checkpoint it with
``bandit.save(dir)`` and read it back with :func:`load_bandit`; learn from logs without a
simulator with :func:`fit_offline`.
"""

from supportrl.agents.bandits._base import FORMAT_VERSION, Bandit, BanditUpdateStats
from supportrl.agents.bandits.linear import LinTS, LinUCB
from supportrl.agents.bandits.noncontextual import (
    UCB1,
    BernoulliThompson,
    EpsilonGreedy,
    GaussianThompson,
    Softmax,
)
from supportrl.agents.bandits.offline import OfflineFitStats, fit_offline
from supportrl.agents.bandits.registry import (
    BANDITS,
    hyperparameter_names,
    load_bandit,
    make_bandit,
)

__all__ = [
    "BANDITS",
    "FORMAT_VERSION",
    "UCB1",
    "Bandit",
    "BernoulliThompson",
    "EpsilonGreedy",
    "GaussianThompson",
    "LinTS",
    "LinUCB",
    "OfflineFitStats",
    "Softmax",
    "BanditUpdateStats",
    "fit_offline",
    "hyperparameter_names",
    "load_bandit",
    "make_bandit",
]
