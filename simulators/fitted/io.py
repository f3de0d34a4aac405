"""Simulator files: :func:`save_customer_model` and :func:`load_customer_model`.

A fitted simulator is a directory with ``simulator.json`` (format version, family, schema
and reward versions, actions, feature spec, hyperparameters, warnings, fit diagnostics,
and the name, shape and dtype of every array) and ``params.npz`` (every fitted array).
No pickle anywhere: the npz is read with ``allow_pickle=False``; a corrupt or foreign
file raises ValueError naming it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import OUTCOMES, REWARD_VERSION
from supportrl.simulators.fitted.config import FamilyParams, FitConfig, GLMParams
from supportrl.simulators.fitted.csat import CSAT_LEVELS, CsatModel
from supportrl.simulators.fitted.dynamics import Dynamics, EnsembleDynamics, GLMDynamics
from supportrl.simulators.fitted.ensemble import EnsembleParams
from supportrl.simulators.fitted.features import Basis, FittedState
from supportrl.simulators.fitted.glm import SoftmaxFit
from supportrl.simulators.fitted.model import FittedCustomerModel
from supportrl.simulators.logs import SCHEMA_VERSION

from supportrl.files import brief, read_declared_npz, read_json, reports_malformed
from supportrl.outputs import check_complete, write_complete

FORMAT = "supportrl.fitted_customer_model"
FORMAT_VERSION = 1
JSON_FILE = "simulator.json"

ARRAY_BOUNDS = {"": 1e9, "pool/": 1e15, "support/": 1e15}
"""Largest absolute parameter value accepted on load (pool states: feature values)."""
PARAMS_FILE = "params.npz"


def save_customer_model(model: FittedCustomerModel, path: str | Path) -> Path:
    """Write ``simulator.json`` and ``params.npz`` into directory ``path`` (created).

    Files are written to temporary names first and then renamed.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = _arrays(model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": model.family,
        "schema_version": SCHEMA_VERSION,
        "reward_version": REWARD_VERSION,
        "actions": list(model.actions),
        "outcomes": list(OUTCOMES),
        "feature_spec": model.feature_spec.to_dict(),
        "config": dataclasses.asdict(model.config),
        "params": dataclasses.asdict(model.params),
        "handle_time_known": model.handle_time_known,
        "csat": {
            "levels": CSAT_LEVELS.tolist(),
            "method": model.csat.method,
            "response_rate_by_level": model.csat.response.tolist(),
            "iterations": model.csat.iterations,
        },
        "initial_state_pool": {
            "size": len(model.pool),
            "arrays": sorted(k for k in arrays if k.startswith("pool/")),
            "encoding": "categorical variables as codes into feature_spec levels; "
            "previous_action -1 = none",
        },
        "support_keys": list(model.support),
        "warnings": list(model.warnings),
        "info": model.info,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
    }
    tmp_npz = path / (PARAMS_FILE + ".tmp")
    with open(tmp_npz, "wb") as fh:
        np.savez(fh, **arrays)
    tmp_npz.replace(path / PARAMS_FILE)
    tmp_json = path / (JSON_FILE + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
    tmp_json.replace(path / JSON_FILE)
    write_complete(path, "simulator")
    return path


def _arrays(model: FittedCustomerModel) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = dict(model.dynamics.arrays())
    arrays["csat/coef"] = model.csat.fit.coef
    arrays["csat/response"] = model.csat.response
    arrays["intent_transition"] = model.intent_transition
    arrays["pool/turn"] = model.pool.turn
    arrays["pool/previous_action"] = model.pool.previous_action
    arrays["pool/intent"] = model.pool.intent
    arrays["pool/sentiment"] = model.pool.sentiment
    for k, v in model.pool.categorical.items():
        arrays[f"pool/categorical/{k}"] = v
    for k, v in model.pool.numeric.items():
        arrays[f"pool/numeric/{k}"] = v
    for k, v in model.support.items():
        arrays[f"support/{k}"] = v
    return arrays


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
