"""Registry of bandit kinds, construction by name, and checkpoint loading (no pickle)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from supportrl.agents.bandits._base import FORMAT, FORMAT_VERSION, META_FILE, PARAMS_FILE, Bandit
from supportrl.agents.bandits.linear import LinTS, LinUCB
from supportrl.agents.bandits.noncontextual import (
    UCB1,
    BernoulliThompson,
    EpsilonGreedy,
    GaussianThompson,
    Softmax,
)
from supportrl.envs.features import FeatureSpec

BANDITS: MappingProxyType[str, type[Bandit]] = MappingProxyType(
    {
        "epsilon_greedy": EpsilonGreedy,
        "softmax": Softmax,
        "ucb1": UCB1,
        "thompson_bernoulli": BernoulliThompson,
        "thompson_gaussian": GaussianThompson,
        "linucb": LinUCB,
        "lints": LinTS,
    }
)
"""Bandit kind (as written in configs and checkpoints) -> class. Read-only."""


def _bandit_class(kind: Any) -> type[Bandit]:
    cls = BANDITS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"kind: unknown bandit kind {kind!r}; valid kinds are {sorted(BANDITS)}")
    return cls


def hyperparameter_names(kind: str) -> tuple[str, ...]:
    """Keyword-only hyperparameters of a bandit kind (``seed`` included)."""
    cls = _bandit_class(kind)
    return tuple(f.name for f in fields(cls) if f.name not in ("actions", "feature_spec"))


def make_bandit(
    kind: str,
    actions: Sequence[str],
    feature_spec: FeatureSpec | None = None,
    **params: Any,
) -> Bandit:
    """Build the bandit registered as ``kind`` with hyperparameters ``params``.

    Unknown kinds and unknown hyperparameter names raise ValueError listing the valid ones.
    """
    cls = _bandit_class(kind)
    valid = hyperparameter_names(kind)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"{kind}: unknown hyperparameter(s) {unknown}; valid are {list(valid)}")
    return cls(actions, feature_spec, **params)


def load_bandit(path: str | os.PathLike[str]) -> Bandit:
    """Rebuild a bandit saved by :meth:`Bandit.save` from directory ``path``.

    The class comes from :data:`BANDITS` by the ``kind`` string (nothing is imported by name
    from the file) and arrays are read with ``allow_pickle=False``. A missing, corrupt or
    other-version checkpoint raises ValueError naming the file.
    """
    path = Path(path)
    meta_file = path / META_FILE
    params_file = path / PARAMS_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_file}: cannot read bandit metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file}: not a supportrl bandit checkpoint (format != {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_file}: unsupported format_version {meta.get('format_version')!r} "
            f"(this version reads {FORMAT_VERSION})"
        )
    try:
        kind = meta["kind"]
        hyper = meta["hyperparameters"]
        if not isinstance(hyper, dict):
            raise ValueError("hyperparameters: expected an object")
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}
        spec_data = meta["feature_spec"]
        spec = None if spec_data is None else FeatureSpec.from_dict(spec_data)
        actions = meta["actions"]
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise ValueError("actions: expected a list of strings")
        bandit = make_bandit(kind, actions, spec, **hyper)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{meta_file}: invalid bandit metadata ({exc})") from exc
    try:
        with np.load(params_file, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{params_file}: cannot read bandit parameters ({exc})") from exc
    bandit._restore(arrays, meta.get("rng_state"), str(params_file))
    return bandit
