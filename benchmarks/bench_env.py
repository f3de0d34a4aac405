"""Env throughput: SupportEnv vs CartPole-v1, single and vectorised, measured in one run.

    python -m benchmarks.bench_env [--steps 20000] [--vector-steps 200] [--repeats 3]

Random actions; single envs through ``gymnasium.make`` (with its default wrappers: both
carry OrderEnforcing and PassiveEnvChecker, CartPole also its TimeLimit) and vector envs
through ``gymnasium.make_vec`` with the same ``num_envs`` (CartPole's own numpy vector
env). Single-env figures are the median of ``--repeats`` runs, ours and CartPole's
interleaved so both see the same machine load. Besides the ground-truth world, the single
env runs over a glm simulator fitted to 2,000 generated conversations, on its scalar path
and on the batched path (``scalar=False``: what every single env stepped before).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from supportrl.envs import ENV_ID  # importing supportrl.envs registers it


def single_sps(env_id: str, steps: int, **kwargs: Any) -> float:
    env = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.action_space.n, size=steps).tolist()
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_sps(env_id: str, num_envs: int, steps: int) -> float:
    env = gym.make_vec(env_id, num_envs=num_envs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n_actions = env.single_action_space.n
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, n_actions, size=num_envs))
    return steps * num_envs / (time.perf_counter() - start)


def interleaved(ours: Any, anchor: Any, repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` alternating runs of two measurements."""
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(anchor())
    return statistics.median(a), statistics.median(b)


def fitted_glm() -> Any:
    from supportrl.simulators.fitted import fit_customer_model
    from supportrl.simulators.synthetic import generate_logs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit_customer_model(generate_logs(2000, seed=3).logs, "glm", seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--vector-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, repeats = args.steps, args.repeats
    cartpole = lambda: single_sps("CartPole-v1", steps)  # noqa: E731
    glm = fitted_glm()
    rows = [
        (
            "single env (world), steps/s",
            *interleaved(lambda: single_sps(ENV_ID, steps), cartpole, repeats),
        ),
        (
            "single env (world, batched path)",
            *interleaved(lambda: single_sps(ENV_ID, steps // 10, scalar=False), cartpole, repeats),
        ),
        (
            "single env (glm sim), steps/s",
            *interleaved(lambda: single_sps(ENV_ID, steps, model=glm), cartpole, repeats),
        ),
        (
            "single env (glm sim, batched path)",
            *interleaved(
                lambda: single_sps(ENV_ID, steps // 10, model=glm, scalar=False), cartpole, repeats
            ),
        ),
    ]
    for n in (1024, 4096):
        rows.append(
            (
                f"vector N={n}, customer-steps/s",
                vector_sps(ENV_ID, n, args.vector_steps),
                vector_sps("CartPole-v1", n, args.vector_steps),
            )
        )
    print(f"{'':<38}{'SupportEnv':>14}{'CartPole-v1':>14}{'ratio':>8}")
    for name, ours, anchor in rows:
        print(f"{name:<38}{ours:>14,.0f}{anchor:>14,.0f}{ours / anchor:>8.2f}")


if __name__ == "__main__":
    main()
