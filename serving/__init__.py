"""Serving: load an exported artifact and decide, with numpy and onnxruntime only.

Public names: :class:`Predictor` (``Predictor.load(dir)``, ``.decide(state)``,
``.decide_batch(states)``; also a ``Policy``), :class:`Decision`, :class:`BatchDecision`,
:class:`DecisionLogger` (schema-v1 decision logs, Parquet parts; needs pyarrow),
:class:`InvalidStateError`, :class:`ArtifactError`, :data:`SCHEMA_VERSION`. The HTTP app
is :func:`supportrl.serving.http.create_app` (FastAPI, the ``http`` extra).

Importing this package never imports torch, Ray, Hydra or pandas, nor any other
supportrl subpackage: production installs it alone (``pip install ./serving``).
"""

from supportrl.serving.artifact import SCHEMA_VERSION, ArtifactError, read_manifest, sha256_file
from supportrl.serving.features import InvalidStateError
from supportrl.serving.logger import DecisionLogger
from supportrl.serving.predictor import BatchDecision, Decision, Predictor

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
