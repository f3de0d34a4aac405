"""The HTTP service: a :class:`~supportrl.serving.Predictor` behind FastAPI (the ``http`` extra).

Endpoints (JSON in, JSON out):

* ``POST /v1/decide`` ``{"state": {...}, "conversation_id": "c1"}`` -> ``{"action",
  "probabilities": {ACTION: p}, "propensity", "fallback", "reason", "logged"}``;
* ``POST /v1/decide_batch`` ``{"states": [{...}, ...]}`` or ``{"columns": {NAME: [...]}}``,
  optional ``"conversation_ids": [...]`` -> ``{"actions", "propensities",
  "probabilities" (rows in catalogue order), "fallback", "reasons": {ROW: why}, "logged"}``;
* ``POST /v1/outcome`` ``{"conversation_id", "outcome", "csat": null, "handle_time_s": [..]}``
  (seconds per logged turn) -> ``{"recorded": true}``;
* ``GET /health`` -> ``{"status": "ok", "policy", "actions", "epsilon"}``;
* ``GET /manifest`` -> the artifact's manifest (the control arm's in an experiment).

With an experiment (:class:`~supportrl.serving.experiment.Experiment`, ``serve
serve.experiment=FILE``), ``POST /v1/decide`` takes ``{"state", "conversation_id",
"customer_id"}`` and answers ``{"action", "arm", "propensity", "arm_propensity",
"decision_id", "probabilities", ...}``; the log gets the ``arm``, the pseudonymized
``customer_id`` and the ``decision_id``. ``GET /v1/experiment`` shows the arms, shares and
events; ``POST /v1/experiment/shares`` ``{"shares": {ARM: x}, "reason"}``,
``POST /v1/experiment/stop`` ``{"arm", "reason"}`` and ``POST /v1/experiment/promote``
``{"arm", "reason"}`` change the traffic without a restart (recorded in the log folder's
``experiment.json``). ``/v1/decide_batch`` is not available in an experiment (409).

A bad request gets a 4xx with ``{"error": message, "field": name}`` (400: not a JSON
object, or nested deeper than :data:`MAX_DEPTH`; 413: a body over :data:`MAX_BODY_BYTES`,
refused before it is parsed; 422: a field fails a check, e.g. an id over
:data:`~supportrl.serving.log_rows.MAX_ID_LENGTH` characters; 404: an outcome for a
conversation with no logged decisions; 409: an outcome while no decision log is
configured); bad input never gets a 5xx. A 5xx is the server's fault: 500 when the
policy's model gives no distribution (``field: "model"``), 503 ``"not logging"`` while the
decision log cannot be written (``GET /health`` answers 503 then too). With a :class:`~supportrl.serving.DecisionLogger`, decisions that carry a
``conversation_id`` are logged (schema v1), and outcomes complete them. A conversation
with a decision that used the fallback action is answered but left out of the log (its
state is not a valid row; ``DecisionLogger.drop``).

A decision answered ``"logged": true`` and an outcome answered ``"recorded": true`` are in
the log folder's journal before the answer is sent (a killed server loses none; the next
server on the folder recovers them: :mod:`supportrl.serving.logger`); what the journal
cannot hold is refused (``log_error``, 503) rather than acknowledged. ``--log-fsync`` syncs
each journal line to disk, ``--no-log-journal`` keeps rows only in memory.

This module is the app factory (:func:`create_app`), the server (:func:`run_server`, its
socket bound first by :func:`bind_socket`) and the command line (:func:`main`); the limits
and field checks of a request are in :mod:`supportrl.serving.http_requests`, the handlers
(framework independent) in :mod:`supportrl.serving.service`.

Run it with ``python -m supportrl.serving.http ARTIFACT_DIR --port 8080`` or
``supportrl serve artifact=DIR serve.port=8080``; it binds 127.0.0.1 unless told otherwise,
before anything claims the URL: a port in use is ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from supportrl.serving.artifact import ArtifactError, redact_paths
from supportrl.serving.experiment import Experiment
from supportrl.serving.http_requests import (
    MAX_BATCH,
    MAX_BODY_BYTES,
    MAX_DEPTH,
    BadRequest,
    json_depth,
    json_object,
)
from supportrl.serving.logger import DecisionLogger, JournalError, LogWriteError
from supportrl.serving.predictor import Predictor
from supportrl.serving.service import Service

__all__ = [
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "BadRequest",
    "PortUnavailable",
    "Service",
    "bind_socket",
    "create_app",
    "json_depth",
    "main",
    "run_server",
]

Handler = Callable[[dict[str, Any]], dict[str, Any]]
"""A :class:`~supportrl.serving.service.Service` handler: request body -> answer."""


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) past :data:`MAX_BODY_BYTES` before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(
            413, f"body: Content-Length {declared[:20]}; at most {MAX_BODY_BYTES} bytes", "body"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"body: larger than {MAX_BODY_BYTES} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def answer(handler: Handler, body: bytes) -> JSONResponse:
    """``handler``'s answer to ``body`` as JSON; a refusal as ``{"error", "field"}`` with its
    status (a 5xx only for the server's own fault)."""
    try:
        return JSONResponse(handler(json_object(body)))
    except BadRequest as err:
        return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)
    except ArtifactError as err:  # the policy's model failed: the server's fault
        return JSONResponse({"error": f"model: {err}", "field": "model"}, status_code=500)
    except (ValueError, TypeError) as err:  # input the checks above did not foresee
        field = getattr(err, "field", "body")
        return JSONResponse({"error": str(err), "field": field}, status_code=422)


async def respond(handler: Handler, request: Request) -> JSONResponse:
    """:func:`answer` to the body of ``request``, read within :data:`MAX_BODY_BYTES`."""
    try:
        body = await read_body(request)
    except BadRequest as err:
        return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)
    return answer(handler, body)


def _closing(logger: DecisionLogger | None) -> Any:
    """The app's lifespan: on shutdown the decision log is closed (completed conversations
    reach disk, open ones as cut off); a part it cannot write is reported (``error: ...``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if logger is not None:
            try:
                logger.close()
            except LogWriteError as err:  # reported, and the exit code says so (run_server)
                print(f"error: {err}", file=sys.stderr, flush=True)

    return lifespan


def create_app(
    predictor: Predictor | None = None,
    *,
    logger: DecisionLogger | None = None,
    experiment: Experiment | None = None,
) -> FastAPI:
    """The FastAPI application serving ``predictor``, or the arms of ``experiment`` (and
    logging to ``logger`` when given)."""
    if experiment is not None:
        predictor = experiment.predictors[experiment.control]
        if logger is not None:
            experiment.write_description(logger.directory)
    if predictor is None:
        raise ValueError("create_app: give a predictor or an experiment")
    service = Service(predictor, logger, experiment)
    app = FastAPI(title="supportrl policy", lifespan=_closing(logger))
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "field": "body"}, status_code=422)

    @app.post("/v1/decide")
    async def decide(request: Request) -> JSONResponse:
        return await respond(service.decide, request)

    @app.post("/v1/decide_batch")
    async def decide_batch(request: Request) -> JSONResponse:
        return await respond(service.decide_batch, request)

    @app.post("/v1/outcome")
    async def outcome(request: Request) -> JSONResponse:
        return await respond(service.outcome, request)

    @app.get("/v1/experiment")
    async def experiment_info() -> JSONResponse:
        return answer(lambda _: service.experiment_info(), b"{}")

    @app.post("/v1/experiment/shares")
    async def experiment_shares(request: Request) -> JSONResponse:
        return await respond(lambda body: service.change_experiment("shares", body), request)

    @app.post("/v1/experiment/stop")
    async def experiment_stop(request: Request) -> JSONResponse:
        return await respond(lambda body: service.change_experiment("stop", body), request)

    @app.post("/v1/experiment/promote")
    async def experiment_promote(request: Request) -> JSONResponse:
        return await respond(lambda body: service.change_experiment("promote", body), request)

    @app.get("/health")
    async def health() -> JSONResponse:
        return answer(lambda _: service.health(), b"{}")

    @app.get("/manifest")
    async def manifest() -> dict[str, Any]:
        return redact_paths(predictor.manifest)  # no absolute path of the exporting machine

    return app


class PortUnavailable(OSError):
    """The service cannot listen on the address it was given (in use, not this machine's)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, bound before anything claims the URL (a result,
    a log line), so a busy port is one clear error and not a half-started server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto named: asyncio sets TCP_NODELAY only on sockets that say they are TCP (without
    # it every answer waited ~40 ms for Nagle and the client's delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = (
            "already in use (another server listens there; choose another port)"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise PortUnavailable(exc.errno, f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def run_server(
    predictor: Predictor | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    logger: DecisionLogger | None = None,
    experiment: Experiment | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until interrupted (uvicorn); the decision log is flushed on shutdown.

    ``sock``: a socket from :func:`bind_socket` (else ``host:port`` is bound here, and
    :class:`PortUnavailable` raised if it cannot be)."""
    import uvicorn

    if sock is None:
        sock = bind_socket(host, port)

    if experiment is not None:
        arms = ", ".join(
            f"{a} {s:g}" for a, s in zip(experiment.arms, experiment.shares, strict=True)
        )
        print(
            f"serving experiment {experiment.config.name} ({arms}) on http://{host}:{port}",
            flush=True,
        )
    elif predictor is not None:
        print(
            f"serving {predictor.directory} ({predictor.kind}) on http://{host}:{port}", flush=True
        )
    if logger is not None and logger.recovered:
        print(
            f"decision log {logger.directory}: recovered the journal of an earlier server into "
            + ", ".join(p.name for p in logger.recovered),
            flush=True,
        )
    app = create_app(predictor, logger=logger, experiment=experiment)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on (as uvicorn.run)
        pass
    if logger is not None and (logger.unwritten_rows or not logger.healthy):
        raise SystemExit(
            f"error: decision log {logger.directory}: {logger.unwritten_rows} rows could not be "
            f"written ({logger.error})"
        )


def _logger(make: Any, args: argparse.Namespace) -> DecisionLogger | None:
    """The decision log of ``--log-dir`` (None without); a journal left by an earlier server
    that cannot be read back is ``error: FILE: line N ...`` and exit 2."""
    if args.log_dir is None:
        return None
    try:
        return make(args.log_dir)
    except (JournalError, OSError) as err:
        print(f"error: --log-dir {args.log_dir}: {err}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """``python -m supportrl.serving.http ARTIFACT_DIR [--port N] [--log-dir DIR] ...`` or
    ``python -m supportrl.serving.http --experiment FILE ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m supportrl.serving.http", description=__doc__.split("\n")[0]
    )
    parser.add_argument("artifact", nargs="?", default=None)
    parser.add_argument("--experiment", default=None, help="an experiment file (arms, shares)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--epsilon", type=float, default=None)
    parser.add_argument("--on-invalid", choices=("error", "fallback"), default="error")
    parser.add_argument("--fallback-action", default=None)
    parser.add_argument("--log-dir", default=None)
    parser.add_argument(
        "--log-fsync",
        action="store_true",
        help="fsync each decision log journal line (survives power loss, not only a crash)",
    )
    parser.add_argument(
        "--no-log-journal",
        action="store_true",
        help="hold logged rows in memory until their part is written (a crash loses them)",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if (args.artifact is None) == (args.experiment is None):
        raise SystemExit("error: give an artifact directory or --experiment FILE (one of them)")
    try:
        sock = bind_socket(args.host, args.port)
    except PortUnavailable as err:
        print(f"error: --port {args.port}: {err.strerror}", file=sys.stderr)
        sys.exit(2)
    log_options = {"journal": not args.no_log_journal, "sync": args.log_fsync}
    if args.experiment is not None:
        try:
            experiment = Experiment.load(
                args.experiment, seed=args.seed, on_invalid=args.on_invalid
            )
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        logger = _logger(
            lambda d: DecisionLogger.for_experiment(d, experiment, **log_options), args
        )
        run_server(
            None, host=args.host, port=args.port, logger=logger, experiment=experiment, sock=sock
        )
        return
    try:
        predictor = Predictor.load(
            args.artifact,
            epsilon=args.epsilon,
            on_invalid=args.on_invalid,
            fallback_action=args.fallback_action,
            seed=args.seed,
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    logger = _logger(lambda d: DecisionLogger.for_predictor(d, predictor, **log_options), args)
    run_server(predictor, host=args.host, port=args.port, logger=logger, sock=sock)


if __name__ == "__main__":
    main()
