"""Environments: SupportEnv (Gymnasium), the batched vector env, reward v1, observation encoding.

``import supportrl`` registers ``supportrl/SupportEnv-v0`` (alias ``SupportEnv-v0``):
``gymnasium.make("supportrl/SupportEnv-v0")``
gives one conversation at a time and ``gymnasium.make_vec("supportrl/SupportEnv-v0", num_envs=N)``
the numpy-batched :class:`SupportVectorEnv`.
"""

from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.rewards import OUTCOMES, RewardSpec
from supportrl.envs.support_env import SupportEnv
from supportrl.envs.vector import SupportVectorEnv

from supportrl import ENV_ID, LEGACY_ENV_ID  # importing supportrl registers both ids

__all__ = [
    "ENV_ID",
    "LEGACY_ENV_ID",
    "OUTCOMES",
    "FeatureSpec",
    "RewardSpec",
    "SupportEnv",
    "SupportVectorEnv",
    "build_feature_spec",
]
