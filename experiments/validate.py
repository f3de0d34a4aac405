"""``supportrl validate``: check logs against schema v1 and print a summary.

Exit code 0 when valid; non-zero with the reasons (file, column, first rows) when not.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.common import finish, load_data
from supportrl.experiments.entry import command
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


@command
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
    return finish({"valid": True, "summary": summary}, line)


if __name__ == "__main__":
    main()
