"""Export a policy as a serving artifact (loaded by :class:`supportrl.serving.Predictor`).

:func:`export_policy` writes a directory that production loads with numpy and
onnxruntime alone (layout and manifest: docs/artifact.md):

* DQN (:class:`~supportrl.agents.dqn.QPolicy`): ``policy.onnx``, the Q-network followed by
  the greedy step (ties split evenly) and the epsilon mix, built node by node from the
  network's weights and checked with ``onnx.checker``;
* LinUCB / LinTS: ``theta.npy`` and ``a_inv.npy`` (LinTS also ``z.npy``, the posterior
  draws behind its probabilities), plain float64 arrays; ONNX would compute the scores
  in float32 and break the ties the framework resolves in float64;
* rule policies: ``policy.yaml`` (the rule file) and ``rules.json`` (its conditions as
  JSON trees, so serving evaluates them without a YAML parser or the rule grammar).

Nothing is pickled. ``manifest.json`` records the schema version, the actions, the
feature spec (levels, scaling, bounds), the policy kind, exploration, training config,
evaluation summary, a training-data summary (for drift checks), created-at and the
SHA-256 of every file.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.base import Policy
from supportrl.envs.features import FeatureSpec
from supportrl.serving.artifact import FORMAT, SCHEMA_VERSION, write_manifest

OPSET = 17
"""ONNX opset of ``policy.onnx`` (onnxruntime >= 1.14 runs it)."""
SUMMARY_BINS = 10
"""Quantile bins per numeric feature in the training-data summary."""


# ---------------------------------------------------------------------- manifest parts


def feature_manifest(
    spec: FeatureSpec, bounds: Mapping[str, tuple[float | None, float | None]] | None = None
) -> dict[str, Any]:
    """The manifest's ``features``: :meth:`FeatureSpec.to_dict` plus allowed ranges.

    ``turn`` is a whole number >= 0 and ``sentiment`` is in [-1, 1] (schema v1); other
    numeric variables take ``bounds[name] = (min, max)`` (None: unbounded). An unknown
    category is an invalid state (``unknown_category: "error"``); the Predictor raises
    or uses its fallback action.
    """
    bounds = dict(bounds or {})
    bounds.setdefault("turn", (0.0, None))
    bounds.setdefault("sentiment", (-1.0, 1.0))
    numeric = {}
    for name, (center, scale) in spec.numeric.items():
        lo, hi = bounds.get(name, (None, None))
        numeric[name] = {
            "center": float(center),
            "scale": float(scale),
            "min": None if lo is None else float(lo),
            "max": None if hi is None else float(hi),
            "integer": name == "turn",
        }
    return {
        "categorical": {k: list(v) for k, v in spec.categorical.items()},
        "numeric": numeric,
        "unknown_category": "error",
    }


def numeric_bounds(
    states: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, tuple[float | None, float | None]]:
    """Allowed ranges of context features from training states: ``min`` 0 where every
    training value is >= 0 (counts, durations), otherwise unbounded."""
    out: dict[str, tuple[float | None, float | None]] = {}
    for name in names:
        if name in ("turn", "sentiment") or name not in states:
            continue
        values = np.asarray(states[name], dtype=np.float64)
        out[name] = (0.0 if len(values) and np.nanmin(values) >= 0 else None, None)
    return out


def training_summary(
    states: Mapping[str, np.ndarray],
    spec: FeatureSpec,
    actions: Sequence[str],
    logged_actions: np.ndarray | None = None,
) -> dict[str, Any]:
    """What the policy was trained and evaluated on, for drift checks: category shares,
    numeric quantile bins (``edges``, ``shares``) and the logged action mix."""
    n = len(next(iter(states.values())))
    out: dict[str, Any] = {"n_rows": int(n), "categorical": {}, "numeric": {}}
    for name, levels in spec.categorical.items():
        if name not in states:
            continue
        values = np.asarray(states[name]).astype(str)
        out["categorical"][name] = {lv: float(np.mean(values == lv)) for lv in levels}
    for name in spec.numeric:
        if name not in states:
            continue
        values = np.asarray(states[name], dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, SUMMARY_BINS + 1)))
        inner = edges[1:-1]
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)
        out["numeric"][name] = {
            "edges": edges.tolist(),
            "shares": (counts / max(n, 1)).tolist(),
            "mean": float(values.mean()),
            "std": float(values.std()),
        }
    if logged_actions is not None:
        counts = np.bincount(np.asarray(logged_actions, dtype=np.int64), minlength=len(actions))
        out["actions"] = dict(zip(actions, (counts / counts.sum()).tolist(), strict=True))
    return out


# ---------------------------------------------------------------------- DQN -> ONNX


def q_policy_onnx(arrays: Mapping[str, np.ndarray], architecture: Mapping[str, Any]) -> Any:
    """An ONNX model: ``obs`` float32 (n, obs_dim) and ``epsilon`` float32 (1,) ->
    ``probs`` float32 (n, n_actions) (greedy over Q, ties split evenly, epsilon mixed in)
    and ``q_values`` float32 (n, n_actions).

    ``arrays`` are the network's parameters by torch name (``trunk.0.weight``, ...;
    :func:`supportrl.agents.dqn.policy.module_arrays`); the graph is the forward pass of
    :class:`~supportrl.agents.dqn.QNetwork`: ReLU MLP, then ``V + (A - mean(A))`` when dueling.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_actions = int(architecture["n_actions"])
    inits, nodes = [], []

    def linear(x: str, prefix: str, out: str) -> str:
        for part in ("weight", "bias"):
            inits.append(
                numpy_helper.from_array(
                    np.asarray(arrays[f"{prefix}.{part}"], np.float32), f"{prefix}.{part}"
                )
            )
        nodes.append(
            helper.make_node("Gemm", [x, f"{prefix}.weight", f"{prefix}.bias"], [out], transB=1)
        )
        return out

    h = "obs"
    for i in range(len(architecture["hidden_sizes"])):
        pre = linear(h, f"trunk.{i}", f"trunk{i}_pre")
        h = f"trunk{i}"
        nodes.append(helper.make_node("Relu", [pre], [h]))
    if architecture["dueling"]:
        a = linear(h, "advantage", "adv")
        v = linear(h, "value", "val")
        nodes += [
            helper.make_node("ReduceMean", [a], ["adv_mean"], axes=[1], keepdims=1),
            helper.make_node("Sub", [a, "adv_mean"], ["adv_centered"]),
            helper.make_node("Add", [v, "adv_centered"], ["q_values"]),
        ]
    else:
        linear(h, "q", "q_values")
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(float(n_actions), np.float32), "n_actions"),
    ]
    nodes += [
        helper.make_node("ReduceMax", ["q_values"], ["q_max"], axes=[1], keepdims=1),
        helper.make_node("Equal", ["q_values", "q_max"], ["is_best"]),
        helper.make_node("Cast", ["is_best"], ["best"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["best", "axis1"], ["n_best"], keepdims=1),
        helper.make_node("Div", ["best", "n_best"], ["greedy"]),
        helper.make_node("Sub", ["one", "epsilon"], ["keep"]),
        helper.make_node("Mul", ["greedy", "keep"], ["greedy_part"]),
        helper.make_node("Div", ["epsilon", "n_actions"], ["uniform_part"]),
        helper.make_node("Add", ["greedy_part", "uniform_part"], ["probs"]),
    ]
    obs_dim = int(architecture["obs_dim"])
    graph = helper.make_graph(
        nodes,
        "supportrl_q_policy",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", obs_dim]),
            helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", n_actions]),
            helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["n", n_actions]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="supportrl"
    )
    model.ir_version = 8  # readable by onnxruntime releases back to 1.14
    onnx.checker.check_model(model, full_check=True)
    return model


# ---------------------------------------------------------------------- rules -> JSON


def expression_json(expr: Any) -> dict[str, Any]:
    """A parsed rule condition (:mod:`supportrl.agents.rules` tree) as a JSON tree."""
    from supportrl.agents.rules import And, Compare, Const, ListLiteral, Not, Or, Var

    match expr:
        case Var(name):
            return {"var": name}
        case Const(value):
            return {"const": value}
        case ListLiteral(values):
            return {"list": list(values)}
        case Compare(op, left, right):
            return {"cmp": op, "left": expression_json(left), "right": expression_json(right)}
        case Not(operand):
            return {"not": expression_json(operand)}
        case And(operands):
            return {"and": [expression_json(o) for o in operands]}
        case Or(operands):
            return {"or": [expression_json(o) for o in operands]}
    raise ValueError(f"cannot export rule expression node {expr!r}")


# ---------------------------------------------------------------------- export


def export_policy(
    policy: Policy,
    directory: str | Path,
    *,
    feature_spec: FeatureSpec | None = None,
    name: str = "policy",
    source: str | None = None,
    epsilon: float | None = None,
    fallback_action: str | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    rule_file: str | Path | None = None,
) -> Path:
    """Write ``policy`` as an artifact into the new directory ``directory``.

    Args:
        policy: a :class:`~supportrl.agents.dqn.QPolicy`, :class:`~supportrl.agents.bandits.LinUCB`,
            :class:`~supportrl.agents.bandits.LinTS` or :class:`~supportrl.agents.rules.RulePolicy`.
        feature_spec: the state encoding; defaults to the policy's own (rules have none:
            give the spec of the data or world they serve).
        epsilon: exploration the artifact applies by default; None keeps the policy's own
            (``policy.epsilon``, 0 for bandits).
        fallback_action: default action for invalid states when the Predictor is loaded
            with ``on_invalid="fallback"`` (None: the caller must choose at load).
        bounds: allowed ranges of context numeric features (:func:`numeric_bounds`).
        training, evaluation, training_data: recorded in the manifest as given.
        rule_file: the rule policy's YAML file, copied as ``policy.yaml``.

    Written to ``<directory>.tmp`` first and renamed, so a failure leaves nothing behind.
    Raises ValueError for a policy kind that cannot be exported or an existing directory.
    """
    from supportrl.agents.bandits import LinTS, LinUCB
    from supportrl.agents.rules import RulePolicy

    directory = Path(directory)
    if directory.exists():
        raise ValueError(f"{directory}: already exists; export into a new directory")
    spec = feature_spec if feature_spec is not None else getattr(policy, "feature_spec", None)
    if spec is None:
        raise ValueError(f"export: {type(policy).__name__} has no feature spec; pass feature_spec")
    actions = list(policy.actions)
    if fallback_action is not None and fallback_action not in actions:
        raise ValueError(
            f"fallback_action: unknown action {fallback_action!r}; catalogue is {actions}"
        )
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if isinstance(policy, RulePolicy):
            info = _write_rules(policy, tmp, spec, rule_file)
        elif isinstance(policy, LinUCB | LinTS):
            if policy.feature_spec != spec:
                raise ValueError("export: feature_spec differs from the bandit's own")
            info = _write_linear(policy, tmp)
        elif type(policy).__name__ == "QPolicy":
            if policy.feature_spec != spec:
                raise ValueError("export: feature_spec differs from the DQN policy's own")
            info = _write_onnx(policy, tmp)
        else:
            raise ValueError(
                f"export: cannot export a {type(policy).__name__}; exportable policies are "
                "DQN, LinUCB, LinTS and rule policies"
            )
        own = float(getattr(policy, "epsilon", 0.0))
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "name": name,
            "source": source,
            "actions": actions,
            "features": feature_manifest(spec, bounds),
            "policy": info["policy"],
            "exploration": {
                "epsilon": own if epsilon is None else float(epsilon),
                "policy_epsilon": own,
            },
            "fallback_action": fallback_action,
            "training": dict(training or {}),
            "evaluation": dict(evaluation or {}),
            "training_data": dict(training_data or {}),
            "files": info["files"],
        }
        write_manifest(tmp, _finite(manifest))
        tmp.replace(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as None (the manifest is strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_onnx(policy: Any, directory: Path) -> dict[str, Any]:
    import onnx
    from supportrl.agents.dqn.policy import module_arrays

    arch = policy.network.architecture()
    model = q_policy_onnx(module_arrays(policy.network), arch)
    onnx.save_model(model, str(directory / "policy.onnx"))
    return {
        "policy": {"kind": "dqn", "file": "policy.onnx", "network": arch, "opset": OPSET},
        "files": ["policy.onnx"],
    }


def _write_linear(policy: Any, directory: Path) -> dict[str, Any]:
    arrays = policy.export_arrays()
    for key, arr in arrays.items():
        np.save(
            directory / f"{key}.npy",
            np.ascontiguousarray(arr, dtype=np.float64),
            allow_pickle=False,
        )
    params: dict[str, Any] = {"ridge": policy.ridge}
    if policy.kind == "linucb":
        params["alpha"] = policy.alpha
    else:
        params.update(v=policy.v, n_prob_samples=policy.n_prob_samples)
    return {
        "policy": {
            "kind": policy.kind,
            "params": params,
            "hyperparameters": policy.hyperparameters(),
        },
        "files": [f"{k}.npy" for k in arrays],
    }


def _write_rules(
    policy: Any, directory: Path, spec: FeatureSpec, rule_file: str | Path | None
) -> dict[str, Any]:
    import json

    import yaml
    from supportrl.agents.rules import parse_expression

    policy.check_variables(spec.variables)
    if rule_file is not None:
        shutil.copyfile(rule_file, directory / "policy.yaml")
    else:
        (directory / "policy.yaml").write_text(yaml.safe_dump(policy.to_dict(), sort_keys=False))
    tree = {
        "rules": [
            {
                "when": expression_json(parse_expression(r.when)),
                "action": r.action,
                "source": r.when,
            }
            for r in policy.rules
        ],
        "default": policy.default,
    }
    (directory / "rules.json").write_text(json.dumps(tree, indent=2) + "\n")
    # Serving checks types against the spec at load; check here too, so export fails first.
    from supportrl.serving.models import RuleScorer

    RuleScorer(
        directory / "rules.json", policy.actions, tuple(spec.categorical), tuple(spec.numeric)
    )
    return {
        "policy": {
            "kind": "rules",
            "file": "rules.json",
            "yaml": "policy.yaml",
            "rules": len(policy.rules),
        },
        "files": ["policy.yaml", "rules.json"],
    }
