"""The single env's scalar path equals the batched models in distribution (and exactly where it can).

SupportEnv steps the world and glm simulators through their scalar sims
(:mod:`supportrl.envs.scalar`); the vector env steps the batched models. Same dynamics,
different random draws: these tests compare outcome shares, episode lengths and returns
over many episodes for several policies, and show that a deliberately wrong scalar step
fails the same comparison.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from supportrl.envs import SupportEnv, SupportVectorEnv
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import OUTCOMES
from supportrl.envs.scalar import RandomStream
from supportrl.simulators.fitted import FitWarning, fit_customer_model
from supportrl.simulators.fitted import scalar as fitted_scalar
from supportrl.simulators.fitted.csat import csat_design
from supportrl.simulators.fitted.features import FittedState
from supportrl.simulators.fitted.model import FittedCustomerModel
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs
from supportrl.simulators.synthetic import scalar as synthetic_scalar

Z_LIMIT = 4.0
"""Largest |z| allowed between the two paths (many comparisons, all seeded)."""
SINGLE_EPISODES = 6000
VECTOR_SLOTS, EPISODES_PER_SLOT = 400, 30

PolicyFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def policies(names: tuple[str, ...]) -> dict[str, PolicyFn]:
    """Policies on observations (n, dim) -> actions (n,): uniform, constant, state rule."""
    col = {name: i for i, name in enumerate(names)}
    other, sentiment = col.get("intent=other"), col["sentiment"]
    after_clarify = col["previous_action=clarify"]

    def uniform(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, 6, len(obs))

    def direct(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full(len(obs), 1)

    def rule(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # clarify an unknown intent once; soothe unhappy customers; else answer / link
        unknown = obs[:, other] > 0 if other is not None else np.zeros(len(obs), bool)
        act = np.where(obs[:, sentiment] < -0.2, 0, np.where(obs[:, after_clarify] > 0, 1, 2))
        return np.where(unknown & (obs[:, after_clarify] == 0), 3, act)

    return {"uniform": uniform, "direct_answer": direct, "rule": rule}


@dataclass
class Episodes:
    """Per episode: final outcome code (0 when truncated), length, return."""

    outcome: np.ndarray
    length: np.ndarray
    ret: np.ndarray


def single_episodes(model: CustomerModel, policy: PolicyFn, n: int, seed: int) -> Episodes:
    env = SupportEnv(model)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    assert env.uses_scalar_path
    rows, total, length = [], 0.0, 0
    while len(rows) < n:
        obs, reward, terminated, truncated, info = env.step(int(policy(obs[None], rng)[0]))
        total += reward
        length += 1
        if terminated or truncated:
            rows.append((OUTCOMES.index(info["outcome"]), length, total))
            total, length = 0.0, 0
            obs, _ = env.reset()
    out = np.array(rows)
    return Episodes(out[:, 0].astype(int), out[:, 1], out[:, 2])


def vector_episodes(model: CustomerModel, policy: PolicyFn, seed: int) -> Episodes:
    """The first EPISODES_PER_SLOT episodes of every slot: a fixed count per slot, so long
    episodes are not under-counted (stopping at a total count would cut them off)."""
    vec = SupportVectorEnv(VECTOR_SLOTS, model=model)
    rng = np.random.default_rng(seed)
    obs, _ = vec.reset(seed=seed)
    total, length = np.zeros(VECTOR_SLOTS), np.zeros(VECTOR_SLOTS)
    per_slot: list[list[tuple[int, float, float]]] = [[] for _ in range(VECTOR_SLOTS)]
    while min(map(len, per_slot)) < EPISODES_PER_SLOT:
        obs, reward, terminated, truncated, info = vec.step(policy(obs, rng))
        total += reward
        length += 1
        for k in np.flatnonzero(terminated | truncated):
            per_slot[k].append((int(info["outcome"][k]), length[k], total[k]))
            total[k], length[k] = 0.0, 0.0
    out = np.array([row for slot in per_slot for row in slot[:EPISODES_PER_SLOT]])
    return Episodes(out[:, 0].astype(int), out[:, 1], out[:, 2])


def largest_z(a: Episodes, b: Episodes) -> float:
    """Largest |difference| / SE over the outcome shares, mean length and mean return."""
    samples = [(a.outcome == k, b.outcome == k) for k in range(len(OUTCOMES))]
    samples += [(a.length, b.length), (a.ret, b.ret)]
    worst = 0.0
    for x, y in samples:
        x, y = np.asarray(x, float), np.asarray(y, float)
        se = np.sqrt(x.var() / len(x) + y.var() / len(y))
        diff = abs(x.mean() - y.mean())
        worst = max(worst, diff / se if se > 0 else (np.inf if diff > 0 else 0.0))
    return worst


def compare(model: CustomerModel, policy: PolicyFn, seed: int) -> float:
    single = single_episodes(model, policy, SINGLE_EPISODES, seed)
    vector = vector_episodes(model, policy, seed + 1000)
    return largest_z(single, vector)


@pytest.fixture(scope="module")
def glm() -> FittedCustomerModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit_customer_model(generate_logs(1500, seed=5).logs, "glm", seed=0)


WORLD_POLICIES = policies(SyntheticWorld().feature_spec.names)


# --------------------------------------------------------------------------- the stream


def test_random_stream_is_a_function_of_the_seed_and_draws_the_right_laws() -> None:
    a = RandomStream(np.random.default_rng(1), block=7)
    b = RandomStream(np.random.default_rng(1), block=7)
    draws = [(a.uniform(), a.normal()) for _ in range(20)]
    assert draws == [(b.uniform(), b.normal()) for _ in range(20)]
    s = RandomStream(np.random.default_rng(2))
    n = 40_000
    cdf = (0.5, 0.8, 1.0)
    shares = np.bincount([s.categorical(cdf) for _ in range(n)], minlength=3) / n
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.2], atol=4 * np.sqrt(0.25 / n))
    counts = np.array([s.poisson(0.9) for _ in range(n)])
    assert abs(counts.mean() - 0.9) < 4 * np.sqrt(0.9 / n)
    assert abs(counts.var() - 0.9) < 0.05
    z = np.array([s.normal() for _ in range(n)])
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.std() - 1) < 0.02


# --------------------------------------------------------------------------- the world


@pytest.mark.parametrize("name", sorted(WORLD_POLICIES))
def test_world_scalar_path_equals_the_batched_world_in_distribution(name: str) -> None:
    assert compare(SyntheticWorld(), WORLD_POLICIES[name], seed=1) < Z_LIMIT


def test_world_scalar_path_with_a_customer_pool() -> None:
    world = SyntheticWorld()
    pooled = world.with_customers(world.sample_customers(50, np.random.default_rng(0)))
    assert compare(pooled, WORLD_POLICIES["uniform"], seed=2) < Z_LIMIT


def test_a_wrong_world_scalar_step_fails_the_comparison(monkeypatch) -> None:
    """A transcription slip: direct_answer's complexity sensitivity typed 0.2 for 1.2."""
    wrong = list(synthetic_scalar.COMPLEXITY_SENSITIVITY)
    wrong[1] = 0.2
    monkeypatch.setattr(synthetic_scalar, "COMPLEXITY_SENSITIVITY", tuple(wrong))
    assert compare(SyntheticWorld(), WORLD_POLICIES["direct_answer"], seed=1) > Z_LIMIT


# --------------------------------------------------------------------------- fitted glm


def test_glm_scalar_sim_computes_the_batched_models_numbers(glm: FittedCustomerModel) -> None:
    """Exact agreement state by state: observation, raw state, support, every linear predictor."""
    model = glm.with_pessimism(penalty=1.0, min_support=5)
    env = SupportEnv(model)
    env.reset(seed=0)
    sim = env._sim
    assert isinstance(sim, fitted_scalar.GLMScalarSim)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        state = FittedState(
            turn=np.array([sim.turn]),
            previous_action=np.array([sim.previous_action]),
            intent=np.array([sim.intent]),
            sentiment=np.array([sim.sentiment]),
            categorical={
                k: np.array([c])
                for k, c in zip(sim.context_categorical, sim.cat_codes, strict=True)
            },
            numeric={
                k: np.array([x]) for k, x in zip(sim.context_numeric, sim.num_values, strict=True)
            },
        )
        np.testing.assert_array_equal(sim.observation(), model.observation(state)[0])
        assert sim.state() == {k: v[0].item() for k, v in model.observe(state).items()}
        assert sim.support_counts() == model.support_count(state)[0].tolist()
        np.testing.assert_array_equal(sim.action_mask(), model.action_mask(state)[0])
        phi = model.basis.phi(state)
        for a in range(len(model.actions)):
            v = np.array(sim.linear_predictors(a))
            act = np.array([a])
            pred = model.predict(state, act)
            np.testing.assert_allclose(v[:3], model.dynamics.outcome.logits(phi, act)[0, 1:])
            np.testing.assert_allclose(v[3], pred.sentiment_mean[0])
            np.testing.assert_allclose(v[4], pred.log_handle_mean[0])
            for outcome in (1, 2, 3):
                psi = csat_design(phi, state.sentiment, act, np.array([outcome]), 6)
                expected = model.csat.fit.logits(psi)[0]
                got = v[5:] + np.array(sim.csat_action[a]) + np.array(sim.csat_outcome[outcome - 1])
                got += sim.sentiment * np.array(sim.csat_outcome_sentiment[outcome - 1])
                np.testing.assert_allclose(got, expected[1:] - expected[0], atol=1e-9)
            checked += 1
        _, _, terminated, truncated, _ = env.step(int(rng.integers(6)))
        if terminated or truncated:
            env.reset()
    assert checked == 300 * 6


@pytest.mark.parametrize("name", ["uniform", "direct_answer", "rule"])
def test_glm_scalar_path_equals_the_batched_simulator_in_distribution(
    glm: FittedCustomerModel, name: str
) -> None:
    policy = policies(glm.feature_spec.names)[name]
    assert compare(glm, policy, seed=3) < Z_LIMIT


def test_glm_scalar_path_with_pessimism_equals_the_batched_simulator(
    glm: FittedCustomerModel,
) -> None:
    """Penalty and support mask on: unsupported actions end the conversation, CSAT 1."""
    model = glm.with_pessimism(penalty=1.0, min_support=20)
    policy = policies(model.feature_spec.names)["uniform"]
    assert compare(model, policy, seed=4) < Z_LIMIT


def test_a_wrong_glm_scalar_step_fails_the_comparison(
    glm: FittedCustomerModel, monkeypatch
) -> None:
    """A slip in the sentiment basis: the hinge knots shifted by one place."""
    knots = fitted_scalar.SENTIMENT_KNOTS
    monkeypatch.setattr(fitted_scalar, "SENTIMENT_KNOTS", (*knots[1:], 0.9))
    policy = policies(glm.feature_spec.names)["uniform"]
    assert compare(glm, policy, seed=3) > Z_LIMIT


# --------------------------------------------------------------------------- the env


def test_seeded_reset_restarts_the_scalar_stream() -> None:
    env = SupportEnv(SyntheticWorld())
    first = [env.reset(seed=9)[0]] + [env.step(1)[0] for _ in range(1)]
    again = [env.reset(seed=9)[0]] + [env.step(1)[0] for _ in range(1)]
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_scalar_false_steps_the_batched_model() -> None:
    env = SupportEnv(SyntheticWorld(), scalar=False)
    _, info = env.reset(seed=0)
    assert not env.uses_scalar_path
    fast = SupportEnv(SyntheticWorld())
    _, fast_info = fast.reset(seed=0)
    assert fast.uses_scalar_path
    assert set(info) == set(fast_info) and set(info["state"]) == set(fast_info["state"])
    for e in (env, fast):
        step_info = e.step(3)[4]
        assert set(step_info) == {"state", "action_mask", "outcome", "handle_time_s", "csat"}


def test_a_model_without_a_scalar_sim_steps_the_batched_way(glm: FittedCustomerModel) -> None:
    class Batched:  # a CustomerModel with no scalar_sim
        def __init__(self, model: FittedCustomerModel) -> None:
            self.model = model
            self.actions, self.max_turns = model.actions, model.max_turns
            self.feature_spec = model.feature_spec

        def initial_state(self, n, rng):
            return self.model.initial_state(n, rng)

        def observe(self, state, *, hidden=False):
            return self.model.observe(state)

        def step(self, state, action, rng):
            return self.model.step(state, action, rng)

        def action_mask(self, state):
            return self.model.action_mask(state)

    env = SupportEnv(Batched(glm))  # the single env falls back to the batched step
    env.reset(seed=0)
    assert not env.uses_scalar_path and env.step(1)[0].shape == (glm.feature_spec.dim,)
