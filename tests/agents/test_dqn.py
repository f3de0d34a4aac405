"""DQN: n-step / Double-DQN / Huber by hand, masking, replay, determinism, checkpoints, CLI, RLlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from supportrl.agents.base import Policy
from supportrl.agents.dqn import (
    METRICS,
    DQNConfig,
    DQNLearner,
    QPolicy,
    ReplayBuffer,
    SumTree,
    build_q_network,
    dqn_targets,
    load_q_policy,
    n_step_returns,
    td_loss,
)
from supportrl.envs import SupportVectorEnv
from supportrl.simulators.synthetic import SyntheticWorld, true_value

from supportrl.outputs import write_complete
from tests.helpers import run_dir_of

G = 0.5


@pytest.fixture(autouse=True)
def one_torch_thread() -> object:
    """Small networks: one intra-op thread (as `train.torch_threads` sets it); OpenMP threads
    contending for 2 busy cores make tiny ops orders of magnitude slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(**overrides: object) -> DQNConfig:
    base = dict(
        total_steps=3_000,
        num_envs=8,
        hidden_sizes=(16, 16),
        batch_size=32,
        buffer_size=2_000,
        learning_starts=400,
        target_update_interval=200,
        log_interval=500,
    )
    base.update(overrides)
    return DQNConfig(**base)


def make_learner(config: DQNConfig, seed: int = 0) -> DQNLearner:
    return DQNLearner(
        config=config, env=SupportVectorEnv(config.num_envs, model=SyntheticWorld()), seed=seed
    )


# ---------------------------------------------------------------------- targets by hand


def test_n_step_returns_by_hand() -> None:
    rewards = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    ended = np.array(
        [
            [False, False, False],  # no end: 3 rewards, bootstrap gamma^3
            [False, True, False],  # terminated at step 1: 2 rewards, no bootstrap
            [True, False, False],  # truncated at step 0: 1 reward, bootstrap gamma^1
            [False, False, True],  # terminated at the last step: 3 rewards, no bootstrap
        ]
    )
    terminal = np.array([[False] * 3, [False, True, False], [False] * 3, [False, False, True]])
    returns, discounts, last = n_step_returns(rewards, ended, terminal, G)
    np.testing.assert_allclose(
        returns, [1 + G * 2 + G**2 * 3, 1 + G * 2, 1.0, 1 + G * 2 + G**2 * 3]
    )
    np.testing.assert_allclose(discounts, [G**3, 0.0, G, 0.0])
    np.testing.assert_array_equal(last, [2, 1, 0, 2])


def test_double_dqn_target_by_hand() -> None:
    q_online = torch.tensor([[1.0, 5.0, 2.0], [3.0, 0.0, 9.0]])
    q_target = torch.tensor([[10.0, 20.0, 30.0], [4.0, 5.0, 6.0]])
    returns = torch.tensor([1.0, -1.0])
    discounts = torch.tensor([0.5, 0.0])
    all_allowed = torch.ones(2, 3, dtype=torch.bool)
    # Double DQN: online argmax (1, 2) scored by the target net (20, 6).
    double = dqn_targets(q_target, returns, discounts, all_allowed, q_online)
    torch.testing.assert_close(double, torch.tensor([1.0 + 0.5 * 20.0, -1.0]))
    # Plain DQN: the target net's own max (30).
    plain = dqn_targets(q_target, returns, discounts, all_allowed)
    torch.testing.assert_close(plain, torch.tensor([1.0 + 0.5 * 30.0, -1.0]))
    # Masked: action 1 is not allowed in row 0, so the online argmax is action 2 (30).
    mask = torch.tensor([[True, False, True], [True, True, True]])
    masked = dqn_targets(q_target, returns, discounts, mask, q_online)
    torch.testing.assert_close(masked, torch.tensor([1.0 + 0.5 * 30.0, -1.0]))


def test_huber_td_loss_by_hand() -> None:
    q = torch.tensor([0.5, -2.0, 3.0, 0.0])
    targets = torch.zeros(4)
    weights = torch.tensor([1.0, 1.0, 0.5, 1.0])
    # |td| <= 1: td^2 / 2; else |td| - 1/2  (delta = 1)
    expected = (0.125 + 1.5 + 0.5 * 2.5 + 0.0) / 4
    assert td_loss(q, targets, weights).item() == pytest.approx(expected)
    # delta = 2: 3.0 -> 2 * (3 - 1) = 4; -2.0 -> 2.0
    assert td_loss(q, targets, torch.ones(4), delta=2.0).item() == pytest.approx(
        (0.125 + 2.0 + 4.0) / 4
    )


# ---------------------------------------------------------------------- replay


def test_replay_n_step_handles_autoreset_and_truncation() -> None:
    """One env column: steps 0..3, conversation ends (truncated) at step 1, then terminates at 3."""
    buf = ReplayBuffer(capacity=8, num_envs=1, obs_dim=1, n_actions=2, n_step=3, gamma=G)
    steps = [  # (obs, reward, next_obs, ended, terminal)
        (0.0, 1.0, 1.0, False, False),
        (1.0, 2.0, 9.0, True, False),  # truncated: next_obs is final_obs 9
        (10.0, 4.0, 11.0, False, False),
        (11.0, 8.0, 12.0, True, True),  # terminated
    ]
    for obs, r, nxt, ended, terminal in steps:
        buf.add(
            np.array([[obs]]), np.array([0]), np.array([r]), np.array([[nxt]]),
            np.array([ended]), np.array([terminal]), np.ones((1, 2), dtype=bool),
        )  # fmt: skip
    assert len(buf) == 2  # rows 2 and 3 wait for their look-ahead
    batch = buf.sample(64, np.random.default_rng(0))
    by_obs = {float(o[0]): i for i, o in enumerate(batch.obs)}
    assert set(by_obs) == {0.0, 1.0}
    i0, i1 = by_obs[0.0], by_obs[1.0]
    assert batch.returns[i0] == pytest.approx(1.0 + G * 2.0)  # stops at the truncation
    assert batch.discounts[i0] == pytest.approx(G**2)
    assert batch.next_obs[i0, 0] == 9.0  # bootstraps from final_obs, not the new conversation
    assert batch.returns[i1] == pytest.approx(2.0) and batch.discounts[i1] == pytest.approx(G)
    buf.mark_cut()  # a new training call: column ends at the newest row
    assert buf.ended[3].all()


def test_sum_tree_sampling_is_proportional() -> None:
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 0.0, 3.0, 0.0, 4.0]))
    assert tree.total == pytest.approx(8.0)
    np.testing.assert_array_equal(
        tree.find(np.array([0.0, 0.99, 1.0, 3.99, 4.0, 7.99])), [0, 0, 2, 2, 4, 4]
    )
    tree.set(np.array([2]), np.array([0.0]))
    assert tree.total == pytest.approx(5.0)


def test_prioritized_replay_weights_and_priorities() -> None:
    buf = ReplayBuffer(
        capacity=40, num_envs=4, obs_dim=1, n_actions=2, n_step=1, prioritized=True, alpha=1.0
    )
    for t in range(5):
        buf.add(
            np.full((4, 1), t, dtype=np.float32), np.zeros(4, dtype=np.int64), np.zeros(4),
            np.zeros((4, 1)), np.zeros(4, bool), np.zeros(4, bool), np.ones((4, 2), bool),
        )  # fmt: skip
    rng = np.random.default_rng(0)
    batch = buf.sample(16, rng, beta=1.0)
    np.testing.assert_allclose(batch.weights, 1.0)  # equal priorities -> equal weights
    priorities = np.full(20, 0.1)
    priorities[7] = 1.9  # P(7) = 1.9 / 3.8 = 0.5 with alpha 1 (per_eps is negligible)
    buf.update_priorities(np.arange(20), priorities)
    batch = buf.sample(64, rng, beta=1.0)
    assert np.mean(batch.index == 7) == pytest.approx(0.5, abs=0.05)  # stratified sampling
    assert batch.weights[batch.index == 7].max() < batch.weights[batch.index != 7].max()


# ---------------------------------------------------------------------- policy and masking


def test_q_policy_is_a_policy_with_ties_split_and_epsilon() -> None:
    world = SyntheticWorld()
    net = build_q_network(world.feature_spec.dim, len(world.actions), (8,), False, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    policy = QPolicy(actions=world.actions, feature_spec=world.feature_spec, network=net)
    assert isinstance(policy, Policy)
    states = world.observe(world.initial_state(5, np.random.default_rng(0)))
    np.testing.assert_allclose(policy.action_probs(states), 1 / 6)  # all tied
    with torch.no_grad():
        net.q.bias[3] = 1.0
    probs = policy.action_probs(states)
    np.testing.assert_array_equal(probs.argmax(axis=1), 3)
    np.testing.assert_allclose(probs.max(axis=1), 1.0)
    policy.epsilon = 0.3
    np.testing.assert_allclose(policy.action_probs(states)[:, 3], 0.7 + 0.3 / 6)
    mask = np.ones((5, 6), dtype=bool)
    mask[:, 3] = False
    masked = policy.action_probs(states, action_mask=mask)
    assert (masked[:, 3] == 0).all() and np.allclose(masked.sum(axis=1), 1.0)
    assert policy.act(states, np.random.default_rng(0)).shape == (5,)
    with pytest.raises(ValueError, match="obs: expected shape"):
        policy.q_values(np.zeros((2, 3)))


def test_acting_never_picks_masked_actions() -> None:
    learner = make_learner(small_config())
    obs, _ = learner.env.reset(seed=0)
    mask = np.zeros((8, 6), dtype=bool)
    mask[:, [1, 4]] = True
    for epsilon in (0.0, 0.5, 1.0):
        actions = np.concatenate([learner._act(obs, mask, epsilon) for _ in range(50)])
        assert set(np.unique(actions)) <= {1, 4}
    assert set(np.unique(actions)) == {1, 4}  # epsilon 1: uniform over the allowed pair


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.5}, "gamma: must be <= 1"),
        ({"num_envs": 0}, "num_envs: must be >= 1"),
        ({"hidden_sizes": "64"}, "hidden_sizes: expected a sequence"),
        ({"tau": 0.0}, "tau: must be > 0"),
        ({"dueling": "yes"}, "dueling: expected true or false"),
        ({"buffer_size": 10}, "buffer_size: must hold at least"),
        ({"learning_rate": float("nan")}, "learning_rate: must be finite"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DQNConfig(**kwargs)


def test_config_from_dict_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr'\]"):
        DQNConfig.from_dict({"lr": 0.1})
    cfg = DQNConfig.from_dict({"hidden_sizes": [32], "total_steps": 1000.0})
    assert cfg.hidden_sizes == (32,) and isinstance(cfg.total_steps, int)
    assert DQNConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------- learning loop


def test_truncation_stores_final_obs_and_bootstraps() -> None:
    learner = make_learner(small_config(start_epsilon=0.0, end_epsilon=0.0))
    with torch.no_grad():  # always "clarify": conversations run to max_turns often
        learner.network.advantage.bias[:] = torch.tensor([0, 0, 0, 10.0, 0, 0])
    learner.train(400, progress=False)
    rows = learner.replay.filled
    ended, terminal = learner.replay.ended[:rows], learner.replay.terminal[:rows]
    truncated = ended & ~terminal
    truncated[rows - 1] = False  # the cut row at the end of training is not a truncation
    assert truncated.any()
    turn_col = learner.feature_spec.names.index("turn")
    # final_obs of a truncated conversation is at turn max_turns (encoded 1.0), not turn 0
    np.testing.assert_allclose(learner.replay.next_obs[:rows][truncated][:, turn_col], 1.0)
    no_bootstrap = make_learner(small_config(bootstrap_on_truncation=False))
    no_bootstrap.train(2_000, progress=False)
    r = no_bootstrap.replay
    assert (r.terminal[: r.filled] == r.ended[: r.filled]).sum() > 0


def test_same_seed_same_run_and_other_seed_differs() -> None:
    def run(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
        learner = make_learner(small_config(prioritized=True, n_step=2), seed=seed)
        result = learner.train(progress=False)
        assert result.env_steps == 3_000 and result.updates > 0
        return result.curve["losses/td_loss"], [
            p.detach().numpy().copy() for p in learner.network.parameters()
        ]

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1][0], c[1][0])


class HideModel(gym.vector.VectorWrapper):
    """A user's own wrapper: forwards only the Gymnasium API (no ``actions``, no ``model``)."""

    def __getattr__(self, name: str) -> object:
        if name in ("actions", "model"):
            raise AttributeError(name)
        return super().__getattr__(name)


@pytest.mark.parametrize("wrapper", ["record_episode_statistics", "own"])
def test_a_wrapped_env_trains_dqn_exactly_like_the_bare_env(wrapper: str) -> None:
    """The learner reads spaces and info keys only, so a wrapper in front changes nothing."""
    config = small_config(total_steps=1_200)
    env = SupportVectorEnv(config.num_envs, model=SyntheticWorld())
    wrapped = (
        gym.wrappers.vector.RecordEpisodeStatistics(env)
        if wrapper == "record_episode_statistics"
        else HideModel(env)
    )
    assert not hasattr(wrapped, "actions") or wrapper != "own"
    learner = DQNLearner(config=config, env=wrapped, seed=0)
    result = learner.train(progress=False)
    bare = make_learner(config)
    bare_result = bare.train(progress=False)
    assert result.updates == bare_result.updates > 0
    for a, b in zip(learner.network.parameters(), bare.network.parameters(), strict=True):
        assert torch.equal(a, b)
    if wrapper == "record_episode_statistics":
        # the wrapper saw the same conversations end, with the same returns
        assert wrapped.episode_count == result.episodes > 0
        seen = np.asarray(wrapped.return_queue)
        assert np.isfinite(seen).all() and len(seen) > 0


def test_an_env_without_the_reset_infos_needs_actions_and_feature_spec() -> None:
    class NoCatalogue(gym.vector.VectorWrapper):
        def reset(self, **kwargs: object) -> tuple:
            obs, infos = self.env.reset(**kwargs)
            return obs, {k: v for k, v in infos.items() if k not in ("actions", "feature_spec")}

    config = small_config()
    world = SyntheticWorld()
    env = NoCatalogue(SupportVectorEnv(config.num_envs, model=world))
    with pytest.raises(ValueError, match="pass actions= and feature_spec="):
        DQNLearner(config=config, env=env, seed=0)
    learner = DQNLearner(
        config=config, env=env, seed=0, actions=world.actions, feature_spec=world.feature_spec
    )
    assert learner.train(500, progress=False).env_steps >= 500


def test_train_reports_metrics_with_fixed_names() -> None:
    """The callback gets every learning-curve row, as it is made, under the fixed names."""
    learner = make_learner(small_config())
    seen: list[tuple[int, dict[str, float]]] = []
    result = learner.train(callback=lambda s, m: seen.append((s, dict(m))), progress=False)
    assert (
        set(result.curve)
        == {"env_steps", *METRICS}
        == {
            "env_steps",
            "charts/episodic_return",
            "losses/td_loss",
            "losses/q_values",
            "charts/epsilon",
            "charts/SPS",
        }
    )
    assert [s for s, _ in seen] == list(result.curve["env_steps"])
    assert all(set(m) == set(METRICS) for _, m in seen)
    np.testing.assert_array_equal(
        [m["charts/episodic_return"] for _, m in seen], result.curve["charts/episodic_return"]
    )
    assert result.sps > 0 and result.episodes > 0 and not result.stopped
    assert result.policy is learner.policy and result.total_env_steps == learner.env_steps


def test_train_callback_stops_training_early() -> None:
    learner = make_learner(small_config())
    result = learner.train(callback=lambda steps, m: steps < 1_000, progress=False)
    # rows every 500 env steps (in vector steps of 8): it stops at the first row past 1,000
    assert result.stopped and 1_000 <= result.env_steps < 1_504
    assert list(result.curve["env_steps"])[-1] == result.env_steps == learner.env_steps
    again = learner.train(500, progress=False)  # it goes on from where it stopped
    assert again.total_env_steps == learner.env_steps >= result.env_steps + 500


def test_target_update_hard_and_polyak() -> None:
    for tau in (1.0, 0.25):
        learner = make_learner(small_config(tau=tau))
        before = [p.detach().clone() for p in learner.target.parameters()]
        with torch.no_grad():
            for p in learner.network.parameters():
                p.add_(1.0)
        learner._sync_target()
        for old, new, online in zip(
            before, learner.target.parameters(), learner.network.parameters(), strict=True
        ):
            torch.testing.assert_close(new, (1 - tau) * old + tau * online)


# ---------------------------------------------------------------------- checkpoints


def test_policy_checkpoint_round_trip(tmp_path: Path) -> None:
    learner = make_learner(small_config(total_steps=800))
    learner.train(progress=False)
    learner.policy.save(tmp_path / "policy")
    loaded = load_q_policy(tmp_path / "policy")
    world = SyntheticWorld()
    states = world.observe(world.initial_state(64, np.random.default_rng(1)))
    obs = world.feature_spec.encode(states)
    np.testing.assert_array_equal(loaded.q_values(obs), learner.policy.q_values(obs))
    np.testing.assert_array_equal(loaded.action_probs(states), learner.policy.action_probs(states))
    assert loaded.actions == world.actions and loaded.feature_spec == world.feature_spec
    data = json.loads((tmp_path / "policy" / "policy.json").read_text())
    data["format_version"] = 99
    (tmp_path / "policy" / "policy.json").write_text(json.dumps(data))
    write_complete(tmp_path / "policy", "dqn")
    with pytest.raises(ValueError, match="format_version 99 unsupported"):
        load_q_policy(tmp_path / "policy")
    with pytest.raises(ValueError, match="policy.json: missing"):
        load_q_policy(tmp_path / "nowhere")


@pytest.mark.parametrize("prioritized", [False, True])
def test_resume_with_replay_continues_identically(tmp_path: Path, prioritized: bool) -> None:
    config = small_config(total_steps=2_400, prioritized=prioritized)
    first = make_learner(config, seed=5)
    first.train(1_200, progress=False)
    first.save(tmp_path / "ckpt", include_replay=True)
    no_pickle = [np.load(p, allow_pickle=False) for p in (tmp_path / "ckpt").glob("*.npz")]
    assert len(no_pickle) == 3  # policy, learner, replay
    straight = first.train(progress=False)

    resumed = DQNLearner.load(
        tmp_path / "ckpt", SupportVectorEnv(config.num_envs, model=SyntheticWorld())
    )
    assert resumed.env_steps == 1_200
    again = resumed.train(progress=False)
    np.testing.assert_array_equal(straight.curve["losses/td_loss"], again.curve["losses/td_loss"])
    for x, y in zip(first.network.parameters(), resumed.network.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for x, y in zip(first.target.parameters(), resumed.target.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ---------------------------------------------------------------------- command line


def test_train_dqn_command_native_smoke(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "train",
        "agent=dqn",
        "backend=native",
        "train.total_steps=1024",
        "agent.learning_starts=256",
        "agent.log_interval=256",
        "train.eval_conversations=500",
        "train.save_replay=true",
        "logger.progress=false",
        f"paths.output_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = run_dir_of(proc)
    result = json.loads((run_dir / "result.json").read_text())
    assert {"agent", "backend", "env_steps", "wall_s", "sps", "final_return", "checkpoint"} <= set(
        result
    )
    assert result["agent"] == "dqn" and result["backend"] == "native"
    assert result["env_steps"] >= 1024 and result["best_known_policy"].startswith("rules_")
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header == (
        "env_steps,charts/episodic_return,losses/td_loss,losses/q_values,charts/epsilon,charts/SPS"
    )
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (Path(result["checkpoint"]) / "replay.npz").is_file()
    policy = load_q_policy(result["checkpoint"])
    assert policy.actions == SyntheticWorld().actions
    assert proc.stdout.strip().splitlines()[-1].startswith("train dqn (native): ")


# ---------------------------------------------------------------------- RLlib backend


def test_rllib_config_translates_the_dqn_config() -> None:
    pytest.importorskip("ray.rllib")
    from supportrl.agents.rllib import support_env_config, to_rllib_config
    from supportrl.simulators.synthetic import WorldConfig

    config = DQNConfig(num_envs=8, batch_size=64, updates_per_step=2.0, n_step=3, prioritized=True)
    env_config = support_env_config(world=WorldConfig())
    rl = to_rllib_config(config, env_config=env_config, seed=3)
    assert rl.num_envs_per_env_runner == 8 and rl.n_step == 3 and rl.train_batch_size == 64
    assert rl.training_intensity == pytest.approx(2.0 / 8 * 64)  # updates per env step * batch
    assert (
        rl.model_config["fcnet_hiddens"] == [64, 64] and rl.model_config["head_fcnet_hiddens"] == []
    )
    assert rl.replay_buffer_config["type"] == "PrioritizedEpisodeReplayBuffer"
    assert rl.epsilon == [(0, 1.0), (50_000, 0.05)]
    with pytest.raises(ValueError, match="supports 1.0 only"):
        to_rllib_config(DQNConfig(huber_delta=2.0), env_config=env_config)
    json.dumps(env_config)  # plain data, shippable to any worker


@pytest.mark.ray
@pytest.mark.slow
def test_rllib_backend_smoke_exposes_a_policy() -> None:
    """RLlib trains through the one shape (callback per iteration, False stops it), on a
    Ray it joins as a cluster (``address="local"``: a fresh one), to whose workers
    ``start_ray`` ships the whole package as ``py_modules``."""
    import ray
    from supportrl.agents.rllib import RLlibTrainer, support_env_config
    from supportrl.simulators.synthetic import WorldConfig

    world = SyntheticWorld()
    config = small_config(total_steps=300, learning_starts=100, num_envs=4, n_step=2)
    seen: list[tuple[int, dict[str, float]]] = []
    with RLlibTrainer(
        config,
        env_config=support_env_config(world=WorldConfig()),
        actions=world.actions,
        feature_spec=world.feature_spec,
        seed=0,
        address="local",
        progress=False,
    ) as trainer:
        result = trainer.train(callback=lambda s, m: seen.append((s, dict(m))))
        stopped = trainer.train(10_000, callback=lambda s, m: False)

        @ray.remote(num_cpus=0)
        def shipped_files() -> list[str]:
            """What the worker got as ``py_modules`` (on its ``sys.path``)."""
            import sys

            return sorted(
                path.name
                for entry in sys.path
                if "runtime_resources" in entry
                for path in Path(entry).glob("supportrl/*")
            )

        shipped = ray.get(shipped_files.remote())
    assert not ray.is_initialized()  # the trainer started Ray, so it shut it down
    # the whole package: the root modules and every subpackage, no bytecode caches
    assert {"__init__.py", "files.py", "outputs.py", "policy.py", "ray_runtime.py"} <= set(shipped)
    assert {"envs", "agents", "simulators", "ope", "serving", "experiments"} <= set(shipped)
    assert "__pycache__" not in shipped
    assert result.env_steps >= 300 and result.updates > 0 and not result.stopped
    assert [s for s, _ in seen] == list(result.curve["env_steps"])
    assert set(seen[-1][1]) == {"charts/episodic_return", "losses/td_loss", "charts/SPS"}
    assert stopped.stopped and len(stopped.curve["env_steps"]) == 1
    assert stopped.total_env_steps == result.env_steps + stopped.env_steps < 400
    states = world.observe(world.initial_state(32, np.random.default_rng(0)))
    probs = result.policy.action_probs(states)
    assert probs.shape == (32, 6) and np.allclose(probs.sum(axis=1), 1.0)
    native = result.policy.to_q_policy()
    obs = world.feature_spec.encode(states)
    np.testing.assert_allclose(native.q_values(obs), result.policy.q_values(obs), atol=1e-5)


@pytest.mark.ray
@pytest.mark.slow
def test_train_dqn_command_rllib_smoke(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "train",
        "agent=dqn",
        "backend=rllib",
        "train.total_steps=400",
        "agent.learning_starts=128",
        "agent.num_envs=8",
        "ray.num_cpus=2",
        "train.eval_conversations=500",
        "logger.progress=false",
        f"paths.output_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run_dir = run_dir_of(proc)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["backend"] == "rllib" and result["env_steps"] >= 400
    assert load_q_policy(result["checkpoint"]).actions == SyntheticWorld().actions
    assert (run_dir / "metrics.csv").read_text().startswith("env_steps,charts/episodic_return")


# ---------------------------------------------------------------------- learning


@pytest.mark.slow
def test_native_dqn_beats_the_logging_policy() -> None:
    world = SyntheticWorld()
    config = DQNConfig(total_steps=60_000)
    learner = DQNLearner(config=config, env=SupportVectorEnv(config.num_envs, model=world), seed=0)
    learner.train(progress=False)
    learned = true_value(learner.policy, 20_000, world=world, seed=11)
    logging = true_value(world.logging_policy, 20_000, world=world, seed=11)
    margin = 3 * np.hypot(learned.std_err, logging.std_err)
    assert learned.value > logging.value + margin


def test_rllib_env_creator_builds_the_fast_single_env() -> None:
    """RLlib's workers build SupportEnvs from env_config: on the scalar path unless told."""
    from supportrl.agents.rllib import make_support_env, support_env_config
    from supportrl.simulators.synthetic import WorldConfig

    for scalar in (True, False):
        env = make_support_env(support_env_config(world=WorldConfig(), scalar=scalar))
        env.reset(seed=0)
        assert env.uses_scalar_path is scalar
        assert env.step(1)[0].shape == env.observation_space.shape
