"""``supportrl train agent=<kind> [backend=native|rllib]``: train an agent online in SupportEnv.

The ``env/`` group picks the customer model (the ground-truth world of group ``world/``,
or a fitted simulator with ``env=fitted env.path=DIR``); the ``agent/`` group picks the
agent and its hyperparameters; ``train.total_steps`` is the step budget of every agent.
Bandits train natively; ``agent=dqn`` trains with the native torch learner
(``backend=native``) or with RLlib (``backend=rllib``, on this machine or on the cluster
at ``ray.address``), both from the same ``configs/agent/dqn.yaml``. The training itself
is :func:`experiments.stages.train_stage`, which the pipeline calls too.

Writes the checkpoint (plain arrays + JSON), ``metrics.csv`` (fixed metric names:
``charts/episodic_return`` and, for bandits, ``charts/cumulative_regret``; for DQN
``losses/td_loss``, ``losses/q_values``, ``charts/epsilon``, ``charts/SPS``), TensorBoard
event files (every agent), ``learning_curve.png`` and ``result.json`` = ``{"agent",
"backend", "env_steps", "wall_s", "sps", "final_return", "checkpoint", ...}``; with the
synthetic world also the best known policy (rule panel and logging policy) and its true
value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.agents.bandits import BANDITS, make_bandit
from supportrl.agents.base import Policy
from supportrl.agents.rules import load_rule_panel
from supportrl.agents.training import REWARD_MODES, reward_to_go
from supportrl.envs.model import CustomerModel
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import load_data, reward_from_cfg, world_from_cfg
from supportrl.experiments.plots import write_metrics
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import output, run_dir
from supportrl.experiments.stages import (
    AgentSpec,
    agent_spec,
    env_settings,
    train_settings,
    train_stage,
    value_stage,
)
from supportrl.simulators.synthetic import SyntheticWorld


def model_from_cfg(cfg: DictConfig) -> CustomerModel:
    """The customer model the ``env`` group selects."""
    env = env_settings(cfg)
    if env.model == "synthetic":
        return world_from_cfg(cfg)
    if env.model == "fitted":
        from supportrl.simulators.fitted import load_customer_model

        return load_customer_model(env.path)
    if env.model == "logs":
        raise UserError("env=logs (offline learning from logs) is for bandits only")
    raise UserError(f"env.model={env.model!r}: expected 'synthetic', 'fitted' or 'logs'")


def known_values(world: SyntheticWorld, cfg: DictConfig) -> dict[str, float]:
    """True values of the logging policy and the rule panel (``train.regret_panel``)."""
    reward = reward_from_cfg(cfg)
    candidates: dict[str, Policy] = {"logging": world.logging_policy}
    panel = resolve_shipped(train_settings(cfg).regret_panel)
    candidates.update(load_rule_panel(panel, world.actions))
    values = value_stage(candidates, world, reward, 20_000, seed=int(cfg.seed) + 7)
    return {name: v["value"] for name, v in values.items()}


def _offline_estimate(
    cfg: DictConfig, prepared: Any, reward: Any, kind: str, agent: Any, seed: int
) -> tuple[Any, dict[str, Any]]:
    """The offline-trained ``agent``'s estimate by the headline estimator ``ope.select``
    on the logs it learned from (``prepared``); and the OPE settings used."""
    import dataclasses

    from supportrl.experiments.stages import evaluate_stage, ope_settings

    settings = ope_settings(cfg)
    if settings.select not in settings.conversation_estimators:
        raise UserError(f"ope.select={settings.select!r}: expected a conversation-level estimator")
    settings = dataclasses.replace(
        settings, conversation_estimators=(settings.select,), decision_estimators=()
    )
    data = prepared.logs
    estimate = evaluate_stage(
        data,
        reward,
        {kind: agent.action_probs(data.states())},
        settings,
        seed=seed,
        prepared=prepared,
    ).policies[kind][settings.select]
    return settings, estimate


def train_bandit_offline_command(cfg: DictConfig, out: Path, spec: AgentSpec) -> dict[str, Any]:
    """``env=logs``: learn a bandit from logged decisions without a simulator.

    Per-turn rewards under reward v1 (missing CSAT imputed with the selection model,
    missing propensities estimated, both reported), the immediate reward or the
    conversation's reward-to-go (``train.reward_mode``), IPS- or DR-weighted updates
    (``env.target``). ``final_return`` is the learned policy's off-policy estimate by the
    headline estimator ``ope.select`` on the same logs.
    """
    import time

    from supportrl.agents.bandits import fit_offline
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.ope.models import cross_fit_reward
    from supportrl.simulators.fitted.csat import CsatImputation
    from supportrl.simulators.logs import LoggedConversations

    data = load_data(cfg)
    if not isinstance(data, LoggedConversations):
        raise UserError("env=logs trains on conversation logs: give data.turns=PATH")
    reward = reward_from_cfg(cfg)
    seed = int(cfg.seed)
    start = time.perf_counter()
    prepared = prepare_conversations(data, reward, csat_imputer=CsatImputation.from_logs, seed=seed)
    for note in prepared.notes:
        print(f"note: {note}")
    data = prepared.logs  # conversations cut at reward.max_turns, as the rewards are
    kind = spec.kind
    env = env_settings(cfg)
    agent = make_bandit(kind, data.actions, prepared.feature_spec, seed=seed, **spec.params)
    mode = train_settings(cfg).reward_mode
    if mode not in REWARD_MODES:
        raise UserError(f"train.reward_mode={mode!r}: expected one of {list(REWARD_MODES)}")
    target = prepared.reward if mode == "immediate" else reward_to_go(prepared.reward, data.offsets)
    reward_hat = None
    if env.target == "dr":
        reward_hat = cross_fit_reward(
            prepared.x, data.action, target, len(data.actions),
            groups=data.conversation_index, seed=seed,
        )  # fmt: skip
    stats = fit_offline(
        agent,
        data.states(),
        data.action,
        target,
        prepared.propensity,
        target=str(env.target),
        reward_hat=reward_hat,
        clip=float(env.clip),
    )
    wall = time.perf_counter() - start
    checkpoint = agent.save(output(out / "checkpoint"))
    settings, estimate = _offline_estimate(cfg, prepared, reward, kind, agent, seed)
    summary: dict[str, Any] = {
        "agent": kind,
        "backend": "native",
        "env_steps": data.n_turns,
        "wall_s": round(wall, 3),
        "sps": round(data.n_turns / wall, 1),
        "final_return": estimate["estimate"],
        "final_return_ci": [estimate["ci_low"], estimate["ci_high"]],
        "final_return_source": f"ope:{settings.select} on the training logs",
        "checkpoint": str(checkpoint),
        "env": "logs",
        "reward_mode": mode,
        "offline_target": str(env.target),
        "weights": {
            "ess": stats.effective_sample_size,
            "max_weight": stats.max_weight,
            "n_clipped": stats.n_clipped,
        },
    }
    return finish(
        summary,
        f"train {kind} offline ({env.target}): {data.n_turns} logged decisions in {wall:.1f} s, "
        f"{settings.select} estimate {estimate['estimate']:+.4f}",
    )


def online_command(cfg: DictConfig, out: Path, spec: AgentSpec) -> dict[str, Any]:
    """Train ``spec`` in the env's customer model (:func:`stages.train_stage`) and report.

    Every learning-curve point goes to TensorBoard, MLflow (``logger=mlflow``) and, in a
    sweep, to the Tune trial as it is made (:mod:`.tracking`).
    """
    from supportrl.experiments.tracking import command_tracker

    model = model_from_cfg(cfg)
    reward = reward_from_cfg(cfg)
    seed = int(cfg.seed)
    settings = train_settings(cfg)
    best_name, best_value, logging_value = (None, None, None)
    if isinstance(model, SyntheticWorld):
        known = known_values(model, cfg)
        best_name = max(known, key=known.__getitem__)
        best_value, logging_value = known[best_name], known["logging"]
        print(f"best known policy: {best_name} (true value {best_value:+.4f})")
    env = env_settings(cfg)
    model_path = Path(str(env.path)) if env.model == "fitted" else None
    tracker = command_tracker(cfg, out, "train", f"{spec.kind} seed={seed}")
    with tracker:
        trained = train_stage(
            spec,
            model,
            reward,
            settings,
            seed=seed,
            out=out,
            best_value=best_value if spec.kind != "dqn" else None,
            model_path=model_path,
            callback=tracker.log_iteration,  # every learning-curve point, every backend
        )
        summary = _online_summary(settings, env.model, out, spec, trained, model, reward, seed)
        if best_value is not None:
            summary.update(
                best_known_policy=best_name,
                best_known_value=best_value,
                logging_true_value=logging_value,
            )
            if "charts/cumulative_regret" in trained.curve:
                summary["cumulative_regret"] = float(trained.curve["charts/cumulative_regret"][-1])
        reference = None
        if best_value is not None:  # reference lines: the best rule (or logger) and the logger
            reference = {f"best known ({best_name})": best_value, "logging policy": logging_value}
        curve_png = write_metrics(
            out,
            trained.curve,
            title=f"{spec.kind} (seed {seed})",
            reference=reference,
            source="true world" if isinstance(model, SyntheticWorld) else "fitted simulator",
            regret_baseline=best_name,
        )
        tracker.log_final(
            {
                k: summary.get(k)
                for k in ("final_return", "cumulative_regret", "env_steps", "sps", "wall_s")
            },
            files=[out / "metrics.csv", curve_png, Path(trained.checkpoint)],
        )
        if tracker.mlflow_run_id is not None:
            summary["mlflow_run_id"] = tracker.mlflow_run_id
    return finish(
        summary,
        f"train {spec.kind} ({trained.backend}): {trained.env_steps} steps in "
        f"{trained.wall_s:.1f} s ({trained.sps:,.0f} steps/s), "
        f"final return {summary['final_return']:+.4f}",
    )


def _online_summary(settings, env_model, out, spec, trained, model, reward, seed) -> dict[str, Any]:
    """``result.json`` of an online run: the trained policy's value by simulation."""
    final = value_stage(
        {spec.kind: trained.policy}, model, reward, settings.eval_conversations, seed=seed + 1
    )[spec.kind]
    return {
        "agent": spec.kind,
        "backend": trained.backend,
        "env_steps": trained.env_steps,
        "wall_s": round(trained.wall_s, 3),
        "sps": round(trained.sps, 1),
        "final_return": final["value"],
        "final_return_std_err": final["std_err"],
        "final_return_source": "true value" if isinstance(model, SyntheticWorld) else "simulated",
        "checkpoint": str(trained.checkpoint),
        "metrics": str(out / "metrics.csv"),
        "env": env_model,
        "seed": seed,
        **trained.extra,
    }


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    spec = agent_spec(cfg)
    if env_settings(cfg).model == "logs":
        if spec.kind not in BANDITS:
            raise UserError("env=logs (offline learning from logs) is for bandits only")
        if str(cfg.backend) != "native":
            raise UserError(f"backend={cfg.backend}: bandits train natively only (backend=native)")
        return train_bandit_offline_command(cfg, out, spec)
    return online_command(cfg, out, spec)


if __name__ == "__main__":
    main()
