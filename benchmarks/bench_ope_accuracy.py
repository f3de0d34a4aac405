"""OPE accuracy on the synthetic world: error, rank correlation and 95% CI coverage vs truth.

    python -m benchmarks.bench_ope_accuracy [--conversations 20000] [--seeds 3]

For each setting (confounding off / on; support gaps off / on) and each seed, logs of
``--conversations`` conversations are generated, every deterministic rule policy in
``configs/rules/`` is evaluated with the conversation-level estimators, and compared with
its true value (Monte Carlo, 30k conversations). Missing CSAT is filled with the hidden
true CSAT here so the table measures the estimators alone. Per-decision estimators
estimate a different quantity (expected reward of one decision on the logged states),
which has no ground truth in this world, so they are not in this table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import CONVERSATION_ESTIMATORS, prepare_conversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs, true_value

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "rules"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=50, help="refit resamples")
    args = parser.parse_args()
    settings = [
        ("confounding off, full support", WorldConfig(confounding=0.0, support_gaps=False)),
        ("confounding on, full support", WorldConfig(confounding=1.0, support_gaps=False)),
        ("confounding on, support gaps", WorldConfig(confounding=1.0, support_gaps=True)),
    ]
    print(
        f"{args.conversations} logged conversations, {args.seeds} seeds, deterministic rule panel"
    )
    print(
        f"{'setting':<32}{'estimator':<10}{'spearman':>9}{'MAE':>8}{'rel.err':>9}{'coverage':>10}"
    )
    start = time.perf_counter()
    for label, config in settings:
        world = SyntheticWorld(config)
        panel = load_rule_panel(CONFIGS, world.actions)
        truth = np.array(
            [true_value(p, 30_000, world=world, seed=99).value for p in panel.values()]
        )
        stats = {e: {"rho": [], "abs": [], "rel": [], "cover": []} for e in CONVERSATION_ESTIMATORS}
        for seed in range(args.seeds):
            gen = generate_logs(args.conversations, seed=seed, world=world)
            logs = gen.logs
            csat = np.where(np.isnan(logs.csat) & (logs.outcome != 0), gen.true_csat, logs.csat)

            def imputer(_logs, csat=csat, logs=logs):
                return csat, int((np.isnan(logs.csat) & (logs.outcome != 0)).sum())

            prepared = prepare_conversations(logs, RewardSpec(), csat_imputer=imputer, seed=seed)
            evaluated = OffPolicyEvaluation(
                prepared=prepared, n_refit=args.bootstrap, seed=seed, decision_estimators=()
            ).evaluate({k: p.action_probs(logs.states()) for k, p in panel.items()})
            rows = [evaluated[k].conversation for k in panel]
            for e in CONVERSATION_ESTIMATORS:
                est = np.array([r[e].estimate for r in rows])
                lo = np.array([r[e].ci_low for r in rows])
                hi = np.array([r[e].ci_high for r in rows])
                stats[e]["rho"].append(spearmanr(truth, est).statistic)
                stats[e]["abs"].append(np.abs(est - truth).mean())
                stats[e]["rel"].append(
                    np.median(np.abs(est - truth) / np.maximum(np.abs(truth), 0.05))
                )
                stats[e]["cover"].append(((lo <= truth) & (truth <= hi)).mean())
        for e, s in stats.items():
            print(
                f"{label:<32}{e:<10}{np.mean(s['rho']):>9.3f}{np.mean(s['abs']):>8.3f}"
                f"{np.mean(s['rel']):>9.2f}{np.mean(s['cover']):>10.0%}"
            )
    print(f"panel of {len(truth)} policies; wall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
