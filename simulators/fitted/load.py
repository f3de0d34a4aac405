"""Reading a fitted customer model back (:func:`load_customer_model`): no code runs, no pickle;
every file checked against its header, and the model stepped once so arrays that disagree
with their metadata fail on load, not mid-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import REWARD_VERSION
from supportrl.simulators.fitted.config import FamilyParams, FitConfig, GLMParams
from supportrl.simulators.fitted.csat import CsatModel
from supportrl.simulators.fitted.dynamics import Dynamics, EnsembleDynamics, GLMDynamics
from supportrl.simulators.fitted.ensemble import EnsembleParams
from supportrl.simulators.fitted.features import Basis, FittedState
from supportrl.simulators.fitted.glm import SoftmaxFit
from supportrl.simulators.fitted.io import (
    ARRAY_BOUNDS,
    FORMAT,
    FORMAT_VERSION,
    JSON_FILE,
    PARAMS_FILE,
)
from supportrl.simulators.fitted.model import FittedCustomerModel
from supportrl.simulators.logs import SCHEMA_VERSION

from supportrl.files import brief, read_declared_npz, read_json, reports_malformed
from supportrl.outputs import check_complete


def _read_header(path: Path) -> dict[str, Any]:
    """The ``simulator.json`` of the model directory ``path``, once both files are there, the
    directory is complete, and the file is this format at this version."""
    json_path, npz_path = path / JSON_FILE, path / PARAMS_FILE
    for p in (json_path, npz_path):
        if not p.is_file():
            raise ValueError(
                f"{p}: not found (a fitted simulator directory holds {JSON_FILE} and {PARAMS_FILE})"
            )
    check_complete(path, "simulator")
    meta = read_json(json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{json_path}: not a fitted customer model (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{json_path}: format_version {version!r} unsupported; this supportrl reads version {FORMAT_VERSION}"
        )
    return meta


@reports_malformed(lambda path: Path(path) / JSON_FILE)
def load_customer_model(path: str | Path) -> FittedCustomerModel:
    """Load a model written by :meth:`FittedCustomerModel.save` (no code runs, no pickle).

    Raises:
        ValueError: naming the file, when it is missing, corrupt, of another format or
            version, or inconsistent with its companion file.
    """
    path = Path(path)
    json_path, npz_path = path / JSON_FILE, path / PARAMS_FILE
    meta = _read_header(path)
    try:
        if meta["schema_version"] != SCHEMA_VERSION or meta["reward_version"] != REWARD_VERSION:
            raise ValueError(
                f"{json_path}: schema/reward version {meta['schema_version']}/{meta['reward_version']} "
                f"unsupported; expected {SCHEMA_VERSION}/{REWARD_VERSION}"
            )
        actions = tuple(str(a) for a in meta["actions"])
        spec = FeatureSpec.from_dict(meta["feature_spec"])
        config = FitConfig(**meta["config"])
        params: FamilyParams = (
            GLMParams(**meta["params"])
            if config.family == "glm"
            else EnsembleParams(**meta["params"])
        )
        csat_meta = meta["csat"]
    except ValueError as exc:
        if str(exc).startswith(str(json_path)):
            raise
        raise ValueError(f"{json_path}: malformed ({exc})") from None
    except (KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"{json_path}: malformed, missing or wrong entry {brief(exc)}") from None
    # only the declared arrays, each checked against its header, finite and bounded
    arrays = read_declared_npz(npz_path, meta.get("arrays"), where=json_path, max_abs=ARRAY_BOUNDS)
    try:
        dynamics: Dynamics = (
            GLMDynamics.from_arrays(arrays)
            if config.family == "glm"
            else EnsembleDynamics.from_arrays(arrays)
        )
        basis = Basis(spec=spec, actions=actions, max_turns=config.max_turns)
        pool = FittedState(
            turn=arrays["pool/turn"],
            previous_action=arrays["pool/previous_action"],
            intent=arrays["pool/intent"],
            sentiment=arrays["pool/sentiment"],
            categorical={k: arrays[f"pool/categorical/{k}"] for k in basis.context_categorical},
            numeric={k: arrays[f"pool/numeric/{k}"] for k in basis.context_numeric},
        )
        csat = CsatModel(
            fit=SoftmaxFit(coef=arrays["csat/coef"], converged=True, iterations=0),
            response=arrays["csat/response"],
            method=str(csat_meta["method"]),
            iterations=int(csat_meta.get("iterations", 0)),
        )
        support = {k: arrays[f"support/{k}"] for k in meta["support_keys"]}
        model = FittedCustomerModel(
            actions=actions,
            config=config,
            params=params,
            feature_spec=spec,
            dynamics=dynamics,
            csat=csat,
            intent_transition=arrays["intent_transition"],
            pool=pool,
            support=support,
            handle_time_known=bool(meta.get("handle_time_known", True)),
            warnings=[str(w) for w in meta.get("warnings", [])],
            info=dict(meta.get("info", {})),
        )
    except KeyError as exc:
        raise ValueError(f"{npz_path}: missing array {brief(str(exc))}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{npz_path}: arrays inconsistent with {json_path.name} ({exc})") from None
    if model.basis.dim != _input_dim(model):
        raise ValueError(
            f"{npz_path}: parameter shapes do not match the feature spec in {json_path.name}"
        )
    _check_runs(model, f"{npz_path}: arrays inconsistent with {json_path.name}")
    return model


def _check_runs(model: FittedCustomerModel, where: str) -> None:
    """Step a fixed batch a few turns, every action, so a simulator whose arrays disagree
    with its metadata (e.g. fewer actions declared than fitted) fails on load, not mid-run."""
    rng = np.random.default_rng(0)
    n = 64 * len(model.actions)
    try:
        state = model.initial_state(n, rng)
        for _ in range(3):
            state = model.step(state, np.arange(n) % len(model.actions), rng).next_state
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{where} ({brief(str(exc), 160)})") from None


def _input_dim(model: FittedCustomerModel) -> int:
    if isinstance(model.dynamics, GLMDynamics):
        return model.dynamics.outcome.coef.shape[1]
    return model.dynamics.net.linear.shape[2]
