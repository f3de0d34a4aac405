"""Shared machinery of the bandit agents: the :class:`Bandit` base, input checks, checkpoints."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from supportrl.agents.base import BasePolicy, States, batch_size
from supportrl.envs.features import FeatureSpec

from supportrl.outputs import atomic_write, atomic_write_text, write_complete

FORMAT = "supportrl.bandit"
"""Value of ``format`` in ``bandit.json``."""
FORMAT_VERSION = 1
"""Checkpoint format version; bump it (and keep reading 1) when the layout changes."""
PARAMS_FILE = "params.npz"
META_FILE = "bandit.json"

_PROB_STREAM = 0x5EED_AC75
"""Second seed word of the generator behind Monte Carlo ``action_probs`` (see Thompson)."""


@dataclass(frozen=True)
class BanditUpdateStats:
    """What one :meth:`Bandit.update` call consumed."""

    n_rows: int
    """Rows in the update batch."""
    weight_sum: float
    """Sum of the importance weights (``n_rows`` when unweighted)."""
    action_weight: tuple[float, ...]
    """Sum of weights per action, in catalogue order."""


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
) -> float:
    """Return ``value`` as a finite float within bounds, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name}: must be <= {high}, got {value}")
    return value


def check_int(value: Any, name: str, *, low: int) -> int:
    """Return ``value`` as an int >= ``low``, else raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    return int(value)


def check_vector(values: Any, name: str, n: int, *, nonnegative: bool = False) -> np.ndarray:
    """``values`` as finite float64 of shape (n,), else ValueError naming ``name`` and bad rows."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {arr.shape}")
    bad = ~np.isfinite(arr)
    if nonnegative:
        bad |= arr < 0
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        what = "finite and >= 0" if nonnegative else "finite"
        raise ValueError(f"{name}: values must be {what}; first offending rows {rows}")
    return arr


@dataclass(eq=False)
class Bandit(BasePolicy):
    """A policy that treats each turn as one contextual decision and learns from batches.

    Subclasses are dataclasses whose keyword-only fields are the hyperparameters; they are
    validated in ``__post_init__`` and written to checkpoints. All randomness inside the
    bandit (Bernoulli trials, Monte Carlo :meth:`action_probs`) comes from generators seeded
    by :attr:`seed`; :meth:`act` draws from the generator it is given.
    """

    actions: tuple[str, ...]
    """Action catalogue; column ``j`` of :meth:`action_probs` is ``actions[j]``."""
    feature_spec: FeatureSpec | None = None
    """Encoding of raw states; required by linear bandits, carried along for export by others."""
    seed: int = field(default=0, kw_only=True)
    """Seed of the bandit's own generator."""

    kind: ClassVar[str] = ""
    """Registry name, written to checkpoints."""
    requires_features: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.actions, str) or not isinstance(self.actions, Sequence):
            raise ValueError(f"actions: expected a sequence of action labels, got {self.actions!r}")
        self.actions = tuple(str(a) for a in self.actions)
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError(f"actions: must be non-empty and unique, got {self.actions}")
        if self.feature_spec is not None and not isinstance(self.feature_spec, FeatureSpec):
            raise ValueError(
                f"feature_spec: expected a FeatureSpec, got {type(self.feature_spec).__name__}"
            )
        if self.requires_features and self.feature_spec is None:
            raise ValueError(
                f"feature_spec: {type(self).__name__} ({self.kind!r}) is a linear contextual "
                "bandit and needs a FeatureSpec to encode states"
            )
        self.seed = check_int(self.seed, "seed", low=0)
        self._validate()
        self._rng = np.random.default_rng(self.seed)
        self.reset()

    # -- to implement -------------------------------------------------------------------
    def _validate(self) -> None:
        """Check (and normalise) the hyperparameter fields."""

    def reset(self) -> None:
        """Forget everything learned (the generator is left as it is)."""
        raise NotImplementedError

    def _update(
        self, states: States, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        """Apply a validated batch: actions int64 (n,), rewards and weights float64 (n,)."""
        raise NotImplementedError

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Learned state as plain arrays, for ``params.npz``."""
        raise NotImplementedError

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected shape of every array in :meth:`_state_arrays`."""
        raise NotImplementedError

    def _set_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore learned state from validated arrays."""
        raise NotImplementedError

    # -- public -------------------------------------------------------------------------
    @property
    def n_actions(self) -> int:
        return len(self.actions)

    def hyperparameters(self) -> dict[str, Any]:
        """Keyword-only fields (including ``seed``) as JSON-ready values."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("actions", "feature_spec"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def update(
        self,
        states: States,
        actions: np.ndarray,
        rewards: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> BanditUpdateStats:
        """Learn from a batch of decisions.

        Args:
            states: raw named states, each array of shape (n,).
            actions: chosen actions, shape (n,): int indices into :attr:`actions` (or labels).
            rewards: observed rewards, shape (n,): immediate reward or conversation return,
                whichever the caller chooses.
            weights: importance weights >= 0, shape (n,); None means all 1. A row with
                weight ``w`` counts as ``w`` copies of that row.
        """
        idx, r, w = self._check_batch(batch_size(states), actions, rewards, weights)
        self._update(states, idx, r, w)
        return self._stats(idx, w)

    def _check_batch(
        self, n: int, actions: Any, rewards: Any, weights: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated (actions int64, rewards float64, weights float64), each shape (n,)."""
        idx = self.action_indices(actions, n)
        r = check_vector(rewards, "rewards", n)
        w = np.ones(n) if weights is None else check_vector(weights, "weights", n, nonnegative=True)
        return idx, r, w

    def _stats(self, actions: np.ndarray, weights: np.ndarray) -> BanditUpdateStats:
        per_action = np.bincount(actions, weights=weights, minlength=self.n_actions)
        return BanditUpdateStats(
            len(actions), float(weights.sum()), tuple(float(x) for x in per_action)
        )

    def action_indices(self, actions: Any, n: int) -> np.ndarray:
        """Action indices (int64, shape (n,)) from indices or labels; ValueError if unknown."""
        arr = np.asarray(actions)
        if arr.shape != (n,):
            raise ValueError(f"actions: expected shape ({n},), got {arr.shape}")
        if arr.dtype.kind in "USO":
            labels = arr.astype(str)
            catalogue = np.asarray(self.actions)
            order = np.argsort(catalogue)
            pos = np.minimum(np.searchsorted(catalogue[order], labels), self.n_actions - 1)
            bad_rows = np.flatnonzero(catalogue[order][pos] != labels)
            if bad_rows.size:
                raise ValueError(
                    f"actions: unknown action label(s) at rows {bad_rows[:5].tolist()}; "
                    f"catalogue is {self.actions}"
                )
            return order[pos].astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"actions: expected integer indices or labels, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        bad_rows = np.flatnonzero((arr < 0) | (arr >= self.n_actions))
        if bad_rows.size:
            raise ValueError(
                f"actions: indices must be in [0, {self.n_actions}); "
                f"first offending rows {bad_rows[:5].tolist()}"
            )
        return arr

    def _prob_rng(self) -> np.random.Generator:
        """A fresh generator, the same on every call: Monte Carlo probabilities are pure."""
        return np.random.default_rng((self.seed, _PROB_STREAM))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``params.npz`` and ``bandit.json`` into directory ``path`` (created if needed).

        ``params.npz`` holds plain float arrays (read with ``allow_pickle=False``);
        ``bandit.json`` holds ``format``, ``format_version``, ``kind``, ``actions``,
        ``hyperparameters``, ``feature_spec`` (:meth:`FeatureSpec.to_dict`) and the state of
        the bandit's generator. Files are written to temporary names and then renamed.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {
            k: np.ascontiguousarray(v, dtype=np.float64) for k, v in self._state_arrays().items()
        }
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "actions": list(self.actions),
            "hyperparameters": self.hyperparameters(),
            "feature_spec": None if self.feature_spec is None else self.feature_spec.to_dict(),
            "rng_state": self._rng.bit_generator.state,
        }
        atomic_write(path / PARAMS_FILE, lambda fh: np.savez(fh, **arrays))
        atomic_write_text(path / META_FILE, json.dumps(meta, indent=2) + "\n")
        write_complete(path, "bandit")
        return path

    def _restore(self, arrays: Mapping[str, np.ndarray], rng_state: Any, where: str) -> None:
        """Check ``arrays`` against :meth:`_state_shapes` and install them (used by loading)."""
        shapes = self._state_shapes()
        if set(arrays) != set(shapes):
            raise ValueError(
                f"{where}: arrays {sorted(arrays)} do not match {self.kind!r} (expects {sorted(shapes)})"
            )
        clean = {}
        for name, shape in shapes.items():
            arr = arrays[name]
            if arr.shape != shape or arr.dtype.kind != "f" or not np.isfinite(arr).all():
                raise ValueError(
                    f"{where}: array {name!r} must be finite floats of shape {shape}, "
                    f"got {arr.dtype} {arr.shape}"
                )
            clean[name] = np.array(arr, dtype=np.float64)
        self._set_state_arrays(clean)
        if rng_state is not None:
            if not isinstance(rng_state, dict) or rng_state.get("bit_generator") != "PCG64":
                raise ValueError(f"{where}: rng_state must be a PCG64 state")
            try:
                self._rng.bit_generator.state = rng_state
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"{where}: bad rng_state ({exc})") from exc
