"""In-memory evaluate (one pass, refits on the refit subset) beside the plain refit loop.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_ope_memory [--conversations 25000]
        [--refits 50] [--refit-turns 20000]

Generated logs of the synthetic world (CSAT imputed by the refittable selection model, as
``evaluate`` does), four rule policies, the default estimators. Times
``OffPolicyEvaluation.evaluate`` (the partitioned engine's machinery in memory: every
estimator once under the point fit, all resamples' counts in one matrix product, the
resamples' models refitted on a random subset of about ``--refit-turns`` turns) and, as
the anchor in the same run, ``evaluate_reference`` (every resample refits every model on
all the logs and evaluates every estimator again). Prints both wall times and, per
estimator, the ratio of the standard errors (new / plain) over the policies, and the
largest difference of the point estimates (0 up to rounding: they use no resample).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.rules import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import prepare_conversations, target_probs_of
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.synthetic import generate_logs

RULES = Path(__file__).resolve().parent.parent / "configs" / "rules"
POLICIES = (
    "rules_production",
    "rules_empathize_negative",
    "rules_clarify_first",
    "rules_faq_first",
)


def ope_inputs(conversations: int, seed: int) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """Generated logs, prepared for OPE (CSAT imputed by the refittable selection model,
    as ``evaluate`` does), and the target probabilities of :data:`POLICIES` on them."""
    logs = generate_logs(conversations, seed=seed).logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=seed
    )
    states = logs.states()
    probs = {
        n: target_probs_of(
            load_rule_policy(RULES / f"{n}.yaml", logs.actions), states, logs.actions
        )
        for n in POLICIES
    }
    return logs, prepared, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=25_000)
    parser.add_argument("--refits", type=int, default=50)
    parser.add_argument("--refit-turns", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    logs, prepared, probs = ope_inputs(args.conversations, args.seed)
    ope = OffPolicyEvaluation(
        prepared=prepared,
        n_refit=args.refits,
        refit_turns=args.refit_turns,
        params={"switch_dr": {"tau": 100.0}, "dr_os": {"lambda_": 100.0}},
        seed=args.seed,
    )
    start = time.perf_counter()
    new = ope.evaluate(probs)
    new_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = ope.evaluate_reference(probs)
    plain_s = time.perf_counter() - start

    print(
        f"{args.conversations} conversations, {logs.n_turns} turns, {len(POLICIES)} policies, "
        f"{args.refits} refits, refit subset share {ope.refit_share():.3f}"
    )
    print(f"{'':<34}{'wall (s)':>10}{'x plain':>10}")
    print(f"{'evaluate (one pass, refit subset)':<34}{new_s:>10.1f}{new_s / plain_s:>10.3f}")
    print(f"{'anchor: evaluate_reference':<34}{plain_s:>10.1f}{1.0:>10.3f}")
    print(
        f"\n{'estimator':<12}{'SE new/plain: min':>18}{'median':>8}{'max':>8}{'|d estimate|':>14}"
    )
    names = [*new[POLICIES[0]].conversation, *new[POLICIES[0]].decision]
    for est in names:
        ratios, diffs = [], []
        for p in POLICIES:
            a = {**new[p].conversation, **new[p].decision}[est]
            b = {**plain[p].conversation, **plain[p].decision}[est]
            ratios.append(a.std_err / b.std_err)
            diffs.append(abs(a.estimate - b.estimate))
        r = np.array(ratios)
        print(f"{est:<12}{r.min():>18.2f}{np.median(r):>8.2f}{r.max():>8.2f}{max(diffs):>14.1e}")
    sel = np.array(
        [
            (new[p].selection.ci_high - new[p].selection.ci_low)
            / (plain[p].selection.ci_high - plain[p].selection.ci_low)
            for p in POLICIES
        ]
    )
    print(f"{'select width':<12}{sel.min():>18.2f}{np.median(sel):>8.2f}{sel.max():>8.2f}")


if __name__ == "__main__":
    main()
