"""``supportrl generate``: simulate the ground-truth world and write schema-v1 logs.

Writes ``data/turns.parquet`` and ``data/customers.parquet`` (or ``.csv`` with
``generate.format=csv``) into the run directory. Same seed and config give
byte-identical files. ``generate.partitions=P`` writes ``data/turns/`` and
``data/customers/`` as P Parquet parts instead, one simulated per task (``engine=ray``: as
Ray tasks), byte-identical between one process and Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.entry import command
from supportrl.experiments.from_config import world_from_cfg
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import run_dir
from supportrl.experiments.stages import generate_settings, generate_stage, ray_settings


def generate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Generate logs into ``out/data``; returns the paths and sizes."""
    generated = generate_stage(
        world_from_cfg(cfg),
        generate_settings(cfg),
        seed=int(cfg.seed),
        out=out,
        engine=str(cfg.engine),
        ray=ray_settings(cfg),
    )
    return generated.to_dict()


@command
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
