"""``supportrl validate``: check logs against schema v1 and print a summary.

Exit code 0 when valid; non-zero with the reasons (file, column, first rows) when not.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from supportrl.experiments.entry import command
from supportrl.experiments.from_config import load_data, log_limits, to_plain
from supportrl.experiments.results import finish
from supportrl.simulators.logs import (
    LoggedConversations,
    all_propensities_one,
    data_warnings,
)
from supportrl.simulators.logs.validation import validate_conversations_bounded


def print_summary(summary: dict[str, Any]) -> None:
    """A readable block of the summary's counts."""
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value}")


def bounded_summary(cfg: DictConfig) -> dict[str, Any]:
    """Validate conversation logs within ``data.memory_budget_mb`` (Parquet read in passes)."""
    data = cfg.data
    summary = validate_conversations_bounded(
        data.turns,
        customers=data.customers,
        categorical=to_plain(data.categorical),
        numeric=to_plain(data.numeric),
        actions=to_plain(data.actions),
        limits=log_limits(cfg),
        memory_budget_mb=float(OmegaConf.select(cfg, "data.memory_budget_mb", default=1024)),
        # engine=ray: Ray Data reads the passes for Ray tasks (docs/scale.md); memory and
        # local: in this process
        engine="ray" if cfg.get("engine") == "ray" else "local",
        ray_address=OmegaConf.select(cfg, "ray.address", default=None),
        num_cpus=int(OmegaConf.select(cfg, "ray.num_cpus", default=None) or 2),
    )
    if data.categorical is None and data.numeric is None:
        print(
            f"features inferred from dtypes: categorical={summary['categorical']} "
            f"numeric={summary['numeric']} (declare with data.categorical=[..] data.numeric=[..])"
        )
    return summary


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    artifact = cfg.get("artifact")
    if cfg.data.kind == "conversations" and cfg.data.turns is not None and artifact is None:
        # Schema checks alone never need the whole file in memory.
        summary = bounded_summary(cfg)
        print_summary(summary)
        ones = summary.pop("propensities_all_one")
        summary["warnings"] = data_warnings(summary, propensities_all_one=ones)
        for note in summary["warnings"]:
            print(f"warning: {note}")
        return finish({"valid": True, "summary": summary}, conversations_line(summary))
    # Drift against an artifact compares whole feature columns: the in-memory path.
    data = load_data(cfg)
    summary = data.summary()
    print_summary(summary)
    if isinstance(data, LoggedConversations):
        summary["warnings"] = data_warnings(
            summary, propensities_all_one=all_propensities_one(data.propensity)
        )
        for note in summary["warnings"]:
            print(f"warning: {note}")
        line = conversations_line(summary)
    else:
        line = (
            f"valid: {summary['decisions']} decisions, {len(data.actions)} actions, "
            f"{summary['missing_propensity']} missing propensities"
        )
    result: dict[str, Any] = {"valid": True, "summary": summary}
    if artifact is not None:
        from supportrl.experiments.drift import drift_against_artifact

        result["drift"] = drift_against_artifact(data, artifact)
        line += f"; {result['drift']['verdict']}"
    return finish(result, line)


def conversations_line(summary: dict[str, Any]) -> str:
    return (
        f"valid: {summary['conversations']} conversations, {summary['turns']} turns, "
        f"{summary['missing_propensity']} missing propensities, "
        f"{summary['missing_csat']} missing CSAT"
    )


if __name__ == "__main__":
    main()
