"""Reward v1 against hand-computed values; the feature spec encoding."""

from __future__ import annotations

import numpy as np
import pytest
from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.rewards import OUTCOMES, RewardSpec
from supportrl.simulators.logs import DEFAULT_ACTIONS


def test_reward_v1_hand_computed() -> None:
    spec = RewardSpec()
    actions = np.array(
        [DEFAULT_ACTIONS.index(a) for a in ["empathize", "offer_credit", "direct_answer"]]
    )
    outcomes = np.array([OUTCOMES.index(o) for o in ["continue", "continue", "resolved"]])
    r = spec.rewards(
        actions=actions,
        outcomes=outcomes,
        handle_time_s=np.array([60.0, 30.0, 120.0]),
        csat=np.array([np.nan, np.nan, 5.0]),
        catalogue=DEFAULT_ACTIONS,
    )
    expected = [
        -0.05 - 0.02,
        -0.05 - 0.01 - 0.2,
        -0.05 - 0.04 + 1.0 + 0.5 * (5 - 3) / 2,
    ]
    np.testing.assert_allclose(r, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("outcome", "csat", "terminal"),
    [("escalated", 1.0, -0.3 - 0.5), ("abandoned", 3.0, -1.0), ("resolved", 4.0, 1.0 + 0.25)],
)
def test_terminal_rewards(outcome: str, csat: float, terminal: float) -> None:
    r = RewardSpec().rewards(
        actions=np.array([0]),
        outcomes=np.array([OUTCOMES.index(outcome)]),
        handle_time_s=np.array([0.0]),
        csat=np.array([csat]),
        catalogue=DEFAULT_ACTIONS,
    )
    assert r[0] == pytest.approx(-0.05 + terminal)


def test_reward_refuses_missing_values() -> None:
    spec = RewardSpec()
    common = dict(actions=np.array([0]), outcomes=np.array([1]), catalogue=DEFAULT_ACTIONS)
    with pytest.raises(ValueError, match="csat: 1 terminal turn"):
        spec.rewards(handle_time_s=np.array([1.0]), csat=np.array([np.nan]), **common)
    with pytest.raises(ValueError, match="handle_time_s: 1 missing"):
        spec.rewards(handle_time_s=np.array([np.nan]), csat=np.array([4.0]), **common)
    with pytest.raises(ValueError, match=r"unknown action\(s\) \['bribe'\]"):
        RewardSpec(action_costs={"bribe": -1.0}).action_cost_vector(DEFAULT_ACTIONS)
    with pytest.raises(ValueError, match="max_turns must be >= 1"):
        RewardSpec(max_turns=0)
    with pytest.raises(ValueError, match="reward version 2 unsupported"):
        RewardSpec(version=2)


def test_feature_spec_encodes_and_round_trips() -> None:
    states = {
        "turn": np.array([0, 2]),
        "previous_action": np.array(["none", "clarify"]),
        "intent": np.array(["billing", "other"]),
        "sentiment": np.array([-0.5, 0.5]),
        "tier": np.array(["pro", "free"]),
        "tenure_months": np.array([10.0, 30.0]),
    }
    spec = build_feature_spec(
        states, actions=DEFAULT_ACTIONS, categorical=["tier"], numeric=["tenure_months"]
    )
    x = spec.encode(states)
    assert x.shape == (2, spec.dim) and x.dtype == np.float32
    names = spec.names
    assert (
        x[0, names.index("intent=billing")] == 1
        and x[1, names.index("previous_action=clarify")] == 1
    )
    np.testing.assert_allclose(x[:, names.index("tenure_months")], [-1.0, 1.0])
    np.testing.assert_allclose(x[:, names.index("turn")], [0.0, 0.2])
    again = FeatureSpec.from_dict(spec.to_dict())
    np.testing.assert_array_equal(again.encode(states), x)
    bad = dict(states, tier=np.array(["pro", "platinum"]))
    with pytest.raises(
        ValueError, match=r"state variable 'tier': unknown value\(s\) \['platinum'\]"
    ):
        spec.encode(bad)
    with pytest.raises(ValueError, match=r"missing state variable\(s\) \['tier'\]"):
        spec.encode({k: v for k, v in states.items() if k != "tier"})
