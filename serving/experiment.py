"""A/B experiments in serving: arms, sticky assignment, and propensities valid for OPE.

An experiment file (YAML, or JSON) names the arms, each an exported artifact:

.. code-block:: yaml

    arms:
      production: {artifact: artifacts/production, share: 0.5, epsilon: 0.05}
      linucb:     {artifact: artifacts/linucb, share: 0.5, epsilon: 0.05}
    control: production
    unit: customer            # customer | conversation
    guardrail: {metric: value, max_drop: 0.0}
    salt: spring-2026         # optional: the assignment hash's salt (default: the file's stem)

Artifact paths are relative to the file's folder. :class:`Experiment` assigns each unit
(a customer, or a conversation) to an arm by a salted SHA-256 hash of its id, so a
customer stays in one arm for as long as the shares stay; a conversation keeps the arm it
started in. Each decision answers the action drawn from that arm's policy (with the arm's
exploration ``epsilon``) and the **propensity under the serving mixture**: the
probability that the experiment as a whole takes that action in that state, given the
conversation's earlier turns,

    p_t = sum_k w_k(t) * pi_k(a_t | s_t),  w_k(0) = share_k,  w_k(t + 1) ∝ w_k(t) pi_k(a_t | s_t)

(``w`` is the posterior of the arm given the conversation so far, computed from the
policies' probabilities only). Their product over a conversation is
``sum_k share_k prod_t pi_k(a_t | s_t)``, the trajectory's probability under the
experiment, so importance weights of any arm's policy on the whole log are at most
``1 / share_k`` and the log is valid input for off-policy evaluation (per decision and per
conversation). :func:`mixture_propensities` computes the same numbers for a batch of
logged conversations; a test holds the two equal.

Shares change and arms stop without a restart (:meth:`Experiment.set_shares`,
:meth:`Experiment.stop`, :meth:`Experiment.promote`); every change is an event with its
time (:attr:`Experiment.events`), written beside the decision log in ``experiment.json``.
A changed share applies to conversations that start afterwards.

numpy (+ onnxruntime through the artifacts) only; YAML files need PyYAML, JSON files nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.serving.predictor import Predictor

UNITS = ("customer", "conversation")
"""Assignment units: the id whose hash picks the arm."""
GUARDRAIL_METRICS = {
    "value": +1,
    "resolution": +1,
    "csat": +1,
    "escalation": -1,
    "abandonment": -1,
    "handle_time_s": -1,
}
"""Guardrail metrics and their good direction (+1: higher is better)."""
MAX_FILE_BYTES = 1 << 20
"""Largest experiment file read."""
MAX_ARMS = 16
MAX_ID_LENGTH = 200
"""Longest conversation or customer id accepted."""
MAX_OPEN_CONVERSATIONS = 200_000
"""Open conversations remembered for their arm and posterior; the oldest is forgotten first
(a forgotten conversation that comes back keeps its arm by the hash, its posterior restarts)."""


class ExperimentError(ValueError):
    """An experiment file or request the experiment refuses; the message names the field."""

    def __init__(self, message: str, field: str = "experiment") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Arm:
    """One arm: a policy artifact, its traffic share and its exploration."""

    name: str
    artifact: Path
    share: float
    epsilon: float | None = None
    """Uniform exploration mixed into the arm's policy; None: the artifact's own."""


@dataclass(frozen=True)
class Guardrail:
    metric: str = "value"
    max_drop: float = 0.0
    """Roll back when the treatment is, with confidence, worse than control by more than this."""


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment file, checked."""

    arms: tuple[Arm, ...]
    control: str
    unit: str = "customer"
    guardrail: Guardrail = field(default_factory=Guardrail)
    salt: str = "supportrl"
    alpha: float = 0.05
    """Error rate of the analysis' confidence sequences (false promotions, whenever looked at)."""
    name: str = "experiment"
    horizon: int | None = None
    """Conversations the experiment plans for at most: its confidence sequences are tightest
    there (None: the analysis' default). Fixed before the data are seen."""

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if not 2 <= len(names) <= MAX_ARMS:
            raise ExperimentError(
                f"arms: an experiment has 2 to {MAX_ARMS} arms, got {len(names)}", "arms"
            )
        if len(set(names)) != len(names):
            raise ExperimentError(f"arms: names must be unique, got {names}", "arms")
        if self.control not in names:
            raise ExperimentError(
                f"control: {self.control!r} is not an arm; arms are {names}", "control"
            )
        if self.unit not in UNITS:
            raise ExperimentError(f"unit: must be one of {list(UNITS)}, got {self.unit!r}", "unit")
        for arm in self.arms:
            _check_share(arm.share, f"arms.{arm.name}.share")
            if arm.epsilon is not None:
                _check_share(arm.epsilon, f"arms.{arm.name}.epsilon")
        total = sum(a.share for a in self.arms)
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ExperimentError(f"arms: shares must sum to 1, got {total:g}", "arms")
        if self.guardrail.metric not in GUARDRAIL_METRICS:
            raise ExperimentError(
                f"guardrail.metric: one of {list(GUARDRAIL_METRICS)}, got {self.guardrail.metric!r}",
                "guardrail.metric",
            )
        if not (math.isfinite(self.guardrail.max_drop) and self.guardrail.max_drop >= 0):
            raise ExperimentError("guardrail.max_drop: a number >= 0", "guardrail.max_drop")
        if not 0 < self.alpha < 1:
            raise ExperimentError(f"alpha: must be in (0, 1), got {self.alpha}", "alpha")
        if self.horizon is not None and self.horizon < 100:
            raise ExperimentError(
                f"horizon: at least 100 conversations, got {self.horizon}", "horizon"
            )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arms": {
                a.name: {"artifact": str(a.artifact), "share": a.share, "epsilon": a.epsilon}
                for a in self.arms
            },
            "control": self.control,
            "unit": self.unit,
            "guardrail": {"metric": self.guardrail.metric, "max_drop": self.guardrail.max_drop},
            "alpha": self.alpha,
            "horizon": self.horizon,
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, base: Path | None = None, name: str = "experiment"
    ) -> ExperimentConfig:
        """Build from a parsed experiment file; relative artifact paths are taken from ``base``."""
        if not isinstance(data, Mapping):
            raise ExperimentError("experiment: expected a mapping with arms, control, unit")
        known = {"arms", "control", "unit", "guardrail", "salt", "alpha", "name", "horizon"}
        unknown = sorted(set(map(str, data)) - known)
        if unknown:
            raise ExperimentError(f"experiment: unknown key(s) {unknown}; keys are {sorted(known)}")
        arms_in = data.get("arms")
        if not isinstance(arms_in, Mapping):
            raise ExperimentError(
                "arms: expected a mapping NAME -> {artifact, share, epsilon}", "arms"
            )
        arms = []
        for arm_name, spec in arms_in.items():
            where = f"arms.{arm_name}"
            if not isinstance(spec, Mapping) or "artifact" not in spec:
                raise ExperimentError(f"{where}: expected {{artifact: DIR, share: x}}", where)
            extra = sorted(set(map(str, spec)) - {"artifact", "share", "epsilon"})
            if extra:
                raise ExperimentError(f"{where}: unknown key(s) {extra}", where)
            artifact = Path(str(spec["artifact"]))
            if base is not None and not artifact.is_absolute():
                artifact = base / artifact
            arms.append(
                Arm(
                    name=str(arm_name),
                    artifact=artifact,
                    share=_number(spec.get("share"), f"{where}.share"),
                    epsilon=None
                    if spec.get("epsilon") is None
                    else _number(spec["epsilon"], f"{where}.epsilon"),
                )
            )
        guard = data.get("guardrail") or {}
        if not isinstance(guard, Mapping):
            raise ExperimentError("guardrail: expected {metric, max_drop}", "guardrail")
        return cls(
            arms=tuple(arms),
            control=str(data.get("control")),
            unit=str(data.get("unit", "customer")),
            guardrail=Guardrail(
                metric=str(guard.get("metric", "value")),
                max_drop=_number(guard.get("max_drop", 0.0), "guardrail.max_drop"),
            ),
            salt=str(data.get("salt") or name),
            alpha=_number(data.get("alpha", 0.05), "alpha"),
            name=str(data.get("name") or name),
            horizon=None
            if data.get("horizon") is None
            else int(_number(data["horizon"], "horizon")),
        )


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ExperimentError(f"{field}: expected a finite number, got {value!r}", field)
    return float(value)


def _check_share(value: float, field: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ExperimentError(f"{field}: must be in [0, 1], got {value:g}", field)


def read_experiment_file(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and check an experiment file (``.yaml``/``.yml`` or ``.json``); ExperimentError
    naming the file otherwise. YAML anchors and aliases are refused (no alias bombs)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ExperimentError(f"{path}: no such experiment file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ExperimentError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentError(f"{path}: unreadable ({exc})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ExperimentError(f"{path}: not valid JSON ({exc})") from None
    else:
        data = _safe_yaml(text, path)
    try:
        return ExperimentConfig.from_dict(data, base=path.parent, name=path.stem)
    except ExperimentError as err:
        raise ExperimentError(f"{path}: {err}", err.field) from None


def _safe_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - depends on the install
        raise ExperimentError(f"{path}: YAML needs PyYAML (or write the file as JSON)") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ExperimentError(f"{path}: YAML anchors and aliases are not allowed")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not valid YAML ({exc})") from None


def hash_unit(salt: str, unit_ids: Sequence[str]) -> np.ndarray:
    """Uniform numbers in [0, 1) from the salted SHA-256 of each id, float64 (n,)."""
    out = np.empty(len(unit_ids))
    prefix = salt.encode() + b"\x00"
    for i, uid in enumerate(unit_ids):
        digest = hashlib.sha256(prefix + str(uid).encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0**64
    return out


def pseudonym(salt: str, customer_id: str) -> str:
    """What the log keeps of a customer id: 16 hex digits of its salted SHA-256."""
    return hashlib.sha256(
        b"customer\x00" + salt.encode() + b"\x00" + customer_id.encode()
    ).hexdigest()[:16]


def mixture_propensities(
    arm_probs: np.ndarray, offsets: np.ndarray, action: np.ndarray, shares: np.ndarray
) -> np.ndarray:
    """Per-turn propensities under the serving mixture for logged conversations.

    Args:
        arm_probs: (n_arms, n_turns, n_actions) every arm's action probabilities (with its
            exploration) in each logged state.
        offsets: (n_conversations + 1,) conversation ``c`` is rows ``offsets[c]:offsets[c+1]``,
            in turn order.
        action: (n_turns,) the action taken.
        shares: (n_arms,) or (n_conversations, n_arms): the shares when each conversation started.

    Returns:
        (n_turns,) ``sum_k w_k(t) pi_k(a_t | s_t)`` with ``w`` the arm posterior (module doc).
    """
    n_arms, n_turns, _ = arm_probs.shape
    n_conv = len(offsets) - 1
    starts, lengths = offsets[:-1], np.diff(offsets)
    weights = np.array(np.broadcast_to(shares, (n_conv, n_arms)), dtype=np.float64)
    taken = arm_probs[:, np.arange(n_turns), action]  # (n_arms, n_turns)
    out = np.empty(n_turns)
    for t in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > t)
        rows = starts[live] + t
        p = taken[:, rows].T  # (n_live, n_arms)
        joint = weights[live] * p
        total = joint.sum(axis=1)
        out[rows] = total
        weights[live] = joint / np.where(total > 0, total, 1.0)[:, None]
    return out


@dataclass(frozen=True)
class ExperimentDecision:
    """One decision of an experiment."""

    action: str
    arm: str
    propensity: float
    """Probability of ``action`` under the serving mixture (module doc): log this one."""
    arm_propensity: float
    """Probability of ``action`` under the arm's own policy."""
    probabilities: dict[str, float]
    """The arm's probabilities of every action."""
    decision_id: str
    fallback: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "arm": self.arm,
            "propensity": self.propensity,
            "arm_propensity": self.arm_propensity,
            "probabilities": self.probabilities,
            "decision_id": self.decision_id,
            "fallback": self.fallback,
            "reason": self.reason,
        }


class Experiment:
    """Arms behind one decide call; see the module docstring. Build with :meth:`load`."""

    def __init__(
        self,
        config: ExperimentConfig,
        predictors: Mapping[str, Predictor],
        *,
        seed: int | None = None,
        max_open_conversations: int = MAX_OPEN_CONVERSATIONS,
        start_time: str | None = None,
    ) -> None:
        self.config = config
        self.arms = config.names
        self.predictors = [predictors[name] for name in self.arms]
        actions = {p.actions for p in self.predictors}
        if len(actions) != 1:
            raise ExperimentError("arms: every arm's artifact must have the same action catalogue")
        self.actions: tuple[str, ...] = self.predictors[0].actions
        self.shares = np.array([a.share for a in config.arms], dtype=np.float64)
        self.control = self.arms.index(config.control)
        self.events: list[dict[str, Any]] = []
        self._record("start", "experiment started", start_time)
        self._rng = np.random.default_rng(seed)
        self._open: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._max_open = int(max_open_conversations)
        variables: list[str] = []
        for p in self.predictors:
            variables += [v for v in p.encoder.variables if v not in variables]
        self.variables = tuple(variables)
        """State variables a decision needs (the union over the arms)."""

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | ExperimentConfig,
        *,
        seed: int | None = None,
        on_invalid: str = "error",
        start_time: str | None = None,
    ) -> Experiment:
        """Read an experiment file (or take a config) and load every arm's artifact;
        ``start_time`` dates the start event (default now; a simulation passes its clock)."""
        config = path if isinstance(path, ExperimentConfig) else read_experiment_file(path)
        predictors = {
            arm.name: Predictor.load(arm.artifact, epsilon=arm.epsilon, on_invalid=on_invalid)
            for arm in config.arms
        }
        return cls(config, predictors, seed=seed, start_time=start_time)

    # ------------------------------------------------------------------ assignment

    def assign(self, unit_ids: Sequence[str], shares: np.ndarray | None = None) -> np.ndarray:
        """Arm index of each unit id under ``shares`` (default: the current ones), int64 (n,)."""
        shares = self.shares if shares is None else shares
        u = hash_unit(self.config.salt, unit_ids)
        edges = np.cumsum(shares)
        edges[-1] = np.inf  # shares that sum to 1 up to rounding never leave a gap
        arm = np.searchsorted(edges, u, side="right")
        # a zero share never receives a unit, even at the edge
        return np.where(shares[arm] > 0, arm, int(np.argmax(shares))).astype(np.int64)

    def unit_of(self, conversation_id: str, customer_id: str | None) -> str:
        if self.config.unit == "customer":
            if customer_id is None:
                raise ExperimentError(
                    "customer_id: required (the experiment assigns customers, unit: customer)",
                    "customer_id",
                )
            return customer_id
        return conversation_id

    # ------------------------------------------------------------------ decisions

    def decide(
        self, state: Mapping[str, Any], *, conversation_id: str, customer_id: str | None = None
    ) -> ExperimentDecision:
        """The arm's decision for ``state`` in conversation ``conversation_id``."""
        _check_id(conversation_id, "conversation_id")
        if customer_id is not None:
            _check_id(customer_id, "customer_id")
        unit = self.unit_of(conversation_id, customer_id)
        entry = self._open.get(conversation_id)
        if entry is None or state.get("turn") == 0:
            arm = int(self.assign([unit])[0])
            entry = (arm, self.shares.copy())
        arm, weights = entry
        probs = np.stack([p.probabilities(state) for p in self.predictors])  # (K, A)
        own = probs[arm]
        cdf = np.cumsum(own)
        k = min(int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right")), len(cdf) - 1)
        joint = weights * probs[:, k]
        total = float(joint.sum())
        self._open[conversation_id] = (arm, joint / total if total > 0 else weights)
        self._open.move_to_end(conversation_id)
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)
        turn = state.get("turn")
        return ExperimentDecision(
            action=self.actions[k],
            arm=self.arms[arm],
            propensity=total,
            arm_propensity=float(own[k]),
            probabilities=dict(zip(self.actions, own.tolist(), strict=True)),
            decision_id=f"{conversation_id}:{turn}",
        )

    def end(self, conversation_id: str) -> None:
        """Forget a finished conversation."""
        self._open.pop(conversation_id, None)

    # ------------------------------------------------------------------ changes

    def set_shares(
        self, shares: Mapping[str, float], reason: str = "shares changed", *, at: str | None = None
    ) -> None:
        """New traffic shares (every arm named, summing to 1); applies to new conversations.
        ``at``: the time recorded (ISO 8601, UTC; default now), e.g. a simulation's clock."""
        unknown = sorted(set(shares) - set(self.arms))
        if unknown:
            raise ExperimentError(
                f"shares: unknown arm(s) {unknown}; arms are {list(self.arms)}", "shares"
            )
        new = np.array([_number(shares.get(a, 0.0), f"shares.{a}") for a in self.arms])
        for name, value in zip(self.arms, new.tolist(), strict=True):
            _check_share(value, f"shares.{name}")
        if not math.isclose(float(new.sum()), 1.0, abs_tol=1e-9):
            raise ExperimentError(f"shares: must sum to 1, got {new.sum():g}", "shares")
        self.shares = new
        self._record("shares", reason, at)

    def stop(self, arm: str, reason: str = "arm stopped", *, at: str | None = None) -> None:
        """Stop ``arm`` (roll back): its share goes to control."""
        if arm not in self.arms:
            raise ExperimentError(f"arm: unknown arm {arm!r}; arms are {list(self.arms)}", "arm")
        if self.arms.index(arm) == self.control:
            raise ExperimentError("arm: the control arm cannot be stopped; promote another", "arm")
        shares = dict(zip(self.arms, self.shares.tolist(), strict=True))
        shares[self.arms[self.control]] += shares[arm]
        shares[arm] = 0.0
        self.set_shares(shares, reason=f"stop {arm}: {reason}", at=at)

    def promote(self, arm: str, reason: str = "promoted", *, at: str | None = None) -> None:
        """Send all traffic to ``arm``."""
        if arm not in self.arms:
            raise ExperimentError(f"arm: unknown arm {arm!r}; arms are {list(self.arms)}", "arm")
        self.set_shares(
            {a: float(a == arm) for a in self.arms}, reason=f"promote {arm}: {reason}", at=at
        )

    def _record(self, kind: str, reason: str, at: str | None = None) -> None:
        self.events.append(
            {
                "time": at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": kind,
                "reason": reason,
                "shares": dict(zip(self.arms, self.shares.tolist(), strict=True)),
            }
        )

    # ------------------------------------------------------------------ records

    def describe(self) -> dict[str, Any]:
        """The experiment as served now: its file's content, current shares and events."""
        return {
            **self.config.to_dict(),
            "actions": list(self.actions),
            "shares": dict(zip(self.arms, self.shares.tolist(), strict=True)),
            "events": list(self.events),
        }

    def write_description(self, directory: str | os.PathLike[str]) -> Path:
        """``experiment.json`` in ``directory`` (beside the decision log), written atomically."""
        path = Path(directory) / "experiment.json"
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def _check_id(value: Any, field: str) -> None:
    if not isinstance(value, str) or not value:
        raise ExperimentError(f"{field}: expected a non-empty string, got {value!r}", field)
    if len(value) > MAX_ID_LENGTH:
        raise ExperimentError(f"{field}: longer than {MAX_ID_LENGTH} characters", field)
