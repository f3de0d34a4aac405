"""Env throughput: SupportEnv vs CartPole-v1, single and vectorised, measured in one run.

    python -m benchmarks.bench_env [--steps 20000] [--vector-steps 200]

Random actions; single envs through ``gymnasium.make`` (with its default wrappers) and
vector envs through ``gymnasium.make_vec`` with the same ``num_envs`` (CartPole's own
numpy vector env).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import supportrl.envs  # noqa: F401  (registers SupportEnv-v0)


def single_sps(env_id: str, steps: int) -> float:
    env = gym.make(env_id)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.action_space.n, size=steps)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--vector-steps", type=int, default=200)
    args = parser.parse_args()
    rows = [
        (
            "single env, steps/s",
            single_sps("SupportEnv-v0", args.steps),
            single_sps("CartPole-v1", args.steps),
        )
    ]
    for n in (1024, 4096):
        rows.append(
            (
                f"vector N={n}, customer-steps/s",
                vector_sps("SupportEnv-v0", n, args.vector_steps),
                vector_sps("CartPole-v1", n, args.vector_steps),
            )
        )
    print(f"{'':<34}{'SupportEnv':>14}{'CartPole-v1':>14}{'ratio':>8}")
    for name, ours, anchor in rows:
        print(f"{name:<34}{ours:>14,.0f}{anchor:>14,.0f}{ours / anchor:>8.2f}")


if __name__ == "__main__":
    main()
