"""``supportrl generate``: simulate the ground-truth world and write schema-v1 logs.

Writes ``data/turns.parquet`` and ``data/customers.parquet`` (or ``.csv`` with
``generate.format=csv``) into the run directory. Same seed and config give
byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from supportrl.experiments.common import CONFIG_PATH, finish, run_dir, user_errors, world_from_cfg
from supportrl.simulators.synthetic import generate_logs


def generate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Generate logs into ``out/data``; returns the paths and sizes."""
    world = world_from_cfg(cfg)
    generated = generate_logs(
        int(cfg.generate.n_conversations),
        seed=int(cfg.seed),
        world=world,
        customers_per_conversation=float(cfg.generate.customers_per_conversation),
    )
    turns, customers = generated.write(out / "data", fmt=str(cfg.generate.format))
    return {
        "turns": str(turns),
        "customers": str(customers),
        "conversations": generated.logs.n_conversations,
        "turn_rows": generated.logs.n_turns,
        "seed": int(cfg.seed),
    }


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    result = generate(cfg, run_dir())
    print(f"turns:     {result['turns']}")
    print(f"customers: {result['customers']}")
    return finish(
        result,
        f"generated {result['conversations']} conversations ({result['turn_rows']} turns) "
        f"-> {Path(result['turns']).parent}",
    )


if __name__ == "__main__":
    main()
