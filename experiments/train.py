"""``supportrl train agent=<kind>``: train an agent online in SupportEnv.

The ``env/`` group picks the customer model (the synthetic world, or a fitted simulator
with ``env=fitted env.path=DIR``); the ``agent/`` group picks the agent and its
hyperparameters. Writes the checkpoint (plain arrays + JSON), ``metrics.csv``
(``charts/episodic_return``, ``charts/cumulative_regret``), ``learning_curve.png`` and
``result.json`` = ``{"agent", "backend", "env_steps", "wall_s", "sps", "final_return",
"checkpoint", ...}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from agents.bandits import BANDITS, make_bandit
from agents.base import Policy
from agents.rules import load_rule_policy
from agents.training import LearningCurve, train_bandit
from experiments.common import (
    CONFIG_PATH,
    UserError,
    finish,
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    user_errors,
    world_from_cfg,
)
from simulators.base import CustomerModel
from simulators.synthetic import SyntheticWorld, true_value


def model_from_cfg(cfg: DictConfig) -> CustomerModel:
    """The customer model the ``env`` group selects."""
    if cfg.env.model == "synthetic":
        return world_from_cfg(cfg)
    if cfg.env.model == "fitted":
        from simulators.fitted import load_customer_model

        return load_customer_model(cfg.env.path)
    raise UserError(f"env.model={cfg.env.model!r}: expected 'synthetic' or 'fitted'")


def rule_panel(directory: str | Path, actions: tuple[str, ...]) -> dict[str, Policy]:
    """Deterministic rule policies (``rules_*.yaml`` with epsilon 0) in ``directory``."""
    panel = {}
    for path in sorted(Path(directory).glob("rules_*.yaml")):
        policy = load_rule_policy(path, actions)
        if policy.epsilon == 0:
            panel[path.stem] = policy
    return panel


def best_known_value(world: SyntheticWorld, cfg: DictConfig) -> tuple[str, float]:
    """Best true value among the rule panel and the logging policy (the regret baseline)."""
    reward = reward_from_cfg(cfg)
    candidates: dict[str, Policy] = {"logging": world.logging_policy}
    candidates.update(rule_panel(resolve_shipped(cfg.train.regret_panel), world.actions))
    values = {
        name: true_value(p, 20_000, world=world, reward=reward, seed=int(cfg.seed) + 7).value
        for name, p in candidates.items()
    }
    best = max(values, key=values.__getitem__)
    return best, values[best]


def write_metrics(out: Path, curve: LearningCurve) -> None:
    """``metrics.csv`` with fixed metric names, and ``learning_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = {"env_steps": curve.env_steps, "charts/episodic_return": curve.episodic_return}
    if curve.cumulative_regret is not None:
        columns["charts/cumulative_regret"] = curve.cumulative_regret
    header = ",".join(columns)
    rows = np.column_stack(list(columns.values()))
    np.savetxt(out / "metrics.csv", rows, delimiter=",", header=header, comments="", fmt="%.6g")
    n_plots = len(columns) - 1
    fig, axes = plt.subplots(1, n_plots, figsize=(5 * n_plots, 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], list(columns.items())[1:], strict=True):
        ax.plot(curve.env_steps, values)
        ax.set_xlabel("env steps (decisions)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=100)
    plt.close(fig)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    params = dict(to_plain(cfg.agent))
    if "_target_" in params:
        raise UserError(f"agent: {params['_target_']} is a rule policy; there is nothing to train")
    kind = params.pop("kind", None)
    if kind not in BANDITS:
        raise UserError(f"agent.kind={kind!r}: trainable agents are {sorted(BANDITS)}")
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
    write_metrics(out, result.curve)
    final = true_value(
        agent, int(cfg.train.eval_conversations), world=model, reward=reward, seed=seed + 1
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


if __name__ == "__main__":
    main()
