"""``supportrl pipeline``: the main job, from logs to a chosen policy, on the embedded data.

1. generate schema-v1 logs from the ground-truth synthetic world;
2. load + validate them;
3. fit a customer simulator from the logs (``simulator/glm.yaml`` settings);
4. train agents in that simulator: LinUCB on the conversation return, and native DQN;
5. evaluate every candidate (the agents and the rule baselines) off-policy on the logs;
6. pick the winner: the highest lower 95% bound of ``pipeline.selection_estimator``;
7. since the world is known here, check each candidate's true value (Monte Carlo).

Writes the simulator, agent checkpoints and ``result.json`` into the run directory.
Export and reports join when their issues land.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from supportrl.agents.bandits import make_bandit
from supportrl.agents.base import Policy
from supportrl.agents.dqn import DQNConfig, DQNLearner
from supportrl.agents.rules import load_rule_policy
from supportrl.agents.training import train_bandit
from supportrl.envs import SupportVectorEnv
from supportrl.envs.collect import policy_value
from supportrl.experiments.common import (
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
from supportrl.experiments.generate import generate
from supportrl.experiments.validate import print_summary
from supportrl.ope.evaluate import evaluate_conversations, prepare_conversations, target_probs_of
from supportrl.simulators.fitted import fit_customer_model, impute_csat
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import true_value

STEPS = 7


def step(k: int, text: str) -> float:
    print(f"[{k}/{STEPS}] {text}", flush=True)
    return time.perf_counter()


def glm_settings() -> dict[str, Any]:
    """The fit settings of ``configs/simulator/glm.yaml``."""
    params = dict(to_plain(OmegaConf.load(Path(CONFIG_PATH) / "simulator" / "glm.yaml")))
    params.pop("kind", None)
    return params


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    seed = int(cfg.seed)
    pcfg = cfg.pipeline
    reward = reward_from_cfg(cfg)
    world = world_from_cfg(cfg)
    torch.set_num_threads(int(cfg.train.torch_threads))
    progress = bool(cfg.logger.progress)
    timings: dict[str, float] = {}
    estimator = str(pcfg.selection_estimator)
    if estimator not in cfg.ope.conversation_estimators:
        raise UserError(
            f"pipeline.selection_estimator={estimator!r}: choose one of the conversation-level "
            f"estimators {list(cfg.ope.conversation_estimators)}"
        )
    baselines = {}
    for path in to_plain(pcfg.baselines) or []:
        resolved = resolve_shipped(path)
        baselines[resolved.stem] = load_rule_policy(resolved, world.actions)

    t = step(1, f"generate {pcfg.n_conversations} conversations (seed {seed})")
    with open_dict(cfg):
        cfg.generate.n_conversations = pcfg.n_conversations
    data = generate(cfg, out)
    print(f"      turns: {data['turns']}")
    timings["generate"] = time.perf_counter() - t

    t = step(2, "load + validate")
    logs = load_conversations(data["turns"], customers=data["customers"])
    summary = logs.summary()
    print_summary(summary)
    timings["validate"] = time.perf_counter() - t

    t = step(3, "fit the customer simulator (glm, sequential propensity weighting)")
    model = fit_customer_model(logs, "glm", seed=seed, **glm_settings())
    simulator = model.save(out / "simulator")
    for warning in model.warnings:
        print(f"      note: {warning}")
    timings["fit"] = time.perf_counter() - t
    print(f"      simulator: {simulator} ({timings['fit']:.1f} s)")

    t = step(4, "train agents in the fitted simulator")
    linucb = make_bandit("linucb", logs.actions, model.feature_spec, seed=seed, alpha=0.5)
    bandit_run = train_bandit(
        linucb,
        model,
        reward,
        total_steps=int(pcfg.bandit_steps),
        reward_mode="return",
        seed=seed,
        progress=progress,
    )
    linucb.save(out / "agents" / "linucb")
    dqn_params = dict(to_plain(OmegaConf.load(Path(CONFIG_PATH) / "agent" / "dqn.yaml")))
    dqn_params.pop("kind", None)
    dqn_params["total_steps"] = int(pcfg.dqn_steps)
    dqn_config = DQNConfig.from_dict(dqn_params)
    env = SupportVectorEnv(dqn_config.num_envs, model=model, reward=reward)
    learner = DQNLearner(config=dqn_config, env=env, seed=seed)
    dqn_run = learner.train(progress=progress)
    learner.policy.save(out / "agents" / "dqn")
    timings["train"] = time.perf_counter() - t
    print(
        f"      linucb: {bandit_run.env_steps} steps in {bandit_run.wall_s:.1f} s; "
        f"dqn: {dqn_run.env_steps} steps in {dqn_run.wall_s:.1f} s"
    )

    t = step(5, "evaluate candidates off-policy on the logs")
    candidates: dict[str, Policy] = {"linucb": linucb, "dqn": learner.policy, **baselines}
    prepared = prepare_conversations(logs, reward, csat_imputer=impute_csat, seed=seed)
    for note in prepared.notes:
        print(f"      note: {note}")
    states = logs.states()
    ope: dict[str, dict[str, Any]] = {}
    for name, policy in candidates.items():
        res = evaluate_conversations(
            prepared,
            target_probs_of(policy, states, logs.actions),
            n_bootstrap=int(cfg.ope.n_bootstrap),
            alpha=float(cfg.ope.alpha),
            seed=seed,
            conversation_estimators=list(cfg.ope.conversation_estimators),
            decision_estimators=(),
        )
        ope[name] = {
            **res["conversation"],
            "ess_conversation": res["diagnostics"]["ess_conversation"],
        }
    timings["evaluate"] = time.perf_counter() - t

    t = step(6, f"pick the winner: highest lower bound of {estimator}")
    winner = max(ope, key=lambda k: ope[k][estimator]["ci_low"])
    timings["select"] = time.perf_counter() - t

    t = step(7, "ground truth (synthetic world): true values by Monte Carlo")
    n_true = int(pcfg.true_value_conversations)
    truth = {
        name: true_value(p, n_true, world=world, reward=reward, seed=seed + 1).value
        for name, p in {**candidates, "logging": world.logging_policy}.items()
    }
    simulated = {
        name: policy_value(p, n_true, model=model, reward=reward, seed=seed + 1).value
        for name, p in candidates.items()
    }
    timings["truth"] = time.perf_counter() - t

    print(f"\n{'candidate':<26}{'simulated':>10}{estimator:>10}{'95% interval':>22}{'true':>9}")
    for name in candidates:
        row = ope[name][estimator]
        mark = "  <- winner" if name == winner else ""
        print(
            f"{name:<26}{simulated[name]:>+10.3f}{row['estimate']:>+10.3f}"
            f"    [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]{truth[name]:>+9.3f}{mark}"
        )
    print(f"{'logging policy':<26}{'':>10}{'':>10}{'':>22}{truth['logging']:>+9.3f}")
    best_true = max(candidates, key=truth.__getitem__)

    result = {
        "data": data,
        "summary": summary,
        "simulator": str(simulator),
        "agents": {
            "linucb": {
                "checkpoint": str(out / "agents" / "linucb"),
                "env_steps": bandit_run.env_steps,
            },
            "dqn": {"checkpoint": str(out / "agents" / "dqn"), "env_steps": dqn_run.env_steps},
        },
        "policies": {
            name: {
                "simulated_value": simulated[name],
                "true_value": truth[name],
                **{k: v for k, v in ope[name].items()},
            }
            for name in candidates
        },
        "logging_true_value": truth["logging"],
        "selection_estimator": estimator,
        "winner": winner,
        "best_true": best_true,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    return finish(
        result,
        f"pipeline: winner {winner} (true value {truth[winner]:+.3f}, logging policy "
        f"{truth['logging']:+.3f}); {summary['conversations']} conversations -> {out}",
    )


if __name__ == "__main__":
    main()
