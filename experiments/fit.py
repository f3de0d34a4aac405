"""``supportrl fit``: fit a customer simulator from logs, save it, and report its fidelity.

    supportrl fit data.turns=PATH [data.customers=PATH] simulator=glm|ensemble \\
        [policies=[FILE.yaml,..]] [seed=N]

The family and its settings come from Hydra group ``simulator/`` (``configs/simulator/
glm.yaml``, ``ensemble.yaml``); the fit is :func:`experiments.stages.fit_stage`, which the
pipeline calls too. A share ``fit.holdout`` of the conversations (default 0.2) is held
out: the model is fitted on the rest, saved to ``RUN_DIR/simulator/``, and scored on the
held-out part (:func:`simulators.fidelity.fidelity_report`); plots go to
``RUN_DIR/plots/``. Each rule policy in ``policies`` gets its value in the simulator.

Without ``data.turns`` the command generates ``generate.n_conversations`` synthetic
conversations from the ground-truth world (group ``world/``, seed ``seed``) and, since
the truth is then known, also compares policy values in the simulator with their true
values (the ``policies`` given, else the deterministic rule files in ``configs/rules/``).

Keys of the ``fit`` section of ``configs/config.yaml``: ``fit.holdout``,
``fit.sample_turns`` (fit on a random sample of whole conversations of about this many
turns, stratified by the first turn's intent with ``fit.sample_min_per_intent`` and weighted
back to the logs' mix, stated in the fidelity report; null: all), ``fit.simulated_conversations`` (Monte Carlo conversations per policy in the simulator,
default 20000), ``fit.true_value_conversations`` (in the synthetic world, default
50000), ``fit.plots``.

``result.json``: ``{"simulator": PATH, "family": .., "policies": {NAME:
{"simulated_value": x, ...}}, "fidelity": {...}, "data": {...}, "warnings": [..]}``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from supportrl.agents.base import Policy
from supportrl.agents.rules import load_rule_panel, load_rule_policy
from supportrl.experiments.common import (
    REPO_ROOT,
    UserError,
    finish,
    load_data,
    log_limits,
    output,
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    world_from_cfg,
)
from supportrl.experiments.entry import command
from supportrl.experiments.stages import fit_stage, simulator_spec
from supportrl.simulators.fidelity import fidelity_report, policy_values, summary_lines
from supportrl.simulators.fitted import FAMILIES, FittedCustomerModel, fit_settings
from supportrl.simulators.logs import LoggedConversations, load_conversations
from supportrl.simulators.logs_bounded import parquet_parts, stratified_sample
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs


def split_conversations(
    logs: LoggedConversations, holdout: float, seed: int
) -> tuple[LoggedConversations, LoggedConversations | None]:
    """(train, held-out) by conversation; held-out is None when ``holdout`` is 0."""
    if not 0 <= holdout < 1:
        raise UserError(f"fit.holdout must be in [0, 1), got {holdout}")
    if holdout == 0 or logs.n_conversations < 2:
        return logs, None
    order = np.random.default_rng(seed).permutation(logs.n_conversations)
    n_test = max(1, int(round(holdout * logs.n_conversations)))
    test = np.zeros(logs.n_conversations, dtype=bool)
    test[order[:n_test]] = True
    return logs.select(~test), logs.select(test)


def load_policies(paths: list[str], actions: tuple[str, ...]) -> dict[str, Policy]:
    """Rule policies by file stem."""
    policies: dict[str, Policy] = {}
    for path in paths:
        resolved = resolve_shipped(path)
        name = resolved.stem
        if name in policies:
            raise UserError(f"policies: two files named {name!r}; policies are named by file stem")
        policies[name] = load_rule_policy(resolved, actions)
    return policies


def load_fit_logs(
    cfg: DictConfig, seed: int
) -> tuple[LoggedConversations, dict[str, Any] | None, np.ndarray | None]:
    """The logs to fit on: all of ``data.turns``, or, with ``fit.sample_turns=N`` and Parquet
    logs of more rows, a random sample of whole conversations of about N turns stratified by
    the first turn's intent (``fit.sample_min_per_intent``; each kept by a hash of its id),
    how it was drawn, and its weights per conversation (None: no sample)."""
    n = OmegaConf.select(cfg, "fit.sample_turns", default=None)
    turns = Path(str(cfg.data.turns))
    parquet = turns.is_dir() or turns.suffix.lower() in (".parquet", ".pq")
    rows = sum(r for _, r in parquet_parts(turns)) if n is not None and parquet else 0
    if n is None or not parquet or rows <= int(n):
        loaded = load_data(cfg)
        assert isinstance(loaded, LoggedConversations)
        return loaded, None, None
    data = cfg.data

    def load(table: Any) -> LoggedConversations:
        return load_conversations(
            table, customers=data.customers, categorical=to_plain(data.categorical),
            numeric=to_plain(data.numeric), actions=to_plain(data.actions),
            limits=log_limits(cfg),
        )  # fmt: skip

    share = int(n) / rows
    floor = int(OmegaConf.select(cfg, "fit.sample_min_per_intent", default=0) or 0)
    drawn = stratified_sample(turns, share, seed, load, log_limits(cfg), min_per_intent=floor)
    logs = drawn.logs
    sample = {
        "method": "random sample of whole conversations by a hash of conversation_id, "
        "stratified by the first turn's intent; each conversation weighted by its inverse "
        f"probability of inclusion (fit.sample_min_per_intent={floor})",
        "share": share,
        "conversations": logs.n_conversations,
        "turns": logs.n_turns,
        "of_turns": rows,
        "strata": drawn.strata,
    }
    print(
        f"fit.sample_turns={n}: fitting on a random sample of {logs.n_conversations} "
        f"conversations ({logs.n_turns} of {rows} turns), stratified by intent"
    )
    return logs, sample, drawn.weights


def fit(cfg: DictConfig, out: Path) -> tuple[dict[str, Any], str]:
    """Run the command; returns (result, summary line)."""
    settings = cfg.fit
    spec = simulator_spec(cfg)
    family = spec.family
    if family not in FAMILIES:
        raise UserError(f"simulator={family}: fit needs one of {list(FAMILIES)}")
    seed = int(cfg.seed)
    fit_settings(family, seed=seed, **spec.params)  # bad settings fail before any work
    reward = reward_from_cfg(cfg)
    world: SyntheticWorld | None = None
    weights = None  # a sample's weights per conversation (fit.sample_turns)
    if cfg.data.kind != "conversations":
        raise UserError(f"data={cfg.data.kind}: fit needs conversation logs (data.turns=PATH)")
    if cfg.data.turns is None:
        world = world_from_cfg(cfg)
        n = int(cfg.generate.n_conversations)
        print(f"no data.turns: generating {n} synthetic conversations (seed {seed})")
        logs = generate_logs(
            n,
            seed=seed,
            world=world,
            customers_per_conversation=float(cfg.generate.customers_per_conversation),
        ).logs
        data = {"source": "synthetic", "conversations": n, "seed": seed}
    else:
        logs, sample, weights = load_fit_logs(cfg, seed)
        data = {"source": str(cfg.data.turns), "conversations": logs.n_conversations}
        if sample is not None:
            data["sample"] = sample
    # Policies first: a bad rule file should fail before minutes of fitting.
    requested = load_policies(list(to_plain(cfg.policies) or []), logs.actions)
    for name, policy in requested.items():
        check = getattr(policy, "check_variables", None)
        if check is not None:
            try:
                check(logs.states().keys())
            except ValueError as exc:
                raise UserError(f"policies: {name}: {exc}") from exc
    train, test = split_conversations(logs, float(settings["holdout"]), seed)
    data.update(
        train_conversations=train.n_conversations,
        holdout_conversations=0 if test is None else test.n_conversations,
    )
    print(
        f"fitting {family} on {train.n_conversations} conversations ({train.n_turns} turns); "
        f"{data['holdout_conversations']} held out"
    )
    train_weights = None
    if weights is not None:  # the training conversations' sampling weights
        train_weights = weights[pd.Index(logs.conversation_id).get_indexer(train.conversation_id)]
    model: FittedCustomerModel = fit_stage(
        train, spec, seed=seed, out=out, conversation_weights=train_weights
    )
    path = out / "simulator"
    print(f"simulator: {path}")

    n_sim = int(settings["simulated_conversations"])
    panel = requested or (
        load_rule_panel(REPO_ROOT / "configs" / "rules", model.actions) if world is not None else {}
    )
    if test is None:
        print("warning: fit.holdout=0: the fidelity report is in-sample")
    held_out = test if test is not None else train
    report_model = model
    if train_weights is not None:
        # the held-out conversations keep the stratified sample's mix of intents, where the
        # model's pool has the logs' mix: the replay starts from their own first states
        first = model.logged_states(held_out).take(held_out.offsets[:-1])
        report_model = dataclasses.replace(model, pool=first)
    report = fidelity_report(
        report_model,
        held_out,
        reward=reward,
        world=world,
        policies=panel,
        n_simulated=n_sim,
        n_true=int(settings["true_value_conversations"]),
        seed=seed,
        plots_dir=output(out / "plots") if settings["plots"] else None,
    )
    policies: dict[str, dict[str, float]] = {}
    if requested:
        if "panel" in report:
            for name in requested:
                policies[name] = dict(report["panel"]["policies"][name])
        else:
            values = policy_values(model, requested, n=n_sim, seed=seed + 1, reward=reward)
            policies = {k: {"simulated_value": v} for k, v in values.items()}
            if model.config.penalty > 0:
                pen = policy_values(
                    model, requested, n=n_sim, seed=seed + 1, reward=reward, penalized=True
                )
                for k, v in pen.items():
                    policies[k]["simulated_penalized"] = v
    for line in summary_lines(report):
        print(line)
    if requested and "panel" not in report:
        for name, v in policies.items():
            print(f"  {name:<30} simulated {v['simulated_value']:+.4f}")
    if "sample" in data:
        # the fit and the held-out scores come from the sample: say so with the fidelity
        report["sample"] = data["sample"]
    result = {
        "simulator": str(path),
        "family": family,
        "hyperparameters": model.hyperparameters(),
        "data": data,
        "policies": policies,
        "fidelity": report,
        "warnings": list(model.warnings),
    }
    summary = (
        f"fit: {family} simulator from {train.n_conversations} conversations -> {path}; "
        f"held-out log-lik {report['outcome_model']['log_likelihood']:.4f}"
    )
    if "panel" in report:
        m = report["panel"]["metrics"]
        summary += f"; panel Spearman {m['spearman']:.3f}, MAE {m['mae']:.4f}"
    return result, summary


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    result, summary = fit(cfg, run_dir())
    return finish(result, summary)


if __name__ == "__main__":
    main()
