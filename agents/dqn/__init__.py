"""DQN for support conversations: native torch learner, exportable Q-policy, plain-file checkpoints.

* :class:`DQNConfig` -- hyperparameters (one config for the native and the RLlib backend);
* :class:`QNetwork` -- MLP with an optional dueling head;
* :class:`QPolicy` -- feature spec + network: the :class:`~agents.base.Policy` that gets
  exported; :func:`load_q_policy` reads one back;
* :class:`DQNLearner` -- collects from :class:`~envs.SupportVectorEnv`, owns replay, target
  network and optimizer; ``update()`` returns :class:`DQNUpdateStats`;
  ``train(total_steps, callback)`` returns the one
  :class:`~supportrl.agents.trainer.TrainResult`; ``save``/``load`` checkpoint it (optionally with the replay);
* :class:`ReplayBuffer`, :func:`n_step_returns`, :func:`dqn_targets`, :func:`td_loss` -- the pieces, exposed
  for tests and reuse.
"""

from supportrl.agents.dqn.config import DQNConfig, DQNUpdateStats
from supportrl.agents.dqn.learner import METRICS, DQNLearner, dqn_targets, td_loss
from supportrl.agents.dqn.network import QNetwork, build_q_network
from supportrl.agents.dqn.policy import QPolicy, load_q_policy
from supportrl.agents.dqn.replay import ReplayBuffer, ReplaySample, SumTree, n_step_returns

__all__ = [
    "METRICS",
    "DQNConfig",
    "DQNLearner",
    "QNetwork",
    "QPolicy",
    "ReplayBuffer",
    "ReplaySample",
    "SumTree",
    "DQNUpdateStats",
    "build_q_network",
    "dqn_targets",
    "load_q_policy",
    "n_step_returns",
    "td_loss",
]
