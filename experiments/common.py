"""What every command shares: config -> library objects, run directory, result.json, errors."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.logs import (
    LoggedConversations,
    LoggedDecisions,
    load_conversations,
    load_decisions,
)
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig

CONFIG_PATH = str(Path(__file__).resolve().parent.parent / "configs")
"""The Hydra config directory (``configs/`` at the repository root)."""


REPO_ROOT = Path(CONFIG_PATH).parent


def resolve_shipped(path: str | Path) -> Path:
    """A path as given, or relative to the repository when it names a shipped file (configs/...)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    shipped = REPO_ROOT / path
    return shipped if shipped.exists() else path


class UserError(ValueError):
    """A mistake in the user's command or config (not in the data)."""


def run_dir() -> Path:
    """This run's Hydra output directory."""
    return Path(HydraConfig.get().runtime.output_dir)


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, MissingMandatoryValue)
"""Exceptions that mean a mistake in the user's data, files, rules or config."""


def user_errors(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn user mistakes (:data:`USER_ERRORS`) into a one-line ``error: ...`` and exit 2.

    What this run wrote is removed, so a failed command leaves no half-written outputs:
    new entries of the run directory, and the directory itself when it is one of ours
    (under ``paths.output_dir``). Files that were there before are never touched, even
    with ``hydra.run.dir=.``. Set ``SUPPORTRL_DEBUG=1`` to get the traceback instead.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        out = run_dir()
        before = set(out.iterdir()) if out.exists() else set()
        try:
            return task(cfg)
        except USER_ERRORS as exc:
            if os.environ.get("SUPPORTRL_DEBUG"):
                raise
            remove_run_outputs(out, before, Path(str(cfg.paths.output_dir)))
            message = str(exc)
            if isinstance(exc, MissingMandatoryValue):
                message = f"missing value for {exc.full_key}: set {exc.full_key}=..."
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def remove_run_outputs(out: Path, before: set[Path], output_root: Path) -> None:
    """Delete what a failed run created in ``out`` (see :func:`user_errors`)."""
    for path in set(out.iterdir()) - before if out.exists() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    root = output_root.resolve()
    here = out.resolve()
    if here == root or root not in here.parents:
        return  # not a run directory of ours: leave the rest (e.g. Hydra's .hydra/) alone
    shutil.rmtree(here, ignore_errors=True)
    parent = here.parent
    while parent != root and root in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


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


def _load_data(cfg: DictConfig) -> LoggedConversations | LoggedDecisions:
    data = cfg.data
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
        )
    raise UserError(f"data.kind={data.kind!r}: expected 'conversations' or 'bandit'")


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON atomically (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish(result: dict[str, Any], summary: str) -> dict[str, Any]:
    """Write ``result.json``, print ``run_dir: PATH`` and the one-line summary (last line)."""
    out = run_dir()
    write_json(out / "result.json", result)
    print(f"run_dir: {out}")
    print(summary)
    return result
