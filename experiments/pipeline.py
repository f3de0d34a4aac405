"""``supportrl pipeline``: the main job on the embedded synthetic data.

generate -> load + validate -> ground-truth values of the baselines. Later stages (fit,
train, evaluate, report, export) append to this file as they land.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from agents.base import ConstantPolicy, UniformPolicy
from experiments.common import (
    CONFIG_PATH,
    finish,
    reward_from_cfg,
    run_dir,
    user_errors,
    world_from_cfg,
)
from experiments.generate import generate
from experiments.validate import print_summary
from simulators.logs import load_conversations
from simulators.synthetic import true_value


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    with open_dict(cfg):
        cfg.generate.n_conversations = cfg.pipeline.n_conversations
    print(f"[1/3] generate {cfg.pipeline.n_conversations} conversations (seed {cfg.seed})")
    data = generate(cfg, out)
    print(f"      turns: {data['turns']}")

    print("[2/3] load + validate")
    logs = load_conversations(data["turns"], customers=data["customers"])
    summary = logs.summary()
    print_summary(summary)

    print("[3/3] ground-truth values of the baselines (synthetic world)")
    world = world_from_cfg(cfg)
    reward = reward_from_cfg(cfg)
    baselines = {"logging": world.logging_policy, "uniform": UniformPolicy(world.actions)}
    baselines.update({f"always_{a}": ConstantPolicy(world.actions, a) for a in world.actions})
    n = int(cfg.pipeline.true_value_conversations)
    values = {
        name: true_value(policy, n, world=world, reward=reward, seed=int(cfg.seed)).to_dict()
        for name, policy in baselines.items()
    }
    for name, v in values.items():
        print(f"      {name:<22} {v['value']:+.4f} ± {1.96 * v['std_err']:.4f}")
    best = max(values, key=lambda k: values[k]["value"])
    result = {"data": data, "summary": summary, "true_values": values, "best_baseline": best}
    return finish(
        result,
        f"pipeline: {summary['conversations']} conversations -> {data['turns']}; "
        f"best baseline {best} ({values[best]['value']:+.3f})",
    )


if __name__ == "__main__":
    main()
