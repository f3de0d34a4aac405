"""Fidelity of fitted simulators on the confounded synthetic world, by policy values.

    python -m benchmarks.bench_fidelity [--conversations 100000] [--mc 50000]
        [--families glm,ensemble] [--threads 2] [--json PATH]

The ground-truth world (confounding on: the logger escalates hard cases and answers easy
ones directly, seeing a complexity the logs do not record) writes ``--conversations``
logged conversations. Each fitted model -- family x weighting (``none`` = naive,
``propensity`` = per decision, ``sequential`` = per conversation so far), without and
with pessimism -- values the panel (the deterministic ``configs/rules/rules_*.yaml`` plus
the uniform policy) by ``--mc`` Monte Carlo conversations; the true values come from
the world itself with the same number. Anchors (goals of the issue): Spearman >= 0.95,
regret@1 <= 0.02, MAE <= 0.05 in reward-v1 units.

Pessimism "on" masks (state cell, action) pairs with fewer than 20 logged decisions (a
masked action makes the customer abandon) and subtracts the penalty (glm: 0.1 /
sqrt(1 + support), ensemble: 1.0 x disagreement); its rows compare the *penalised*
values with the truth, which pessimism is not meant to match: they show its price.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from supportrl.agents.base import Policy, UniformPolicy
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.fidelity import panel_metrics, policy_values
from supportrl.simulators.fitted import FitWarning, fit_customer_model
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

AGENTS = Path(__file__).resolve().parent.parent / "configs" / "rules"
GOALS = {"spearman": 0.95, "regret_at_1": 0.02, "mae": 0.05}
PESSIMISM = {
    "glm": {"penalty": 0.1, "min_support": 20},
    "ensemble": {"penalty": 1.0, "min_support": 20},
}
VARIANTS = {
    "glm": ("none", "propensity", "sequential"),
    "ensemble": ("none", "sequential"),
}


def panel(actions: tuple[str, ...]) -> dict[str, Policy]:
    policies: dict[str, Policy] = {
        name.removeprefix("rules_"): p for name, p in load_rule_panel(AGENTS, actions).items()
    }
    policies["uniform"] = UniformPolicy(actions)
    return policies


def meets(m: dict[str, float]) -> bool:
    return (
        m["spearman"] >= GOALS["spearman"]
        and m["regret_at_1"] <= GOALS["regret_at_1"]
        and m["mae"] <= GOALS["mae"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument(
        "--mc", type=int, default=50_000, help="Monte Carlo conversations per value"
    )
    parser.add_argument("--families", default="glm,ensemble")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the fits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    start = time.perf_counter()

    world = SyntheticWorld()
    reward = RewardSpec()
    logs = generate_logs(args.conversations, seed=args.seed, world=world).logs
    policies = panel(world.actions)
    truth = policy_values(world, policies, n=args.mc, seed=args.seed + 1, reward=reward)
    print(
        f"synthetic world, confounding {world.config.confounding}; {logs.n_conversations} logged "
        f"conversations ({logs.n_turns} turns); panel of {len(policies)} policies; "
        f"{args.mc} Monte Carlo conversations per value"
    )

    rows: list[dict[str, Any]] = []
    values: dict[str, dict[str, float]] = {"true": truth}
    for family in args.families.split(","):
        for weighting in VARIANTS[family]:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FitWarning)
                model = fit_customer_model(
                    logs, family, seed=args.seed, weighting=weighting, torch_threads=args.threads
                )
            fit_s = time.perf_counter() - t0
            for pessimism in (False, True):
                variant = model.with_pessimism(**PESSIMISM[family]) if pessimism else model
                t0 = time.perf_counter()
                sim = policy_values(
                    variant,
                    policies,
                    n=args.mc,
                    seed=args.seed + 2,
                    reward=reward,
                    penalized=pessimism,
                )
                sim_s = time.perf_counter() - t0
                name = f"{family}/{weighting}/{'pessimistic' if pessimism else 'plain'}"
                values[name] = sim
                rows.append(
                    {
                        "family": family,
                        "weighting": weighting,
                        "pessimism": pessimism,
                        "fit_s": fit_s,
                        "simulate_s": sim_s,
                        **panel_metrics(truth, sim),
                    }
                )
                print(f"  done {name:<32} fit {fit_s:5.1f} s, simulate {sim_s:5.1f} s", flush=True)

    print()
    header = f"{'family':<9}{'weighting':<12}{'pessimism':<10}{'Spearman':>9}{'regret@1':>10}{'MAE':>8}{'bias':>9}{'max err':>9}{'fit s':>7}  goals"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['family']:<9}{r['weighting']:<12}{'on' if r['pessimism'] else 'off':<10}"
            f"{r['spearman']:>9.3f}{r['regret_at_1']:>10.4f}{r['mae']:>8.4f}{r['bias']:>+9.4f}"
            f"{r['max_abs_error']:>9.4f}{r['fit_s']:>7.1f}  {'met' if meets(r) else 'not met'}"
        )
    print(
        f"goals: Spearman >= {GOALS['spearman']}, regret@1 <= {GOALS['regret_at_1']}, "
        f"MAE <= {GOALS['mae']} (reward v1 units)"
    )

    print()
    shown = [k for k in values if k == "true" or k.endswith("/plain")]
    print(f"{'policy':<22}" + "".join(f"{k.removesuffix('/plain'):>21}" for k in shown))
    for p in policies:
        print(f"{p:<22}" + "".join(f"{values[k][p]:>+21.4f}" for k in shown))
    plain = [r for r in rows if not r["pessimism"]]
    met = [f"{r['family']}/{r['weighting']}" for r in plain if meets(r)]
    print()
    print(f"goals met without pessimism by: {', '.join(met) if met else 'none'}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "values": values}, indent=2) + "\n")


if __name__ == "__main__":
    main()
