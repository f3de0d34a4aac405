"""``supportrl loop``: the pipeline with at least one improvement round (:mod:`.rounds`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.entry import command


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    """``supportrl loop``: the pipeline with at least one improvement round."""
    from supportrl.experiments.pipeline import run_pipeline

    return run_pipeline(cfg, min_rounds=1)


if __name__ == "__main__":
    main()
