"""The ground-truth world: determinism, propensities, support gaps, true values."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.base import ConstantPolicy, UniformPolicy
from supportrl.envs.collect import simulate
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.logs import DEFAULT_ACTIONS
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs, true_value
from supportrl.simulators.synthetic.params import OFFER_CREDIT


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate_logs(500, seed=3).write(tmp_path / "a")
    b = generate_logs(500, seed=3).write(tmp_path / "b")
    c = generate_logs(500, seed=4).write(tmp_path / "c")
    assert [digest(p) for p in a] == [digest(p) for p in b]
    assert digest(a[0]) != digest(c[0])


def test_write_refuses_existing_directory(tmp_path: Path) -> None:
    gen = generate_logs(5, seed=0)
    gen.write(tmp_path / "d")
    with pytest.raises(ValueError, match="already exists"):
        gen.write(tmp_path / "d")


def test_logged_propensities_are_the_logging_policy_probabilities() -> None:
    world = SyntheticWorld()
    sim = simulate(world, world.logging_policy, 2000, seed=0)
    ro = sim.logs
    probs = world.logging_policy.action_probs({**ro.states(), **sim.hidden})
    np.testing.assert_allclose(probs[np.arange(len(ro.action)), ro.action], ro.propensity)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_support_gaps_remove_actions() -> None:
    gen = generate_logs(3000, seed=1)
    logs = gen.logs
    free = logs.features["tier"] == "free"
    assert not (free & (logs.action == OFFER_CREDIT)).any()
    assert not ((logs.turn == 0) & (logs.action == DEFAULT_ACTIONS.index("escalate_human"))).any()
    no_gaps = generate_logs(
        3000, seed=1, world=SyntheticWorld(WorldConfig(support_gaps=False))
    ).logs
    assert ((no_gaps.features["tier"] == "free") & (no_gaps.action == OFFER_CREDIT)).any()


def test_confounding_ties_escalation_to_hidden_complexity() -> None:
    gen = generate_logs(4000, seed=2)
    escalated = gen.logs.action[gen.logs.offsets[1:] - 1] == DEFAULT_ACTIONS.index("escalate_human")
    assert gen.complexity[escalated].mean() > gen.complexity[~escalated].mean() + 0.3
    flat = generate_logs(4000, seed=2, world=SyntheticWorld(WorldConfig(confounding=0.0)))
    esc = flat.logs.action[flat.logs.offsets[1:] - 1] == DEFAULT_ACTIONS.index("escalate_human")
    gap_flat = flat.complexity[esc].mean() - flat.complexity[~esc].mean()
    assert gap_flat < gen.complexity[escalated].mean() - gen.complexity[~escalated].mean()


def test_csat_is_missing_not_at_random() -> None:
    gen = generate_logs(6000, seed=5)
    terminal = ~np.isnan(gen.true_csat)
    observed = ~np.isnan(gen.logs.csat)
    assert (observed <= terminal).all()
    extreme = terminal & (np.abs(gen.true_csat - 3) == 2)
    middle = terminal & (gen.true_csat == 3)
    assert observed[extreme].mean() > observed[middle].mean() + 0.15


def test_true_value_is_deterministic_and_orders_obvious_policies() -> None:
    uniform = UniformPolicy(DEFAULT_ACTIONS)
    a = true_value(uniform, 4000, seed=1)
    assert a == true_value(uniform, 4000, seed=1)
    clarify = true_value(ConstantPolicy(DEFAULT_ACTIONS, "clarify"), 4000, seed=1)
    direct = true_value(ConstantPolicy(DEFAULT_ACTIONS, "direct_answer"), 4000, seed=1)
    assert clarify.value < a.value < direct.value
    assert a.std_err > 0


def test_simulation_respects_max_turns() -> None:
    world = SyntheticWorld()
    sim = simulate(
        world,
        ConstantPolicy(DEFAULT_ACTIONS, "clarify"),
        200,
        seed=0,
        reward=RewardSpec(max_turns=3),
    )
    ro = sim.logs
    assert ro.lengths.max() == 3  # clarify never resolves: some conversations reach the cut
    assert (ro.turn < 3).all()
    cut = ro.lengths == 3
    assert (ro.outcome[ro.offsets[1:] - 1][cut] == 0).any()  # censored: last outcome continue


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"confounding": -1}, "confounding must be >= 0"),
        ({"logging_epsilon": 2}, r"logging_epsilon must be in \[0, 1\]"),
        ({"max_turns": 0}, "max_turns must be >= 1"),
        ({"csat_response_rate": 0}, r"csat_response_rate must be in \(0, 1\]"),
    ],
)
def test_world_config_validation(kwargs, pattern) -> None:
    with pytest.raises(ValueError, match=pattern):
        WorldConfig(**kwargs)
