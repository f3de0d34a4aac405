"""Simulator files: :func:`save_customer_model` (and, in :mod:`~supportrl.simulators.fitted.load`,
:func:`~supportrl.simulators.fitted.load.load_customer_model`).

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
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.envs.rewards import OUTCOMES, REWARD_VERSION
from supportrl.simulators.fitted.csat import CSAT_LEVELS
from supportrl.simulators.logs import SCHEMA_VERSION

from supportrl.outputs import write_complete

if TYPE_CHECKING:
    from supportrl.simulators.fitted.model import FittedCustomerModel

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
