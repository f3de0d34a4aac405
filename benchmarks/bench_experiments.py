"""A/B experiments: false promotions when peeking, power, sample ratio mismatch, HTTP.

    python -m benchmarks.bench_experiments [--seeds 40] [--conversations 20000] [--http-seconds 20]

Every experiment is served by the serving code (``Experiment`` over exported rule
artifacts) to the synthetic world's customers and analysed from its decision log as
``supportrl abtest`` does (reward v1, CSAT imputed, CUPED-style adjustment).

* **A/A**: both arms the same policy (``rules_production``, epsilon 0.05), 50/50; the
  analysis looks after every 500 conversations; a false promotion is any look whose
  confidence sequence lies above 0. Anchor, same logs: the fixed-sample 95% z-interval of
  the plain difference in means, looked at the same way (the "peeking" problem).
* **Power**: pairs of rule policies whose true values (Monte Carlo, 50,000 conversations)
  differ by about +0.05 and -0.05: conversations until promote / roll back.
* **SRM**: arms served 45/55 while the experiment file declares 50/50, 20,000
  conversations; and a true 50/50: how often the check flags.
* **HTTP**: ``python -m supportrl.serving.http --experiment FILE`` on 127.0.0.1 with two
  arms (unit: customer), 500 decisions/s from 4 keep-alive clients, 1,000 customers;
  p50/p99 and whether any customer changed arm. Anchor, same run: the same load on one
  artifact (``python -m supportrl.serving.http DIR``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from supportrl.agents.rules import load_rule_policy
from supportrl.envs.collect import policy_value
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.abtest import experiment_data
from supportrl.experiments.deploy import experiment_stage
from supportrl.experiments.export import export_policy
from supportrl.ope.abtest import analyse, confidence_sequence, difference_terms
from supportrl.serving.experiment import Arm, Experiment, ExperimentConfig
from supportrl.simulators.synthetic import SyntheticWorld

from benchmarks.bench_serving import http_load, start_server

RULES = Path(__file__).resolve().parents[1] / "configs" / "rules"
WORLD = SyntheticWorld()
REWARD = RewardSpec()
LOOK = 500


def export_rule(root: Path, name: str) -> Path:
    path = RULES / f"{name}.yaml"
    return export_policy(
        load_rule_policy(path, WORLD.actions),
        root / name,
        feature_spec=WORLD.feature_spec,
        rule_file=path,
        bounds={"tenure_months": (0.0, None), "prior_contacts_30d": (0.0, None)},
    )


def serve(
    root: Path,
    arms: dict[str, Path],
    shares: tuple[float, float],
    n: int,
    seed: int,
    declared: tuple[float, float] | None = None,
) -> Path:
    names = list(arms)
    config = ExperimentConfig(
        arms=tuple(Arm(a, arms[a], s, 0.05) for a, s in zip(names, shares, strict=True)),
        control=names[0],
        unit="conversation",
        salt=f"bench-{seed}",
    )
    exp = Experiment.load(config, seed=seed)
    log = Path(tempfile.mkdtemp(prefix=f"log-{seed}-", dir=root)) / "decisions"
    experiment_stage(exp, log, world=WORLD, reward=REWARD, n_conversations=n, seed=seed)
    if declared is not None:  # the file says one split, the traffic had another
        desc = json.loads((log / "experiment.json").read_text())
        for event in desc["events"]:
            event["shares"] = dict(zip(names, declared, strict=True))
        for name, s in zip(names, declared, strict=True):
            desc["arms"][name]["share"] = s
        (log / "experiment.json").write_text(json.dumps(desc))
    return log


def looks(log: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At every 500th conversation: the confidence sequence's bounds and the naive z-interval's."""
    data, _, _ = experiment_data(log, REWARD, seed=seed)
    psi, _ = difference_terms(data, 1, 0, data.value)
    cs = confidence_sequence(psi, 0.05)
    at = np.arange(LOOK - 1, len(psi), LOOK)
    a, y = data.arm, data.value
    naive_low, naive_high = [], []
    for t in at + 1:
        t1, t0 = y[:t][a[:t] == 1], y[:t][a[:t] == 0]
        diff = t1.mean() - t0.mean()
        se = np.sqrt(t1.var(ddof=1) / len(t1) + t0.var(ddof=1) / len(t0))
        naive_low.append(diff - 1.96 * se)
        naive_high.append(diff + 1.96 * se)
    return cs.low[at], cs.high[at], np.array(naive_low), np.array(naive_high)


def first_crossing(bounds: np.ndarray) -> int | None:
    hit = np.flatnonzero(bounds)
    return None if len(hit) == 0 else int((hit[0] + 1) * LOOK)


def bench_aa(root: Path, art: dict[str, Path], seeds: int, n: int) -> None:
    arms = {"control": art["rules_production"], "same": art["rules_production"]}
    ours = naive = 0
    start = time.perf_counter()
    for seed in range(seeds):
        low, _, nlow, _ = looks(serve(root, arms, (0.5, 0.5), n, seed), seed)
        ours += bool((low > 0).any())
        naive += bool((nlow > 0).any())
    wall = time.perf_counter() - start
    print(f"A/A, {seeds} seeds x {n} conversations, a look every {LOOK} ({wall:.0f} s):")
    print(
        f"  false promotions: confidence sequence {ours}/{seeds} = {ours / seeds:.1%}; "
        f"naive z-interval (anchor) {naive}/{seeds} = {naive / seeds:.1%}"
    )


def bench_power(root: Path, art: dict[str, Path], seeds: int, n: int) -> None:
    truth = {
        name: policy_value(
            load_rule_policy(RULES / f"{name}.yaml", WORLD.actions),
            50_000,
            model=WORLD,
            reward=REWARD,
            seed=1,
        ).value
        for name in art
    }
    print(
        "true values: "
        + ", ".join(f"{k} {v:+.3f}" for k, v in sorted(truth.items(), key=lambda kv: kv[1]))
    )
    for target in (+0.05, -0.05):
        pairs = [(a, b) for a in art for b in art if a != b and truth[a] > -0.1 and truth[b] > -0.1]
        control, other = min(pairs, key=lambda ab: abs(truth[ab[1]] - truth[ab[0]] - target))
        delta = truth[other] - truth[control]
        arms = {control: art[control], other: art[other]}
        ours, naive = [], []
        for seed in range(seeds):
            low, high, nlow, nhigh = looks(
                serve(root, arms, (0.5, 0.5), n, 1000 + seed), 1000 + seed
            )
            cross = (low > 0) if target > 0 else (high < 0)
            ours.append(first_crossing(cross))
            ncross = (nlow > 0) if target > 0 else (nhigh < 0)
            naive.append(first_crossing(ncross))
        done = [x for x in ours if x is not None]
        what = "promote" if target > 0 else "roll back"
        print(
            f"  {other} - {control}: true {delta:+.3f}: {what} in {len(done)}/{seeds} "
            f"experiments of {n}; conversations to decide: median "
            f"{np.median(done) if done else float('nan'):.0f} (quartiles "
            f"{np.percentile(done, 25) if done else float('nan'):.0f}-"
            f"{np.percentile(done, 75) if done else float('nan'):.0f}); naive z-interval (anchor, "
            f"not valid when peeking) median {np.median([x for x in naive if x] or [np.nan]):.0f}"
        )


def bench_srm(root: Path, art: dict[str, Path], seeds: int) -> None:
    arms = {"control": art["rules_production"], "same": art["rules_production"]}
    flagged_wrong = flagged_right = 0
    for seed in range(seeds):
        for shares, declared in (((0.45, 0.55), (0.5, 0.5)), ((0.5, 0.5), None)):
            log = serve(root, arms, shares, 20_000, 2000 + seed, declared=declared)
            data, _, _ = experiment_data(log, REWARD, seed=seed)
            flag = analyse(data, control="control")["srm"]["flag"]
            if declared is not None:
                flagged_wrong += flag
            else:
                flagged_right += flag
    print(
        f"SRM at 20,000 conversations, {seeds} seeds: 45/55 declared 50/50 flagged "
        f"{flagged_wrong}/{seeds}; true 50/50 flagged {flagged_right}/{seeds}"
    )


def http_bench(root: Path, art: dict[str, Path], seconds: float) -> None:

    from benchmarks.bench_serving import percentiles  # noqa: F401  (same conventions)

    spec = {
        "arms": {
            "control": {"artifact": str(art["rules_production"]), "share": 0.5, "epsilon": 0.05},
            "empathy": {
                "artifact": str(art["rules_empathize_negative"]),
                "share": 0.5,
                "epsilon": 0.05,
            },
        },
        "control": "control",
        "unit": "customer",
    }
    exp_file = root / "experiment.json"
    exp_file.write_text(json.dumps(spec))
    states = [
        {
            "turn": 0,
            "previous_action": "none",
            "intent": i,
            "sentiment": s,
            "tier": t,
            "channel": "chat",
            "tenure_months": 12,
            "prior_contacts_30d": 1,
        }
        for i in ("billing", "technical", "cancel")
        for s in (-0.6, 0.2)
        for t in ("free", "pro")
    ]

    for label, args, experiment in (
        ("experiment, 2 arms", ["--experiment", str(exp_file)], True),
        ("one artifact (anchor)", [str(art["rules_production"])], False),
    ):
        log_dir = root / f"httplog-{'experiment' if experiment else 'artifact'}"
        proc, port = start_server(*args, "--log-dir", str(log_dir))
        try:
            r = http_load(port, states, 500.0, seconds, customers=1000 if experiment else 0)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        extra = (
            f"; customers that changed arm: {r['changed']} of {r['customers']}"
            if experiment
            else ""
        )
        print(
            f"HTTP {label}: {r['achieved_rps']:.0f} decisions/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}{extra}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--power-seeds", type=int, default=10)
    parser.add_argument("--srm-seeds", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--only", choices=("aa", "power", "srm", "http"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = [
            "rules_production",
            "rules_empathize_negative",
            "rules_clarify_first",
            "rules_always_direct",
            "rules_faq_first",
            "rules_escalate_late",
            "rules_tier_routing",
            "rules_credit_billing",
            "rules_channel_aware",
            "rules_repeat_contact",
        ]
        art = {n: export_rule(root / "artifacts", n) for n in names}
        if args.only in (None, "aa"):
            bench_aa(root, art, args.seeds, args.conversations)
        if args.only in (None, "power"):
            bench_power(root, art, args.power_seeds, 2 * args.conversations)
        if args.only in (None, "srm"):
            bench_srm(root, art, args.srm_seeds)
        if args.only in (None, "http"):
            http_bench(root, art, args.http_seconds)


if __name__ == "__main__":
    main()
