"""The Predictor: a loaded artifact that turns raw named states into decisions.

>>> p = Predictor.load("outputs/export/.../artifact")                    # doctest: +SKIP
>>> d = p.decide({"turn": 0, "previous_action": "none", "intent": "billing",
...               "sentiment": -0.4, "tier": "basic", "channel": "chat",
...               "tenure_months": 12, "prior_contacts_30d": 1})           # doctest: +SKIP
>>> d.action, d.propensity, d.fallback                                    # doctest: +SKIP

A Predictor is also a :class:`supportrl.agents.base.Policy` (``actions``,
``action_probs(states)``, ``act(states, rng)``), so OPE and ``supportrl evaluate`` take an
artifact directory like any other policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.serving.artifact import ArtifactError, read_manifest
from supportrl.serving.features import MISSING, Encoded, InvalidStateError, StateEncoder
from supportrl.serving.models import LinearScorer, OnnxScorer, RuleScorer, Scorer

ON_INVALID = ("error", "fallback")


@dataclass(frozen=True)
class Decision:
    """One decision."""

    action: str
    """The chosen action (sampled from :attr:`probabilities`)."""
    action_index: int
    probabilities: dict[str, float]
    """Probability of every action, catalogue order."""
    propensity: float
    """Probability of the chosen action: log it, so the next round's OPE has it."""
    fallback: bool
    """True when the state was invalid and the configured fallback action was used."""
    reason: str | None = None
    """Why the fallback was used (the failed check), else None."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "probabilities": self.probabilities,
            "propensity": self.propensity,
            "fallback": self.fallback,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BatchDecision:
    """Decisions for ``n`` states."""

    actions: np.ndarray
    """Chosen action labels, str (n,)."""
    action_index: np.ndarray
    """int64 (n,)."""
    probabilities: np.ndarray
    """float64 (n, n_actions)."""
    propensity: np.ndarray
    """float64 (n,)."""
    fallback: np.ndarray
    """bool (n,)."""
    reasons: dict[int, str]
    """Row -> why the fallback was used, for fallback rows."""

    def __len__(self) -> int:
        return len(self.actions)


class Predictor:
    """A loaded artifact. Build one with :meth:`load`."""

    def __init__(
        self,
        manifest: Mapping[str, Any],
        scorer: Scorer,
        *,
        epsilon: float,
        on_invalid: str,
        fallback_action: str | None,
        seed: int | None,
        directory: Path,
    ) -> None:
        self.manifest = dict(manifest)
        self.directory = directory
        self.actions: tuple[str, ...] = tuple(manifest["actions"])
        self.kind: str = manifest["policy"]["kind"]
        self.encoder = StateEncoder(manifest["features"])
        self._scorer = scorer
        self._needs_columns = bool(getattr(scorer, "needs_columns", True))
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {list(ON_INVALID)}, got {on_invalid!r}")
        self.on_invalid = on_invalid
        if fallback_action is not None and fallback_action not in self.actions:
            raise ValueError(
                f"fallback_action: unknown action {fallback_action!r}; catalogue is {list(self.actions)}"
            )
        if on_invalid == "fallback" and fallback_action is None:
            raise ValueError(
                "on_invalid='fallback' needs fallback_action (an action of the catalogue)"
            )
        self.fallback_action = fallback_action
        n = len(self.actions)
        self._fallback_probs = None
        if fallback_action is not None:
            one = np.zeros((1, n))
            one[0, self.actions.index(fallback_action)] = 1.0
            # deterministic: a fallback is a rule for states the policy cannot read, not a
            # decision to explore (logged with propensity 1 and flagged)
            self._fallback_probs = one[0]
        self._rng = np.random.default_rng(seed)
        self._labels = np.asarray(self.actions, dtype=str)

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        epsilon: float | None = None,
        on_invalid: str = "error",
        fallback_action: str | None = None,
        seed: int | None = None,
        threads: int = 1,
    ) -> Predictor:
        """Load and verify an artifact directory.

        Args:
            directory: the artifact (``manifest.json`` and the files it lists).
            epsilon: uniform exploration mixed into every decision, in [0, 1]; None takes
                the manifest's ``exploration.epsilon``. Above 0, every action keeps a
                propensity of at least ``epsilon / n_actions``, so logs stay usable for OPE
                (fallback decisions excepted: they are deterministic, propensity 1, flagged).
            on_invalid: ``"error"`` (an invalid state raises :class:`InvalidStateError`) or
                ``"fallback"`` (it gets ``fallback_action``, flagged in the decision).
            fallback_action: the action for invalid states; None takes the manifest's.
            seed: seed of the generator that samples actions (None: fresh entropy).
            threads: onnxruntime intra-op threads (1 is fastest for one state).

        Raises:
            ArtifactError: the directory is not an artifact, a file is missing or changed
                (SHA-256 differs from the manifest), or the schema version is unknown.
        """
        path = Path(directory)
        manifest = read_manifest(path)
        try:
            actions = tuple(manifest["actions"])
            encoder = StateEncoder(manifest["features"])
            policy = manifest["policy"]
            kind = policy["kind"]
            if kind in ("dqn", "onnx"):  # onnx: any obs, epsilon -> probs graph (SB3)
                scorer: Scorer = OnnxScorer(
                    path / policy["file"], encoder.dim, len(actions), threads
                )
            elif kind in ("linucb", "lints"):
                scorer = LinearScorer(path, policy, encoder.dim, len(actions))
            else:
                scorer = RuleScorer(
                    path / policy["file"],
                    actions,
                    tuple(encoder.categorical),
                    tuple(encoder.numeric),
                )
            if epsilon is None:
                epsilon = float(manifest["exploration"]["epsilon"])
            if fallback_action is None:
                fallback_action = manifest.get("fallback_action")
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{path / 'manifest.json'}: malformed ({exc!r})") from exc
        return cls(
            manifest,
            scorer,
            epsilon=epsilon,
            on_invalid=on_invalid,
            fallback_action=fallback_action,
            seed=seed,
            directory=path,
        )

    # ------------------------------------------------------------------ decisions

    def decide(self, state: Mapping[str, Any]) -> Decision:
        """Decide for one raw named state (a dict: schema-v1 state columns, ``turn``,
        ``previous_action`` and the declared features)."""
        try:
            obs, clean = self.encoder.encode_one(state)
        except InvalidStateError as err:
            if self.on_invalid == "error":
                raise
            probs, reason = self._fallback_probs, str(err)
        else:
            columns = {k: np.asarray([v]) for k, v in clean.items()} if self._needs_columns else {}
            probs, reason = self._scorer.probs(obs, columns, self.epsilon)[0], None
        # inverse CDF, as in decide_batch: the number of CDF entries <= u
        cdf = np.cumsum(probs)
        k = min(int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        values = probs.tolist()
        return Decision(
            action=self.actions[k],
            action_index=k,
            probabilities=dict(zip(self.actions, values, strict=True)),
            propensity=values[k],
            fallback=reason is not None,
            reason=reason,
        )

    def probabilities(self, state: Mapping[str, Any]) -> np.ndarray:
        """Probabilities of every action for one raw state, float64 (n_actions,), exploration
        included; an invalid state raises :class:`InvalidStateError` (or gets the fallback's
        probabilities with ``on_invalid="fallback"``). Draws nothing."""
        try:
            obs, clean = self.encoder.encode_one(state)
        except InvalidStateError:
            if self.on_invalid == "error":
                raise
            return np.array(self._fallback_probs)
        one = getattr(self._scorer, "probs_one", None)
        if one is not None:  # rules: plain Python on one state, no arrays of length 1
            return one(clean, self.epsilon)
        columns = {k: np.asarray([v]) for k, v in clean.items()} if self._needs_columns else {}
        return self._scorer.probs(obs, columns, self.epsilon)[0]

    def decide_batch(
        self, states: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]
    ) -> BatchDecision:
        """Decide for many states: a list of state dicts, or a dict of columns (faster)."""
        probs, encoded = self._probs(states)
        index = sample_actions(probs, self._rng)
        rows = np.arange(len(index))
        return BatchDecision(
            actions=self._labels[index],
            action_index=index,
            probabilities=probs,
            propensity=probs[rows, index],
            fallback=encoded.invalid.copy(),
            reasons={r: msg for r, (_, msg) in encoded.reasons.items()},
        )

    # ------------------------------------------------------------------ Policy protocol

    def action_probs(self, states: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Probabilities of every action, float64 (n, n_actions), for a batch of raw states."""
        return self._probs(states)[0]

    def act(self, states: Mapping[str, Sequence[Any]], rng: np.random.Generator) -> np.ndarray:
        """Sampled action indices, int64 (n,), drawn from ``rng``."""
        return sample_actions(self.action_probs(states), rng)

    # ------------------------------------------------------------------ internals

    def _probs(self, states: Any) -> tuple[np.ndarray, Encoded]:
        columns, n = _columns(states)
        encoded = self.encoder.encode_columns(columns, n)
        if encoded.invalid.any() and self.on_invalid == "error":
            row = int(np.flatnonzero(encoded.invalid)[0])
            field, message = encoded.reasons[row]
            bad = np.flatnonzero(encoded.invalid)
            rows = f"row {row}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
            raise InvalidStateError(f"{rows}: {message}", field, bad[:5].tolist())
        probs = self._scorer.probs(encoded.obs, encoded.columns, self.epsilon)
        if encoded.invalid.any():
            probs[encoded.invalid] = self._fallback_probs
        return probs, encoded

    def __repr__(self) -> str:
        return (
            f"Predictor(kind={self.kind!r}, actions={len(self.actions)}, epsilon={self.epsilon}, "
            f"on_invalid={self.on_invalid!r}, directory={str(self.directory)!r})"
        )


def sample_actions(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs`` (n, n_actions) by inverse CDF, int64 (n,) (the
    framework's sampler: same draws from the same generator)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)


def _columns(states: Any) -> tuple[Mapping[str, Any], int]:
    """States as columns and their count: a dict of columns, or a list of state dicts."""
    if isinstance(states, Mapping):
        if not states:
            raise InvalidStateError("states: no state variables given", "states")
        sizes = {}
        for name, values in states.items():
            try:
                sizes[name] = len(values)
            except TypeError:
                raise InvalidStateError(
                    f"states: column {name!r} must be a list of values, got {type(values).__name__}",
                    str(name),
                ) from None
        n = next(iter(sizes.values()))
        if any(size != n for size in sizes.values()):
            raise InvalidStateError(f"states: columns of different lengths {sizes}", "states")
        return states, n
    if isinstance(states, str | bytes) or not isinstance(states, Sequence):
        raise InvalidStateError(
            f"states: expected a list of state dicts or a dict of columns, got {type(states).__name__}",
            "states",
        )
    for i, record in enumerate(states):
        if not isinstance(record, Mapping):
            raise InvalidStateError(
                f"states[{i}]: expected a state dict, got {type(record).__name__}", f"states[{i}]"
            )
    names = {name for record in states for name in record}
    columns = {name: [record.get(name, MISSING) for record in states] for name in names}
    return columns, len(states)
