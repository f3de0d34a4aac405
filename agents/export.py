"""The policy side of a serving artifact (loaded by :class:`supportrl.serving.Predictor`).

:func:`write_policy_files` writes the files that hold a policy, in forms production
loads with numpy and onnxruntime alone (layout and manifest: docs/artifact.md; the
command ``supportrl export`` and :func:`supportrl.experiments.export.export_policy`
add the manifest):

* DQN (:class:`~supportrl.agents.dqn.QPolicy`): ``policy.onnx``, the Q-network followed by
  the greedy step (ties split evenly) and the epsilon mix, built node by node from the
  network's weights and checked with ``onnx.checker``;
* LinUCB / LinTS: ``theta.npy`` and ``a_inv.npy`` (LinTS also ``z.npy``, the posterior
  draws behind its probabilities), plain float64 arrays; ONNX would compute the scores
  in float32 and break the ties the framework resolves in float64;
* rule policies: ``policy.yaml`` (the rule file) and ``rules.json`` (its conditions as
  JSON trees, so serving evaluates them without a YAML parser or the rule grammar).

Nothing is pickled. Also here: the manifest's parts that come from the policy and its
data (:func:`feature_manifest`, :func:`numeric_bounds`, :func:`training_summary`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.base import Policy
from supportrl.envs.features import FeatureSpec

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


def write_policy_files(
    policy: Policy,
    directory: Path,
    spec: FeatureSpec,
    rule_file: str | Path | None = None,
) -> dict[str, Any]:
    """Write the files that hold ``policy`` into ``directory``; returns the manifest's
    ``policy`` entry and the list of files written (``{"policy": {...}, "files": [...]}``).

    ``policy`` is a :class:`~supportrl.agents.dqn.QPolicy`, :class:`~supportrl.agents.bandits.LinUCB`,
    :class:`~supportrl.agents.bandits.LinTS` or :class:`~supportrl.agents.rules.RulePolicy`;
    ``spec`` its state encoding (a rule policy's variables must be in it); ``rule_file`` the
    rule policy's YAML (copied as ``policy.yaml``; None writes its mapping). ValueError for
    any other policy kind.
    """
    from supportrl.agents.bandits import LinTS, LinUCB
    from supportrl.agents.rules import RulePolicy

    if isinstance(policy, RulePolicy):
        return _write_rules(policy, directory, spec, rule_file)
    if isinstance(policy, LinUCB | LinTS):
        if policy.feature_spec != spec:
            raise ValueError("export: feature_spec differs from the bandit's own")
        return _write_linear(policy, directory)
    if type(policy).__name__ == "QPolicy":  # by name: torch is imported only for a DQN
        if policy.feature_spec != spec:
            raise ValueError("export: feature_spec differs from the DQN policy's own")
        return _write_onnx(policy, directory)
    if type(policy).__name__ == "SB3Policy":  # by name: stable-baselines3 is optional
        if policy.feature_spec != spec:
            raise ValueError("export: feature_spec differs from the SB3 policy's own")
        import onnx

        onnx.save_model(policy.onnx_model(), str(directory / "policy.onnx"))
        entry = {"kind": "onnx", "file": "policy.onnx", "opset": OPSET, "model": policy.source}
        return {"policy": entry, "files": ["policy.onnx"]}
    raise ValueError(
        f"export: cannot export a {type(policy).__name__}; exportable policies are "
        "DQN, LinUCB, LinTS, rule policies and Stable-Baselines3 models (SB3Policy)"
    )


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
    if policy.support_threshold > 0:
        params["support_threshold"] = policy.support_threshold
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
    return {
        "policy": {
            "kind": "rules",
            "file": "rules.json",
            "yaml": "policy.yaml",
            "rules": len(policy.rules),
        },
        "files": ["policy.yaml", "rules.json"],
    }
