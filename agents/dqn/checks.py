"""Checks of DQN checkpoint files before anything from them reaches torch or an allocation.

A checkpoint may come from anywhere, so every declared size is bounded, every field is
type-checked, and every array is matched (name, shape, dtype) against the network it
will be copied into: torch's native Adam kernels do not check shapes, and a wrong-shaped
moment array corrupts memory instead of raising.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from supportrl.files import ArraySpec, FileFormatError, brief, field_of, int_list

MAX_OBS_DIM = 100_000
"""Largest observation width a checkpoint may declare."""

MAX_ACTIONS = 1_000
"""Most actions a checkpoint may declare."""

MAX_NETWORK_PARAMS = 50_000_000
"""Most network parameters a checkpoint may declare (200 MB of float32)."""

MAX_REPLAY_ELEMENTS = 2_000_000_000
"""Most replay-buffer elements (buffer_size x obs_dim) a learner checkpoint may declare."""

ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def check_architecture(arch: Any, where: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``network`` entry of ``policy.json``, checked and bounded before a network is built.

    Returns ``{"obs_dim", "n_actions", "hidden_sizes", "dueling"}``; raises
    :class:`~supportrl.files.FileFormatError` naming the file and field.
    """
    where = f"{where}: network"
    obs_dim = field_of(arch, "obs_dim", int, where=where, low=1, high=MAX_OBS_DIM)
    n_actions = field_of(arch, "n_actions", int, where=where, low=1, high=MAX_ACTIONS)
    hidden = int_list(arch, "hidden_sizes", where=where, low=1, high=MAX_NETWORK_PARAMS, max_len=16)
    dueling = field_of(arch, "dueling", bool, where=where)
    widths = [obs_dim, *hidden]
    n_params = sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    n_params += (widths[-1] + 1) * (n_actions + (1 if dueling else 0))
    if n_params > MAX_NETWORK_PARAMS:
        raise FileFormatError(
            f"{where}: declares {n_params} parameters (hidden_sizes {hidden}); "
            f"at most {MAX_NETWORK_PARAMS}"
        )
    return {"obs_dim": obs_dim, "n_actions": n_actions, "hidden_sizes": hidden, "dueling": dueling}


def module_specs(module: torch.nn.Module, prefix: str = "") -> dict[str, ArraySpec]:
    """What each array of :func:`~agents.dqn.policy.module_arrays` must be for ``module``."""
    return {
        prefix + k: ArraySpec(shape=tuple(v.shape), kinds="f")
        for k, v in module.state_dict().items()
    }


def learner_specs(
    target: torch.nn.Module, network: torch.nn.Module
) -> tuple[dict[str, ArraySpec], tuple[str, ...]]:
    """(specs, optional names) of ``learner.npz``: the target network and the Adam moments.

    Adam's ``exp_avg`` / ``exp_avg_sq`` must have their parameter's shape and dtype, and
    ``step`` is a scalar; moments are optional (absent before the first update).
    """
    specs = module_specs(target, prefix="target.")
    optional = []
    for i, param in enumerate(network.parameters()):
        shape, dtype = tuple(param.shape), str(param.dtype).removeprefix("torch.")
        specs[f"adam.{i}.step"] = ArraySpec(shape=(), kinds="f", dtype=dtype)
        specs[f"adam.{i}.exp_avg"] = ArraySpec(shape=shape, kinds="f", dtype=dtype)
        specs[f"adam.{i}.exp_avg_sq"] = ArraySpec(shape=shape, kinds="f", dtype=dtype, min=0.0)
        optional += [f"adam.{i}.{k}" for k in ADAM_KEYS]
    return specs, tuple(optional)


def replay_specs(replay: Any) -> tuple[dict[str, ArraySpec], tuple[str, ...]]:
    """(specs, optional names) of ``replay.npz`` for the buffer it will be loaded into."""
    specs = {
        name: ArraySpec(shape=getattr(replay, name).shape, dtype=str(getattr(replay, name).dtype))
        for name in replay.ARRAYS
    }
    specs["counters"] = ArraySpec(shape=(2,), kinds="i", min=0.0)
    specs["max_priority"] = ArraySpec(shape=(1,), kinds="f", min=0.0)
    optional: tuple[str, ...] = ()
    if replay.tree is not None:
        specs["priorities"] = ArraySpec(shape=(replay.tree.capacity,), kinds="f", min=0.0)
    return specs, optional


def check_learner_meta(
    meta: Any, arch: Mapping[str, Any], where: str | os.PathLike[str]
) -> dict[str, Any]:
    """Every field of ``learner.json`` checked (types, ranges, sizes) before it is used.

    ``arch`` is the architecture of the checkpoint's policy network: the learner config
    must describe the same network, so nothing bigger than the checked policy is built.
    """
    config = field_of(meta, "config", dict, where=where)
    for key in ("seed", "env_steps", "updates", "last_target_update"):
        field_of(meta, key, int, where=where, low=0, high=2**63 - 1)
    field_of(meta, "update_credit", (int, float), where=where, low=-1e12, high=1e12)
    hidden = config.get("hidden_sizes")
    if hidden != list(arch["hidden_sizes"]) or config.get("dueling") != arch["dueling"]:
        raise FileFormatError(
            f"{where}: field 'config' describes another network (hidden_sizes {brief(hidden)}) "
            f"than policy.json ({arch['hidden_sizes']})"
        )
    buffer_size = field_of(config, "buffer_size", int, where=f"{where}: config", low=1)
    if buffer_size * (2 * arch["obs_dim"] + arch["n_actions"] + 4) > MAX_REPLAY_ELEMENTS:
        raise FileFormatError(f"{where}: config.buffer_size {buffer_size} is too large")
    field_of(config, "num_envs", int, where=f"{where}: config", low=1, high=buffer_size)
    _check_rng_state(meta.get("rng_state"), where)
    groups = field_of(meta, "adam_param_groups", list, where=where)
    if len(groups) != 1:
        raise FileFormatError(f"{where}: field 'adam_param_groups' must hold one group")
    _check_adam_group(groups[0], f"{where}: adam_param_groups[0]")
    return meta


def _check_rng_state(state: Any, where: str | os.PathLike[str]) -> None:
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise FileFormatError(f"{where}: field 'rng_state' must be a PCG64 generator state")
    try:
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        raise FileFormatError(f"{where}: field 'rng_state' is not a valid PCG64 state") from None


def _check_adam_group(group: Any, where: str) -> None:
    if not isinstance(group, dict):
        raise FileFormatError(f"{where}: expected an object, got {brief(group)}")
    for key, value in group.items():
        if key in ("lr", "eps", "weight_decay"):
            field_of(group, key, (int, float), where=where, low=0.0, high=1e6)
        elif key == "betas":
            if not isinstance(value, list) or len(value) != 2:
                raise FileFormatError(f"{where}: field 'betas' must be a list of two numbers")
            for beta in value:
                field_of({"betas": beta}, "betas", (int, float), where=where, low=0.0, high=1.0)
        elif value is not None and not isinstance(value, bool):
            raise FileFormatError(f"{where}: field {brief(key)} must be true, false or null")
