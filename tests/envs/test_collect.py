"""The collector over the vector env: determinism, exact counts, and agreement with the world.

The env + collector is the project's one simulation path. These tests check it against
the ground-truth world's own sampler (its ``initial_state``/``step`` applied directly to
the conversations still running), and check that ``generate`` keeps the statistics the
earlier direct sampler produced.
"""

from __future__ import annotations

import numpy as np
import pytest
from supportrl.agents.base import ConstantPolicy, Policy, UniformPolicy, sample_actions
from supportrl.envs.collect import Collector, policy_value, simulate
from supportrl.envs.rewards import CONTINUE, RewardSpec
from supportrl.envs.vector import SupportVectorEnv
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs, true_value

N = 20_000


def direct_sample(
    world: SyntheticWorld, policy: Policy, n: int, seed: int
) -> dict[str, np.ndarray]:
    """Conversations from the world's own API, no env: per-conversation length, final outcome, return."""
    rng = np.random.default_rng(seed)
    reward = RewardSpec(max_turns=world.max_turns)
    costs = reward.action_cost_vector(world.actions)
    sees_hidden = bool(getattr(policy, "sees_hidden_state", False))
    state = world.initial_state(n, rng)
    active = np.arange(n)
    length = np.zeros(n, dtype=np.int64)
    final = np.zeros(n, dtype=np.int64)
    ret = np.zeros(n)
    for _ in range(world.max_turns):
        if not len(active):
            break
        probs = policy.action_probs(world.observe(state, hidden=sees_hidden))
        action = sample_actions(probs, rng)
        tr = world.step(state, action, rng)
        ret[active] += reward.turn_rewards(
            actions=action,
            outcomes=tr.outcome,
            handle_time_s=tr.handle_time_s,
            csat=tr.csat,
            action_costs=costs,
        )
        length[active] += 1
        final[active] = tr.outcome
        going = tr.outcome == CONTINUE
        active = active[going]
        state = tr.next_state.take(np.flatnonzero(going))
    return {"length": length, "final": final, "return": ret}


def collected(
    world: SyntheticWorld, policy: Policy, n: int, seed: int, **kw
) -> dict[str, np.ndarray]:
    sim = simulate(world, policy, n, seed=seed, **kw)
    logs = sim.logs
    return {
        "length": logs.lengths,
        "final": logs.outcome[logs.offsets[1:] - 1],
        "return": sim.returns(),
    }


def assert_same_distribution(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Means of length, return and final-outcome shares agree within 4 standard errors."""
    for key in ("length", "return"):
        se = np.sqrt(a[key].var() / len(a[key]) + b[key].var() / len(b[key]))
        assert abs(a[key].mean() - b[key].mean()) < 4 * se, key
    for k in range(4):
        pa, pb = (a["final"] == k).mean(), (b["final"] == k).mean()
        se = np.sqrt(pa * (1 - pa) / len(a["final"]) + pb * (1 - pb) / len(b["final"])) + 1e-9
        assert abs(pa - pb) < 4 * se, f"outcome {k}"


def test_same_seed_same_conversations_and_other_seed_differs() -> None:
    world = SyntheticWorld()
    a = simulate(world, UniformPolicy(world.actions), 500, seed=3)
    b = simulate(world, UniformPolicy(world.actions), 500, seed=3)
    c = simulate(world, UniformPolicy(world.actions), 500, seed=4)
    for name in ("offsets", "action", "outcome", "sentiment", "handle_time_s", "propensity"):
        assert np.array_equal(getattr(a.logs, name), getattr(b.logs, name))
    assert np.array_equal(a.reward, b.reward)
    assert not np.array_equal(a.logs.sentiment[:50], c.logs.sentiment[:50])


@pytest.mark.parametrize("policy_name", ["uniform", "logging", "clarify"])
def test_collector_agrees_with_the_worlds_own_sampler(policy_name: str) -> None:
    world = SyntheticWorld()
    policy = {
        "uniform": UniformPolicy(world.actions),
        "logging": world.logging_policy,  # reads the hidden state through infos["hidden_state"]
        "clarify": ConstantPolicy(world.actions, "clarify"),  # many conversations hit max_turns
    }[policy_name]
    assert_same_distribution(
        collected(world, policy, N, seed=1), direct_sample(world, policy, N, 2)
    )


def test_few_slots_do_not_bias_towards_short_conversations() -> None:
    """Conversations are returned by start order: 16 slots give the same lengths as N slots."""
    world = SyntheticWorld()
    policy = UniformPolicy(world.actions)
    few = collected(world, policy, 5000, seed=5, num_envs=16)
    assert_same_distribution(few, direct_sample(world, policy, N, 6))


def test_the_agreement_check_catches_end_order_bias() -> None:
    """The check has power: keeping the first conversations to *end* (not to start) fails it."""
    world = SyntheticWorld()
    n = 4000
    env = SupportVectorEnv(n, model=world, reward=RewardSpec(max_turns=world.max_turns))
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    turns, ret = np.zeros(n, dtype=np.int64), np.zeros(n)
    ended: dict[str, list] = {"length": [], "final": [], "return": []}
    while len(ended["length"]) < n:
        _, reward, term, trunc, infos = env.step(rng.integers(0, 6, size=n))
        turns += 1
        ret += reward
        done = term | trunc
        ended["length"].extend(turns[done].tolist())
        ended["final"].extend(infos["outcome"][done].tolist())
        ended["return"].extend(ret[done].tolist())
        turns[done], ret[done] = 0, 0.0
    by_end = {k: np.asarray(v[:n]) for k, v in ended.items()}
    with pytest.raises(AssertionError):
        assert_same_distribution(by_end, direct_sample(world, UniformPolicy(world.actions), N, 7))


def test_streaming_collect_returns_exactly_the_next_n_conversations() -> None:
    """Two calls of 50 give the same conversations as one call of 100: none lost, none twice."""
    world = SyntheticWorld()
    policy = UniformPolicy(world.actions)

    def run(sizes: tuple[int, ...]) -> list:
        collector = Collector(SupportVectorEnv(32, model=world))
        collector.reset(seed=0)
        rng = np.random.default_rng(0)
        return [collector.collect(policy, k, rng) for k in sizes]

    first, second = run((50, 50))
    (whole,) = run((100,))
    assert first.n_conversations == second.n_conversations == 50
    both = np.concatenate([first.logs.sentiment, second.logs.sentiment])
    assert np.array_equal(both, whole.logs.sentiment)
    assert np.array_equal(np.concatenate([first.reward, second.reward]), whole.reward)
    logs = whole.logs
    assert (logs.turn == np.concatenate([np.arange(k) for k in logs.lengths])).all()
    ended = logs.outcome[logs.offsets[1:] - 1] != CONTINUE
    assert (ended | (logs.lengths == world.max_turns)).all()
    assert (logs.outcome[~logs.is_last] == CONTINUE).all()


def test_policy_value_and_true_value_names() -> None:
    world = SyntheticWorld()
    policy = UniformPolicy(world.actions)
    assert true_value(policy, 2000, seed=1) == policy_value(policy, 2000, model=world, seed=1)
    with pytest.raises(TypeError, match="policy_value"):
        true_value(policy, 100, world=object())  # type: ignore[arg-type]


def test_logging_policy_needs_an_env_with_hidden_state() -> None:
    world = SyntheticWorld()
    collector = Collector(SupportVectorEnv(8, model=world))
    collector.reset(seed=0)
    with pytest.raises(ValueError, match="hidden_state=True"):
        collector.collect(world.logging_policy, 8, np.random.default_rng(0))


# Statistics of generate_logs before it ran on the collector: the earlier direct sampler,
# 400,000 conversations (seed 123), so their own Monte Carlo error is negligible here.
REFERENCE = {
    "mean_len": 2.5635,
    "final_outcome": [0.00083, 0.47516, 0.36715, 0.15686],
    "action_share": [0.18443, 0.30939, 0.22137, 0.12748, 0.03112, 0.12622],
    "csat_answered": 0.4145,
    "csat_mean_answered": 2.9327,
    "true_csat_mean": 2.9567,
    "customer_share_seen": 213177 / 280000,
}


def test_generate_keeps_its_statistics() -> None:
    n = 40_000
    gen = generate_logs(n, seed=9)
    logs = gen.logs
    last = logs.is_last
    assert abs(logs.lengths.mean() - REFERENCE["mean_len"]) < 4 * logs.lengths.std() / np.sqrt(n)
    finals = np.bincount(logs.outcome[last], minlength=4) / n
    for p, ref in zip(finals, REFERENCE["final_outcome"], strict=True):
        assert abs(p - ref) < 4 * np.sqrt(ref * (1 - ref) / n) + 1e-3
    shares = np.bincount(logs.action, minlength=6) / logs.n_turns
    for p, ref in zip(shares, REFERENCE["action_share"], strict=True):
        # turns within a conversation are correlated: allow twice the iid error
        assert abs(p - ref) < 8 * np.sqrt(ref * (1 - ref) / logs.n_turns)
    answered = ~np.isnan(logs.csat[last])
    ref = REFERENCE["csat_answered"]
    assert abs(answered.mean() - ref) < 4 * np.sqrt(ref * (1 - ref) / n)
    assert abs(np.nanmean(logs.csat[last]) - REFERENCE["csat_mean_answered"]) < 0.04
    assert abs(np.nanmean(gen.true_csat) - REFERENCE["true_csat_mean"]) < 0.03
    # customers come back: ~0.7 n customers in the pool, each conversation picks one
    seen = len(np.unique(logs.customer_id)) / len(gen.customers["customer_id"])
    assert abs(seen - REFERENCE["customer_share_seen"]) < 0.01
    assert set(np.unique(logs.customer_id)) <= set(gen.customers["customer_id"])
