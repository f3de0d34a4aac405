"""Bandits in the synthetic world: value and regret after 100k decisions, beside baselines.

    python -m benchmarks.bench_bandit_regret [--steps 100000] [--eval 50000]

Every registered bandit trains online (immediate reward v1, rounds of 256
conversations; the linear ones also with the conversation's reward-to-go); its final policy's true value is measured by Monte Carlo in the
ground-truth world beside uniform random, the logging policy and the best deterministic
rule policy in ``configs/rules/``. Regret is against the best of those baselines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from supportrl.agents.bandits import BANDITS, make_bandit
from supportrl.agents.base import UniformPolicy
from supportrl.agents.rules import load_rule_panel
from supportrl.agents.training import train_bandit
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.synthetic import SyntheticWorld, true_value

DEFAULTS = {
    "epsilon_greedy": {"epsilon": 0.1},
    "softmax": {"temperature": 0.1},
    "ucb1": {"c": 1.0},
    "thompson_bernoulli": {"reward_range": (-2.0, 2.0)},
    "thompson_gaussian": {},
    "linucb": {"alpha": 0.5},
    "lints": {"v": 0.3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--eval", type=int, default=50_000)
    args = parser.parse_args()
    world, reward = SyntheticWorld(), RewardSpec()
    configs = Path(__file__).resolve().parent.parent / "configs" / "rules"

    baselines = {"uniform": UniformPolicy(world.actions), "logging": world.logging_policy}
    rules = {
        name: true_value(p, args.eval, world=world, seed=1).value
        for name, p in load_rule_panel(configs, world.actions).items()
    }
    best_rule = max(rules, key=rules.__getitem__)
    rows = {
        name: true_value(p, args.eval, world=world, seed=1).value for name, p in baselines.items()
    }
    rows[f"best rule ({best_rule})"] = rules[best_rule]
    best = max(rows.values())
    timing = {}
    runs = [(kind, "immediate") for kind in BANDITS] + [("linucb", "return"), ("lints", "return")]
    for kind, mode in runs:
        name = kind if mode == "immediate" else f"{kind} (reward_mode=return)"
        agent = make_bandit(kind, world.actions, world.feature_spec, seed=0, **DEFAULTS[kind])
        start = time.perf_counter()
        train_bandit(
            agent, world, reward, total_steps=args.steps, reward_mode=mode, seed=0, progress=False
        )
        timing[name] = time.perf_counter() - start
        rows[name] = true_value(agent, args.eval, world=world, seed=1).value
    print(
        f"synthetic world, {args.steps} training decisions, true values by {args.eval} Monte Carlo conversations"
    )
    print(f"{'policy':<40}{'true value':>12}{'regret':>10}{'train s':>10}")
    for name, value in rows.items():
        t = f"{timing[name]:>10.1f}" if name in timing else f"{'':>10}"
        print(f"{name:<40}{value:>+12.4f}{best - value:>+10.4f}{t}")


if __name__ == "__main__":
    main()
