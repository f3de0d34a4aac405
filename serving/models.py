"""The policy inside an artifact, on numpy + onnxruntime: maps encoded states to probabilities.

Every scorer answers ``probs(obs, columns, epsilon)``: ``obs`` the encoded states, float32
(n, dim); ``columns`` the clean raw values (categorical str, numeric float64, each (n,));
``epsilon`` the weight of uniform exploration mixed in. It returns float64 (n, n_actions),
rows summing to 1. The maths is the framework's, step for step, so an exported policy
gives the probabilities of the policy it was exported from.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from supportrl.serving.artifact import ArtifactError, read_json_bounded

TIE_RTOL = 1e-12
"""Scores within this relative distance of the row maximum count as tied (as in training)."""
_CHUNK_ROWS = 8192
_MC_ELEMENTS = 2_000_000
ONNX_BATCH_ROWS = 1024
"""Most rows one onnxruntime call gets: a larger batch runs in slices of this many, and the
load-time probe runs one full slice, so a graph whose memory grows with the batch size is
exercised at its largest call before it serves (docs/security.md)."""
ONNX_ARENA_BYTES = 1 << 30
"""Most memory onnxruntime's CPU arena may hold for the ONNX policies of this process, all
together (their tensors: inputs, intermediates, outputs); an allocation beyond it fails the
call (an :class:`ArtifactError`) instead of exhausting the machine."""
_arena: list[bool] = []


def _capped_arena() -> bool:
    """Register the process's capped CPU arena once (onnxruntime's environment allocator);
    False if onnxruntime refuses it (the sessions then use their own, uncapped arenas)."""
    if not _arena:
        import onnxruntime as ort

        try:
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            # extend strategy 1: grow by what is asked, so the cap is reached only when needed
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(ONNX_ARENA_BYTES, 1, -1, -1))
            _arena.append(True)
        except Exception:  # an older onnxruntime, or an allocator registered by the host
            _arena.append(False)
    return _arena[0]


class Scorer(Protocol):
    needs_columns: bool
    """Whether :meth:`probs` reads the raw columns (rules) or only ``obs``."""

    def probs(
        self, obs: np.ndarray, columns: Mapping[str, np.ndarray], epsilon: float
    ) -> np.ndarray: ...


def epsilon_mix(probs: np.ndarray, epsilon: float) -> np.ndarray:
    """``(1 - epsilon) * probs + epsilon / n_actions``."""
    if epsilon == 0.0:
        return probs
    return (1.0 - epsilon) * probs + epsilon / probs.shape[1]


def greedy_probs(scores: np.ndarray) -> np.ndarray:
    """Argmax distribution of ``scores`` (n, K), ties (within :data:`TIE_RTOL`) split evenly."""
    top = scores.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        threshold = np.where(np.isfinite(top), top - TIE_RTOL * np.abs(top), top)
    best = scores >= threshold
    return best / best.sum(axis=1, keepdims=True)


def load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float64 ``.npy`` array of ``shape``, read without pickle; ArtifactError otherwise.

    The header (shape, dtype) is checked before a byte of data is read, so a header that
    declares a huge array costs nothing.
    """
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                found, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                found, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"npy version {version}")
            if tuple(found) != shape or dtype != np.float64:
                raise ArtifactError(
                    f"{path}: expected float64 of shape {shape}, got {dtype} {tuple(found)}"
                )
            arr = np.fromfile(fh, dtype=np.float64, count=math.prod(shape))
    except ArtifactError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ArtifactError(f"{path}: unreadable array ({str(exc)[:160]})") from None
    if arr.size != math.prod(shape):
        raise ArtifactError(f"{path}: truncated ({arr.size} of {math.prod(shape)} values)")
    arr = arr.reshape(shape, order="F" if fortran else "C")
    if not np.isfinite(arr).all():
        raise ArtifactError(f"{path}: has NaN or infinite values")
    return np.ascontiguousarray(arr)


def check_probs(probs: Any, n: int, n_actions: int, where: str) -> np.ndarray:
    """``probs`` as float64 (n, n_actions): finite, in [0, 1], rows summing to 1.

    A policy that breaks this is a broken artifact (:class:`ArtifactError`), never the
    client's fault.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, n_actions):
        raise ArtifactError(f"{where}: gave shape {probs.shape}; expected ({n}, {n_actions})")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1 + 1e-6).all()
        ok = ok and bool(np.allclose(probs.sum(axis=1), 1.0, atol=1e-4))
    if not ok:
        raise ArtifactError(
            f"{where}: gave probabilities that are not a distribution (NaN, negative, above 1 "
            "or rows not summing to 1)"
        )
    return probs


def probe_obs(dim: int) -> np.ndarray:
    """A fixed probe batch of encoded states, float32 (4, dim): zeros, ones, -ones, a ramp."""
    ramp = np.linspace(-1.0, 1.0, dim) if dim else np.zeros(0)
    return np.stack([np.zeros(dim), np.ones(dim), -np.ones(dim), ramp]).astype(np.float32)


# ---------------------------------------------------------------------- DQN (ONNX)


class OnnxScorer:
    """``policy.onnx``: inputs ``obs`` float32 (n, dim) and ``epsilon`` float32 (1,),
    output ``probs`` float32 (n, n_actions) (greedy over the Q-values, ties split evenly,
    epsilon mixed in)."""

    needs_columns = False

    def __init__(self, path: Path, dim: int, n_actions: int, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # a failing call is reported as an ArtifactError
        if _capped_arena():
            options.add_session_config_entry("session.use_env_allocators", "1")
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({exc})") from exc
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"obs", "epsilon"} or inputs["obs"][1] != dim:
            raise ArtifactError(f"{path}: expected inputs obs (n, {dim}) and epsilon, got {inputs}")
        outputs = [o.name for o in self.session.get_outputs()]
        if "probs" not in outputs:
            raise ArtifactError(f"{path}: expected an output named 'probs', got {outputs[:8]}")
        self.n_actions = n_actions
        self.path = path
        self._epsilon = np.zeros(1, dtype=np.float32)
        try:  # meaning, not only shape: a probe batch must give distributions, and so must
            # the largest slice a call gets (memory that grows with the batch shows here)
            self.probs(probe_obs(dim), {}, 0.0)
            self.probs(np.resize(probe_obs(dim), (ONNX_BATCH_ROWS, dim)), {}, 0.0)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} on the load-time probe batch") from None

    def probs(
        self, obs: np.ndarray, columns: Mapping[str, np.ndarray], epsilon: float
    ) -> np.ndarray:
        eps = self._epsilon
        if eps[0] != np.float32(epsilon):  # a fresh array: never mutate one in use elsewhere
            eps = self._epsilon = np.array([epsilon], dtype=np.float32)
        try:
            out = [
                self.session.run(["probs"], {"obs": obs[i : i + ONNX_BATCH_ROWS], "epsilon": eps})[
                    0
                ]
                for i in range(0, max(len(obs), 1), ONNX_BATCH_ROWS)
            ]
        except Exception as exc:  # onnxruntime's own types: a model fault, not the client's
            raise ArtifactError(f"{self.path}: the model failed ({str(exc)[:200]})") from None
        probs = out[0] if len(out) == 1 else np.concatenate(out)
        return check_probs(probs, obs.shape[0], self.n_actions, str(self.path))


# ---------------------------------------------------------------------- linear bandits


class LinearScorer:
    """LinUCB (greedy over ``x.theta_a + alpha sqrt(x' A_a^-1 x)``) or LinTS (the share of
    the stored posterior draws ``z`` (S, K) each action wins), on design rows ``[obs, 1]``."""

    needs_columns = False

    def __init__(
        self, directory: Path, policy: Mapping[str, Any], dim: int, n_actions: int
    ) -> None:
        self.kind = policy["kind"]
        d = dim + 1
        self.theta = load_array(directory / "theta.npy", (n_actions, d))
        a_inv = load_array(directory / "a_inv.npy", (n_actions, d, d))
        self.a_inv_rows = np.ascontiguousarray(a_inv.reshape(n_actions * d, d))
        params = policy.get("params", {})
        where = f"{directory / 'manifest.json'}: policy.params"
        if not isinstance(params, Mapping):
            raise ArtifactError(f"{where}: expected an object")
        self.support_threshold = (
            _scale(params, "support_threshold", where) if "support_threshold" in params else 0.0
        )
        self.support = None
        if self.support_threshold > 0:
            if not self.support_threshold < 1:
                raise ArtifactError(f"{where}.support_threshold: must be in [0, 1)")
            self.support = load_array(directory / "support.npy", (n_actions, d))
        if self.kind == "linucb":
            self.alpha = _scale(params, "alpha", where)
        else:
            self.v = _scale(params, "v", where)
            samples = params.get("n_prob_samples")
            if (
                isinstance(samples, bool)
                or not isinstance(samples, int)
                or not 1 <= samples <= 10**5
            ):
                raise ArtifactError(f"{where}.n_prob_samples: an integer in [1, 100000] expected")
            self.z = load_array(directory / "z.npy", (samples, n_actions))
        self.n_actions, self.d = n_actions, d
        check_probs(self.probs(probe_obs(dim), {}, 0.0), 4, n_actions, str(directory))

    def _mean_and_width(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, d, n = self.n_actions, self.d, x.shape[0]
        mean = x @ self.theta.T
        width = np.empty((n, k))
        stacked = self.a_inv_rows.T
        for start in range(0, n, _CHUNK_ROWS):
            rows = x[start : start + _CHUNK_ROWS]
            z = (rows @ stacked).reshape(len(rows), k, d)
            width[start : start + _CHUNK_ROWS] = np.matmul(z, rows[:, :, None])[:, :, 0]
        np.maximum(width, 0.0, out=width)
        np.sqrt(width, out=width)
        return mean, width

    def probs(
        self, obs: np.ndarray, columns: Mapping[str, np.ndarray], epsilon: float
    ) -> np.ndarray:
        x = np.empty((obs.shape[0], self.d))
        x[:, :-1] = obs
        x[:, -1] = 1.0
        mean, width = self._mean_and_width(x)
        allowed = (
            None if self.support is None else _support_mask(x, self.support, self.support_threshold)
        )
        if self.kind == "linucb":
            width *= self.alpha
            width += mean
            if allowed is not None:
                width = np.where(allowed, width, -np.inf)
            return epsilon_mix(greedy_probs(width), epsilon)
        width *= self.v
        n, k = mean.shape
        s = self.z.shape[0]
        probs = np.empty((n, k))
        labels = np.arange(k)
        step = max(1, _MC_ELEMENTS // (s * k))
        for start in range(0, n, step):
            sl = slice(start, start + step)
            draws = mean[None, sl, :] + width[None, sl, :] * self.z[:, None, :]
            if allowed is not None:
                draws = np.where(allowed[None, sl, :], draws, -np.inf)
            wins = draws.argmax(axis=2)
            probs[sl] = (wins[:, :, None] == labels).mean(axis=0)
        return epsilon_mix(probs, epsilon)


def _scale(params: Any, key: str, where: str) -> float:
    """A finite, non-negative number ``params[key]``; ArtifactError naming the field."""
    value = params.get(key) if isinstance(params, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{where}.{key}: a finite number expected, got {type(value).__name__}")
    if value < 0:
        raise ArtifactError(f"{where}.{key}: must be >= 0, got {value}")
    return float(value)


def _support_mask(x: np.ndarray, weights: np.ndarray, threshold: float) -> np.ndarray:
    """Actions the training logs support: estimated logging probability
    ``softmax(x @ weights.T) >= threshold``, the most likely always (as in training)."""
    logits = x @ weights.T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return (p >= threshold) | (p >= p.max(axis=1, keepdims=True))


# ---------------------------------------------------------------------- rule policies


_ORDERING = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
_EQUALITY = {"==": np.equal, "!=": np.not_equal}
_SCALAR = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_OPERATORS = (*_ORDERING, *_EQUALITY, "in", "not in")
MAX_RULES = 10_000
MAX_RULES_BYTES = 4 * 2**20
"""Largest ``rules.json`` read (bytes)."""


def _const_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float) and math.isfinite(value):
        return "number"
    raise ValueError("a constant must be a string, a finite number or a boolean")


class RuleScorer:
    """First-match rules from ``rules.json`` (conditions as JSON trees), evaluated column-wise.

    Tree nodes: ``{"var": NAME}``, ``{"const": VALUE}``, ``{"list": [VALUES]}``,
    ``{"cmp": OP, "left": NODE, "right": NODE}``, ``{"not": NODE}``, ``{"and": [NODES]}``,
    ``{"or": [NODES]}``. Types are checked once, at load, against the feature spec.
    """

    needs_columns = True

    def __init__(
        self,
        path: Path,
        actions: Sequence[str],
        categorical: Sequence[str],
        numeric: Sequence[str],
    ) -> None:
        spec = read_json_bounded(path, MAX_RULES_BYTES)
        actions = list(actions)
        self.kinds = {**{c: "string" for c in categorical}, **{c: "number" for c in numeric}}
        if not isinstance(spec, dict) or not isinstance(spec.get("rules"), list):
            raise ArtifactError(f"{path}: expected an object with a list 'rules'")
        if spec.get("default") not in actions:
            raise ArtifactError(f"{path}: default: not an action of the catalogue")
        if len(spec["rules"]) > MAX_RULES:
            raise ArtifactError(f"{path}: {len(spec['rules'])} rules; at most {MAX_RULES}")
        self.default = actions.index(spec["default"])
        self.rules = []
        for i, rule in enumerate(spec["rules"]):
            if not isinstance(rule, dict) or rule.get("action") not in actions:
                raise ArtifactError(f"{path}: rules[{i}].action: not an action of the catalogue")
            try:
                self._check(rule.get("when"))
            except (ValueError, KeyError, TypeError) as exc:
                raise ArtifactError(f"{path}: rules[{i}].when: {exc}") from None
            self.rules.append((rule["when"], actions.index(rule["action"])))
        self.n_actions = len(actions)

    def _kind(self, node: Any) -> str:
        if not isinstance(node, dict) or len(node) != 1:
            raise ValueError("an operand must be {'var': NAME} or {'const': VALUE}")
        if "var" in node:
            if not isinstance(node["var"], str) or node["var"] not in self.kinds:
                raise ValueError("reads a variable that is not in the feature spec")
            return self.kinds[node["var"]]
        if "const" not in node:
            raise ValueError("an operand must be {'var': NAME} or {'const': VALUE}")
        return _const_kind(node["const"])

    def _check(self, node: Any) -> None:
        """Structure and types of a condition tree (depth already bounded by the reader)."""
        if not isinstance(node, dict):
            raise ValueError("a condition must be a JSON object")
        if "and" in node or "or" in node:
            children = node.get("and", node.get("or"))
            if len(node) != 1 or not isinstance(children, list) or not children:
                raise ValueError("'and' / 'or' take a non-empty list of conditions")
            for child in children:
                self._check(child)
        elif "not" in node:
            if len(node) != 1:
                raise ValueError("'not' takes one condition")
            self._check(node["not"])
        elif "cmp" in node:
            op = node["cmp"]
            if set(node) != {"cmp", "left", "right"} or op not in _OPERATORS:
                raise ValueError(f"unknown comparison {str(op)[:20]!r}; known: {list(_OPERATORS)}")
            left = self._kind(node["left"])
            right = node["right"]
            if op in ("in", "not in"):
                if not isinstance(right, dict) or set(right) != {"list"}:
                    raise ValueError(f"{op!r} needs a list on its right")
                items = right["list"]
                if not isinstance(items, list):
                    raise ValueError(f"{op!r} needs a list on its right")
                kinds = {_const_kind(v) for v in items}
            else:
                if isinstance(right, dict) and "list" in right:
                    raise ValueError(f"{op!r} cannot compare with a list")
                kinds = {self._kind(right)}
            if kinds - {left} or (op in _ORDERING and left != "number"):
                raise ValueError(f"comparison {op!r} of mismatched types")
        elif self._kind(node) != "bool":
            raise ValueError("a condition must be boolean")

    def _mask(
        self, node: Mapping[str, Any], columns: Mapping[str, np.ndarray], n: int
    ) -> np.ndarray:
        if "or" in node:
            return np.logical_or.reduce([self._mask(c, columns, n) for c in node["or"]])
        if "and" in node:
            return np.logical_and.reduce([self._mask(c, columns, n) for c in node["and"]])
        if "not" in node:
            return ~self._mask(node["not"], columns, n)
        if "const" in node:
            return np.full(n, bool(node["const"]))
        left = columns[node["left"]["var"]] if "var" in node["left"] else node["left"]["const"]
        right = node["right"]
        if "list" in right:
            items = right["list"]
            hits = np.isin(left, items) if items else np.zeros(np.shape(left), dtype=bool)
            result = ~hits if node["cmp"] == "not in" else hits
        else:
            value = columns[right["var"]] if "var" in right else right["const"]
            op = node["cmp"]
            result = (_ORDERING.get(op) or _EQUALITY[op])(left, value)
        result = np.asarray(result, dtype=bool)
        return np.full(n, bool(result)) if result.ndim == 0 else result

    def _holds(self, node: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
        """:meth:`_mask` for one state of plain Python values (the one-decision hot path)."""
        if "or" in node:
            return any(self._holds(c, state) for c in node["or"])
        if "and" in node:
            return all(self._holds(c, state) for c in node["and"])
        if "not" in node:
            return not self._holds(node["not"], state)
        if "const" in node:
            return bool(node["const"])
        left = state[node["left"]["var"]] if "var" in node["left"] else node["left"]["const"]
        right = node["right"]
        if "list" in right:
            hit = left in right["list"]
            return not hit if node["cmp"] == "not in" else hit
        value = state[right["var"]] if "var" in right else right["const"]
        return bool(_SCALAR[node["cmp"]](left, value))

    def probs_one(self, state: Mapping[str, Any], epsilon: float) -> np.ndarray:
        """:meth:`probs` for one clean state (plain values), float64 (n_actions,)."""
        chosen = next((a for tree, a in self.rules if self._holds(tree, state)), self.default)
        probs = np.full(self.n_actions, epsilon / self.n_actions)
        probs[chosen] += 1.0 - epsilon
        return probs

    def probs(
        self, obs: np.ndarray, columns: Mapping[str, np.ndarray], epsilon: float
    ) -> np.ndarray:
        n = obs.shape[0]
        chosen = np.full(n, self.default, dtype=np.int64)
        undecided = np.ones(n, dtype=bool)
        for tree, action in self.rules:
            holds = self._mask(tree, columns, n)
            chosen[holds & undecided] = action
            undecided &= ~holds
        probs = np.zeros((n, self.n_actions))
        probs[np.arange(n), chosen] = 1.0
        return epsilon_mix(probs, epsilon)
