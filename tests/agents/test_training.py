"""Online bandit training in the support env: reward-to-go, smoke runs, learning beats baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from supportrl.agents.bandits import load_bandit, make_bandit
from supportrl.agents.base import UniformPolicy
from supportrl.agents.training import BanditTrainer, reward_to_go, train_bandit
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.synthetic import SyntheticWorld, true_value

from tests.helpers import run_dir_of


def test_reward_to_go_by_hand() -> None:
    r = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    offsets = np.array([0, 3, 5])
    np.testing.assert_allclose(reward_to_go(r, offsets), [6.0, 5.0, 3.0, 30.0, 20.0])


@pytest.mark.parametrize("mode", ["immediate", "return"])
def test_train_bandit_smoke_and_determinism(mode: str) -> None:
    world = SyntheticWorld()

    def run() -> tuple[np.ndarray, np.ndarray]:
        agent = make_bandit("linucb", world.actions, world.feature_spec, seed=0, alpha=0.5)
        result = train_bandit(
            agent,
            world,
            RewardSpec(),
            total_steps=1500,
            conversations_per_round=100,
            reward_mode=mode,
            seed=3,
            best_value=0.0,
            progress=False,
        )
        assert result.env_steps >= 1500 and "charts/cumulative_regret" in result.curve
        probs = agent.action_probs(world.observe(world.initial_state(50, np.random.default_rng(0))))
        return result.curve["charts/episodic_return"], probs

    a, b = run(), run()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bandit_trainer_callback_sees_each_round_and_can_stop() -> None:
    """The one training shape: ``callback(env_steps, metrics)`` after each round; False stops."""
    world = SyntheticWorld()
    agent = make_bandit("ucb1", world.actions, seed=0)
    trainer = BanditTrainer(
        agent, world, RewardSpec(), conversations_per_round=20, best_value=0.0, progress=False
    )
    seen: list[tuple[int, dict[str, float]]] = []
    full = trainer.train(300, lambda s, m: seen.append((s, dict(m))))
    assert [s for s, _ in seen] == list(full.curve["env_steps"]) and len(seen) > 1
    assert set(seen[0][1]) == {"charts/episodic_return", "charts/cumulative_regret"}
    assert full.env_steps >= 300 and not full.stopped and full.policy is agent
    stopped = trainer.train(10_000, lambda s, m: False)
    assert stopped.stopped and len(stopped.curve["env_steps"]) == 1
    assert stopped.episodes == 20 and stopped.env_steps < 300
    assert stopped.total_env_steps == full.env_steps + stopped.env_steps == trainer.env_steps


def test_train_rejects_bad_reward_mode() -> None:
    world = SyntheticWorld()
    agent = make_bandit("ucb1", world.actions, seed=0)
    with pytest.raises(ValueError, match="reward_mode must be one of"):
        train_bandit(
            agent, world, RewardSpec(), total_steps=10, reward_mode="future", progress=False
        )


def test_train_command_writes_contract_result(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "train",
        "agent=lints",
        "train.total_steps=2000",
        "train.eval_conversations=500",
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
    assert result["agent"] == "lints" and result["env_steps"] >= 2000
    assert (run_dir / "metrics.csv").read_text().startswith("env_steps,charts/episodic_return")
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    agent = load_bandit(result["checkpoint"])
    assert agent.actions == SyntheticWorld().actions


def test_train_rejects_rule_policy_agent(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "train",
        "agent=rules_production",
        f"paths.output_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    # rule policies are not agents of `train`: they live in configs/rules/, not configs/agent/
    assert proc.returncode == 2 and "agent=rules_production: no such option" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_linucb_beats_uniform_and_logging_policy() -> None:
    world = SyntheticWorld()
    agent = make_bandit("linucb", world.actions, world.feature_spec, seed=0, alpha=0.5)
    train_bandit(agent, world, RewardSpec(), total_steps=100_000, seed=0, progress=False)
    learned = true_value(agent, 20_000, world=world, seed=11)
    uniform = true_value(UniformPolicy(world.actions), 20_000, world=world, seed=11)
    logging = true_value(world.logging_policy, 20_000, world=world, seed=11)
    margin = 3 * np.hypot(learned.std_err, logging.std_err)
    assert learned.value > uniform.value + margin
    assert learned.value > logging.value + margin


@pytest.mark.parametrize("target", ["ips", "dr"])
def test_train_offline_from_logs_command(tmp_path: Path, target: str) -> None:
    from supportrl.simulators.synthetic import generate_logs

    turns, customers = generate_logs(600, seed=5).write(tmp_path / "data")
    cmd = [
        sys.executable, "-m", "supportrl.experiments.cli", "train", "agent=linucb", "env=logs",
        f"env.target={target}", f"data.turns={turns}", f"data.customers={customers}",
        "ope.n_refit=10", f"paths.output_dir={tmp_path / 'out'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "imputed CSAT" in proc.stdout
    run_dir = run_dir_of(proc)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["env"] == "logs" and result["offline_target"] == target
    assert result["env_steps"] == len(pd.read_parquet(turns))
    assert load_bandit(result["checkpoint"]).actions == SyntheticWorld().actions


def test_train_offline_needs_conversation_logs(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        "train",
        "agent=linucb",
        "env=logs",
        f"paths.output_dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "data.turns is required" in proc.stderr


@pytest.mark.slow
def test_offline_dr_linucb_beats_the_logging_policy() -> None:
    from supportrl.agents.bandits import fit_offline
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.ope.models import cross_fit_reward
    from supportrl.simulators.synthetic import generate_logs

    gen = generate_logs(30_000, seed=2)
    logs = gen.logs

    def impute(lg):
        csat = lg.csat.copy()
        missing = np.isnan(csat) & (lg.outcome != 0)
        csat[missing] = gen.true_csat[missing]
        return csat, int(missing.sum())

    prepared = prepare_conversations(logs, RewardSpec(), csat_imputer=impute)
    target = reward_to_go(prepared.reward, logs.offsets)
    agent = make_bandit("linucb", logs.actions, prepared.feature_spec, seed=0, alpha=0.5)
    reward_hat = cross_fit_reward(
        prepared.x, logs.action, target, 6, groups=logs.conversation_index
    )
    fit_offline(
        agent,
        logs.states(),
        logs.action,
        target,
        logs.propensity,
        target="dr",
        reward_hat=reward_hat,
    )
    world = SyntheticWorld()
    learned = true_value(agent, 20_000, world=world, seed=3)
    logging = true_value(world.logging_policy, 20_000, world=world, seed=3)
    assert learned.value > logging.value + 3 * np.hypot(learned.std_err, logging.std_err)
