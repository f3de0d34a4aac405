"""Registry of bandit kinds, construction by name, and checkpoint loading (no pickle)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

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

from supportrl.files import (
    ArraySpec,
    FileFormatError,
    brief,
    read_json,
    read_npz,
    reports_malformed,
    str_list,
)
from supportrl.outputs import check_complete

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


MAX_ACTIONS = 1_000
"""Most actions a saved bandit may declare."""

MAX_FEATURES = 4_096
"""Most encoded features a saved bandit may declare (linear bandits hold d x d per action)."""


def check_size(where: Path, spec: FeatureSpec | None, n_actions: int) -> None:
    """Refuse declared sizes beyond :data:`MAX_FEATURES` / :data:`MAX_ACTIONS` before allocating."""
    if not 1 <= n_actions <= MAX_ACTIONS:
        raise FileFormatError(f"{where}: field 'actions' must list 1 to {MAX_ACTIONS} actions")
    if spec is not None and spec.dim > MAX_FEATURES:
        raise FileFormatError(
            f"{where}: field 'feature_spec' encodes {spec.dim} features; at most {MAX_FEATURES}"
        )


@reports_malformed(lambda path: Path(path) / META_FILE)
def load_bandit(path: str | os.PathLike[str]) -> Bandit:
    """Rebuild a bandit saved by :meth:`Bandit.save` from directory ``path``.

    The class comes from :data:`BANDITS` by the ``kind`` string (nothing is imported by name
    from the file) and arrays are read with ``allow_pickle=False``. A missing, corrupt or
    other-version checkpoint raises ValueError naming the file.
    """
    path = Path(path)
    meta_file = path / META_FILE
    params_file = path / PARAMS_FILE
    check_complete(path, "bandit")
    meta = read_json(meta_file)
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
        actions = str_list(meta, "actions", where=meta_file, max_len=MAX_ACTIONS)
        check_size(meta_file, spec, len(actions))  # before make_bandit allocates d x d arrays
        bandit = make_bandit(kind, actions, spec, **hyper)
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ValueError(f"{meta_file}: invalid bandit metadata ({brief(str(exc), 200)})") from None
    # only the expected arrays, shapes checked from their headers before reading
    specs = {k: ArraySpec(shape=v, kinds="f") for k, v in bandit._state_shapes().items()}
    arrays = read_npz(params_file, specs)
    bandit._restore(arrays, meta.get("rng_state"), str(params_file))
    return bandit
