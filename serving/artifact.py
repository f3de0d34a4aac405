"""The serving artifact on disk: layout, manifest, checksums (numpy-free, stdlib only).

An artifact is a directory::

    manifest.json      schema version, actions, feature spec, policy kind and files,
                       exploration, training config, evaluation summary, created-at,
                       SHA-256 of every other file
    manifest.sha256    SHA-256 of manifest.json itself (so a changed byte there is caught too)
    policy.onnx        DQN: encoded state (n, dim) float32 + epsilon -> action probabilities
    theta.npy, ...     linear bandits: plain float64 arrays (read with allow_pickle=False)
    policy.yaml        rule policies: the rule file as written
    rules.json         rule policies: its conditions parsed into a JSON tree

Nothing in an artifact is pickled: loading one never runs code. The user-facing
description is docs/artifact.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FORMAT = "supportrl.artifact"
"""Value of ``format`` in ``manifest.json``."""
SCHEMA_VERSION = 1
"""Artifact schema version this build writes and reads; bump it (keep reading 1) on change."""
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
POLICY_KINDS = ("dqn", "onnx", "linucb", "lints", "rules")
"""Policy kinds an artifact may hold."""


class ArtifactError(ValueError):
    """An artifact directory that cannot be loaded: missing or changed files, wrong schema."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike[str], manifest: Mapping[str, Any]) -> Path:
    """Hash every file of ``manifest["files"]``, then write ``manifest.json`` and its hash.

    ``manifest["files"]`` names the files (relative to ``directory``); their SHA-256 is
    filled in here. Both files are written to temporary names and renamed.
    """
    directory = Path(directory)
    body = dict(manifest)
    body["files"] = {name: sha256_file(directory / name) for name in manifest["files"]}
    text = json.dumps(body, indent=2, allow_nan=False) + "\n"
    _write_text(directory / MANIFEST, text)
    _write_text(directory / MANIFEST_HASH, hashlib.sha256(text.encode()).hexdigest() + "\n")
    return directory / MANIFEST


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify an artifact's manifest; every listed file's SHA-256 is checked.

    Raises:
        ArtifactError: naming the file when the directory is not an artifact, a file is
            missing or differs from its recorded SHA-256, or the schema version is not
            one this build reads.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (no such directory)")
    if not path.is_file():
        raise ArtifactError(f"{directory}: not an artifact directory (no {MANIFEST})")
    raw = path.read_bytes()
    hash_path = directory / MANIFEST_HASH
    if not hash_path.is_file():
        raise ArtifactError(f"{hash_path}: missing; the manifest cannot be verified")
    recorded = hash_path.read_text(encoding="utf-8").strip()
    if hashlib.sha256(raw).hexdigest() != recorded:
        raise ArtifactError(
            f"{path}: SHA-256 differs from {MANIFEST_HASH}; the manifest was changed after export"
        )
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format is not {FORMAT!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {version!r}; this build of supportrl.serving reads "
            f"version {SCHEMA_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{path}: 'files' must map file names to SHA-256")
    for name, expected in files.items():
        file = directory / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{path}: file name {name!r} leaves the artifact directory")
        if not file.is_file():
            raise ArtifactError(f"{file}: missing (listed in {MANIFEST})")
        if sha256_file(file) != expected:
            raise ArtifactError(
                f"{file}: SHA-256 differs from the manifest; the file was changed after export"
            )
    kind = manifest.get("policy", {}).get("kind")
    if kind not in POLICY_KINDS:
        raise ArtifactError(f"{path}: policy.kind {kind!r}; expected one of {list(POLICY_KINDS)}")
    return manifest
