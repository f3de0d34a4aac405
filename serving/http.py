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
:data:`~supportrl.serving.logger.MAX_ID_LENGTH` characters; 404: an outcome for a
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

Run it with ``python -m supportrl.serving.http ARTIFACT_DIR --port 8080`` or
``supportrl serve artifact=DIR serve.port=8080``; it binds 127.0.0.1 unless told otherwise,
before anything claims the URL: a port in use is ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import re
import socket
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from supportrl.serving.artifact import ArtifactError, redact_paths
from supportrl.serving.experiment import Experiment, ExperimentError, pseudonym
from supportrl.serving.features import InvalidStateError
from supportrl.serving.logger import (
    MAX_ID_LENGTH,
    DecisionLogger,
    JournalError,
    LogUnavailable,
    LogWriteError,
)
from supportrl.serving.predictor import Predictor

MAX_BATCH = 10_000
"""Most states one ``/v1/decide_batch`` request may carry."""
MAX_BODY_BYTES = 8 * 2**20
"""Largest request body (bytes), checked before it is read whole or parsed."""
MAX_DEPTH = 32
"""Deepest nesting of a request body, checked before it is parsed."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class BadRequest(Exception):
    """A request the service refuses: HTTP ``status``, ``field`` named in the answer."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def json_depth(body: bytes) -> int:
    """Deepest bracket nesting of a JSON body (strings ignored), without parsing it."""
    codes = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    step = (codes == ord("[")).astype(np.int64) + (codes == ord("{"))
    step -= (codes == ord("]")).astype(np.int64) + (codes == ord("}"))
    return int(np.cumsum(step).max(initial=0))


def _object(body: bytes) -> dict[str, Any]:
    depth = json_depth(body)
    if depth > MAX_DEPTH:
        raise BadRequest(400, f"body: nested {depth} levels deep; at most {MAX_DEPTH}", "body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body: not valid JSON ({exc})", "body") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"body: expected a JSON object, got {type(data).__name__}", "body")
    return data


def _conversation_id(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise BadRequest(
            422,
            f"{field}: expected a non-empty string of at most {MAX_ID_LENGTH} characters, "
            f"got {type(value).__name__}{f' of {len(value)} characters' if isinstance(value, str) else ''}",
            field,
        )
    return value


class Service:
    """The request handling, independent of the web framework (plain dicts in and out)."""

    def __init__(
        self,
        predictor: Predictor,
        logger: DecisionLogger | None = None,
        experiment: Experiment | None = None,
    ) -> None:
        self.predictor = predictor
        self.logger = logger
        self.experiment = experiment

    def decide(self, body: dict[str, Any]) -> dict[str, Any]:
        state = body.get("state")
        if not isinstance(state, dict):
            raise BadRequest(422, "state: expected a JSON object of state variables", "state")
        cid = _conversation_id(body.get("conversation_id"), "conversation_id")
        if self.experiment is not None:
            return self._decide_in_experiment(state, cid, body.get("customer_id"))
        try:
            decision = self.predictor.decide(state)
        except InvalidStateError as err:
            raise BadRequest(422, str(err), f"state.{err.field}") from None
        out = {**decision.to_dict(), "logged": False}
        if cid is not None and self.logger is not None:
            if decision.fallback:  # its state is not a valid row: the conversation leaves the log
                self.logger.drop(cid)
                out["log_error"] = "conversation left out of the decision log: invalid state"
                return out
            try:
                out["logged"] = self.logger.log(cid, state, decision.action, decision.propensity)
            except (ValueError, LogUnavailable) as err:
                out["log_error"] = str(err)
        return out

    def _decide_in_experiment(
        self, state: dict[str, Any], cid: str | None, customer: Any
    ) -> dict[str, Any]:
        experiment = self.experiment
        assert experiment is not None
        if cid is None:
            raise BadRequest(
                422,
                "conversation_id: required in an experiment (arms are sticky)",
                "conversation_id",
            )
        try:
            decision = experiment.decide(state, conversation_id=cid, customer_id=customer)
        except ExperimentError as err:
            raise BadRequest(422, str(err), err.field) from None
        except InvalidStateError as err:
            raise BadRequest(422, str(err), f"state.{err.field}") from None
        out = {**decision.to_dict(), "logged": False}
        if self.logger is not None:
            try:
                out["logged"] = self.logger.log(
                    cid,
                    state,
                    decision.action,
                    decision.propensity,
                    arm=decision.arm,
                    customer_id=None
                    if customer is None
                    else pseudonym(experiment.config.salt, customer),
                    decision_id=decision.decision_id,
                )
            except (ValueError, LogUnavailable) as err:
                out["log_error"] = str(err)
        return out

    def experiment_info(self) -> dict[str, Any]:
        if self.experiment is None:
            raise BadRequest(409, "no experiment is served (serve.experiment=FILE)", "experiment")
        return _public(self.experiment.describe())

    def change_experiment(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """``shares``, ``stop`` or ``promote``, recorded in the log folder's experiment.json."""
        experiment = self.experiment
        if experiment is None:
            raise BadRequest(409, "no experiment is served (serve.experiment=FILE)", "experiment")
        reason = body.get("reason", action)
        if not isinstance(reason, str) or len(reason) > 500:
            raise BadRequest(422, "reason: a string of at most 500 characters", "reason")
        try:
            if action == "shares":
                shares = body.get("shares")
                if not isinstance(shares, dict):
                    raise BadRequest(422, "shares: expected an object ARM -> share", "shares")
                experiment.set_shares(shares, reason)
            else:
                arm = body.get("arm")
                if not isinstance(arm, str):
                    raise BadRequest(422, "arm: expected an arm name", "arm")
                (experiment.stop if action == "stop" else experiment.promote)(arm, reason)
        except ExperimentError as err:
            raise BadRequest(422, str(err), err.field) from None
        if self.logger is not None:
            experiment.write_description(self.logger.directory)
        return _public(experiment.describe())

    def decide_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.experiment is not None:
            raise BadRequest(
                409, "decide_batch is not available in an experiment: use /v1/decide", "states"
            )
        if ("states" in body) == ("columns" in body):
            raise BadRequest(422, "give exactly one of 'states' (a list) or 'columns'", "states")
        field = "states" if "states" in body else "columns"
        states = body[field]
        if field == "states" and not isinstance(states, list):
            raise BadRequest(422, "states: expected a list of state objects", "states")
        if field == "columns" and not isinstance(states, dict):
            raise BadRequest(422, "columns: expected an object of name -> list", "columns")
        try:
            n = len(states) if field == "states" else len(next(iter(states.values()), []))
        except TypeError:
            n = 0
        if n > MAX_BATCH:
            raise BadRequest(
                422, f"{field}: at most {MAX_BATCH} states per request, got {n}", field
            )
        ids = body.get("conversation_ids")
        if ids is not None and (
            not isinstance(ids, list)
            or len(ids) != n
            or not all(isinstance(i, str) and 0 < len(i) <= MAX_ID_LENGTH for i in ids)
        ):
            raise BadRequest(
                422,
                f"conversation_ids: expected {n} non-empty strings of at most {MAX_ID_LENGTH} "
                "characters",
                "conversation_ids",
            )
        try:
            batch = self.predictor.decide_batch(states)
        except InvalidStateError as err:
            if err.field in ("states", field):
                name = field
            else:
                name = err.field if err.field.startswith(field) else f"{field}.{err.field}"
            raise BadRequest(422, str(err), name) from None
        logged = False
        log_error = None
        if ids is not None and self.logger is not None:
            for row in np.flatnonzero(batch.fallback).tolist():  # invalid states: not valid rows
                self.logger.drop(ids[row])
            valid = np.flatnonzero(~batch.fallback)
            try:
                self.logger.log_batch(
                    [ids[i] for i in valid.tolist()],
                    _state_columns(states, self.predictor, valid),
                    batch.actions[valid].tolist(),
                    batch.propensity[valid].tolist(),
                )
                logged = True
            except (ValueError, LogUnavailable) as err:
                log_error = str(err)
        return {
            "actions": batch.actions.tolist(),
            "propensities": batch.propensity.tolist(),
            "probabilities": batch.probabilities.tolist(),
            "fallback": batch.fallback.tolist(),
            "reasons": {str(k): v for k, v in batch.reasons.items()},
            "logged": logged,
            **({"log_error": log_error} if log_error else {}),
        }

    def outcome(self, body: dict[str, Any]) -> dict[str, Any]:
        cid = _conversation_id(body.get("conversation_id"), "conversation_id")
        if cid is None:
            raise BadRequest(422, "conversation_id: required", "conversation_id")
        outcome = body.get("outcome")
        if not isinstance(outcome, str):
            raise BadRequest(422, f"outcome: expected a string, got {outcome!r}", "outcome")
        csat = body.get("csat")
        if csat is not None and (
            isinstance(csat, bool) or not isinstance(csat, int | float) or not math.isfinite(csat)
        ):
            raise BadRequest(
                422, f"csat: expected a number in [1, 5] or null, got {csat!r}", "csat"
            )
        handle = body.get("handle_time_s")
        if handle is not None:
            values = handle if isinstance(handle, list) else [handle]
            if (
                not values
                or len(values) > 1000
                or not all(
                    not isinstance(v, bool)
                    and isinstance(v, int | float)
                    and math.isfinite(v)
                    and v >= 0
                    for v in values
                )
            ):
                raise BadRequest(
                    422,
                    "handle_time_s: expected seconds >= 0 per logged turn (a list, or one number)",
                    "handle_time_s",
                )
            handle = values
        if self.experiment is not None:
            self.experiment.end(cid)
        if self.logger is None:
            raise BadRequest(
                409, "no decision log configured (start with a log directory)", "conversation_id"
            )
        try:
            recorded = self.logger.record_outcome(cid, outcome, csat, handle_time_s=handle)
        except (LogUnavailable, LogWriteError) as err:
            raise BadRequest(503, f"not logging: {err}", "log") from None
        except KeyError as err:
            raise BadRequest(404, str(err.args[0]), "conversation_id") from None
        except ValueError as err:
            message = str(err)
            field = next(
                (f for f in ("outcome", "csat", "handle_time_s") if message.startswith(f)),
                "conversation_id",
            )
            raise BadRequest(422, message, field) from None
        if not recorded:
            return {"recorded": False, "reason": "conversation left out of the decision log"}
        return {"recorded": True}

    def health(self) -> dict[str, Any]:
        if self.logger is not None and not self.logger.healthy:
            raise BadRequest(
                503,
                f"not logging: {self.logger.error} ({self.logger.unwritten_rows} rows held)",
                "log",
            )
        return {
            "status": "ok",
            "policy": self.predictor.kind,
            "actions": list(self.predictor.actions),
            "epsilon": self.predictor.epsilon,
            "logging": self.logger is not None,
            **(
                {
                    "experiment": {
                        "arms": list(self.experiment.arms),
                        "shares": self.experiment.describe()["shares"],
                    }
                }
                if self.experiment is not None
                else {}
            ),
        }


def _public(description: dict[str, Any]) -> dict[str, Any]:
    """An experiment's description as HTTP shows it: artifact folders by name, no absolute
    paths (the log folder's experiment.json keeps them)."""
    arms = {
        name: {**arm, "artifact": str(arm["artifact"]).rstrip("/").rsplit("/", 1)[-1]}
        for name, arm in description["arms"].items()
    }
    return {**description, "arms": arms}


def _state_columns(states: Any, predictor: Predictor, rows: np.ndarray) -> dict[str, Any]:
    """The valid ``rows`` of ``states`` (records or columns) as columns, for the logger."""
    names, take = predictor.encoder.variables, rows.tolist()
    if isinstance(states, Mapping):
        return {name: [states[name][i] for i in take] for name in names}
    return {name: [states[i][name] for i in take] for name in names}


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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if logger is not None:  # completed conversations reach disk; open ones as cut off
            try:
                logger.close()
            except LogWriteError as err:  # reported, and the exit code says so (run_server)
                print(f"error: {err}", file=sys.stderr, flush=True)

    app = FastAPI(title="supportrl policy", lifespan=lifespan)
    app.state.service = service

    def answer(handler: Any, body: bytes) -> JSONResponse:
        try:
            return JSONResponse(handler(_object(body)))
        except BadRequest as err:
            return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)
        except ArtifactError as err:  # the policy's model failed: the server's fault
            return JSONResponse({"error": f"model: {err}", "field": "model"}, status_code=500)
        except (ValueError, TypeError) as err:  # input the checks above did not foresee
            field = getattr(err, "field", "body")
            return JSONResponse({"error": str(err), "field": field}, status_code=422)

    async def respond(handler: Any, request: Request) -> JSONResponse:
        try:
            body = await read_body(request)
        except BadRequest as err:
            return JSONResponse({"error": err.message, "field": err.field}, status_code=err.status)
        return answer(handler, body)

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
