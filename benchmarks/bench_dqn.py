"""Native DQN vs RLlib DQN on SupportEnv, in one run: speed, time to a good policy, final value.

    python -m benchmarks.bench_dqn [--budget 40000] [--eval-interval 2000] [--skip-rllib]

Both backends train from the same config (``configs/agent/dqn.yaml``; RLlib through
:func:`agents.rllib.to_rllib_config`): the same network (2x64 ReLU MLP, dueling head),
the same updates per env step (``updates_per_step / num_envs``), the same batch, n-step,
target and epsilon schedule, and the same budget of env steps. Measured:

* **env steps/s**: env steps / seconds of training (native: collection + updates;
  RLlib: time inside ``algo.train()``, so Ray start-up and algorithm build are left out and
  reported apart); evaluations are never timed.
* **time to 95% of best**: the greedy policy's true value is estimated every
  ``--eval-interval`` env steps with ``--eval-conversations`` conversations of the
  synthetic world; the first evaluation at or above ``best - 0.05 * |best|`` (best = the
  best deterministic rule policy in ``configs/rules/rules_*.yaml``, by true value) counts.
  Written that way because values can be negative; with best ~ +0.12 the bar is ~ +0.117.
* **final value** (true value, 50k conversations) of native DQN at the shared budget and
  with the full default config, of RLlib at the shared budget, against the best bandit
  (LinUCB trained on conversation return, ``agents.training.train_bandit``) and the best
  rule policy.

A second speed row uses the setting of the issue's reference figures: one update of batch
32 per env step, one env (``num_envs=1``, ``updates_per_step=1``, ``batch_size=32``). There
the native learner steps ``SupportVectorEnv(1)`` (what ``supportrl train agent=dqn
agent.num_envs=1`` runs), Stable-Baselines3 and RLlib step ``gymnasium.make("supportrl/SupportEnv-v1")`` envs (the
same scalar path). Stable-Baselines3 (``pip install -e ".[bench]"``; skipped with a message
when absent) runs its own DQN with the same network widths, learning rate, batch, buffer,
updates per env step, target interval, epsilon schedule and gradient clipping; it has no
dueling head, Double DQN or n-step returns, so its updates are slightly cheaper than ours.
Speed rows are medians of ``--repeats`` runs, backends interleaved.

Goals (issue #14): native >= 30x RLlib's env steps/s at the default config; >= 3x SB3
at one update of batch 32 per env step; 95% of the best known value within 60 s.
Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from supportrl.agents.bandits import make_bandit
from supportrl.agents.dqn import DQNConfig, DQNLearner
from supportrl.agents.rules import load_rule_panel
from supportrl.agents.training import train_bandit
from supportrl.envs import ENV_ID, RewardSpec, SupportVectorEnv
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, true_value

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "agent"
EVAL_SEED = 123
FINAL_CONVERSATIONS = 50_000


def default_config(backend: str = "native", **overrides: Any) -> DQNConfig:
    """``configs/agent/dqn.yaml`` as a DQNConfig for ``backend``, with overrides.

    ``n_step: null`` resolves as ``supportrl train`` resolves it: 3 native, 1 with RLlib.
    """
    params = yaml.safe_load((CONFIGS / "dqn.yaml").read_text())
    params.pop("kind")
    if params.get("n_step") is None:
        params["n_step"] = 1 if backend == "rllib" else 3
    params.update(overrides)
    return DQNConfig.from_dict(params)


class Tracker:
    """Evaluation callback: true value of the greedy policy every ``interval`` env steps;
    first time it reaches the bar."""

    def __init__(self, world: SyntheticWorld, bar: float, n: int) -> None:
        self.world, self.bar, self.n = world, bar, n
        self.evals: list[tuple[int, float]] = []
        self.hit: tuple[int, float] | None = None
        self.eval_s = 0.0
        self.started = time.perf_counter()
        self.policy_of: Any = None
        """The policy being trained, when asked (set by :meth:`watch`)."""
        self.interval = 0
        self._next = 0

    def watch(self, policy_of: Any, interval: int) -> None:
        """Evaluate ``policy_of()`` every ``interval`` env steps from now on."""
        self.policy_of, self.interval, self._next = policy_of, interval, interval
        self.started = time.perf_counter()

    def __call__(self, env_steps: int, metrics: Any) -> None:
        if self.interval <= 0 or env_steps < self._next:
            return
        self._next = (env_steps // self.interval + 1) * self.interval
        tick = time.perf_counter()
        value = true_value(self.policy_of(), self.n, world=self.world, seed=EVAL_SEED).value
        self.evals.append((env_steps, value))
        if self.hit is None and value >= self.bar:
            # training seconds so far: wall since start minus evaluation time
            self.hit = (env_steps, tick - self.started - self.eval_s)
        self.eval_s += time.perf_counter() - tick


def run_native(
    config: DQNConfig,
    world: SyntheticWorld,
    tracker: Tracker | None,
    interval: int,
):
    if tracker is not None:  # a learning-curve row, hence a callback, every `interval` steps
        config = dataclasses.replace(config, log_interval=interval)
    learner = DQNLearner(config=config, env=SupportVectorEnv(config.num_envs, model=world), seed=0)
    if tracker is not None:
        tracker.watch(lambda: learner.policy, interval)
    result = learner.train(callback=tracker, progress=False)
    return result, learner.policy


def run_sb3(config: DQNConfig, steps: int) -> float | None:
    """Stable-Baselines3 DQN env steps/s at ``config`` on ``config.num_envs`` SupportEnvs
    (its DummyVecEnv); None when SB3 is not installed."""
    try:
        from stable_baselines3 import DQN
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        return None
    env = make_vec_env(ENV_ID, n_envs=config.num_envs, seed=0)
    model = DQN(
        "MlpPolicy",
        env,
        learning_rate=config.learning_rate,
        buffer_size=config.buffer_size,
        learning_starts=config.learning_starts,
        batch_size=config.batch_size,
        gamma=config.gamma,
        train_freq=1,  # every vector step, like the native learner
        gradient_steps=max(1, round(config.updates_per_step)),
        target_update_interval=config.target_update_interval,
        exploration_fraction=config.exploration_fraction,
        exploration_initial_eps=config.start_epsilon,
        exploration_final_eps=config.end_epsilon,
        max_grad_norm=config.max_grad_norm or float("inf"),
        policy_kwargs={"net_arch": list(config.hidden_sizes)},
        seed=0,
        device="cpu",
    )
    tick = time.perf_counter()
    model.learn(total_timesteps=steps)
    return steps / (time.perf_counter() - tick)


def median_sps(runs: list[Any]) -> float:
    values = [r for r in runs if r is not None]
    return statistics.median(values) if values else float("nan")


def run_rllib(config: DQNConfig, world: SyntheticWorld, tracker: Tracker | None, interval: int):
    import ray
    from supportrl.agents.rllib import RLlibTrainer, support_env_config

    tick = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        with RLlibTrainer(
            config,
            env_config=support_env_config(world=WorldConfig()),
            actions=world.actions,
            feature_spec=world.feature_spec,
            seed=0,
            progress=False,
        ) as trainer:
            if tracker is not None:  # the policy exists once train() has built the algorithm
                tracker.watch(lambda: trainer.policy, interval)
            result = trainer.train(callback=tracker)
    finally:
        ray.shutdown()
    overhead = time.perf_counter() - tick - result.wall_s - (tracker.eval_s if tracker else 0.0)
    if tracker is not None and tracker.hit is not None:
        # the tracker's clock started before the algorithm was built: count training only
        steps, seconds = tracker.hit
        tracker.hit = (steps, seconds - (result.build_s or 0.0))
    return result, result.policy.to_q_policy(), overhead


def fmt_hit(tracker: Tracker | None) -> str:
    if tracker is None:
        return "-"
    if tracker.hit is None:
        return "not reached"
    steps, seconds = tracker.hit
    return f"{seconds:.1f} s ({steps:,} st)"


def fmt_evals(tracker: Tracker) -> str:
    return " ".join(f"{steps // 1000}k:{v:+.3f}" for steps, v in tracker.evals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=40_000, help="env steps, every backend")
    parser.add_argument("--eval-interval", type=int, default=2_000)
    parser.add_argument("--eval-conversations", type=int, default=5_000)
    parser.add_argument("--reference-steps", type=int, default=1_200)
    parser.add_argument("--bandit-steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per speed figure (median)")
    parser.add_argument("--skip-rllib", action="store_true")
    parser.add_argument(
        "--speed-only", action="store_true", help="env steps/s only: no evaluations, no values"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("ray").setLevel(logging.ERROR)

    world = SyntheticWorld()
    bar = best = float("nan")
    best_rule = "-"
    if not args.speed_only:
        rules = {
            name: true_value(p, FINAL_CONVERSATIONS, world=world, seed=7).value
            for name, p in load_rule_panel(CONFIGS.parent / "rules", world.actions).items()
        }
        best_rule = max(rules, key=rules.__getitem__)
        best = rules[best_rule]
        bar = best - 0.05 * abs(best)
        print(f"best rule policy: {best_rule} {best:+.4f}; bar (best - 5% |best|): {bar:+.4f}")
    if importlib.util.find_spec("stable_baselines3") is None:
        print("stable-baselines3 not installed: SB3 columns skipped (pip install -e '.[bench]')")

    shared = default_config(total_steps=args.budget)
    print(
        f"shared config: hidden {list(shared.hidden_sizes)} dueling={shared.dueling}, "
        f"num_envs {shared.num_envs}, {shared.updates_per_env_step:.4f} updates/env step, "
        f"batch {shared.batch_size}, n_step {shared.n_step}, budget {args.budget:,} env steps",
        flush=True,
    )
    interval = 0 if args.speed_only else args.eval_interval

    def tracker() -> Tracker | None:
        return None if args.speed_only else Tracker(world, bar, args.eval_conversations)

    def value(policy: Any) -> float:
        return true_value(policy, FINAL_CONVERSATIONS, world=world, seed=11).value

    t_native = tracker()
    native, native_policy = run_native(shared, world, t_native, interval)
    print(f"native: {native.sps:,.0f} env steps/s, {fmt_hit(t_native)}", flush=True)
    if t_native is not None:
        print(f"  evaluations: {fmt_evals(t_native)}", flush=True)
    sb3_default = median_sps([run_sb3(shared, args.budget)])
    print(f"sb3: {sb3_default:,.0f} env steps/s", flush=True)

    rl_sps = rl_value = rl_overhead = None
    t_rl = None
    if not args.skip_rllib:
        t_rl = tracker()
        rl_config = default_config("rllib", total_steps=args.budget)
        rl, rl_policy, rl_overhead = run_rllib(rl_config, world, t_rl, interval)
        rl_sps = rl.sps
        rl_value = None if args.speed_only else value(rl_policy)
        print(
            f"rllib: {rl_sps:,.0f} env steps/s ({rl.updates / rl.env_steps:.4f} updates/env "
            f"step), {fmt_hit(t_rl)}, start-up {rl_overhead:.1f} s",
            flush=True,
        )
        if t_rl is not None:
            print(f"  evaluations: {fmt_evals(t_rl)}", flush=True)
    rows = [
        (
            f"default ({shared.updates_per_env_step:.3g} upd/step, batch {shared.batch_size})",
            native.sps,
            sb3_default,
            rl_sps or float("nan"),
            fmt_hit(t_native),
            fmt_hit(t_rl),
        )
    ]

    # The reference setting: one update of batch 32 per env step, one env.
    reference = dataclasses.replace(
        shared,
        total_steps=args.reference_steps,
        num_envs=1,
        updates_per_step=1.0,
        batch_size=32,
        learning_starts=min(200, args.reference_steps // 2),
        log_interval=500,
    )
    one_env, sb3 = [], []
    for _ in range(args.repeats):  # interleaved: each backend sees the same machine load
        one_env.append(run_native(reference, world, None, 0)[0].sps)
        sb3.append(run_sb3(reference, args.reference_steps))
    ref_rl_sps = float("nan")
    if not args.skip_rllib:
        rl_reference = dataclasses.replace(reference, n_step=default_config("rllib").n_step)
        ref_rl_sps = run_rllib(rl_reference, world, None, 0)[0].sps
    rows.append(
        ("1 upd/step, batch 32, 1 env", median_sps(one_env), median_sps(sb3), ref_rl_sps, "-", "-")
    )

    print()
    print(f"{'setting':<38}{'native st/s':>12}{'SB3 st/s':>10}{'RLlib st/s':>11}"
          f"{'x SB3':>7}{'x RLlib':>8}{'native to 95%':>20}{'RLlib to 95%':>20}")  # fmt: skip
    for name, ns, ss, rs, nh, rh in rows:
        print(f"{name:<38}{ns:>12,.0f}{ss:>10,.0f}{rs:>11,.0f}{ratio(ns, ss):>7}"
              f"{ratio(ns, rs):>8}{nh:>20}{rh:>20}")  # fmt: skip
    if args.speed_only:
        return

    # Final values: native DQN with the full default config, LinUCB on returns, rules.
    native_value = value(native_policy)
    full, full_policy = run_native(default_config(), world, None, 0)
    full_value = value(full_policy)
    linucb = make_bandit("linucb", world.actions, world.feature_spec, seed=0, alpha=0.5)
    lin = train_bandit(
        linucb, world, RewardSpec(), total_steps=args.bandit_steps, reward_mode="return",
        seed=0, progress=False,
    )  # fmt: skip
    linucb_value = value(linucb)
    print()
    print(f"{'final true value (50k conversations)':<52}{'value':>10}{'train s':>10}")
    finals = [
        (f"native DQN, {args.budget:,} env steps", native_value, native.wall_s),
        (f"rllib DQN, {args.budget:,} env steps", rl_value, None),
        (
            f"native DQN, default {default_config().total_steps:,} env steps",
            full_value,
            full.wall_s,
        ),
        (f"LinUCB (reward_mode=return), {lin.env_steps:,} steps", linucb_value, lin.wall_s),
        (f"best rule policy ({best_rule})", best, None),
        ("logging policy", value(world.logging_policy), None),
    ]
    for name, v, secs in finals:
        vs = f"{v:+.4f}" if v is not None else "-"
        ts = f"{secs:.1f}" if secs is not None else "-"
        print(f"{name:<52}{vs:>10}{ts:>10}")


def ratio(ours: float, anchor: float) -> str:
    return f"{ours / anchor:.1f}x" if anchor == anchor and anchor > 0 else "-"


if __name__ == "__main__":
    main()
