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

from omegaconf import DictConfig, OmegaConf
from supportrl.experiments.common import UserError, finish, run_dir, world_from_cfg
from supportrl.experiments.entry import command
from supportrl.experiments.stages import generate_stage


def generate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Generate logs into ``out/data``; returns the paths and sizes."""
    partitions = int(cfg.generate.get("partitions", 1))
    if partitions > 1:
        return _generate_partitions(cfg, out, partitions)
    generated = generate_stage(
        world_from_cfg(cfg),
        int(cfg.generate.n_conversations),
        seed=int(cfg.seed),
        out=out,
        customers_per_conversation=float(cfg.generate.customers_per_conversation),
        fmt=str(cfg.generate.format),
    )
    return generated.to_dict()


def _generate_partitions(cfg: DictConfig, out: Path, partitions: int) -> dict[str, Any]:
    """``generate.partitions > 1``: Parquet parts, one task each (docs/scale.md)."""
    from supportrl.simulators.synthetic_parts import write_partitioned_logs

    if str(cfg.generate.format) != "parquet":
        raise UserError("generate.partitions > 1 writes Parquet parts; set generate.format=parquet")
    try:
        written = write_partitioned_logs(
            out / "data",
            int(cfg.generate.n_conversations),
            partitions=partitions,
            seed=int(cfg.seed),
            world=world_from_cfg(cfg),
            customers_per_conversation=float(cfg.generate.customers_per_conversation),
            engine="ray" if cfg.get("engine") == "ray" else "local",
            ray_address=OmegaConf.select(cfg, "ray.address", default=None),
            num_cpus=int(OmegaConf.select(cfg, "ray.num_cpus", default=None) or 2),
        )
    except ValueError as exc:
        raise UserError(f"generate: {exc}") from None
    return {
        "turns": str(written.turns),
        "customers": str(written.customers),
        "conversations": written.conversations,
        "turn_rows": written.turn_rows,
        "seed": int(cfg.seed),
        "partitions": written.partitions,
    }


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
