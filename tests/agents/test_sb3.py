"""Stable-Baselines3 models as supportrl policies: off-policy evaluation, export, serving."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from supportrl.agents.sb3 import SB3Policy
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.export import export_policy
from supportrl.experiments.stages import evaluate_stage, ope_settings
from supportrl.serving import Predictor
from supportrl.simulators.synthetic import generate_logs

from supportrl import ENV_ID  # importing supportrl registers the env ids

sb3 = pytest.importorskip("stable_baselines3")  # a dev dependency: `make setup` installs it


def _config(*overrides: str):
    """The composed config (the shipped defaults plus ``overrides``)."""
    from hydra import compose, initialize_config_dir
    from supportrl.experiments.repo_files import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def env() -> gym.Env:
    return gym.make(ENV_ID)


@pytest.fixture(scope="module")
def ppo(env: gym.Env):
    model = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    return model.learn(128)


def _policy(model, env: gym.Env, **kwargs) -> SB3Policy:
    world = env.unwrapped.model
    return SB3Policy(model, world.feature_spec, world.actions, **kwargs)


def test_ppo_policy_gives_the_models_distribution_on_raw_states(ppo, env) -> None:
    logs = generate_logs(60, seed=3).logs
    policy = _policy(ppo, env)
    probs = policy.action_probs(logs.states())
    assert probs.shape == (logs.n_turns, len(policy.actions))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    obs = env.unwrapped.model.feature_spec.encode(logs.states())
    greedy, _ = ppo.predict(obs, deterministic=True)
    assert (probs.argmax(axis=1) == greedy).all()
    mixed = _policy(ppo, env, epsilon=0.2).action_probs(logs.states())
    np.testing.assert_allclose(mixed, 0.8 * probs + 0.2 / len(policy.actions))


def test_a_ppo_policy_is_evaluated_off_policy_exported_and_served(ppo, env, tmp_path) -> None:
    logs = generate_logs(200, seed=5).logs
    policy = _policy(ppo, env)
    settings = ope_settings(_config("ope.n_refit=2", "ope.conversation_estimators=[wpdis,seq_dr]",
                                    "ope.decision_estimators=[snips]"))  # fmt: skip
    result = evaluate_stage(
        logs, RewardSpec(), {"ppo": policy.action_probs(logs.states())}, settings, seed=0
    )
    row = result.policies["ppo"]["seq_dr"]
    assert np.isfinite(row["estimate"]) and row["ci_low"] <= row["estimate"] <= row["ci_high"]

    artifact = export_policy(policy, tmp_path / "ppo", name="ppo", source=policy.source)
    predictor = Predictor.load(artifact)
    assert (
        predictor.kind == "onnx"
        and predictor.manifest["policy"]["model"] == "stable-baselines3 PPO"
    )
    states = logs.states()
    columns = {k: list(v[:50]) for k, v in states.items()}
    served = predictor.decide_batch(columns).probabilities
    expected = policy.action_probs({k: v[:50] for k, v in states.items()})
    np.testing.assert_allclose(served, expected, atol=1e-5)
    one = predictor.decide({k: v[0] for k, v in columns.items()})
    assert one.action in policy.actions


def test_an_sb3_dqn_exports_its_greedy_policy(env, tmp_path) -> None:
    model = sb3.DQN("MlpPolicy", env, learning_starts=0, buffer_size=500, seed=0, device="cpu")
    model.learn(64)
    policy = _policy(model, env, epsilon=0.1)
    logs = generate_logs(30, seed=1).logs
    probs = policy.action_probs(logs.states())
    obs = env.unwrapped.model.feature_spec.encode(logs.states())
    greedy, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(probs[np.arange(len(greedy)), greedy], 0.9 + 0.1 / 6)
    predictor = Predictor.load(export_policy(policy, tmp_path / "dqn"))
    served = predictor.decide_batch({k: list(v) for k, v in logs.states().items()}).probabilities
    np.testing.assert_allclose(served, probs, atol=1e-5)


def test_a_model_for_another_observation_is_refused(ppo, env) -> None:
    world = env.unwrapped.model
    cartpole = sb3.PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="is not the feature spec's"):
        SB3Policy(cartpole, world.feature_spec, world.actions)
    with pytest.raises(ValueError, match="does not match the 5 actions"):
        SB3Policy(ppo, world.feature_spec, world.actions[:5])
