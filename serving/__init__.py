"""Serving: load an exported artifact and decide, with numpy and onnxruntime only.

Public names: :class:`Predictor` (``Predictor.load(dir)``, ``.decide(state)``,
``.decide_batch(states)``; also a ``Policy``), :class:`Decision`, :class:`BatchDecision`,
:class:`DecisionLogger` (schema-v1 decision logs, Parquet parts; needs pyarrow),
:class:`InvalidStateError`, :class:`ArtifactError`, :data:`SCHEMA_VERSION`. The HTTP app
is :func:`supportrl.serving.http.create_app` (FastAPI, the ``http`` extra).

Importing this package never imports torch, Ray, Hydra or pandas, nor any other
supportrl subpackage: production installs it alone (``pip install ./serving``). Its public
names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supportrl.serving.artifact import (
        SCHEMA_VERSION,
        ArtifactError,
        read_manifest,
        sha256_file,
    )
    from supportrl.serving.features import InvalidStateError
    from supportrl.serving.logger import DecisionLogger
    from supportrl.serving.predictor import BatchDecision, Decision, Predictor

_HOME = {
    "SCHEMA_VERSION": "artifact",
    "ArtifactError": "artifact",
    "read_manifest": "artifact",
    "sha256_file": "artifact",
    "InvalidStateError": "features",
    "DecisionLogger": "logger",
    "BatchDecision": "predictor",
    "Decision": "predictor",
    "Predictor": "predictor",
}
"""Public name -> the module that defines it, imported on first use (so that the leaf
:mod:`supportrl.serving.json_limits`, which ``supportrl.files`` uses, loads without
onnxruntime)."""


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "SCHEMA_VERSION",
    "ArtifactError",
    "BatchDecision",
    "Decision",
    "DecisionLogger",
    "InvalidStateError",
    "Predictor",
    "read_manifest",
    "sha256_file",
]
