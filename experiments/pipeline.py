"""``supportrl pipeline``: the main job, from logs to a chosen policy.

Every stage is the stage function the single commands use (:mod:`.stages`), built from
the same config, so every override reaches its stage:

1. data: ``data.turns=PATH`` loads the user's logs (a missing file is an error); without
   it, ``generate.n_conversations`` conversations are generated from the ground-truth
   world (``world.*``, ``seed``);
2. validate: the logs' summary;
3. fit the customer simulator of group ``simulator/`` (``simulator=glm|ensemble``) as
   ``fit`` does (``fit.*``: a share ``fit.holdout`` held out and scored, ``fit.sample_turns``);
4. train the agent of group ``agent/`` in it for ``train.total_steps`` env steps under
   ``reward/``;
5. evaluate the agent and the rule baselines (``pipeline.baselines``) off-policy on the
   logs (``ope.*``), and their simulated values (``fit.simulated_conversations``);
6. select: the highest lower bound of ``ope.select``, if it beats the logging policy;
7. only on generated data (the world is known): every candidate's true value
   (``fit.true_value_conversations``).

Writes data (when generated), ``simulator/``, ``agents/<kind>/`` (checkpoint,
``metrics.csv``, ``learning_curve.png``), ``forest.png`` and ``result.json``.
Comparing agents, rewards or simulators is a multirun or a sweep over this command
(``configs/experiment/``), gathered by ``supportrl report``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.agents.base import Policy
from supportrl.agents.rules import load_rule_policy
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.fit import conversations_loader
from supportrl.experiments.from_config import load_data, log_limits, reward_from_cfg, to_plain
from supportrl.experiments.learn import Learned, learn, step
from supportrl.experiments.plots import forest_plot
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.report import records_of, write_report
from supportrl.experiments.results import finish, plot_or_warn
from supportrl.experiments.run_dirs import output, run_dir
from supportrl.experiments.stages import (
    OPEResult,
    OPESettings,
    agent_spec,
    fit_data_stage,
    fit_settings_of,
    generate_settings,
    generate_stage,
    loop_settings,
    ope_settings,
    pipeline_settings,
    print_ope,
    ray_settings,
    segment_stage,
    simulator_spec,
    timed,
    train_settings,
    value_stage,
    world_config,
)
from supportrl.experiments.summary import Interval, Selection, select_winner
from supportrl.experiments.validate import print_summary
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld


def load_baselines(cfg: DictConfig, actions: tuple[str, ...]) -> dict[str, Policy]:
    baselines: dict[str, Policy] = {}
    for path in pipeline_settings(cfg).baselines:
        resolved = resolve_shipped(path)
        if resolved.stem in baselines:
            raise UserError(f"pipeline.baselines: two files named {resolved.stem!r}")
        baselines[resolved.stem] = load_rule_policy(resolved, actions)
    return baselines


def obtain_logs(
    cfg: DictConfig, out: Path, timings: dict[str, float]
) -> tuple[LoggedConversations, dict[str, Any], SyntheticWorld | None]:
    """Steps 1-2: the user's logs (``data.turns``) or generated ones; (logs, data, world)."""
    seed = int(cfg.seed)
    if cfg.data.kind != "conversations":
        raise UserError(
            f"data={cfg.data.kind}: the pipeline needs conversation logs (data.turns=PATH)"
        )
    world = None
    if cfg.data.turns is None:
        world = SyntheticWorld(config=world_config(cfg))
        generation = generate_settings(cfg)
        n = generation.n_conversations
        step(1, f"generate {n} conversations from the ground-truth world (seed {seed})")
        with timed(timings, "generate"):
            generated = generate_stage(
                world, generation, seed=seed, out=out, engine=str(cfg.engine),
                ray=ray_settings(cfg),
            )  # fmt: skip
        data = {"source": "synthetic", **generated.to_dict()}
        print(f"      turns: {generated.turns}")
        with timed(timings, "validate"):  # load + every schema-v1 check
            logs = load_conversations(generated.turns, customers=generated.customers)
    else:
        step(1, f"load {cfg.data.turns}")
        with timed(timings, "validate"):
            loaded = load_data(cfg)
        assert isinstance(loaded, LoggedConversations)
        logs = loaded
        data = {"source": str(cfg.data.turns), "customers": cfg.data.customers}
    step(2, "validate")
    summary = logs.summary()
    print_summary(summary)
    data["summary"] = summary
    return logs, data, world


@command
def pipeline(cfg: DictConfig) -> dict[str, Any]:
    return run_pipeline(cfg)


def run_pipeline(cfg: DictConfig, *, min_rounds: int = 0) -> dict[str, Any]:
    """The pipeline's work (``supportrl pipeline``); ``supportrl loop`` asks for at least
    ``min_rounds`` improvement rounds."""
    out = run_dir()
    seed = int(cfg.seed)
    reward = reward_from_cfg(cfg)
    spec, settings, sim_spec, ope, fit = (
        agent_spec(cfg),
        train_settings(cfg),
        simulator_spec(cfg),
        ope_settings(cfg),
        fit_settings_of(cfg),
    )
    if ope.select not in ope.conversation_estimators:
        raise UserError(
            f"ope.select={ope.select!r}: the pipeline selects by a conversation-level "
            f"estimator, one of {list(ope.conversation_estimators)}"
        )
    loop = loop_settings(cfg)  # every stage's settings are checked before any work
    if loop.rounds < min_rounds:
        raise UserError(
            f"loop.rounds={loop.rounds}: the loop command runs at least {min_rounds} round"
        )
    timings: dict[str, float] = {}
    start = time.perf_counter()
    logs, data, world = obtain_logs(cfg, out, timings)
    baselines = load_baselines(cfg, logs.actions)  # a bad rule file fails before the fit
    production = {}
    if loop.rounds > 0 and world is not None:  # production must be evaluated: it is the control
        path = resolve_shipped(loop.production)
        if path.stem not in baselines:
            production = {path.stem: load_rule_policy(path, logs.actions)}

    turns = Path(str(cfg.data.turns or data["turns"]))
    customers = cfg.data.customers if cfg.data.turns else data["customers"]
    learned = learn(
        logs, baselines, spec, settings, sim_spec, ope, reward, fit,
        out=out, seed=seed, timings=timings, name=spec.kind, extra=production,
        fit_data=lambda: fit_data_stage(
            fit, seed=seed, turns=turns, load=conversations_loader(cfg, customers),
            limits=log_limits(cfg), logs=logs,
        ),
    )  # fmt: skip
    payload, selection = choose_and_ship(cfg, out, data, logs, world, reward, learned, timings)
    if loop.rounds > 0:  # timings_s gets round1 .. roundR, each round's record its stages
        from supportrl.experiments.rounds import improvement_rounds

        payload.update(
            improvement_rounds(
                cfg,
                loop,
                out,
                logs,
                world,
                reward,
                baselines,
                spec,
                settings,
                sim_spec,
                ope,
                learned,
                seed,
                timings,
            )  # fmt: skip
        )
    payload["wall_s"] = round(time.perf_counter() - start, 3)
    payload["timings_s"] = timings
    payload["report"] = own_report(out, payload, ope)
    n_conv = payload["summary"]["conversations"]
    summary = headline(selection, learned.result, ope)
    if "production" in payload:
        prod = payload["production"]
        summary += (
            f"; production after {loop.rounds} round(s): {prod['policy']} (true "
            f"{prod['true_value']:+.3f}, best candidate {prod['best_candidate_true_value']:+.3f})"
        )
    return finish(payload, f"{summary}; {n_conv} conversations -> {out}")


def choose_and_ship(
    cfg: DictConfig,
    out: Path,
    data: dict[str, Any],
    logs: LoggedConversations,
    world: SyntheticWorld | None,
    reward: RewardSpec,
    learned: Learned,
    timings: dict[str, float],
) -> tuple[dict[str, Any], Selection]:
    """Steps 5 (its report), 6 and 7 of the first pass: print the OPE table and the forest
    plot, the segments (``report.segment_by``), select the winner, the true values (world
    known) and ship the winner; (result.json's payload so far, the selection)."""
    seed, ope, fit = int(cfg.seed), ope_settings(cfg), fit_settings_of(cfg)
    result, candidates = learned.result, learned.candidates
    print_ope(result, ope.alpha)
    plot_or_warn(lambda _: write_forest(out, result, ope), out / "forest.png")
    segments = {}
    if cfg.report.segment_by:
        with timed(timings, "segments"):
            by = tuple(cfg.report.segment_by)
            segments = segment_stage(logs, reward, learned.probs, ope, seed=seed, by=by)
        print_segments(segments, ope.select)

    step(6, f"select: highest lower bound of {ope.select}, if above the logging policy")
    # the honest interval: the select estimator's, widened by the FQE-vs-IS disagreement and
    # by partial-identification bounds where the logs miss the candidate's actions
    with timed(timings, "select"):
        selection = select_winner(
            {k: Interval.of(result.selection(k, ope.select)) for k in result.policies},
            result.logging_value["estimate"],
            estimator=ope.select,
        )
    print(f"      {selection.reason}")
    with timed(timings, "truth"):
        truth = ground_truth(world, candidates, reward, fit.true_value_conversations, seed)

    simulated = learned.simulated
    _print_table(candidates, result, simulated, truth, ope.select, selection.winner)
    payload = _payload(
        cfg, data, out, agent_spec(cfg).kind, learned.trained, result, simulated, truth,
        ope.select, selection,
    )  # fmt: skip
    with timed(timings, "ship"):
        shipped = ship(
            cfg, out, selection, learned.sources, logs, world, reward, result, simulated, truth
        )
    payload.update(shipped)
    if learned.fidelity is not None:
        payload["fidelity"] = learned.fidelity
    if segments:
        payload["segments"] = segments
    return payload, selection


def ship(
    cfg: DictConfig,
    out: Path,
    selection: Selection,
    trained_sources: dict[str, Path],
    logs: LoggedConversations,
    world: SyntheticWorld | None,
    reward: RewardSpec,
    result: OPEResult,
    simulated: dict[str, dict[str, float]],
    truth: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Export the winner as a serving artifact and, where the world is known, deploy it to
    the world's customers (the A/B-test stand-in); ``{"artifact": PATH, "deploy": {..}}``.

    With no safely better candidate the one with the highest lower bound is shipped anyway,
    and said so: the deployment is how a researcher checks that call.
    """
    from supportrl.experiments.deploy import ship_winner
    from supportrl.experiments.export import export_stage

    name = selection.winner or selection.best_lower_bound
    if name is None:
        print("[ship] nothing to export: no candidate has a finite interval")
        return {}
    if selection.winner is None:
        print(f"[ship] no candidate is safely better; exporting {name} (best lower bound) to check")
    sources = dict(trained_sources)
    sources.update(
        {resolve_shipped(p).stem: resolve_shipped(p) for p in pipeline_settings(cfg).baselines}
    )
    select = ope_settings(cfg).select
    predicted = {
        "ope": {"name": select, **result.selection(name, select)},
        "simulated_value": simulated[name]["value"],
        **({"true_value": truth[name]["value"]} if truth else {}),
    }
    if world is None:
        print(f"[ship] export {name} (no known world to deploy to: the user's logs)", flush=True)
        artifact = export_stage(
            sources[name], output(out / "artifact"), reference=logs, evaluation=predicted
        )
        print(f"      artifact: {artifact}")
        return {"artifact": str(artifact)}
    print(f"[ship] export {name} and deploy it to the synthetic world's customers", flush=True)
    return ship_winner(
        out,
        source=sources[name],
        reference=logs,
        world=world,
        reward=reward,
        n_conversations=int(cfg.n_conversations),
        seed=int(cfg.seed),
        predicted=predicted,
        epsilon=to_plain(cfg.deploy.epsilon),
    )


def ground_truth(
    world: SyntheticWorld | None,
    candidates: dict[str, Policy],
    reward: Any,
    n: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Step 7: true values of the candidates and the logging policy, when the world is known."""
    if world is None:
        step(7, "ground truth: skipped (the user's logs; no known world)")
        return {}
    step(7, "ground truth (the world is known): true values by Monte Carlo")
    policies = {**candidates, "logging": world.logging_policy}
    return value_stage(policies, world, reward, n, seed=seed + 1)


def write_forest(out: Path, result: OPEResult, ope: OPESettings) -> None:
    """``forest.png``: every candidate's conversation-level estimates."""
    forest_plot(
        out / "forest.png",
        [
            {"label": f"{name} · {est}", "policy": name, **row}
            for name, rows in result.policies.items()
            for est, row in rows.items()
            if est in ope.conversation_estimators
        ],
        level=1 - ope.alpha,
        logging_value=result.logging_value["estimate"],
        title="Pipeline candidates: conversation-level estimates",
    )


def own_report(out: Path, payload: dict[str, Any], ope: OPESettings) -> dict[str, str]:
    """The report ``supportrl report`` writes, for this run's candidates; its paths."""
    records = records_of(out, payload, ope.select)
    for rec in records:
        rec.config = rec.agent  # one run: the candidates are the configurations
    report = write_report(
        out, records, select=ope.select, level=1 - ope.alpha, title=f"supportrl pipeline: {out}"
    )
    return {"html": report["html"], "md": report["md"], "csv": report["csv"]}


def headline(selection: Selection, result: OPEResult, ope: OPESettings) -> str:
    if selection.winner is None:
        return f"pipeline: no candidate is safely better than the logging policy ({ope.select})"
    low = result.selection(selection.winner, ope.select)["ci_low"]
    return (
        f"pipeline: winner {selection.winner} ({ope.select} lower bound {low:+.3f} > logging "
        f"{result.logging_value['estimate']:+.3f})"
    )


def print_segments(segments: dict[str, Any], select: str) -> None:
    """Per segment: each candidate's estimate and interval, and its top action vs the logger's."""
    for feature, values in segments.items():
        print(f"      by {feature} ({select}; top action, candidate vs logging policy):")
        for value, seg in values.items():
            logged = seg["logging"]
            top_logged = max(logged["action_mix"], key=logged["action_mix"].get)
            print(
                f"        {feature}={value} ({seg['n_conversations']} conversations): "
                f"logging {logged['value']['estimate']:+.3f} ({top_logged})"
            )
            for name, row in seg["policies"].items():
                top = max(row["action_mix"], key=row["action_mix"].get)
                print(
                    f"          {name:<26}{row['estimate']:+.3f} "
                    f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] ({top})"
                )


def _print_table(candidates, result, simulated, truth, select, winner) -> None:
    """Per candidate: simulated value, the select estimate with its selection interval (the
    one the winner is chosen on), and the true value where the world is known."""
    print(f"\n{'candidate':<26}{'simulated':>10}{select:>10}{'selection interval':>22}{'true':>9}")
    for name in candidates:
        row = result.selection(name, select)
        true = f"{truth[name]['value']:>+9.3f}" if truth else f"{'-':>9}"
        mark = "  <- winner" if name == winner else ""
        print(
            f"{name:<26}{simulated[name]['value']:>+10.3f}{row['estimate']:>+10.3f}"
            f"    [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{true}{mark}"
        )
    if truth:
        print(f"{'logging policy':<26}{'':>10}{'':>10}{'':>22}{truth['logging']['value']:>+9.3f}")


def _payload(cfg, data, out, kind, trained, result, simulated, truth, select, selection):
    policies = {}
    for name, rows in result.policies.items():
        policies[name] = {
            "simulated_value": simulated[name]["value"],
            **({"true_value": truth[name]["value"]} if truth else {}),
            **rows,
            "selection": result.selection(name, select),
            "ess_conversation": result.diagnostics[name].get("ess_conversation"),
        }
    payload: dict[str, Any] = {
        "data": data,
        "summary": data.pop("summary"),
        "simulator": str(out / "simulator"),
        "agent": kind,
        "backend": trained.backend,
        "env_steps": trained.env_steps,
        "agents": {
            kind: {
                "checkpoint": str(trained.checkpoint),
                "env_steps": trained.env_steps,
                "wall_s": round(trained.wall_s, 3),
                "metrics": str(out / "agents" / kind / "metrics.csv"),
            }
        },
        "policies": policies,
        "select": select,
        "logging_value": result.logging_value,
        "winner": selection.winner,
        "selection": selection.to_dict(),
    }
    if truth:
        payload["logging_true_value"] = truth["logging"]["value"]
        payload["best_true"] = max(policies, key=lambda k: policies[k]["true_value"])
    return payload


main = pipeline

if __name__ == "__main__":
    main()
