"""SupportEnv and SupportVectorEnv: Gymnasium contract, determinism, single/vector agreement."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import supportrl.envs  # noqa: F401  (registers the env ids)
from gymnasium.utils.env_checker import check_env
from supportrl.envs import ENV_ID, ENV_ID_V0, LEGACY_ENV_ID, SupportEnv, SupportVectorEnv
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.synthetic import SyntheticWorld


def test_check_env_passes() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checker warnings either
        check_env(gym.make(ENV_ID).unwrapped)


def test_make_and_make_vec_use_our_classes() -> None:
    assert isinstance(gym.make(ENV_ID).unwrapped, SupportEnv)
    vec = gym.make_vec(ENV_ID, num_envs=8)
    assert isinstance(vec, SupportVectorEnv) and vec.num_envs == 8


def rollout_single(seed: int, steps: int) -> list[tuple]:
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trace = []
    for _ in range(steps):
        action = int(rng.integers(6))
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((obs.tobytes(), reward, terminated, truncated, info["outcome"]))
        if terminated or truncated:
            obs, info = env.reset()
    return trace


def test_same_seed_same_rollout() -> None:
    assert rollout_single(3, 200) == rollout_single(3, 200)
    assert rollout_single(3, 200) != rollout_single(4, 200)


def test_info_carries_raw_state_and_mask() -> None:
    env = SupportEnv(SyntheticWorld())
    obs, info = env.reset(seed=0)
    assert info["state"]["turn"] == 0 and info["state"]["previous_action"] == "none"
    assert info["action_mask"].shape == (6,) and info["action_mask"].all()
    assert len(info["feature_names"]) == obs.shape[0]
    _, _, terminated, _, info = env.step(3)  # clarify never resolves
    assert info["state"]["previous_action"] == "clarify" or terminated


def test_truncation_at_max_turns() -> None:
    env = SupportEnv(SyntheticWorld(), reward=RewardSpec(max_turns=2))
    env.reset(seed=1)
    for _ in range(2):
        _, _, terminated, truncated, _ = env.step(3)
        if terminated:
            pytest.skip("customer left before the cut-off")
    assert truncated


def test_bad_action_is_a_clear_error() -> None:
    env = SupportEnv(SyntheticWorld())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be in \[0, 6\)"):
        env.step(9)


def episode_returns_vector(n_episodes: int, seed: int) -> np.ndarray:
    vec = SupportVectorEnv(num_envs=256, model=SyntheticWorld())
    vec.reset(seed=seed)
    rng = np.random.default_rng(seed)
    running = np.zeros(vec.num_envs)
    returns: list[float] = []
    while len(returns) < n_episodes:
        _, r, term, trunc, _ = vec.step(rng.integers(0, 6, vec.num_envs))
        running += r
        done = term | trunc
        returns.extend(running[done].tolist())
        running[done] = 0.0
    return np.array(returns[:n_episodes])


def episode_returns_single(n_episodes: int, seed: int) -> np.ndarray:
    env = SupportEnv(SyntheticWorld())
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    returns, total = [], 0.0
    while len(returns) < n_episodes:
        _, r, term, trunc, _ = env.step(int(rng.integers(6)))
        total += r
        if term or trunc:
            returns.append(total)
            total = 0.0
            env.reset()
    return np.array(returns)


def test_vector_and_single_agree_in_distribution() -> None:
    single = episode_returns_single(1500, seed=1)
    vector = episode_returns_vector(6000, seed=2)
    se = np.sqrt(single.var() / len(single) + vector.var() / len(vector))
    assert abs(single.mean() - vector.mean()) < 4 * se
    # episode lengths agree too: share of one-turn conversations
    assert abs(np.mean(single < -0.5) - np.mean(vector < -0.5)) < 0.05


def test_vector_autoreset_same_step() -> None:
    vec = SupportVectorEnv(num_envs=64, model=SyntheticWorld())
    obs, infos = vec.reset(seed=0)
    for _ in range(20):
        obs, _, term, trunc, infos = vec.step(np.full(64, 5))  # escalate ends most conversations
        if (term | trunc).any():
            break
    done = term | trunc
    assert infos["_final_obs"].tolist() == done.tolist()
    turn_col = list(vec.model.feature_spec.names).index("turn")
    assert (obs[done, turn_col] == 0).all()  # already the next conversation
    assert infos["action_mask"].shape == (64, 6)


def test_world_fast_observation_matches_feature_spec() -> None:
    from supportrl.simulators.synthetic import SyntheticWorld

    world = SyntheticWorld()
    state = world.initial_state(300, np.random.default_rng(0))
    tr = world.step(state, np.random.default_rng(1).integers(0, 6, 300), np.random.default_rng(2))
    for s in (state, tr.next_state):
        np.testing.assert_allclose(
            world.observation(s), world.feature_spec.encode(world.observe(s)), atol=1e-6
        )


def test_vector_step_leaves_the_callers_actions_alone() -> None:
    vec = SupportVectorEnv(num_envs=32, model=SyntheticWorld())
    vec.reset(seed=0)
    actions = np.full(32, 5)
    for _ in range(5):
        vec.step(actions)
    assert (actions == 5).all()


def test_env_classes_need_a_model_and_the_registered_id_names_the_world() -> None:
    with pytest.raises(TypeError, match="model: required"):
        SupportEnv(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model: required"):
        SupportVectorEnv(4, model=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does not implement CustomerModel"):
        SupportVectorEnv(4, model=object())  # type: ignore[arg-type]
    assert isinstance(gym.make(ENV_ID).unwrapped.model, SyntheticWorld)
    assert isinstance(gym.make_vec(ENV_ID, num_envs=2).model, SyntheticWorld)


def test_vector_infos_follow_the_documented_contract() -> None:
    """infos["state"] is the raw named state behind every observation, autoreset rows included."""
    world = SyntheticWorld()
    vec = SupportVectorEnv(64, model=world, hidden_state=True)
    obs, infos = vec.reset(seed=0)
    assert infos["actions"] == world.actions and infos["feature_spec"] is world.feature_spec
    assert set(infos["state"]) == set(SupportEnv(world).reset(seed=0)[1]["state"])
    assert {"complexity", "true_intent"} <= set(infos["hidden_state"])
    np.testing.assert_allclose(world.feature_spec.encode(infos["state"]), obs, atol=1e-6)
    rng = np.random.default_rng(0)
    saw_autoreset = False
    for _ in range(12):
        obs, _, term, trunc, infos = vec.step(rng.integers(0, 6, size=64))
        for key in ("outcome", "handle_time_s", "csat", "penalty", "action_mask"):
            assert len(infos[key]) == 64, key
        assert np.isnan(infos["csat"][~term]).all() and not np.isnan(infos["csat"][term]).any()
        np.testing.assert_allclose(world.feature_spec.encode(infos["state"]), obs, atol=1e-6)
        done = term | trunc
        assert (infos["state"]["turn"][done] == 0).all()  # rows already restarted
        saw_autoreset |= bool(done.any())
    assert saw_autoreset


def test_the_id_version_names_the_seeded_behaviour() -> None:
    """v1 steps the world's scalar sim; the v0 ids keep v0's batched step (its seeded
    numbers), and make_vec works under both (the vector env has one way to step)."""
    assert ENV_ID == "supportrl/SupportEnv-v1"
    v1 = gym.make(ENV_ID).unwrapped
    v1.reset(seed=0)
    assert v1.uses_scalar_path
    for old in (ENV_ID_V0, LEGACY_ENV_ID):
        v0 = gym.make(old).unwrapped
        v0.reset(seed=0)
        assert not v0.uses_scalar_path
        plain = SupportEnv(SyntheticWorld(), scalar=False)
        np.testing.assert_array_equal(v0.reset(seed=3)[0], plain.reset(seed=3)[0])
        np.testing.assert_array_equal(v0.step(2)[0], plain.step(2)[0])
        vec, vec_v1 = gym.make_vec(old, num_envs=4), gym.make_vec(ENV_ID, num_envs=4)
        np.testing.assert_array_equal(vec.reset(seed=1)[0], vec_v1.reset(seed=1)[0])
