"""``supportrl serve artifact=DIR serve.port=N``: answer decisions over HTTP (FastAPI + uvicorn).

Binds ``serve.host`` (127.0.0.1 unless told otherwise). Endpoints: ``POST /v1/decide``,
``POST /v1/decide_batch``, ``POST /v1/outcome``, ``GET /health``, ``GET /manifest``
(docs/artifact.md). With ``serve.log_dir=DIR`` decisions that carry a ``conversation_id``
are written there as a schema-v1 decision log, completed by ``/v1/outcome``. Options:
``serve.epsilon`` (exploration; null keeps the artifact's), ``serve.on_invalid=error|fallback``
and ``serve.fallback_action``. Production can run the same service without the
framework: ``python -m supportrl.serving.http DIR --port N``.

``serve.experiment=FILE`` serves an A/B experiment instead of one artifact (arms, shares,
sticky assignment: docs/experiments.md); ``artifact`` is then not needed. The key sits
under ``serve``: ``experiment=`` is Hydra's preset group, and naming it here is an error.

Before serving it writes ``result.json`` (``{"artifact", "url", "log_dir"}``, plus
``"experiment"``) and prints ``run_dir``; it then serves until interrupted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import to_plain
from supportrl.experiments.results import finish


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from supportrl.serving import DecisionLogger, Predictor
    from supportrl.serving.http import run_server

    s = cfg.serve
    preset = HydraConfig.get().runtime.choices.get("experiment")
    if preset not in (None, "null"):
        raise UserError(
            f"experiment={preset}: that is the preset group (configs/experiment/); "
            "serve an A/B experiment with serve.experiment=FILE.yaml"
        )
    if to_plain(s.get("experiment")) is not None:
        return serve_experiment(cfg)
    if cfg.artifact is None:
        raise UserError(
            "artifact is required: artifact=DIR (written by supportrl export), "
            "or serve.experiment=FILE for an A/B experiment"
        )
    predictor = Predictor.load(
        Path(str(cfg.artifact)),
        epsilon=to_plain(s.epsilon),
        on_invalid=str(s.on_invalid),
        fallback_action=to_plain(s.fallback_action),
        seed=to_plain(s.seed),
    )
    port = int(s.port)
    if not 0 < port < 65536:
        raise UserError(f"serve.port={port}: expected a port in 1..65535")
    sock = listen(str(s.host), port)  # before result.json claims the URL
    log_dir = None if s.log_dir is None else Path(str(s.log_dir))
    logger = None if log_dir is None else DecisionLogger.for_predictor(log_dir, predictor)
    url = f"http://{s.host}:{port}"
    finish(
        {"artifact": str(predictor.directory), "url": url, "log_dir": log_dir},
        f"serve: {predictor.kind} policy at {url} (Ctrl-C to stop)",
    )
    run_server(predictor, host=str(s.host), port=port, logger=logger, sock=sock)
    return {}


def serve_experiment(cfg: DictConfig) -> dict[str, Any]:
    """``serve serve.experiment=FILE``: the arms of an experiment behind one service."""
    from supportrl.serving import DecisionLogger
    from supportrl.serving.experiment import Experiment, ExperimentError
    from supportrl.serving.http import run_server

    s = cfg.serve
    try:
        experiment = Experiment.load(
            Path(str(s.experiment)), seed=to_plain(s.seed), on_invalid=str(s.on_invalid)
        )
    except ExperimentError as err:
        raise UserError(f"serve.experiment: {err}") from None
    port = int(s.port)
    if not 0 < port < 65536:
        raise UserError(f"serve.port={port}: expected a port in 1..65535")
    sock = listen(str(s.host), port)  # before result.json claims the URL
    log_dir = None if s.log_dir is None else Path(str(s.log_dir))
    logger = None if log_dir is None else DecisionLogger.for_experiment(log_dir, experiment)
    url = f"http://{s.host}:{port}"
    arms = ", ".join(f"{a} {x:g}" for a, x in zip(experiment.arms, experiment.shares, strict=True))
    finish(
        {"experiment": experiment.describe(), "url": url, "log_dir": log_dir},
        f"serve: experiment {experiment.config.name} ({arms}) at {url} (Ctrl-C to stop)",
    )
    run_server(None, host=str(s.host), port=port, logger=logger, experiment=experiment, sock=sock)
    return {}


def listen(host: str, port: int) -> Any:
    """The service's socket, bound now: a busy port is a user error naming it (exit 2)."""
    from supportrl.serving.http import PortUnavailable, bind_socket

    try:
        return bind_socket(host, port)
    except PortUnavailable as err:
        raise UserError(f"serve.port={port}: {err.strerror}") from None


if __name__ == "__main__":
    main()
