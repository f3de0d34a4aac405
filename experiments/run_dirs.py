"""A command's run directory: where it is, its lock, the paths this run created (and only
those removed when it fails), and the wrapper that runs a command's task with all that
(:func:`user_errors`)."""

from __future__ import annotations

import functools
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
from supportrl.experiments.errors import USER_ERRORS, UserError, describe_os_error
from supportrl.experiments.from_config import check_settings

from supportrl.outputs import CREATED


def run_dir() -> Path:
    """This run's Hydra output directory."""
    return Path(HydraConfig.get().runtime.output_dir)


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
