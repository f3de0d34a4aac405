"""``supportrl validate``: check logs against schema v1 and print a summary.

Exit code 0 when valid; non-zero with the reasons (file, column, first rows) when not.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig
from supportrl.experiments.common import CONFIG_PATH, finish, load_data, user_errors
from supportrl.simulators.logs import LoggedConversations


def print_summary(summary: dict[str, Any]) -> None:
    """A readable block of the summary's counts."""
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value}")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    data = load_data(cfg)
    summary = data.summary()
    print_summary(summary)
    if isinstance(data, LoggedConversations):
        line = (
            f"valid: {summary['conversations']} conversations, {summary['turns']} turns, "
            f"{summary['missing_propensity']} missing propensities, "
            f"{summary['missing_csat']} missing CSAT"
        )
    else:
        line = (
            f"valid: {summary['decisions']} decisions, {len(data.actions)} actions, "
            f"{summary['missing_propensity']} missing propensities"
        )
    result: dict[str, Any] = {"valid": True, "summary": summary}
    if cfg.get("artifact") is not None:  # drift against an artifact's training data
        from supportrl.experiments.drift import drift_against_artifact

        result["drift"] = drift_against_artifact(data, cfg.artifact)
        line += f"; {result['drift']['verdict']}"
    return finish(result, line)


if __name__ == "__main__":
    main()
