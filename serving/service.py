"""The HTTP service's handlers, independent of the web framework: plain dicts in and out.

:class:`Service` answers each endpoint of :mod:`supportrl.serving.http` (the module doc
lists them) for a :class:`~supportrl.serving.Predictor` or the arms of an
:class:`~supportrl.serving.experiment.Experiment`, and logs decisions and outcomes to a
:class:`~supportrl.serving.DecisionLogger` when it has one. A request it refuses raises
:class:`~supportrl.serving.http_requests.BadRequest` (status and field); the request's
fields are checked in :mod:`supportrl.serving.http_requests` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from supportrl.serving.experiment import Experiment, ExperimentError, pseudonym
from supportrl.serving.features import InvalidStateError
from supportrl.serving.http_requests import (
    BadRequest,
    batch_request,
    conversation_id,
    outcome_request,
)
from supportrl.serving.logger import DecisionLogger, LogUnavailable, LogWriteError
from supportrl.serving.predictor import Predictor


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
        cid = conversation_id(body.get("conversation_id"), "conversation_id")
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
        field, states, ids = batch_request(body)
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
        cid, outcome, csat, handle = outcome_request(body)
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
