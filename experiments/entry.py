"""What every ``supportrl <command>`` does around its task: help, config checks, threads, log.

:func:`command` turns a task ``(cfg) -> result`` into the command's ``main()``:

- ``--help`` prints the command's config groups and its keys with their comments;
- the overrides are composed and checked against :mod:`.schema` before Hydra runs, so an
  unknown key, an unknown group option or a wrong type is ``error: ...`` and exit 2;
- ``threads`` (default 1) caps BLAS/OpenMP (threadpoolctl) and torch threads, so results
  do not depend on the machine's core count;
- everything the command prints is also written to ``<run_dir>/<command>.log``;
- ``logger.progress=auto`` shows progress bars only when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from supportrl.experiments.errors import UserError
from supportrl.experiments.repo_files import CONFIG_PATH
from supportrl.experiments.run_dirs import RESUMABLE_COMMANDS, run_dir, user_errors
from supportrl.experiments.schema import (
    ConfigError,
    check_config,
    covering_sets,
    group_options,
)

COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "validate": ("data",),
    "generate": ("generate", "world", "seed"),
    "fit": ("data", "simulator", "fit", "generate", "world", "reward", "policies", "seed"),
    "train": ("agent", "env", "train", "world", "reward", "backend", "ray", "data", "seed"),
    "evaluate": ("data", "ope", "reward", "policies", "target_probs", "seed"),
    "pipeline": (
        "data", "world", "simulator", "fit", "agent", "reward", "ope", "generate", "train",
        "pipeline", "loop", "seed",
    ),
    "loop": (
        "data", "world", "simulator", "fit", "agent", "reward", "ope", "generate", "train",
        "pipeline", "loop", "seed",
    ),
    "abtest": ("log", "reward", "report", "seed"),
    "sweep": ("sweep", "ray", "seed"),
    "report": ("dir", "report", "ope"),
    "export": ("run", "export", "data", "reward", "seed"),
    "serve": ("artifact", "serve"),
    "deploy": ("artifact", "n_conversations", "deploy", "world", "reward", "seed"),
}  # fmt: skip
"""The config groups and sections each command reads (printed by ``--help``)."""


def config_block(text: str, key: str) -> str:
    """The top-level block ``key:`` of a YAML file, with the comment lines above it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^{re.escape(key)}\s*:", line):
            start = i
            while start > 0 and lines[start - 1].startswith("#"):
                start -= 1
            end = i + 1
            while end < len(lines) and (lines[end].startswith(" ") or not lines[end]):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1
            return "\n".join(lines[start:end])
    return ""


def help_text(name: str) -> str:
    """``supportrl NAME --help``: groups with their options, then this command's keys."""
    config_dir = Path(CONFIG_PATH)
    main = (config_dir / "config.yaml").read_text()
    defaults = dict(re.findall(r"^\s+- (\w+): (\w+)", main, flags=re.M))
    keys = COMMAND_KEYS.get(name, ())
    out = [
        f"usage: supportrl {name} [KEY=VALUE ...] [GROUP=OPTION ...] [-m sweeps: KEY=a,b]",
        "",
        "config groups (GROUP=OPTION; * = read by this command):",
    ]
    groups = group_options(config_dir)
    policies = groups.pop("rules", [])
    for group, options in groups.items():
        mark = "*" if group in keys or group == "experiment" else " "
        default = defaults.get(group)
        listed = ", ".join(f"{o} (default)" if o == default else o for o in options)
        out.append(f"  {mark} {group:<11} {listed}")
    if policies:
        out.append(f"rule policies (policies=[configs/rules/NAME.yaml,..]): {', '.join(policies)}")
    out += ["", f"keys of {name} (configs/config.yaml; groups: configs/GROUP/OPTION.yaml):"]
    for key in keys:
        if key in groups and key in defaults:
            text = (config_dir / key / f"{defaults[key]}.yaml").read_text().rstrip()
            out.append(f"{key}: # {key}={defaults[key]} (configs/{key}/{defaults[key]}.yaml)")
            out.extend(f"  {line}" for line in text.splitlines())
            continue
        block = config_block(main, key)
        if block:
            out.append(block)
    out += [
        "",
        "A misspelt key or option is an error naming it. SUPPORTRL_DEBUG=1 shows tracebacks.",
    ]
    return "\n".join(out)


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _plus(overrides: list[str], key: str) -> list[str]:
    """The same overrides with ``key=...`` turned into ``+key=...`` (to name the key's error)."""
    return [f"+{o}" if o.split("=", 1)[0] == key else o for o in overrides]


def light_groups(name: str | None) -> frozenset[str]:
    """Groups command ``name`` does not read (checked by their option files' keys)."""
    if name is None or name not in COMMAND_KEYS:
        return frozenset()
    return frozenset({"simulator", "agent"} - set(COMMAND_KEYS[name]))


def check_overrides(overrides: list[str], name: str | None = None) -> None:
    """Compose ``overrides`` and check them; raise :class:`ConfigError` naming the culprit."""
    from hydra.errors import OverrideParseException

    try:
        sets = covering_sets(overrides)
    except OverrideParseException as exc:
        raise ConfigError(f"cannot parse the overrides: {str(exc).splitlines()[0]}") from None
    for chosen in sets:
        cfg = _compose_named(chosen)
        check_config({k: v for k, v in cfg.items() if k != "hydra"}, light_groups(name))


def _compose_named(overrides: list[str]) -> dict[str, Any]:
    """Compose; an override of a key that does not exist is retried as ``+key=...`` so
    that :func:`check_config` names it with its allowed neighbours."""
    from hydra.errors import ConfigCompositionException, MissingConfigException

    for _ in range(len(overrides) + 1):
        try:
            return _compose(overrides)
        except MissingConfigException as exc:
            missing = str(getattr(exc, "missing_cfg_file", "") or "")
            group, _, option = missing.rpartition("/")
            options = list(getattr(exc, "options", None) or [])
            raise ConfigError(
                f"{group}={option}: no such option; choose one of {options}"
                if group
                else str(exc).splitlines()[0]
            ) from None
        except ConfigCompositionException as exc:
            key = getattr(exc.__cause__, "full_key", None)
            plussed = _plus(overrides, key) if key else overrides
            if plussed == overrides:
                raise ConfigError(" ".join(str(exc).split())) from None
            overrides = plussed
    raise ConfigError(f"cannot compose the overrides {overrides}")


PATH_KEYS = (
    "run", "dir", "artifact", "target_probs", "data.turns", "data.customers", "data.path",
    "env.path", "train.resume", "serve.experiment", "serve.log_dir", "hydra.run.dir",
    "paths.output_dir",
)  # fmt: skip
"""Keys whose value is one path: a folder the tool names ``agent=linucb,seed=0`` is taken as
it is, not parsed as Hydra's grammar."""


def quote_paths(argv: list[str]) -> list[str]:
    """``run=outputs/multirun/.../agent=linucb,seed=0`` -> ``run='outputs/.../agent=linucb,seed=0'``.

    A value of a :data:`PATH_KEYS` key is quoted for Hydra when it holds ``=`` (never valid
    unquoted in an override's value) or when it holds ``,`` and names an existing path (a
    ``-m`` sweep over paths keeps working). Quoted values and values without those
    characters pass unchanged; a single quote inside is escaped.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        plain = key.lstrip("+~")
        if not sep or plain not in PATH_KEYS or value[:1] in ("'", '"'):
            out.append(arg)
            continue
        if "=" in value or ("," in value and os.path.exists(value)):
            escaped = value.replace("'", "\\'")
            arg = f"{key}='{escaped}'"
        out.append(arg)
    return out


def overrides_of(argv: list[str]) -> list[str]:
    """The Hydra overrides of a command line (flags such as ``-m`` left out)."""
    return [
        a
        for a in argv
        if not a.startswith("-") and not a.split("=", 1)[0].lstrip("+~").startswith("hydra.")
    ]


def precheck_argv(argv: list[str], name: str | None = None) -> None:
    """Check the command line's overrides; on a mistake print ``error: ...`` and exit 2."""
    try:
        check_overrides(overrides_of(argv), name)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


class _Tee:
    """A text stream that writes to the console and to the run's log file."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.console.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


@contextlib.contextmanager
def console_log(path: Path) -> Iterator[None]:
    """Copy stdout and stderr into ``path`` (appended) while the block runs."""
    with path.open("a") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


def limit_threads(threads: int | None) -> Any:
    """Cap BLAS/OpenMP pools and torch to ``threads`` (None: leave the machine's default).

    Pools already loaded are capped by threadpoolctl; torch gets ``set_num_threads`` if it
    is loaded, else ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, which it reads when imported
    (so a command that never needs torch does not pay for importing it). Returns the
    threadpoolctl limiter (keep it alive for the run), or None.
    """
    if threads is None:
        return None
    if threads < 1:
        raise UserError(f"threads must be >= 1 (or null for the machine's default), got {threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:  # optional: without it the environment variables still apply
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return limiter


def resolve_progress(cfg: DictConfig) -> None:
    """``logger.progress=auto`` -> True only when stderr is a terminal."""
    if cfg.logger.progress == "auto":
        with open_dict(cfg):
            cfg.logger.progress = bool(sys.stderr.isatty())


def command(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
    """``main()`` of a command whose work is ``task(cfg)`` (see the module docstring)."""
    name = Path(inspect.getfile(task)).stem

    def checked(cfg: DictConfig) -> Any:
        try:
            plain = OmegaConf.to_container(cfg, resolve=True)
            check_config(plain, light_groups(name))  # type: ignore[arg-type]
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        resolve_progress(cfg)
        limiter = limit_threads(cfg.threads)
        log = run_dir() / f"{HydraConfig.get().job.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with console_log(log):
                return task(cfg)
        finally:
            if limiter is not None:
                limiter.restore_original_limits()

    checked.__name__ = task.__name__
    checked.__module__ = task.__module__
    # a resumable command (sweep) runs again in its finished run dir and skips what is done
    guarded = user_errors(checked, allow_finished=name in RESUMABLE_COMMANDS)
    hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(
        guarded
    )

    def main() -> Any:
        argv = quote_paths(sys.argv[1:])
        if "--help" in argv or "-h" in argv:
            print(help_text(name))
            sys.exit(0)
        sys.argv = [sys.argv[0], *argv]  # Hydra reads the (quoted) command line itself
        precheck_argv(argv, name)
        return hydra_main()

    main.__doc__ = task.__doc__
    return main
