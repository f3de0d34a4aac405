"""Improvement rounds: learn, shortlist, experiment online against production, repeat.

``pipeline loop.rounds=R`` (and ``supportrl loop``, the same with at least one round) runs,
after the pipeline's first pass, ``R`` rounds on a known world. Each round:

1. **learn** on every log so far (the generated logs plus each earlier round's decision
   log, pooled: every row carries the propensity of the policy that logged it, so OPE
   on the pool is valid): fit the simulator, train the agent (and, with
   ``train.support_threshold``, a candidate restricted to actions the logs support),
   evaluate every candidate off-policy. Round 1 reuses the pipeline's first pass;
2. **shortlist** up to ``loop.shortlist`` candidates: by the ``ope.select`` point
   estimate, leaving out any whose selection interval lies wholly below production's
   estimate (clearly worse than control); production itself is the control, never a
   candidate;
3. **experiment**: export production and the shortlist as artifacts and serve the world's
   customers through the serving code (:class:`supportrl.serving.experiment.Experiment`,
   ``loop.conversations`` conversations, treatments sharing ``loop.share`` of the
   traffic, each arm exploring with ``loop.epsilon``); analyse the decision log with
   ``abtest`` (always-valid confidence sequences, guardrail ``loop.guardrail``);
4. **decide**: ``promote`` makes the winning treatment production; ``roll_back`` and
   ``continue`` keep production. The round's decision log joins the logs.

The world is known, so every candidate's true value is printed beside the evidence.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.agents.base import Policy
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.errors import UserError
from supportrl.experiments.learn import Learned, learn
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.run_dirs import output
from supportrl.experiments.stages import (
    LoopSettings,
    OPESettings,
    fit_settings_of,
    pipeline_settings,
    timed,
)
from supportrl.simulators.synthetic import SyntheticWorld


@dataclass
class Candidate:
    """A policy the loop can ship: its object (for OPE and true values) and its source
    (a checkpoint or rule file, for export)."""

    name: str
    policy: Policy
    source: Path
    artifact: Path | None = None


@dataclass
class RoundInputs:
    """What a round learned: candidates with their OPE rows (``ope.select`` and its
    selection interval) and the logs they were learned on."""

    candidates: dict[str, Candidate]
    selection: dict[str, dict[str, float]]
    """Name -> ``{"estimate", "ci_low", "ci_high"}`` of the selection interval (production included)."""


def shortlist(selection: Mapping[str, Mapping[str, float]], production: str, k: int) -> list[str]:
    """Up to ``k`` candidates by point estimate, none clearly worse than ``production``
    (selection interval wholly below production's estimate), production left out."""
    base = selection[production]["estimate"]
    eligible = [
        name
        for name, row in selection.items()
        if name != production and np.isfinite(row["estimate"]) and not row["ci_high"] < base
    ]
    eligible.sort(key=lambda name: -selection[name]["estimate"])
    return eligible[:k]


def experiment_config(
    production: Candidate, treatments: list[Candidate], settings: LoopSettings, name: str
) -> Any:
    """The round's experiment: control ``production`` and the treatments sharing ``share``."""
    from supportrl.serving.experiment import Arm, ExperimentConfig, Guardrail

    each = settings.share / len(treatments)
    arms = [Arm(production.name, production.artifact, 1.0 - settings.share, settings.epsilon)]
    arms += [Arm(c.name, c.artifact, each, settings.epsilon) for c in treatments]
    return ExperimentConfig(
        arms=tuple(arms),
        control=production.name,
        unit="conversation",
        guardrail=Guardrail(settings.guardrail.metric, settings.guardrail.max_drop),
        salt=name,
        alpha=settings.alpha,
        name=name,
        horizon=settings.conversations,
    )


def run_round(
    k: int,
    inputs: RoundInputs,
    production: Candidate,
    *,
    out: Path,
    logs: LoggedConversations,
    world: SyntheticWorld,
    reward: RewardSpec,
    settings: LoopSettings,
    true_value_conversations: int,
    seed: int,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, Any], Candidate, LoggedConversations]:
    """Steps 2-4 of round ``k`` (module doc); (the round's record, production after it, the
    round's decision log as conversations). ``timings`` gets the wall seconds of the
    round's ``truth``, ``export``, ``serve`` and ``analysis`` (every look) and ``read_log``."""
    from supportrl.experiments.deploy import experiment_clock
    from supportrl.experiments.stages import timed, value_stage
    from supportrl.serving.experiment import Experiment
    from supportrl.simulators.logs import load_conversations

    timings = {} if timings is None else timings

    names = shortlist(inputs.selection, production.name, settings.shortlist)
    record: dict[str, Any] = {"round": k, "candidates": names}
    policies = {name: c.policy for name, c in inputs.candidates.items()}
    policies[production.name] = production.policy
    with timed(timings, "truth"):
        truth = value_stage(policies, world, reward, true_value_conversations, seed=seed + 1)
    record["values"] = {
        name: {
            "ope": dict(inputs.selection[name]) if name in inputs.selection else None,
            "true_value": truth[name]["value"],
        }
        for name in policies
    }
    _print_values(k, record["values"], names, production.name)
    if not names:
        print(f"[round {k}] no candidate left on the shortlist: production stays {production.name}")
        record["production"] = production.name
        return record, production, None  # type: ignore[return-value]
    round_dir = out / "rounds" / f"round-{k}"
    with timed(timings, "export"):
        _export_arms([production, *(inputs.candidates[n] for n in names)], round_dir, logs, inputs)
    treatments = [inputs.candidates[n] for n in names]
    config = experiment_config(production, treatments, settings, name=f"round-{k}")
    experiment = Experiment.load(config, seed=seed, start_time=experiment_clock(0))
    shown = ", ".join(f"{a.name} {a.share:g}" for a in config.arms)
    print(
        f"[round {k}] experiment: {shown} (epsilon {settings.epsilon:g}), up to "
        f"{settings.conversations} conversations ({settings.conversations + settings.extend} "
        f"when about to decide), analysed every {settings.look_every}",
        flush=True,
    )
    log = output(round_dir / "decisions")
    analysis, served = _run_experiment(
        experiment, log, world=world, reward=reward, settings=settings, seed=seed,
        prefix=f"r{k}-", timings=timings,
    )  # fmt: skip
    analysis.pop("curves", None)
    analysis["true_value"] = served
    record["experiment"] = analysis
    decision = analysis["decision"]
    new = production
    if decision["action"] == "promote":
        new = inputs.candidates[decision["arm"]]
    record["production"] = new.name
    _print_round(k, record, production.name)
    with timed(timings, "read_log"):
        decided = load_conversations(log, actions=list(logs.actions))
    return record, new, decided


def _print_values(
    k: int, values: Mapping[str, Mapping[str, Any]], names: list[str], production: str
) -> None:
    """Round ``k``'s candidates: OPE estimate and true value, shortlist and control marked."""
    print(f"[round {k}] candidates (ope {'estimate':>8}  true value; * shortlisted, control):")
    for name, row in values.items():
        mark = "*" if name in names else ("control" if name == production else "")
        ope = row["ope"]["estimate"] if row["ope"] else float("nan")
        print(f"      {name:<30}{ope:>+9.3f}{row['true_value']:>+12.3f}  {mark}")


def _export_arms(
    arms: list[Candidate], round_dir: Path, logs: LoggedConversations, inputs: RoundInputs
) -> None:
    """An artifact for each arm that has none yet, under ``round_dir/artifacts``."""
    from supportrl.experiments.export import export_stage

    for cand in arms:
        if cand.artifact is None:
            cand.artifact = export_stage(
                cand.source,
                output(round_dir / "artifacts" / cand.name),
                reference=logs,
                evaluation={"ope": inputs.selection.get(cand.name)},
            )


def _run_experiment(
    experiment: Any,
    log: Path,
    *,
    world: SyntheticWorld,
    reward: RewardSpec,
    settings: LoopSettings,
    seed: int,
    prefix: str,
    timings: dict[str, float],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Serve the experiment in chunks of ``look_every`` conversations, analysing after each
    (the confidence sequences allow it), until it decides or has served what
    :func:`conversations_left` allows (``conversations``, or up to ``extend`` more when a
    decision is near). Returns the last analysis and each arm's true value (mean
    conversation return with the true CSAT, over every chunk). A treatment that
    breaches its guardrail or is dominated by another (:func:`arms_to_stop`) is stopped at
    the simulated time, its traffic to the treatments still running. ``timings`` gets the
    seconds spent serving (``serve``) and analysing (``analysis``)."""
    from supportrl.experiments.abtest import abtest_stage
    from supportrl.experiments.deploy import experiment_clock, experiment_stage
    from supportrl.experiments.stages import timed
    from supportrl.serving import DecisionLogger

    logger = DecisionLogger.for_experiment(log, experiment, part_rows=50_000, journal=False)
    width = len(str(settings.conversations + settings.extend - 1))
    served, sums = 0, {a: [0, 0.0] for a in experiment.arms}
    analysis: dict[str, Any] = {}
    while (left := conversations_left(served, analysis.get("decision"), settings)) > 0:
        n = min(settings.look_every, left)
        with timed(timings, "serve"):
            chunk = experiment_stage(
                experiment, log, world=world, reward=reward, n_conversations=n,
                seed=seed + 3 + served, prefix=prefix, start=served, width=width, logger=logger,
            )  # fmt: skip
        served += n
        for arm, count in chunk.n_conversations.items():
            if count:
                sums[arm][0] += count
                sums[arm][1] += count * chunk.true_value[arm]
        with timed(timings, "analysis"):
            analysis = abtest_stage(log, reward, seed=seed)
        decision = analysis["decision"]
        print(
            f"      after {served} conversations: {decision['action']} ({decision['reason']})",
            flush=True,
        )
        live = [a for a, share in zip(experiment.arms, experiment.shares, strict=True) if share > 0]
        stop_arms(experiment, arms_to_stop(analysis, live), at=experiment_clock(served))
    logger.close(censor_open=False)
    experiment.write_description(log)
    truth = {a: (total / count if count else float("nan")) for a, (count, total) in sums.items()}
    return analysis, truth


def arms_to_stop(analysis: Mapping[str, Any], live: list[str]) -> dict[str, str]:
    """Treatments a still undecided experiment stops, with the reason: those that breached
    their guardrail, and those dominated by the leading treatment (their always-valid
    interval against control lies wholly below the leader's estimate), so that the
    leader gets their traffic. Stopping an arm is a change of allocation, which the
    analysis' per-conversation shares account for: no interval loses its validity."""
    from supportrl.ope.abtest import MIN_CONVERSATIONS

    decision = analysis["decision"]
    if decision["action"] != "continue" or analysis["srm"]["flag"]:
        return {}
    out = {arm: "guardrail breached" for arm in decision.get("stop", []) if arm in live}
    rows = {
        arm: row
        for arm, row in analysis["differences"].items()
        if arm in live and arm not in out
        and analysis["arms"][arm]["n_conversations"] >= MIN_CONVERSATIONS
    }  # fmt: skip
    if len(rows) > 1:
        leader = max(rows, key=lambda arm: rows[arm]["estimate"])
        best = rows[leader]["estimate"]
        for arm, row in rows.items():
            if arm != leader and row["ci_high"] < best:
                out[arm] = (
                    f"dominated by {leader} (interval up to {row['ci_high']:+.3f} < {best:+.3f})"
                )
    return out


def stop_arms(experiment: Any, stops: Mapping[str, str], *, at: str) -> None:
    """Stop each arm of ``stops``: its share goes to the treatments still running (evenly),
    to control when none is; each change recorded with its reason at ``at``."""
    shares = dict(zip(experiment.arms, experiment.shares.tolist(), strict=True))
    control = experiment.arms[experiment.control]
    for arm, reason in stops.items():
        freed, shares[arm] = shares[arm], 0.0
        running = [a for a, v in shares.items() if v > 0 and a != control and a not in stops]
        for other in running or [control]:
            shares[other] += freed / max(len(running), 1)
        experiment.set_shares(shares, reason=f"stop {arm}: {reason}", at=at)


def conversations_left(
    served: int, decision: Mapping[str, Any] | None, settings: LoopSettings
) -> int:
    """Conversations an experiment that has served ``served`` and last decided ``decision``
    (None before its first look) may still serve: none once it promotes or rolls back; up to
    ``loop.conversations`` otherwise; past that, up to ``loop.extend`` more, but only while
    the analysis expects to decide within them (its ``conversations_needed`` at the current
    effect). The confidence sequences are valid at any stopping time, so a stop that
    depends on the data inflates no error rate."""
    if decision is not None and decision["action"] in ("promote", "roll_back"):
        return 0
    if served < settings.conversations:
        return settings.conversations - served
    limit = settings.conversations + settings.extend
    needed = None if decision is None else decision.get("conversations_needed")
    if needed is None or served + needed > limit:
        return 0
    return limit - served


def _print_round(k: int, record: dict[str, Any], control: str) -> None:
    analysis = record["experiment"]
    values = record["values"]
    print(f"      {'arm':<28}{'conversations':>14}{'value':>9}  always-valid interval     true")
    for name, arm in analysis["arms"].items():
        mark = " (control)" if name == control else ""
        print(
            f"      {name + mark:<28}{arm['n_conversations']:>14}{arm['value']:>+9.3f}  "
            f"[{arm['ci_low']:+.3f}, {arm['ci_high']:+.3f}]{values[name]['true_value']:>+10.3f}"
        )
    for name, d in analysis["differences"].items():
        print(
            f"      {name} - {control}: {d['estimate']:+.3f}, confidence sequence "
            f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] (true "
            f"{values[name]['true_value'] - values[control]['true_value']:+.3f})"
        )
    srm = analysis["srm"]
    decision = analysis["decision"]
    print(
        f"      sample ratio p = {srm['p_value']:.3g}; decision: {decision['action']} ({decision['reason']})"
    )
    print(f"      production after round {k}: {record['production']}", flush=True)


def improvement_rounds(
    cfg: DictConfig,
    loop: LoopSettings,
    out: Path,
    logs: LoggedConversations,
    world: SyntheticWorld | None,
    reward: RewardSpec,
    baselines: dict[str, Policy],
    spec: Any,
    settings: Any,
    sim_spec: Any,
    ope: OPESettings,
    first: Learned,
    seed: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    """``loop.rounds`` improvement rounds (module doc); ``{"rounds": [..], "production": {..}}``.
    ``timings`` gets ``round1`` .. ``roundR``; each round's record its own stages."""
    if world is None:
        print("[rounds] skipped: the user's logs have no known world to experiment in")
        return {}
    fit = fit_settings_of(cfg)
    sources: dict[str, Path] = {
        resolve_shipped(p).stem: resolve_shipped(p) for p in pipeline_settings(cfg).baselines
    }
    prod_path = resolve_shipped(loop.production)
    production = Candidate(prod_path.stem, first.candidates[prod_path.stem], prod_path)
    pool, learned = logs, first
    rounds: list[dict[str, Any]] = []
    best_true = -np.inf
    for k in range(1, loop.rounds + 1):
        started = time.perf_counter()
        stages: dict[str, float] = {}  # the round's fit, train, evaluate, truth, experiment
        if k > 1:
            print(f"[round {k}] learn on the pooled logs ({pool.n_conversations} conversations)")
            learned = learn(
                pool, baselines, spec, settings, sim_spec, ope, reward, fit,
                out=out / "rounds" / f"round-{k}", seed=seed + 100 * k, timings=stages,
                name=f"{spec.kind}-r{k}", extra={production.name: production.policy},
                fidelity=False,
            )  # fmt: skip
        sources.update(learned.sources)
        inputs = _round_inputs(learned, production.name, sources, ope.select)
        record, production, decided = run_round(
            k, inputs, production, out=out, logs=pool, world=world, reward=reward,
            settings=loop, true_value_conversations=fit.true_value_conversations,
            seed=seed + 100 * k, timings=stages,
        )  # fmt: skip
        if decided is not None:
            with timed(stages, "pool"):
                pool = LoggedConversations.concat(
                    [pool, decided], source=f"{pool.n_conversations}+round {k}"
                )
        timings[f"round{k}"] = round(time.perf_counter() - started, 3)
        record["timings_s"] = stages
        rounds.append(record)
        best_true = max(
            best_true,
            max(v["true_value"] for n, v in record["values"].items() if n in inputs.candidates),
        )
    summary = _production_summary(rounds, production, best_true, world, reward, fit, seed)
    print(
        f"[rounds] production after {loop.rounds} round(s): {production.name}, true value "
        f"{summary['true_value']:+.3f}; best candidate's true value {best_true:+.3f} "
        f"(regret {summary['regret']:+.3f})",
        flush=True,
    )
    return {"rounds": rounds, "production": summary}


def _round_inputs(
    learned: Learned, production: str, sources: Mapping[str, Path], select: str
) -> RoundInputs:
    """What round ``k`` learned as the shortlist's input: every candidate but production,
    with the ``select`` selection interval of each evaluated policy (production's too)."""
    result = learned.result
    if production not in result.policies:
        raise UserError(f"loop.production: {production} was not evaluated")
    selection = {n: result.selection(n, select) for n in result.policies}
    candidates = {
        n: Candidate(n, p, sources[n]) for n, p in learned.candidates.items() if n != production
    }
    return RoundInputs(candidates, selection)


def _production_summary(
    rounds: list[dict[str, Any]],
    production: Candidate,
    best_true: float,
    world: SyntheticWorld,
    reward: RewardSpec,
    fit: Any,
    seed: int,
) -> dict[str, Any]:
    """result.json's ``production``: the policy after the rounds, its true value (from the
    last round's table, else simulated), the best candidate's, and the regret."""
    from supportrl.experiments.stages import value_stage

    prod_true = rounds[-1]["values"].get(production.name, {}).get("true_value")
    if prod_true is None:
        prod_true = value_stage(
            {production.name: production.policy},
            world,
            reward,
            fit.true_value_conversations,
            seed=seed + 1,
        )[production.name]["value"]
    experiment = next((r["experiment"]["log"] for r in reversed(rounds) if "experiment" in r), None)
    return {
        "policy": production.name,
        "true_value": prod_true,
        "experiment": experiment,
        "best_candidate_true_value": best_true,
        "regret": best_true - prod_true,
        **({"artifact": str(production.artifact)} if production.artifact else {}),
    }
