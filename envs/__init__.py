"""Environments: SupportEnv (Gymnasium), the batched vector env, reward v1, observation encoding.

Importing this package registers ``SupportEnv-v0``: ``gymnasium.make("SupportEnv-v0")``
gives one conversation at a time and ``gymnasium.make_vec("SupportEnv-v0", num_envs=N)``
the numpy-batched :class:`SupportVectorEnv`.
"""

from gymnasium.envs.registration import register, registry

from envs.features import FeatureSpec, build_feature_spec
from envs.rewards import OUTCOMES, RewardSpec
from envs.support_env import SupportEnv
from envs.vector import SupportVectorEnv

ENV_ID = "SupportEnv-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="envs.support_env:SupportEnv",
        vector_entry_point="envs.vector:SupportVectorEnv",
    )

__all__ = [
    "ENV_ID",
    "OUTCOMES",
    "FeatureSpec",
    "RewardSpec",
    "SupportEnv",
    "SupportVectorEnv",
    "build_feature_spec",
]
