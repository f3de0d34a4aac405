"""QPolicy: the exportable part of DQN (feature spec + Q-network), and its plain-file format.

A :class:`QPolicy` answers the :class:`~agents.base.Policy` protocol on raw named states
(``feature_spec.encode`` then the network), so OPE, reports and export treat a DQN like
any other policy. It is what training produces and what gets shipped; the learner
(optimizer, target network, replay) is thrown away after training.

Files (no pickle, no ``torch.save``): ``policy.json`` (format, version, actions, feature
spec, network architecture, epsilon) and ``policy.npz`` (one float32 array per network
parameter, by its torch name). :func:`load_q_policy` reads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from supportrl.agents.base import BasePolicy, States, batch_size, epsilon_mix, greedy_probs
from supportrl.agents.dqn.checks import MAX_ACTIONS, check_architecture, module_specs
from supportrl.agents.dqn.network import QNetwork
from supportrl.envs.features import FeatureSpec

from supportrl import files, outputs
from supportrl.files import ArraySpec, brief, field_of, str_list
from supportrl.outputs import check_complete, write_complete

FORMAT = "supportrl.q_policy"
"""Value of ``format`` in ``policy.json``."""
FORMAT_VERSION = 1
"""Bump (and keep reading 1) when the layout changes."""
POLICY_JSON = "policy.json"
POLICY_NPZ = "policy.npz"


class QPolicy(BasePolicy):
    """Greedy (ties split evenly) or epsilon-greedy policy over a :class:`QNetwork`."""

    actions: tuple[str, ...]
    """Action catalogue; column ``j`` of the Q-values and probabilities is ``actions[j]``."""
    feature_spec: FeatureSpec
    """Encoding of raw named states into network inputs."""
    network: QNetwork
    """Maps encoded observations (n, feature_spec.dim) to Q-values (n, n_actions)."""
    epsilon: float
    """Uniform exploration mixed into :meth:`action_probs` (0 = greedy)."""

    def __init__(
        self,
        *,
        actions: tuple[str, ...],
        feature_spec: FeatureSpec,
        network: QNetwork,
        epsilon: float = 0.0,
    ) -> None:
        self.actions = tuple(str(a) for a in actions)
        if not self.actions or len(set(self.actions)) != len(self.actions):
            raise ValueError(f"actions: must be non-empty and unique, got {self.actions}")
        if not isinstance(feature_spec, FeatureSpec):
            raise ValueError(
                f"feature_spec: expected a FeatureSpec, got {type(feature_spec).__name__}"
            )
        if not isinstance(network, QNetwork):
            raise ValueError(f"network: expected a QNetwork, got {type(network).__name__}")
        if network.n_actions != len(self.actions):
            raise ValueError(
                f"network: {network.n_actions} outputs for {len(self.actions)} actions"
            )
        if network.obs_dim != feature_spec.dim:
            raise ValueError(
                f"network: input size {network.obs_dim} != feature_spec.dim {feature_spec.dim}"
            )
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.feature_spec = feature_spec
        self.network = network
        self.epsilon = float(epsilon)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of encoded observations ``obs`` (n, feature_spec.dim); float32 (n, n_actions)."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.feature_spec.dim:
            raise ValueError(f"obs: expected shape (n, {self.feature_spec.dim}), got {obs.shape}")
        with torch.inference_mode():
            return self.network(torch.from_numpy(obs)).numpy()

    def action_probs(self, states: States, action_mask: np.ndarray | None = None) -> np.ndarray:
        """Action probabilities, shape (n, n_actions): argmax of Q, ties split, epsilon mixed in.

        ``action_mask`` (n, n_actions) bool, optional: masked actions get probability 0
        (epsilon then spreads over the allowed actions only).
        """
        batch_size(states)
        q = self.q_values(self.feature_spec.encode(states)).astype(np.float64)
        if action_mask is None:
            return epsilon_mix(greedy_probs(q), self.epsilon)
        mask = np.asarray(action_mask, dtype=bool)
        if mask.shape != q.shape or not mask.any(axis=1).all():
            raise ValueError(
                f"action_mask: expected bool {q.shape} with an allowed action in every row"
            )
        greedy = greedy_probs(np.where(mask, q, -np.inf))
        uniform = mask / mask.sum(axis=1, keepdims=True)
        return (1.0 - self.epsilon) * greedy + self.epsilon * uniform

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``policy.json`` and ``policy.npz`` into directory ``path`` (created if needed)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": "dqn",
            "actions": list(self.actions),
            "feature_spec": self.feature_spec.to_dict(),
            "network": self.network.architecture(),
            "epsilon": self.epsilon,
        }
        write_npz(path / POLICY_NPZ, module_arrays(self.network))
        outputs.atomic_write_text(path / POLICY_JSON, json.dumps(meta, indent=2) + "\n")
        write_complete(path, "dqn")
        return path


@files.reports_malformed(lambda path: Path(path) / POLICY_JSON)
def load_q_policy(path: str | os.PathLike[str]) -> QPolicy:
    """Read a :class:`QPolicy` written by :meth:`QPolicy.save` (or a DQN learner checkpoint).

    Raises:
        ValueError: naming the file when it is missing, of another format, or its arrays
            do not match the architecture.
    """
    path = Path(path)
    meta_path = path / POLICY_JSON
    meta = read_json(meta_path)
    check_complete(path, "dqn")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format_version {meta.get('format_version')!r} unsupported "
            f"(this build reads {FORMAT_VERSION})"
        )
    arch = check_architecture(meta.get("network"), meta_path)  # bounded before allocating
    actions = tuple(str_list(meta, "actions", where=meta_path, max_len=MAX_ACTIONS))
    epsilon = float(
        field_of({"epsilon": 0.0, **meta}, "epsilon", (int, float), where=meta_path, low=0, high=1)
    )
    try:
        network = QNetwork(**arch)
        feature_spec = FeatureSpec.from_dict(meta["feature_spec"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{meta_path}: malformed ({brief(str(exc), 200)})") from None
    specs = module_specs(network)
    load_module_arrays(network, read_npz(path / POLICY_NPZ, specs), where=str(path / POLICY_NPZ))
    return QPolicy(actions=actions, feature_spec=feature_spec, network=network, epsilon=epsilon)


# ---------------------------------------------------------------------- plain-array files


def module_arrays(module: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """Every parameter and buffer of ``module`` as a numpy copy, keyed ``prefix + torch name``."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_arrays(
    module: torch.nn.Module, arrays: Mapping[str, np.ndarray], *, where: str, prefix: str = ""
) -> None:
    """Copy ``arrays`` (as written by :func:`module_arrays`) into ``module``; checks names and shapes."""
    expected = module.state_dict()
    got = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
    if set(got) != set(expected):
        raise ValueError(
            f"{where}: arrays {sorted(got)} do not match the network (expects {sorted(expected)})"
        )
    state = {}
    for name, ref in expected.items():
        arr = got[name]
        if arr.shape != tuple(ref.shape) or arr.dtype.kind != "f" or not np.isfinite(arr).all():
            raise ValueError(
                f"{where}: {prefix}{name} must be finite floats of shape {tuple(ref.shape)}, "
                f"got {arr.dtype} {arr.shape}"
            )
        state[name] = torch.from_numpy(np.array(arr, dtype=np.float32))
    module.load_state_dict(state)


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` through the one atomic writer (never a half-written file)."""
    outputs.atomic_write(path, lambda fh: np.savez(fh, **arrays))


def read_npz(
    path: Path, specs: Mapping[str, ArraySpec], optional: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """The arrays named in ``specs`` (only those), each checked against its spec from the
    ``.npy`` header before it is read (:func:`supportrl.files.read_npz`)."""
    return files.read_npz(path, specs, optional=optional)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, bounded in size and depth (:func:`supportrl.files.read_json`)."""
    if not path.is_file():
        raise files.FileFormatError(f"{path}: missing")
    meta = files.read_json(path)
    if not isinstance(meta, dict):
        raise files.FileFormatError(f"{path}: expected a JSON object, got {brief(meta)}")
    return meta
