"""Simulation: the customer-model protocol, SupportEnv (Gymnasium), the batched vector env,
the collector, reward v1, observation encoding and the per-turn conversations type.

Two ways to step a model, no more: :class:`SupportVectorEnv` steps ``N`` conversations at
once in numpy, and every command steps it (through the :class:`Collector`: training,
evaluation, log generation, true values); :class:`SupportEnv` steps one conversation, in
the model's scalar sim when it has one, for Gymnasium users, Stable-Baselines3 and RLlib.
Tests hold the two equal in distribution.

``import supportrl`` registers ``supportrl/SupportEnv-v1``: ``gymnasium.make(ENV_ID)`` gives
one conversation at a time and ``gymnasium.make_vec(ENV_ID, num_envs=N)`` the numpy-batched
:class:`SupportVectorEnv`. The v0 ids (``supportrl/SupportEnv-v0``, alias ``SupportEnv-v0``)
stay registered with the behaviour they had: the single env steps the batched model
(``scalar=False``), so a seeded v0 run gives its old numbers.
"""

from supportrl.envs.collect import (
    Collector,
    PolicyValue,
    SimulatedConversations,
    StepBatch,
    policy_value,
    simulate,
)
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.model import CustomerModel, Transition
from supportrl.envs.rewards import DEFAULT_MAX_TURNS, OUTCOMES, RewardSpec
from supportrl.envs.support_env import SupportEnv
from supportrl.envs.vector import SupportVectorEnv

from supportrl import ENV_ID, ENV_ID_V0, LEGACY_ENV_ID  # importing supportrl registers them

__all__ = [
    "DEFAULT_MAX_TURNS",
    "ENV_ID",
    "ENV_ID_V0",
    "LEGACY_ENV_ID",
    "OUTCOMES",
    "Collector",
    "CustomerModel",
    "FeatureSpec",
    "LoggedConversations",
    "PolicyValue",
    "RewardSpec",
    "SimulatedConversations",
    "StepBatch",
    "SupportEnv",
    "SupportVectorEnv",
    "Transition",
    "build_feature_spec",
    "policy_value",
    "simulate",
]
