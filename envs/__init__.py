"""Simulation: the customer-model protocol, SupportEnv (Gymnasium), the batched vector env
(the one stepping engine), the collector, reward v1, observation encoding and the per-turn
conversations type.

``import supportrl`` registers ``supportrl/SupportEnv-v0`` (alias ``SupportEnv-v0``):
``gymnasium.make("supportrl/SupportEnv-v0")``
gives one conversation at a time and ``gymnasium.make_vec("supportrl/SupportEnv-v0", num_envs=N)``
the numpy-batched :class:`SupportVectorEnv`. :class:`ScalarVectorEnv` steps a few
conversations through the model's scalar sims (faster than numpy for one to a few dozen).
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
from supportrl.envs.scalar_vector import ScalarVectorEnv
from supportrl.envs.support_env import SupportEnv
from supportrl.envs.vector import SupportVectorEnv

from supportrl import ENV_ID, LEGACY_ENV_ID  # importing supportrl registers both ids

__all__ = [
    "DEFAULT_MAX_TURNS",
    "ENV_ID",
    "LEGACY_ENV_ID",
    "OUTCOMES",
    "Collector",
    "CustomerModel",
    "FeatureSpec",
    "LoggedConversations",
    "PolicyValue",
    "RewardSpec",
    "ScalarVectorEnv",
    "SimulatedConversations",
    "StepBatch",
    "SupportEnv",
    "SupportVectorEnv",
    "Transition",
    "build_feature_spec",
    "policy_value",
    "simulate",
]
