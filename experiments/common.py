"""What every command shares: config -> library objects, run directory, result.json, errors."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from supportrl.envs.rewards import RewardSpec
from supportrl.simulators.logs import (
    LoggedConversations,
    LoggedDecisions,
    LogLimits,
    load_conversations,
    load_decisions,
)
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig

from supportrl.outputs import CREATED, atomic_write_text

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


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, MissingMandatoryValue)
"""Exceptions that mean a mistake in the user's data, files, rules or config."""

LOCK_FILE = ".supportrl.lock"
"""Held in a run directory while a command writes into it (``pid host``)."""

_PROCESS_START = time.time()
"""When this process started (before Hydra wrote ``.hydra/`` into the run directory)."""


def output(path: str | Path) -> Path:
    """``path`` (a file or directory this run is about to write), recorded as this run's own.

    A failed run removes what was recorded, and only that. Raises ``FileExistsError`` when
    the path already exists and is not this run's: a command never writes into (or
    deletes) an output it did not create. Claiming the same path again is a no-op.
    """
    return CREATED.claim(path)


def user_errors(
    task: Callable[[DictConfig], Any] | None = None, *, allow_finished: bool = False
) -> Any:
    """Run a command's task: user mistakes exit 2 with one ``error: ...`` line, Ctrl-C exits 130.

    Before the task: the run directory is locked (:data:`LOCK_FILE`; a second live run
    into it is refused) and, unless ``allow_finished`` (commands that resume, like a
    sweep), a directory that already holds ``result.json`` is refused. On a user mistake
    (:data:`USER_ERRORS`) or an interrupt, only the paths this run recorded as it created
    them (:func:`output`, :data:`supportrl.outputs.CREATED`) are removed, and the run
    directory itself only when nothing but this run's Hydra files is left in it: files a
    user keeps there, or adds while the command runs, are never touched. Set
    ``SUPPORTRL_DEBUG=1`` to get the traceback instead. Use as ``@user_errors`` or
    ``@user_errors(allow_finished=True)``.
    """
    if task is None:
        return functools.partial(user_errors, allow_finished=allow_finished)

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        out = run_dir()
        try:
            check_settings(cfg)
            lock = lock_run_dir(out, allow_finished=allow_finished)
        except UserError as exc:
            _fail(str(exc))
        try:
            return task(cfg)
        except USER_ERRORS as exc:
            if os.environ.get("SUPPORTRL_DEBUG"):
                raise
            remove_run_outputs(out, lock, Path(str(cfg.paths.output_dir)))
            message = str(exc)
            if isinstance(exc, MissingMandatoryValue):
                message = f"missing value for {exc.full_key}: set {exc.full_key}=..."
            _fail(message)
        except MemoryError:
            if os.environ.get("SUPPORTRL_DEBUG"):
                raise
            remove_run_outputs(out, lock, Path(str(cfg.paths.output_dir)))
            _fail(
                "out of memory: the input is too large for this machine (fewer rows, fewer "
                "distinct values per column, or engine=ray for logs beyond one machine's memory)"
            )
        except OSError as exc:  # the environment, not a bug: disk full, permissions, ...
            if os.environ.get("SUPPORTRL_DEBUG"):
                raise
            remove_run_outputs(out, lock, Path(str(cfg.paths.output_dir)))
            _fail(describe_os_error(exc, out))
        except KeyboardInterrupt:
            remove_run_outputs(out, lock, Path(str(cfg.paths.output_dir)))
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            lock.unlink(missing_ok=True)

    return wrapper


RESUMABLE_COMMANDS = frozenset({"sweep"})
"""Commands that run again in a finished run directory on purpose (they skip what is done)."""


class RunDirGuard(Callback):
    """Refuse a finished or locked run directory before Hydra writes ``.hydra/`` into it.

    Registered in ``configs/config.yaml`` (``hydra.callbacks``): Hydra would otherwise
    overwrite an earlier run's ``.hydra/config.yaml`` before :func:`user_errors` runs.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            out = Path(str(OmegaConf.select(config, "hydra.run.dir"))).absolute()
            name = str(OmegaConf.select(config, "hydra.job.name", default=""))
        except Exception:  # an unresolvable dir: Hydra itself reports it
            return
        if (out / "result.json").exists() and name not in RESUMABLE_COMMANDS:
            _fail(f"{out}: already holds a finished run (result.json); choose a new hydra.run.dir")
        if out.is_dir() and (out / LOCK_FILE).exists():
            holder = _lock_holder(out / LOCK_FILE)
            if holder is not None:
                _fail(
                    f"{out}: another supportrl run (pid {holder}) is writing into this "
                    "directory; wait for it or choose another hydra.run.dir"
                )


_OS_HINTS = {
    errno.ENOSPC: "no space left on the device; free space and run again",
    errno.EDQUOT: "disk quota exceeded; free space and run again",
    errno.EROFS: "read-only file system; choose a writable paths.output_dir",
    errno.EACCES: "permission denied",
}


def describe_os_error(exc: OSError, out: Path) -> str:
    """One line naming the file (else the run directory ``out``) and the cause."""
    cause = _OS_HINTS.get(exc.errno or -1) or exc.strerror or str(exc)[:200] or "I/O error"
    where = exc.filename if exc.filename is not None else f"writing into {out}"
    return f"{where}: {cause} (the files this run wrote were removed)"


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def lock_run_dir(out: Path, *, allow_finished: bool = False) -> Path:
    """Take the run directory's lock file; returns its path (remove it when done).

    Raises :class:`UserError` when another live process holds the lock, or (unless
    ``allow_finished``) when ``out`` already holds a finished run's ``result.json``.
    A lock left by a process that no longer runs is taken over.
    """
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise UserError(
                    f"{out}: another supportrl run (pid {holder}) is writing into this "
                    f"directory; wait for it or choose another hydra.run.dir"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me + "\n")
        break
    else:
        raise UserError(f"{out}: cannot take the lock {LOCK_FILE}")
    if not allow_finished and (out / "result.json").exists():
        lock.unlink(missing_ok=True)
        raise UserError(
            f"{out}: already holds a finished run (result.json); choose a new hydra.run.dir"
        )
    return lock


def _lock_holder(lock: Path) -> int | None:
    """The pid holding ``lock`` if that process is alive on this host, else None."""
    try:
        pid_text, _, host = lock.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        # being written this instant, or garbage: treat a fresh one as held
        try:
            young = time.time() - lock.stat().st_mtime < 5
        except OSError:
            return None
        return -1 if young else None
    if host and host != socket.gethostname():
        return pid  # another machine's process: cannot check, so respect it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


HYDRA_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml")


def remove_run_outputs(out: Path, lock: Path, output_root: Path) -> None:
    """Delete what a failed run created in ``out`` (see :func:`user_errors`).

    Only recorded paths go (:data:`supportrl.outputs.CREATED`). Hydra's own files and the
    run directory go too when nothing else is left, the files were written by this
    process and the directory lies under ``output_root``; directories are only ever
    removed with ``rmdir`` (empty), never recursively.
    """
    CREATED.remove(within=out)
    for kept in CREATED.kept:
        print(f"warning: kept {kept}: it holds files this run did not write", file=sys.stderr)
    lock.unlink(missing_ok=True)
    if not out.is_dir():
        return
    _remove_new_empty_dirs(out)
    root, here = output_root.resolve(), out.resolve()
    if here == root or root not in here.parents:
        return  # not a run directory of ours: leave Hydra's .hydra/ alone
    ours = [out / name for name in HYDRA_FILES] + list(out.glob("*.log"))
    ours = [p for p in ours if p.is_file() and p.stat().st_mtime >= _PROCESS_START - 1]
    left = {p for p in out.rglob("*") if not p.is_dir()} - set(ours)
    if left or any(p.is_dir() and p.name != ".hydra" for p in out.iterdir()):
        return
    for path in ours:
        path.unlink(missing_ok=True)
    for directory in (out / ".hydra", out):
        try:
            directory.rmdir()
        except OSError:
            return
    parent = here.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            return
        parent = parent.parent


def _remove_new_empty_dirs(out: Path) -> None:
    """``rmdir`` the empty folders below ``out`` made since this process started (deepest
    first): intermediate folders a failed run made (``agents/dqn/``); nothing is in them."""
    for base, _, _ in sorted(os.walk(out, followlinks=False), key=lambda w: -len(w[0])):
        path = Path(base)
        if path == out or path.name == ".hydra":
            continue
        try:
            if path.stat().st_ctime >= _PROCESS_START - 1:
                path.rmdir()  # only when empty
        except OSError:
            pass


def plot_or_warn(plot: Callable[..., Any], path: Path, *args: Any, **kwargs: Any) -> bool:
    """Draw a figure to ``path``; a plotting failure is a printed warning, never a failed run.

    Returns whether the figure was written (a partial file is removed).
    """
    new = not os.path.lexists(path)
    try:
        plot(path, *args, **kwargs)
    except Exception as exc:  # figures are optional outputs: any failure is only a warning
        if new:
            Path(path).unlink(missing_ok=True)
        print(f"warning: {Path(path).name} not written ({type(exc).__name__}: {exc})")
        return False
    if new:
        CREATED.record_file(path)  # this run's file: removed if the run fails later
    return True


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


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write strict JSON atomically (a unique temp file, then rename).

    Non-finite numbers (NaN, +-inf: an estimate that overflowed, an interval without
    bounds) are written as ``null``, never as the non-standard ``NaN`` / ``Infinity``
    that strict JSON readers refuse.
    """
    text = json.dumps(strict_json(payload), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def strict_json(value: Any) -> Any:
    """``value`` with non-finite floats (also numpy scalars and arrays) replaced by None."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return strict_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finish(result: dict[str, Any], summary: str) -> dict[str, Any]:
    """Write ``result.json``, print ``run_dir: PATH`` and the one-line summary (last line)."""
    out = run_dir()
    path = out / "result.json"
    # a resumed run (user_errors(allow_finished=True)) replaces the earlier result in place;
    # it is not this run's to remove
    write_json(path if path.exists() else output(path), result)
    print(f"run_dir: {out}")
    print(summary)
    return result
