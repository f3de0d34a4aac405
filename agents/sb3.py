"""Stable-Baselines3 models as supportrl policies: evaluate them off-policy, export, serve.

An SB3 model trained on ``SupportEnv`` (PPO, A2C or DQN with an MLP policy) sees the
observation the env's :class:`~supportrl.envs.features.FeatureSpec` encodes from the raw
named state. :class:`SB3Policy` closes that loop the other way: raw state batch ->
``feature_spec.encode`` -> the model's action distribution, so the model answers the
:class:`~supportrl.agents.base.Policy` protocol that OPE, reports and export use.

    >>> model = PPO("MlpPolicy", env).learn(20_000)                       # doctest: +SKIP
    >>> world = env.unwrapped.model                                       # doctest: +SKIP
    >>> policy = SB3Policy(model, world.feature_spec, world.actions)      # doctest: +SKIP
    >>> policy.action_probs(logs.states())                                # doctest: +SKIP

Probabilities: PPO/A2C give their categorical distribution (softmax of the action
logits); DQN its greedy action (ties split evenly). ``epsilon`` mixes in uniform
exploration, as for every supportrl policy. :meth:`SB3Policy.onnx_model` writes the same
forward pass as an ONNX graph (``obs``, ``epsilon`` -> ``probs``) built from the model's
weights, so a served SB3 policy needs numpy and onnxruntime only.

stable-baselines3 is needed only to build the policy from a model (it is in the ``dev``
and ``bench`` extras); nothing here imports it at module load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from supportrl.agents.base import BasePolicy, States, epsilon_mix, greedy_probs
from supportrl.envs.features import FeatureSpec

OPSET = 17


class SB3Policy(BasePolicy):
    """A Stable-Baselines3 model as a :class:`~supportrl.agents.base.Policy`.

    Args:
        model: a trained SB3 ``PPO``, ``A2C`` or ``DQN`` whose observation is the
            env's encoded state (a 1-D ``Box`` of ``feature_spec.dim`` columns) and whose
            action space is ``Discrete(len(actions))``.
        feature_spec: the encoding the model was trained on (the env's customer model's
            ``feature_spec``).
        actions: the action catalogue in the env's order (the customer model's ``actions``).
        epsilon: uniform exploration mixed into the probabilities, in [0, 1].
    """

    def __init__(
        self,
        model: Any,
        feature_spec: FeatureSpec,
        actions: Sequence[str],
        *,
        epsilon: float = 0.0,
    ) -> None:
        self.model = model
        self.feature_spec = feature_spec
        self.actions = tuple(actions)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)
        obs_shape = tuple(getattr(model.observation_space, "shape", ()) or ())
        if obs_shape != (feature_spec.dim,):
            raise ValueError(
                f"model: observation shape {obs_shape} is not the feature spec's "
                f"({feature_spec.dim},); was it trained on SupportEnv with this customer model?"
            )
        n = getattr(model.action_space, "n", None)
        if n is None or int(n) != len(self.actions):
            raise ValueError(
                f"model: action space {model.action_space} does not match the "
                f"{len(self.actions)} actions {list(self.actions)}"
            )
        self.kind = "dqn" if hasattr(model.policy, "q_net") else "actor_critic"
        if self.kind == "actor_critic" and not hasattr(model.policy, "get_distribution"):
            raise ValueError(f"model: {type(model).__name__} is neither actor-critic nor DQN")

    @property
    def source(self) -> str:
        return f"stable-baselines3 {type(self.model).__name__}"

    def action_probs(self, states: States) -> np.ndarray:
        """Action probabilities, shape (n, n_actions), float64."""
        import torch

        obs = torch.as_tensor(self.feature_spec.encode(states), dtype=torch.float32)
        policy = self.model.policy
        with torch.no_grad():
            if self.kind == "dqn":
                q = policy.q_net(obs).cpu().numpy().astype(np.float64)
                probs = greedy_probs(q)
            else:
                dist = policy.get_distribution(obs.to(policy.device))
                probs = dist.distribution.probs.cpu().numpy().astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)
        return epsilon_mix(probs, self.epsilon)

    # ------------------------------------------------------------------ ONNX

    def layers(self) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
        """The forward pass as ``(op, weight, bias)``: ``Gemm`` layers and activations,
        ending in the action logits (actor-critic) or the Q-values (DQN)."""
        import torch.nn as nn

        policy = self.model.policy
        extractor = getattr(policy, "features_extractor", None)
        if extractor is None and self.kind == "dqn":
            extractor = policy.q_net.features_extractor
        if type(extractor).__name__ != "FlattenExtractor":
            raise ValueError(
                f"export: features extractor {type(extractor).__name__} is not supported "
                "(an MLP policy on the flat SupportEnv observation is)"
            )
        if self.kind == "dqn":
            modules = list(policy.q_net.q_net)
        else:
            if not getattr(policy, "share_features_extractor", True):
                extractor = policy.pi_features_extractor
            modules = [*policy.mlp_extractor.policy_net, policy.action_net]
        out: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
        acts = {nn.Tanh: "Tanh", nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid"}
        for module in modules:
            if isinstance(module, nn.Linear):
                w = module.weight.detach().cpu().numpy().astype(np.float32)
                b = module.bias.detach().cpu().numpy().astype(np.float32)
                out.append(("Gemm", w, b))
            elif type(module) in acts:
                out.append((acts[type(module)], None, None))
            else:
                raise ValueError(f"export: layer {type(module).__name__} is not supported")
        return out

    def onnx_model(self) -> Any:
        """ONNX: ``obs`` float32 (n, dim), ``epsilon`` float32 (1,) -> ``probs`` float32
        (n, n_actions): softmax of the logits (actor-critic) or greedy over Q (ties split
        evenly, DQN), mixed with uniform ``epsilon``."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        inits, nodes = [], []
        h = "obs"
        for i, (op, w, b) in enumerate(self.layers()):
            out = f"h{i}"
            if op == "Gemm":
                inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
                nodes.append(helper.make_node("Gemm", [h, f"w{i}", f"b{i}"], [out], transB=1))
            else:
                nodes.append(helper.make_node(op, [h], [out]))
            h = out
        n_actions = len(self.actions)
        inits += [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(float(n_actions), np.float32), "n_actions"),
        ]
        if self.kind == "dqn":
            inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
            nodes += [
                helper.make_node("ReduceMax", [h], ["top"], axes=[1], keepdims=1),
                helper.make_node("Equal", [h, "top"], ["is_best"]),
                helper.make_node("Cast", ["is_best"], ["best"], to=TensorProto.FLOAT),
                helper.make_node("ReduceSum", ["best", "axis1"], ["n_best"], keepdims=1),
                helper.make_node("Div", ["best", "n_best"], ["policy_probs"]),
            ]
        else:
            nodes.append(helper.make_node("Softmax", [h], ["policy_probs"], axis=1))
        nodes += [
            helper.make_node("Sub", ["one", "epsilon"], ["keep"]),
            helper.make_node("Mul", ["policy_probs", "keep"], ["kept"]),
            helper.make_node("Div", ["epsilon", "n_actions"], ["uniform_part"]),
            helper.make_node("Add", ["kept", "uniform_part"], ["probs"]),
        ]
        graph = helper.make_graph(
            nodes,
            "supportrl_sb3_policy",
            [
                helper.make_tensor_value_info(
                    "obs", TensorProto.FLOAT, ["n", self.feature_spec.dim]
                ),
                helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, [1]),
            ],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", n_actions])],
            initializer=inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="supportrl"
        )
        model.ir_version = 8  # readable by onnxruntime releases back to 1.14
        onnx.checker.check_model(model, full_check=True)
        return model
