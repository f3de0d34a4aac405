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
conversations from the ground-truth world (group ``world/``, seed ``seed``) into
``RUN_DIR/data/`` (the generate stage, as ``generate`` and ``pipeline`` do) and, since
the truth is then known, also compares policy values in the simulator with their true
values (the ``policies`` given, else the deterministic rule files in ``configs/rules/``).

Keys of the ``fit`` section of ``configs/config.yaml`` (read into
:class:`experiments.stages.FitSettings`, as the pipeline reads them): ``fit.holdout``,
``fit.sample_turns`` (fit on a random sample of whole conversations of about this many
turns, stratified by the first turn's intent with ``fit.sample_min_per_intent`` and
weighted back to the logs' mix, stated in the fidelity report; null: all),
``fit.simulated_conversations`` (Monte Carlo conversations per policy in the simulator),
``fit.true_value_conversations`` (in the synthetic world), ``fit.plots``.

``result.json``: ``{"simulator": PATH, "family": .., "policies": {NAME:
{"simulated_value": x, ...}}, "fidelity": {...}, "data": {...}, "warnings": [..]}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.agents.base import Policy
from supportrl.agents.rules import load_rule_panel, load_rule_policy
from supportrl.experiments.common import (
    REPO_ROOT,
    UserError,
    finish,
    load_data,
    log_limits,
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    world_from_cfg,
)
from supportrl.experiments.entry import command
from supportrl.experiments.stages import (
    fidelity_stage,
    fit_data_stage,
    fit_settings_of,
    fit_stage,
    generate_settings,
    generate_stage,
    ray_settings,
    simulator_spec,
)
from supportrl.simulators.fidelity import policy_values, summary_lines
from supportrl.simulators.fitted import FAMILIES, FittedCustomerModel, fit_settings
from supportrl.simulators.logs import LoggedConversations, load_conversations
from supportrl.simulators.synthetic import SyntheticWorld


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


def conversations_loader(
    cfg: DictConfig, customers: str | Path | None
) -> Callable[[Any], LoggedConversations]:
    """``table -> conversations`` validated with the ``data`` group's settings (features,
    actions, limits) and joined with ``customers``: how a sample of the logs is read."""
    data = cfg.data

    def load(table: Any) -> LoggedConversations:
        return load_conversations(
            table, customers=customers, categorical=to_plain(data.categorical),
            numeric=to_plain(data.numeric), actions=to_plain(data.actions),
            limits=log_limits(cfg),
        )  # fmt: skip

    return load


def fit(cfg: DictConfig, out: Path) -> tuple[dict[str, Any], str]:
    """Run the command; returns (result, summary line)."""
    settings = fit_settings_of(cfg)
    spec = simulator_spec(cfg)
    family = spec.family
    if family not in FAMILIES:
        raise UserError(f"simulator={family}: fit needs one of {list(FAMILIES)}")
    seed = int(cfg.seed)
    fit_settings(family, seed=seed, **spec.params)  # bad settings fail before any work
    reward = reward_from_cfg(cfg)
    world: SyntheticWorld | None = None
    if cfg.data.kind != "conversations":
        raise UserError(f"data={cfg.data.kind}: fit needs conversation logs (data.turns=PATH)")
    if cfg.data.turns is None:
        world = world_from_cfg(cfg)
        generation = generate_settings(cfg)
        n = generation.n_conversations
        print(f"no data.turns: generating {n} synthetic conversations (seed {seed})")
        generated = generate_stage(
            world, generation, seed=seed, out=out, engine=str(cfg.engine), ray=ray_settings(cfg)
        )
        turns, customers = generated.turns, generated.customers
        data: dict[str, Any] = {"source": "synthetic", **generated.to_dict()}

        def load_all() -> LoggedConversations:
            return load_conversations(turns, customers=customers)
    else:
        turns, customers = Path(str(cfg.data.turns)), cfg.data.customers
        data = {"source": str(cfg.data.turns)}

        def load_all() -> LoggedConversations:
            loaded = load_data(cfg)
            assert isinstance(loaded, LoggedConversations)
            return loaded

    fitted = fit_data_stage(
        settings,
        seed=seed,
        turns=turns,
        load=conversations_loader(cfg, customers),
        limits=log_limits(cfg),
        logs=load_all,
    )
    train, test = fitted.train, fitted.test
    data["conversations"] = train.n_conversations + (0 if test is None else test.n_conversations)
    if fitted.sample is not None:
        data["sample"] = fitted.sample
    # Policies first: a bad rule file should fail before minutes of fitting.
    requested = load_policies(list(to_plain(cfg.policies) or []), train.actions)
    for name, policy in requested.items():
        check = getattr(policy, "check_variables", None)
        if check is not None:
            try:
                check(train.states().keys())
            except ValueError as exc:
                raise UserError(f"policies: {name}: {exc}") from exc
    data.update(
        train_conversations=train.n_conversations,
        holdout_conversations=0 if test is None else test.n_conversations,
    )
    print(
        f"fitting {family} on {train.n_conversations} conversations ({train.n_turns} turns); "
        f"{data['holdout_conversations']} held out"
    )
    model: FittedCustomerModel = fit_stage(
        train, spec, seed=seed, out=out, conversation_weights=fitted.weights
    )
    path = out / "simulator"
    print(f"simulator: {path}")

    n_sim = settings.simulated_conversations
    panel = requested or (
        load_rule_panel(REPO_ROOT / "configs" / "rules", model.actions) if world is not None else {}
    )
    report = fidelity_stage(
        model, fitted, reward, settings, seed=seed, out=out, world=world, policies=panel
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
