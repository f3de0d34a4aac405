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
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from supportrl.serving.json_limits import json_depth

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


MAX_MANIFEST_BYTES = 16 * 2**20
"""Largest ``manifest.json`` read (bytes)."""
MAX_DEPTH = 64
"""Deepest nesting of lists / objects accepted in the manifest and in ``rules.json``."""
MAX_FILES = 64
"""Most files an artifact may hold."""
MAX_ACTIONS = 1024
MAX_LABEL_LENGTH = 256
"""Longest action label (characters)."""
POLICY_FILES = {
    "dqn": ("policy.onnx",),
    "onnx": ("policy.onnx",),
    "linucb": ("theta.npy", "a_inv.npy"),
    "lints": ("theta.npy", "a_inv.npy", "z.npy"),
    "rules": ("rules.json",),
}
"""Files each policy kind reads: they must be listed in the manifest (and so checked)."""


def read_json_bounded(path: Path, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file of at most ``max_bytes``, nested at most ``max_depth``; ArtifactError else.

    ``path`` must be a regular file (not a symlink, FIFO or device). Non-standard
    constants (``NaN``, ``Infinity``) are refused.
    """
    try:
        info = os.lstat(path)
    except OSError:
        raise ArtifactError(f"{path}: missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise ArtifactError(f"{path}: not a regular file (a symlink or special file)")
    if info.st_size > max_bytes:
        raise ArtifactError(f"{path}: {info.st_size} bytes; at most {max_bytes} allowed")
    try:
        text = path.read_bytes()[: max_bytes + 1].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable or not UTF-8 ({exc})") from None
    depth = json_depth(text)
    if depth > max_depth:
        raise ArtifactError(f"{path}: nested {depth} levels deep; at most {max_depth} allowed")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({str(exc)[:160]})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def redact_paths(value: Any) -> Any:
    """``value`` with every absolute path string cut to its last part (``/a/b/x.csv`` -> ``x.csv``).

    The manifest is served by ``GET /manifest``: it must not tell where the training data,
    runs and checkpoints lie on the machine that exported it.
    """
    if isinstance(value, Mapping):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_paths(v) for v in value]
    if isinstance(value, str) and _ABSOLUTE.match(value):
        return PurePath(value.replace("\\", "/")).name or value[:1]
    return value


_ABSOLUTE = re.compile(r"^(?:/|~/|[A-Za-z]:[\\/]|\\\\)")


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify an artifact: the manifest, and every file in the directory.

    Checked: ``manifest.json`` against ``manifest.sha256``; every entry of the directory
    is ``manifest.json``, ``manifest.sha256`` or a file the manifest lists (an unlisted
    file, a symlink or a special file is refused, so nothing unverified is ever read, an
    ONNX external-data file included); every listed file is a regular file inside the
    directory with its recorded SHA-256; the files the policy kind reads
    (:data:`POLICY_FILES`, and ``policy.file``) are listed; actions are unique strings.

    Raises:
        ArtifactError: naming the file and the field.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    manifest = _verified_manifest(directory, path)
    files = manifest.get("files")
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        raise ArtifactError(f"{path}: 'files' must map at most {MAX_FILES} file names to SHA-256")
    _check_listed_files(directory, path, files)
    _check_no_unlisted(directory, set(files))
    _check_policy_files(path, manifest.get("policy"), files)
    _check_actions(path, manifest.get("actions"))
    return manifest


def _verified_manifest(directory: Path, path: Path) -> dict[str, Any]:
    """``manifest.json`` read after its bytes matched ``manifest.sha256``, of this format and
    schema version."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: not an artifact directory (no such directory)")
    if not os.path.lexists(path):
        raise ArtifactError(f"{directory}: not an artifact directory (no {MANIFEST})")
    hash_path = directory / MANIFEST_HASH
    if not os.path.lexists(hash_path):
        raise ArtifactError(f"{hash_path}: missing; the manifest cannot be verified")
    for special in (path, hash_path):
        if not stat.S_ISREG(os.lstat(special).st_mode):
            raise ArtifactError(f"{special}: not a regular file (a symlink or special file)")
    if os.lstat(path).st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    raw = path.read_bytes()
    recorded = hash_path.read_bytes()[:200].decode("utf-8", "replace").strip()
    if hashlib.sha256(raw).hexdigest() != recorded:
        raise ArtifactError(
            f"{path}: SHA-256 differs from {MANIFEST_HASH}; the manifest was changed after export"
        )
    manifest = read_json_bounded(path, MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format is not {FORMAT!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {_brief(version)}; this build of supportrl.serving reads "
            f"version {SCHEMA_VERSION}"
        )
    return manifest


def _check_listed_files(directory: Path, path: Path, files: dict[Any, Any]) -> None:
    """Every file the manifest lists is a regular file inside ``directory`` with its SHA-256."""
    root = directory.resolve()
    for name, expected in files.items():
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{path}: file name {_brief(name)} leaves the artifact directory")
        if name in (MANIFEST, MANIFEST_HASH):
            raise ArtifactError(f"{path}: files: {name} cannot list itself")
        file = directory / name
        try:
            info = os.lstat(file)
        except OSError:
            raise ArtifactError(f"{file}: missing (listed in {MANIFEST})") from None
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{file}: not a regular file (a symlink or special file)")
        if root not in file.resolve().parents:
            raise ArtifactError(f"{file}: lies outside the artifact directory")
        if not isinstance(expected, str) or sha256_file(file) != expected:
            raise ArtifactError(
                f"{file}: SHA-256 differs from the manifest; the file was changed after export"
            )


def _check_policy_files(path: Path, policy: Any, files: dict[Any, Any]) -> None:
    """A known policy kind, and the files it reads listed in ``files`` (so verified)."""
    kind = policy.get("kind") if isinstance(policy, dict) else None
    if kind not in POLICY_KINDS:
        raise ArtifactError(
            f"{path}: policy.kind {_brief(kind)}; expected one of {list(POLICY_KINDS)}"
        )
    needed: list[Any] = list(POLICY_FILES[kind])
    if kind in ("dqn", "onnx", "rules"):
        needed = [policy.get("file")]
    for name in needed:
        if not isinstance(name, str) or name not in files:
            raise ArtifactError(
                f"{path}: policy file {_brief(name)} is not listed in 'files' (so not verified)"
            )


def _check_actions(path: Path, actions: Any) -> None:
    """1 to :data:`MAX_ACTIONS` unique non-empty labels, each at most
    :data:`MAX_LABEL_LENGTH` characters."""
    if (
        not isinstance(actions, list)
        or not 1 <= len(actions) <= MAX_ACTIONS
        or not all(isinstance(a, str) and 0 < len(a) <= MAX_LABEL_LENGTH for a in actions)
        or len(set(actions)) != len(actions)
    ):
        raise ArtifactError(
            f"{path}: 'actions' must be 1 to {MAX_ACTIONS} unique non-empty labels of at most "
            f"{MAX_LABEL_LENGTH} characters"
        )


def _check_no_unlisted(directory: Path, listed: set[str]) -> None:
    """Refuse any entry of ``directory`` that is neither the manifest nor a listed file."""
    allowed = listed | {MANIFEST, MANIFEST_HASH}
    parents = {
        str(PurePath(*PurePath(n).parts[:i]))
        for n in listed
        for i in range(1, len(PurePath(n).parts))
    }
    seen = 0
    for base, dirs, names in os.walk(directory, followlinks=False):
        for entry in [*names, *dirs]:
            seen += 1
            full = Path(base) / entry
            rel = full.relative_to(directory).as_posix()
            if seen > 10 * MAX_FILES:
                raise ArtifactError(f"{directory}: more than {10 * MAX_FILES} entries")
            if full.is_symlink():
                raise ArtifactError(f"{full}: a symlink; an artifact holds only regular files")
            if entry in dirs and rel not in parents:
                raise ArtifactError(f"{full}: a directory the manifest does not list files in")
            if entry in names and rel not in allowed:
                raise ArtifactError(
                    f"{full}: not listed in {MANIFEST} (unverified files are refused)"
                )


def _brief(value: Any, limit: int = 60) -> str:
    text = (
        repr(value)
        if isinstance(value, str | int | float | bool | type(None))
        else type(value).__name__
    )
    return text if len(text) <= limit else text[:limit] + "..."
