"""The search space of ``supportrl sweep``: its settings (section ``sweep``), the axes parsed
from Hydra's sweep grammar, and the planned trials (one run directory each)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.errors import UserError

SWEEP_KEYS = ("sweep.", "ray.", "paths.", "hydra.", "threads", "logger.")
"""Overrides that configure the sweep itself rather than its trials."""


SEARCHERS = ("grid", "optuna")


SCHEDULERS = ("fifo", "asha")


COMMAND_METRICS: dict[str, tuple[str, ...]] = {
    "train": ("return", "regret"),
    "pipeline": ("return", "regret", "ope_value"),
    "evaluate": ("ope_value",),
    "fit": (),
    "generate": (),
}
"""Metrics a trial of each command reports (``regret`` only where the world is known)."""


@dataclass(frozen=True)
class Trial:
    overrides: tuple[str, ...]
    name: str
    directory: Path

    @property
    def result(self) -> Path:
        return self.directory / "result.json"


@dataclass(frozen=True)
class SweepSettings:
    """Section ``sweep`` (group ``sweep/``; defaults in ``configs/sweep/grid.yaml``), checked."""

    command: str
    searcher: str
    scheduler: str
    metric: str
    mode: str
    num_samples: int
    cpus_per_trial: float
    max_concurrent: int | None
    trial_timeout_s: float | None
    isolate: bool
    grace_period: int
    reduction_factor: int
    max_t: int

    def __post_init__(self) -> None:
        if self.searcher not in SEARCHERS:
            raise UserError(f"sweep.searcher={self.searcher!r}: expected one of {SEARCHERS}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"sweep.scheduler={self.scheduler!r}: expected one of {SCHEDULERS}")
        if self.mode not in ("max", "min"):
            raise UserError(f"sweep.mode={self.mode!r}: expected 'max' or 'min'")
        if self.num_samples < 1:
            raise UserError(f"sweep.num_samples must be >= 1, got {self.num_samples}")
        known = COMMAND_METRICS.get(self.command, ())
        if (self.searcher != "grid" or self.scheduler != "fifo") and self.metric not in known:
            raise UserError(
                f"sweep.metric={self.metric!r}: `{self.command}` trials report "
                f"{list(known) or 'no metric'}; a searcher or scheduler needs one of them"
            )
        if self.scheduler == "asha" and self.isolate:
            raise UserError(
                "sweep.scheduler=asha needs the trials' training iterations, which only trials "
                "run in Ray workers report: set sweep.isolate=false"
            )


def sweep_settings(cfg: DictConfig) -> SweepSettings:
    s = cfg.sweep
    return SweepSettings(
        command=str(s.command),
        searcher=str(s.searcher),
        scheduler=str(s.scheduler),
        metric=str(s.metric),
        mode=str(s.mode),
        num_samples=int(s.num_samples),
        cpus_per_trial=float(s.cpus_per_trial),
        max_concurrent=s.max_concurrent,
        trial_timeout_s=s.trial_timeout_s,
        isolate=bool(s.isolate),
        grace_period=int(s.asha.grace_period),
        reduction_factor=int(s.asha.reduction_factor),
        max_t=int(s.asha.max_t),
    )


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def is_sweep_key(arg: str) -> bool:
    key = _key(arg)
    return any(key == k.rstrip(".") or key.startswith(k) for k in SWEEP_KEYS)


def experiment_params(trial_args: list[str]) -> list[str]:
    """The ``hydra.sweeper.params`` of the chosen experiment, as overrides (user's win)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from supportrl.experiments.repo_files import CONFIG_PATH

    parsed = OverridesParser.create().parse_overrides(trial_args)
    fixed = [a for a, o in zip(trial_args, parsed, strict=True) if not o.is_sweep_override()]
    if not any(_key(a) == "experiment" for a in fixed):
        return []
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    given = {_key(a) for a in trial_args}
    return [f"{k}={v}" for k, v in params.items() if k not in given]


@dataclass(frozen=True)
class Axis:
    """One searched key: a choice or range of values (as override text), or an interval."""

    key: str
    values: tuple[str, ...] = ()
    """A choice or a range: every value, as it goes into an override."""
    low: float | None = None
    high: float | None = None
    """An interval's ends (included)."""
    integer: bool = False
    log: bool = False
    kind: str = "choice"
    """``choice`` | ``range`` | ``interval``."""

    def tune_domain(self) -> Any:
        """This axis as a Tune search space domain (for a searcher)."""
        from ray import tune

        if self.kind != "interval":
            if self.kind == "range" and all(v.lstrip("-").isdigit() for v in self.values):
                ints = [int(v) for v in self.values]
                if ints == list(range(ints[0], ints[-1] + 1)):
                    return tune.randint(ints[0], ints[-1] + 1)  # Tune's upper end is excluded
            return tune.choice(list(self.values))
        low, high = self.low, self.high
        if self.integer:
            fn = tune.lograndint if self.log else tune.randint
            return fn(int(low), int(high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(low, high)

    def draw(self, rng: Any) -> str:
        """One random value of an interval (grid searcher: Tune's random search), as text."""
        low, high = float(self.low), float(self.high)
        if self.log:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        return str(round(value)) if self.integer else f"{value:.6g}"

    def examples(self) -> list[str]:
        """Values to check the config with before anything runs (each choice; both ends)."""
        if self.kind != "interval":
            return list(self.values)
        ends = [self.low, self.high]
        return [str(int(v)) if self.integer else repr(float(v)) for v in ends]


def parse_space(args: list[str]) -> tuple[list[str], list[Axis]]:
    """Split overrides into fixed ones and search axes (Hydra's sweep grammar)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except OverrideParseException as exc:
        raise UserError(f"cannot parse the overrides: {str(exc).splitlines()[0]}") from None
    fixed: list[str] = []
    axes: list[Axis] = []
    for arg, o in zip(args, parsed, strict=True):
        if not o.is_sweep_override():
            fixed.append(arg)
            continue
        key, value = o.get_key_element(), o.value()
        tags = getattr(value, "tags", None) or set()
        log = "log" in tags
        if isinstance(value, IntervalSweep):
            integer = "int" in tags  # Hydra reads interval ends as floats
            if integer and not (float(value.start).is_integer() and float(value.end).is_integer()):
                raise UserError(f"{arg}: an integer interval needs whole-number ends")
            low, high = value.start, value.end
            if not low < high:
                raise UserError(f"{arg}: an interval needs low < high")
            if log and low <= 0:
                raise UserError(f"{arg}: a log interval needs low > 0")
            axes.append(Axis(key, low=low, high=high, integer=integer, log=log, kind="interval"))
        else:
            kind = "range" if isinstance(value, RangeSweep) else "choice"
            values = tuple(o.sweep_string_iterator())
            if not values:
                raise UserError(f"{arg}: an empty range or choice")
            axes.append(Axis(key, values=values, log=log, kind=kind))
    return fixed, axes


def check_args(fixed: list[str], axes: list[Axis]) -> list[str]:
    """Overrides for :func:`precheck_argv`: every value the space may take, in Hydra's
    multirun form (an interval by its two ends)."""
    return [*fixed, *(f"{a.key}={','.join(a.examples())}" for a in axes)]


def grid(fixed: list[str], axes: list[Axis], num_samples: int, seed: int) -> list[list[str]]:
    """Every combination of the choices and ranges (Hydra's basic sweeper order), each
    ``num_samples`` times, with each interval drawn anew per trial (from ``seed``)."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(seed)
    discrete = [a for a in axes if a.kind != "interval"]
    combos = list(itertools.product(*(a.values for a in discrete))) or [()]
    out = []
    for _ in range(num_samples):
        for combo in combos:
            chosen = dict(zip((a.key for a in discrete), combo, strict=True))
            trial = list(fixed)
            for a in axes:
                trial.append(f"{a.key}={chosen[a.key] if a.kind != 'interval' else a.draw(rng)}")
            out.append(trial)
    return out


def trial_name(overrides: list[str], varying: set[str]) -> str:
    """Folder name of a trial: its varying overrides, ``key=value`` joined by commas."""
    parts = [o for o in overrides if _key(o) in varying] or ["trial"]
    name = ",".join(sorted(parts))
    return "".join(c if c.isalnum() or c in "=,._-+" else "_" for c in name)[:200]


def plan(trials: list[list[str]], out: Path) -> list[Trial]:
    keys: dict[str, set[str]] = {}
    for overrides in trials:
        for o in overrides:
            keys.setdefault(_key(o), set()).add(o)
    varying = {k for k, values in keys.items() if len(values) > 1}
    return [
        Trial(tuple(o), name, out / "trials" / name)
        for o in trials
        for name in [trial_name(o, varying)]
    ]


def _quoted(path: Path) -> str:
    """A path as a quoted Hydra override value (trial folders contain ``=`` and ``,``)."""
    text = str(path)
    if "'" in text:
        raise ValueError(f"sweep: a path with a single quote cannot be passed to Hydra: {text}")
    return f"'{text}'"
