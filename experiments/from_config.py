"""Config -> library objects every command shares: the settings checked before any work,
the reward spec, the ground-truth world, the logs named by the ``data`` group."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.errors import UserError
from supportrl.simulators.logs import (
    LoggedConversations,
    LoggedDecisions,
    LogLimits,
    load_conversations,
    load_decisions,
)
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig


def check_settings(cfg: DictConfig) -> None:
    """Settings every command shares, checked before any work (data loaded, models fitted).

    Raises :class:`UserError` naming the key: ``ope.alpha`` in (0, 1), ``ope.n_bootstrap``
    an integer >= 1, ``seed`` an integer, and each path setting (``data.turns``,
    ``data.customers``, ``data.path``) either null or a non-empty path.
    """
    alpha = OmegaConf.select(cfg, "ope.alpha", default=None)
    if alpha is not None and not (_is_number(alpha) and 0 < float(alpha) < 1):
        raise UserError(f"ope.alpha must be a number in (0, 1) (0.05: a 95% interval), got {alpha}")
    n_boot = OmegaConf.select(cfg, "ope.n_bootstrap", default=None)
    if n_boot is not None and not (_is_int(n_boot) and int(n_boot) >= 1):
        raise UserError(f"ope.n_bootstrap must be an integer >= 1, got {n_boot}")
    seed = OmegaConf.select(cfg, "seed", default=0)
    if not _is_int(seed):
        raise UserError(f"seed must be an integer, got {seed}")
    for key in ("data.turns", "data.customers", "data.path"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not str(value).strip():
            raise UserError(f"{key} must be a path (CSV, Parquet file or directory), got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def to_plain(value: Any) -> Any:
    """A config node as plain Python containers."""
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def reward_from_cfg(cfg: DictConfig) -> RewardSpec:
    """The reward spec of Hydra group ``reward/``."""
    params = dict(to_plain(cfg.reward))
    return RewardSpec(**params)


def world_from_cfg(cfg: DictConfig) -> SyntheticWorld:
    """The ground-truth world of Hydra group ``world/``."""
    return SyntheticWorld(config=WorldConfig(**dict(to_plain(cfg.world))))


def load_data(cfg: DictConfig) -> LoggedConversations | LoggedDecisions:
    """Load the logs named by the ``data`` group (conversations or generic bandit feedback).

    Feature columns inferred from dtypes are printed, so a wrong guess is visible.
    """
    loaded = _load_data(cfg)
    if cfg.data.categorical is None and cfg.data.numeric is None:
        print(
            f"features inferred from dtypes: categorical={list(loaded.categorical)} "
            f"numeric={list(loaded.numeric)} (declare with data.categorical=[..] data.numeric=[..])"
        )
    return loaded


def log_limits(cfg: DictConfig) -> LogLimits:
    """Label length and level caps from ``data.max_label_length`` / ``data.max_levels``."""
    defaults = LogLimits()
    try:
        return LogLimits(
            max_label_length=OmegaConf.select(
                cfg, "data.max_label_length", default=defaults.max_label_length
            ),
            max_levels=OmegaConf.select(cfg, "data.max_levels", default=defaults.max_levels),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _load_data(cfg: DictConfig) -> LoggedConversations | LoggedDecisions:
    data = cfg.data
    limits = log_limits(cfg)
    if data.kind == "conversations":
        if data.turns is None:
            raise UserError(
                "data.turns is required: data.turns=PATH (CSV, Parquet file or directory)"
            )
        return load_conversations(
            data.turns,
            customers=data.customers,
            categorical=to_plain(data.categorical),
            numeric=to_plain(data.numeric),
            actions=to_plain(data.actions),
            limits=limits,
        )
    if data.kind == "bandit":
        if data.path is None:
            raise UserError("data.path is required with data=bandit: data.path=PATH")
        return load_decisions(
            data.path,
            action_col=data.action_col,
            reward_col=data.reward_col,
            propensity_col=data.propensity_col,
            context=to_plain(data.context),
            categorical=to_plain(data.categorical),
            numeric=to_plain(data.numeric),
            actions=to_plain(data.actions),
            limits=limits,
        )
    raise UserError(f"data.kind={data.kind!r}: expected 'conversations' or 'bandit'")
