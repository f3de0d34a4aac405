"""``supportrl train agent=<kind> [backend=native|rllib]``: train an agent online in SupportEnv.

The ``env/`` group picks the customer model (the synthetic world, or a fitted simulator
with ``env=fitted env.path=DIR``); the ``agent/`` group picks the agent and its
hyperparameters. Bandits train natively; ``agent=dqn`` trains with the native torch
learner (``backend=native``) or with RLlib (``backend=rllib``, on this machine or on the
cluster at ``ray.address``), both from the same ``configs/agent/dqn.yaml``.

Writes the checkpoint (plain arrays + JSON), ``metrics.csv`` (fixed metric names:
``charts/episodic_return`` and, for bandits, ``charts/cumulative_regret``; for DQN
``losses/td_loss``, ``losses/q_values``, ``charts/epsilon``, ``charts/SPS``), TensorBoard
event files (DQN), ``learning_curve.png`` and ``result.json`` = ``{"agent", "backend",
"env_steps", "wall_s", "sps", "final_return", "checkpoint", ...}``; with the synthetic
world also the best known policy (rule panel and logging policy) and its true value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from supportrl.agents.bandits import BANDITS, make_bandit
from supportrl.agents.base import Policy
from supportrl.agents.rules import load_rule_panel
from supportrl.agents.training import REWARD_MODES, LearningCurve, reward_to_go, train_bandit
from supportrl.envs.collect import policy_value
from supportrl.envs.model import CustomerModel
from supportrl.experiments.common import (
    CONFIG_PATH,
    UserError,
    finish,
    load_data,
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    user_errors,
    world_from_cfg,
)
from supportrl.simulators.synthetic import SyntheticWorld, true_value

BACKENDS = ("native", "rllib")
TRAINABLE = (*sorted(BANDITS), "dqn")


def model_from_cfg(cfg: DictConfig) -> CustomerModel:
    """The customer model the ``env`` group selects."""
    if cfg.env.model == "synthetic":
        return world_from_cfg(cfg)
    if cfg.env.model == "fitted":
        from supportrl.simulators.fitted import load_customer_model

        return load_customer_model(cfg.env.path)
    if cfg.env.model == "logs":
        raise UserError("env=logs (offline learning from logs) is for bandits only")
    raise UserError(f"env.model={cfg.env.model!r}: expected 'synthetic', 'fitted' or 'logs'")


def best_known_value(world: SyntheticWorld, cfg: DictConfig) -> tuple[str, float]:
    """Best true value among the rule panel and the logging policy (the regret baseline)."""
    reward = reward_from_cfg(cfg)
    candidates: dict[str, Policy] = {"logging": world.logging_policy}
    candidates.update(load_rule_panel(resolve_shipped(cfg.train.regret_panel), world.actions))
    values = {
        name: true_value(p, 20_000, world=world, reward=reward, seed=int(cfg.seed) + 7).value
        for name, p in candidates.items()
    }
    best = max(values, key=values.__getitem__)
    return best, values[best]


def curve_columns(curve: LearningCurve) -> dict[str, np.ndarray]:
    """A bandit learning curve as metric columns (``env_steps`` first)."""
    columns = {"env_steps": curve.env_steps, "charts/episodic_return": curve.episodic_return}
    if curve.cumulative_regret is not None:
        columns["charts/cumulative_regret"] = curve.cumulative_regret
    return columns


def write_metrics(out: Path, columns: Mapping[str, np.ndarray] | LearningCurve) -> None:
    """``metrics.csv`` with fixed metric names (``env_steps`` first), and ``learning_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(columns, LearningCurve):
        columns = curve_columns(columns)
    header = ",".join(columns)
    rows = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    np.savetxt(out / "metrics.csv", rows, delimiter=",", header=header, comments="", fmt="%.6g")
    steps = columns["env_steps"]
    metrics = [(k, v) for k, v in columns.items() if k != "env_steps"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], metrics, strict=True):
        ax.plot(steps, values)
        ax.set_xlabel("env steps (decisions)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=100)
    plt.close(fig)


def train_bandit_offline_command(
    cfg: DictConfig, out: Path, kind: str, params: dict[str, Any]
) -> dict[str, Any]:
    """``env=logs``: learn a bandit from logged decisions without a simulator.

    Per-turn rewards under reward v1 (missing CSAT imputed with the selection model,
    missing propensities estimated, both reported), the immediate reward or the
    conversation's reward-to-go (``train.reward_mode``), IPS- or DR-weighted updates
    (``env.target``). ``final_return`` is the learned policy's off-policy ``wdr``
    estimate on the same logs.
    """
    import time

    from supportrl.agents.bandits import fit_offline
    from supportrl.ope.evaluate import evaluate_conversations, prepare_conversations
    from supportrl.ope.models import cross_fit_reward
    from supportrl.simulators.fitted import impute_csat
    from supportrl.simulators.logs import LoggedConversations

    data = load_data(cfg)
    if not isinstance(data, LoggedConversations):
        raise UserError("env=logs trains on conversation logs: give data.turns=PATH")
    reward = reward_from_cfg(cfg)
    seed = int(cfg.seed)
    start = time.perf_counter()
    prepared = prepare_conversations(data, reward, csat_imputer=impute_csat, seed=seed)
    for note in prepared.notes:
        print(f"note: {note}")
    data = prepared.logs  # conversations cut at reward.max_turns, as the rewards are
    agent = make_bandit(kind, data.actions, prepared.feature_spec, seed=seed, **params)
    mode = str(cfg.train.reward_mode)
    if mode not in REWARD_MODES:
        raise UserError(f"train.reward_mode={mode!r}: expected one of {list(REWARD_MODES)}")
    target = prepared.reward if mode == "immediate" else reward_to_go(prepared.reward, data.offsets)
    reward_hat = None
    if cfg.env.target == "dr":
        reward_hat = cross_fit_reward(
            prepared.x,
            data.action,
            target,
            len(data.actions),
            groups=data.conversation_index,
            seed=seed,
        )
    stats = fit_offline(
        agent,
        data.states(),
        data.action,
        target,
        prepared.propensity,
        target=str(cfg.env.target),
        reward_hat=reward_hat,
        clip=float(cfg.env.clip),
    )
    wall = time.perf_counter() - start
    checkpoint = agent.save(out / "checkpoint")
    estimate = evaluate_conversations(
        prepared,
        agent.action_probs(data.states()),
        n_bootstrap=int(cfg.ope.n_bootstrap),
        seed=seed,
        conversation_estimators=("wdr",),
        decision_estimators=(),
    )["conversation"]["wdr"]
    summary: dict[str, Any] = {
        "agent": kind,
        "backend": "native",
        "env_steps": data.n_turns,
        "wall_s": round(wall, 3),
        "sps": round(data.n_turns / wall, 1),
        "final_return": estimate["estimate"],
        "final_return_ci": [estimate["ci_low"], estimate["ci_high"]],
        "final_return_source": "ope:wdr on the training logs",
        "checkpoint": str(checkpoint),
        "env": "logs",
        "reward_mode": mode,
        "offline_target": str(cfg.env.target),
        "weights": {
            "ess": stats.effective_sample_size,
            "max_weight": stats.max_weight,
            "n_clipped": stats.n_clipped,
        },
    }
    return finish(
        summary,
        f"train {kind} offline ({cfg.env.target}): {data.n_turns} logged decisions in {wall:.1f} s, "
        f"wdr estimate {estimate['estimate']:+.4f}",
    )


def train_bandit_command(
    cfg: DictConfig, out: Path, kind: str, params: dict[str, Any]
) -> dict[str, Any]:
    if str(cfg.backend) != "native":
        raise UserError(f"backend={cfg.backend}: bandits train natively only (backend=native)")
    if cfg.env.model == "logs":
        return train_bandit_offline_command(cfg, out, kind, params)
    model = model_from_cfg(cfg)
    reward = reward_from_cfg(cfg)
    seed = int(cfg.seed)
    agent = make_bandit(kind, model.actions, model.feature_spec, seed=seed, **params)

    best_name, best_value = (None, None)
    if isinstance(model, SyntheticWorld):
        best_name, best_value = best_known_value(model, cfg)
        print(f"best known policy: {best_name} (true value {best_value:+.4f})")
    result = train_bandit(
        agent,
        model,
        reward,
        total_steps=int(cfg.train.total_steps),
        conversations_per_round=int(cfg.train.conversations_per_round),
        reward_mode=str(cfg.train.reward_mode),
        seed=seed,
        best_value=best_value,
        progress=bool(cfg.logger.progress),
    )
    checkpoint = agent.save(out / "checkpoint")
    write_metrics(out, curve_columns(result.curve))
    final = policy_value(
        agent, int(cfg.train.eval_conversations), model=model, reward=reward, seed=seed + 1
    )
    summary: dict[str, Any] = {
        "agent": kind,
        "backend": "native",
        "env_steps": result.env_steps,
        "wall_s": round(result.wall_s, 3),
        "sps": round(result.sps, 1),
        "final_return": final.value,
        "final_return_std_err": final.std_err,
        "checkpoint": str(checkpoint),
        "env": str(cfg.env.model),
        "reward_mode": str(cfg.train.reward_mode),
    }
    if best_value is not None:
        summary.update(
            best_known_policy=best_name,
            best_known_value=best_value,
            cumulative_regret=float(result.curve.cumulative_regret[-1]),
        )
    return finish(
        summary,
        f"train {kind}: {result.env_steps} steps in {result.wall_s:.1f} s "
        f"({result.sps:,.0f} steps/s), final return {final.value:+.4f}",
    )


def train_dqn_command(cfg: DictConfig, out: Path, params: dict[str, Any]) -> dict[str, Any]:
    import torch
    from supportrl.agents.dqn import DQNConfig, DQNLearner
    from supportrl.envs import SupportVectorEnv
    from tensorboardX import SummaryWriter

    backend = str(cfg.backend)
    if backend not in BACKENDS:
        raise UserError(f"backend={backend!r}: expected one of {list(BACKENDS)}")
    config = DQNConfig.from_dict(params)
    print(
        f"dqn trains for agent.total_steps={config.total_steps} env steps "
        "(train.total_steps is the bandits' budget)"
    )
    model = model_from_cfg(cfg)
    reward = reward_from_cfg(cfg)
    seed = int(cfg.seed)
    penalized = bool(cfg.env.get("penalized", True))
    torch.set_num_threads(int(cfg.train.torch_threads))

    best_name, best_value = (None, None)
    if isinstance(model, SyntheticWorld):
        best_name, best_value = best_known_value(model, cfg)
        print(f"best known policy: {best_name} (true value {best_value:+.4f})")

    progress = bool(cfg.logger.progress)
    extra: dict[str, Any] = {}
    with SummaryWriter(logdir=str(out)) as writer:
        if backend == "native":
            env = SupportVectorEnv(config.num_envs, model=model, reward=reward, penalized=penalized)
            if cfg.train.resume:
                # The checkpoint's hyperparameters, trained on up to agent.total_steps.
                learner = DQNLearner.load(resolve_shipped(str(cfg.train.resume)), env)
                learner.config = dataclasses.replace(learner.config, total_steps=config.total_steps)
                config = learner.config
                extra["resumed_from"] = str(cfg.train.resume)
                extra["resumed_at_env_steps"] = learner.env_steps
                if learner.env_steps >= config.total_steps:
                    raise UserError(
                        f"train.resume: the checkpoint is at {learner.env_steps} env steps; "
                        f"set agent.total_steps above that (now {config.total_steps})"
                    )
            else:
                learner = DQNLearner(config=config, env=env, seed=seed)
            result = learner.train(progress=progress, writer=writer)
            checkpoint = learner.save(
                out / "checkpoint", include_replay=bool(cfg.train.save_replay)
            )
            policy = learner.policy
            env_steps, wall_s, sps, updates = (
                result.env_steps,
                result.wall_s,
                result.sps,
                result.updates,
            )
            extra["episodes"] = result.episodes
            columns = result.curve
        else:
            from supportrl.agents.rllib import support_env_config, train_rllib

            if cfg.train.resume:
                raise UserError("train.resume: resuming is supported with backend=native only")
            if isinstance(model, SyntheticWorld):
                env_config = support_env_config(
                    world=model.config, reward=reward, penalized=penalized
                )
            else:
                env_config = support_env_config(
                    model_path=str(Path(str(cfg.env.path)).resolve()),
                    reward=reward,
                    penalized=penalized,
                )
            rl = train_rllib(
                config,
                env_config=env_config,
                actions=model.actions,
                feature_spec=model.feature_spec,
                seed=seed,
                address=cfg.ray.address,
                num_cpus=cfg.ray.num_cpus,
                num_env_runners=int(cfg.ray.num_env_runners),
                progress=progress,
            )
            policy = rl.policy.to_q_policy()
            checkpoint = policy.save(out / "checkpoint")
            env_steps, wall_s, sps, updates = rl.env_steps, rl.wall_s, rl.sps, rl.updates
            columns = rl.curve
            for i, step in enumerate(columns["env_steps"]):
                for name, values in columns.items():
                    if name != "env_steps" and np.isfinite(values[i]):
                        writer.add_scalar(name, float(values[i]), int(step))
            extra["ray_address"] = cfg.ray.address
    write_metrics(out, columns)
    final = policy_value(
        policy, int(cfg.train.eval_conversations), model=model, reward=reward, seed=seed + 1
    )
    summary: dict[str, Any] = {
        "agent": "dqn",
        "backend": backend,
        "env_steps": int(env_steps),
        "wall_s": round(wall_s, 3),
        "sps": round(sps, 1),
        "final_return": final.value,
        "final_return_std_err": final.std_err,
        "checkpoint": str(checkpoint),
        "env": str(cfg.env.model),
        "updates": int(updates),
        "updates_per_env_step": config.updates_per_env_step,
        **extra,
    }
    if best_value is not None:
        summary.update(best_known_policy=best_name, best_known_value=best_value)
    return finish(
        summary,
        f"train dqn ({backend}): {env_steps} steps in {wall_s:.1f} s "
        f"({sps:,.0f} steps/s), final return {final.value:+.4f}",
    )


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    params = dict(to_plain(cfg.agent))
    if "_target_" in params:
        raise UserError(f"agent: {params['_target_']} is a rule policy; there is nothing to train")
    kind = params.pop("kind", None)
    if kind == "dqn":
        return train_dqn_command(cfg, out, params)
    if kind not in BANDITS:
        raise UserError(f"agent.kind={kind!r}: trainable agents are {list(TRAINABLE)}")
    return train_bandit_command(cfg, out, kind, params)


if __name__ == "__main__":
    main()
