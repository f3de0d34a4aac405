"""Calibration of the OPE intervals on many synthetic worlds with Monte Carlo truth.

    nice python -m benchmarks.bench_ope_calibration            # small: a few minutes
    nice python -m benchmarks.bench_ope_calibration --full     # the big version

Worlds vary confounding (0, 1, 2), support gaps (off / on), log size (default 5k; full:
5k, 50k, 200k) and policy distance from the logger (rule policies as written, and mixed
30% with the uniform policy). Each world's logs are fresh samples (``--samples`` seeds);
missing CSAT is imputed by the per-outcome selection model and refitted in every
resample, like the ``evaluate`` command. Truth: Monte Carlo in the ground-truth world.

Per estimator, over all (world, sample, policy) triples: coverage of the nominal 95%
interval, mean width, bias, RMSE; per (world, sample): Spearman of the ranking and the
regret of the policy with the highest lower bound. ``select:widened``,
``select:auto`` and ``select:bounds`` are the selection intervals of
:class:`ope.meta.OffPolicyEvaluation` (``selection_interval=``).
The anchor is the old interval (``fixed``: FQE's percentile bootstrap of fixed
first-turn predictions, seq_dr unclipped with fixed nuisance models), measured in the
same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from supportrl.agents.base import BasePolicy
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.ope import make_estimator
from supportrl.ope.data import SequentialFeedback
from supportrl.ope.evaluate import prepare_conversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.models import balancing_weights, fitted_q_evaluation
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs, true_value

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "rules"
POLICIES = (
    "rules_production",
    "rules_clarify_first",
    "rules_empathize_negative",
    "rules_faq_first",
)


class Mixed(BasePolicy):
    """``(1 - eps) * policy + eps * uniform``: closer to the logger as ``eps`` grows."""

    def __init__(self, policy: BasePolicy, eps: float) -> None:
        self.policy, self.eps, self.actions = policy, eps, policy.actions

    def action_probs(self, states):  # type: ignore[no-untyped-def]
        p = self.policy.action_probs(states)
        return (1 - self.eps) * p + self.eps / p.shape[1]


def fixed_intervals(prepared, probs: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """The old intervals: one nuisance fit, bootstrap of fixed predictions, no clipping."""
    logs = prepared.logs
    q = fitted_q_evaluation(
        prepared.x,
        logs.action,
        prepared.reward,
        logs.offsets,
        probs,
        sample_weight=balancing_weights(prepared.propensity, logs.action, len(logs.actions)),
    )
    fb = SequentialFeedback(
        action=logs.action,
        reward=prepared.reward,
        propensity=prepared.propensity,
        offsets=logs.offsets,
        n_actions=len(logs.actions),
    )
    out = {}
    for name in ("fqe", "seq_dr"):
        i = make_estimator(name).interval(fb, probs, q, n_bootstrap=200)
        out[f"fixed:{name}"] = (i.estimate, i.ci_low, i.ci_high)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="many worlds, 5k-200k conversations")
    parser.add_argument("--samples", type=int, default=None, help="fresh log samples per world")
    parser.add_argument("--refits", type=int, default=None, help="refit bootstrap resamples")
    parser.add_argument("--se-multiplier", type=float, default=2.5)
    parser.add_argument("--conversations", type=int, nargs="+", help="log sizes (override)")
    parser.add_argument(
        "--max-weight",
        default="auto",
        help="clip of cumulative weights: a number, 0 (none) or auto (weight-share x n)",
    )
    parser.add_argument("--weight-share", type=float, default=0.05, help="with --max-weight auto")
    parser.add_argument("--out", type=Path, help="write every (world, policy) row as JSON here")
    parser.add_argument(
        "--own-world",
        action="store_true",
        help="only the project's own world (confounding 1, support gaps): calibration runs",
    )
    args = parser.parse_args()
    clip = "auto" if args.max_weight == "auto" else (float(args.max_weight) or None)
    if args.full:
        sizes, confounding, gaps = (5_000, 50_000, 200_000), (0.0, 1.0, 2.0), (False, True)
        samples, refits, n_true = args.samples or 4, args.refits or 100, 200_000
    else:
        sizes, confounding, gaps = (5_000,), (0.0, 1.0), (False, True)
        samples, refits, n_true = args.samples or 1, args.refits or 20, 30_000
    if args.own_world:
        confounding, gaps = (1.0,), (True,)
    if args.conversations:
        sizes = tuple(args.conversations)
    reward = RewardSpec()
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    raw: list[dict[str, object]] = []
    ranks: dict[str, list[tuple[float, float]]] = {}
    start = time.perf_counter()
    for conf, gap, n in itertools.product(confounding, gaps, sizes):
        world = SyntheticWorld(WorldConfig(confounding=conf, support_gaps=gap))
        panel = load_rule_panel(CONFIGS, world.actions)
        policies = {
            f"{k}@{eps}": (panel[k] if eps == 0 else Mixed(panel[k], eps))
            for k in POLICIES
            for eps in (0.0, 0.3)
        }
        truth = {
            k: true_value(p, n_true, world=world, reward=reward, seed=123).value
            for k, p in policies.items()
        }
        for sample in range(samples):
            gen = generate_logs(n, seed=1000 * sample + 7, world=world)
            prepared = prepare_conversations(
                gen.logs, reward, csat_imputer=CsatImputation.from_logs, seed=sample
            )
            states = gen.logs.states()
            probs = {k: p.action_probs(states) for k, p in policies.items()}
            found: dict[str, dict[str, tuple[float, float, float]]] = {k: {} for k in probs}
            res = OffPolicyEvaluation(
                prepared=prepared,
                n_refit=refits,
                decision_estimators=(),
                se_multiplier=args.se_multiplier,
                max_weight=clip,
                weight_share=args.weight_share,
                selection_interval="widened",
                seed=sample,
            ).evaluate(probs)
            for k, r in res.items():
                raw.append(
                    {
                        "world": {"confounding": conf, "gaps": gap, "n": n, "sample": sample},
                        "policy": k,
                        "truth": truth[k],
                        "estimates": {
                            e: [v.estimate, v.std_err, v.ci_low, v.ci_high]
                            for e, v in r.conversation.items()
                        },
                        "selection": [r.selection.ci_low, r.selection.ci_high],
                        "bounds": [
                            r.support.deficit_bounds.ci_low,
                            r.support.deficit_bounds.ci_high,
                        ],
                        "support_bounds": [r.support.bounds.ci_low, r.support.bounds.ci_high],
                        "deficit": r.support.deficit,
                        "unsupported": r.support.unsupported_conversation,
                        "disagreement": r.diagnostics.disagreement,
                    }
                )
                for e, v in r.conversation.items():
                    found[k][e] = (v.estimate, v.ci_low, v.ci_high)
                s, b = r.selection, r.support.deficit_bounds
                found[k]["select:widened"] = (s.estimate, s.ci_low, s.ci_high)
                # "auto": as OffPolicyEvaluation(selection_interval="auto") builds it
                auto = r.support.deficit > 0.05
                found[k]["select:auto"] = (
                    s.estimate,
                    min(s.ci_low, b.ci_low) if auto else s.ci_low,
                    max(s.ci_high, b.ci_high) if auto else s.ci_high,
                )
                found[k]["select:bounds"] = (
                    float(np.clip(s.estimate, b.lower, b.upper)),
                    b.ci_low,
                    b.ci_high,
                )
            for k, p in probs.items():
                found[k].update(fixed_intervals(prepared, p))
            for e in found[next(iter(found))]:
                est = np.array([found[k][e][0] for k in probs])
                lo = np.array([found[k][e][1] for k in probs])
                hi = np.array([found[k][e][2] for k in probs])
                tv = np.array([truth[k] for k in probs])
                rows.setdefault(e, []).extend(zip(est, lo, hi, tv, strict=True))
                winner = int(np.argmax(lo))
                ranks.setdefault(e, []).append(
                    (spearmanr(est, tv).statistic, float(tv.max() - tv[winner]))
                )
            print(
                f"world confounding={conf} gaps={gap} n={n} sample={sample}: "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
    print(
        f"\n{len(rows['seq_dr'])} (world, sample, policy) triples; {refits} refits; truth from "
        f"{n_true} conversations; se_multiplier {args.se_multiplier}; "
        f"max_weight {clip}" + (f" (weight share {args.weight_share})" if clip == "auto" else "")
    )
    print(
        f"{'estimator':<16}{'coverage':>9}{'width':>8}{'bias':>8}{'RMSE':>8}{'spearman':>9}{'regret':>8}"
    )
    for e, r in rows.items():
        a = np.array(r)
        est, lo, hi, tv = a.T
        sp, regret = np.array(ranks[e]).T
        print(
            f"{e:<16}{np.mean((lo <= tv) & (tv <= hi)):>9.0%}{np.mean(hi - lo):>8.3f}"
            f"{np.mean(est - tv):>+8.3f}{np.sqrt(np.mean((est - tv) ** 2)):>8.3f}"
            f"{np.nanmean(sp):>9.2f}{np.mean(regret):>8.3f}"
        )
    print(f"wall {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
