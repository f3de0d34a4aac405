"""Agents: the `Policy` protocol, rule policies, bandits, DQN (native torch) and the RLlib backend.

Modules: :mod:`supportrl.agents.base` (the protocol), :mod:`supportrl.agents.rules`,
:mod:`supportrl.agents.bandits`, :mod:`supportrl.agents.dqn`, :mod:`supportrl.agents.rllib`
(imports Ray on use), :mod:`supportrl.agents.training` (online bandit training) and
:mod:`supportrl.agents.trainer` (the one training shape: ``train(total_steps, callback) ->
TrainResult`` for bandits, native DQN and RLlib).
"""

from supportrl.agents.base import Policy, States

__all__ = ["Policy", "States"]
