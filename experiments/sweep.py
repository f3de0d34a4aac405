"""``supportrl sweep``: a multirun search space run as Ray Tune trials.

    supportrl sweep agent=linucb,lints seed=0,1 train.total_steps=20000 \\
        [sweep.command=train|pipeline|...] [sweep.cpus_per_trial=1] [ray.address=auto]
    supportrl sweep experiment=bandits_vs_rules sweep.command=pipeline

The overrides use Hydra's multirun grammar (``a=x,y`` is a grid axis; an experiment's
``hydra.sweeper.params`` add axes); every combination is one trial. ``sweep.*``, ``ray.*``,
``paths.*`` and ``hydra.*`` configure the sweep itself. Each trial runs ``supportrl
<sweep.command> OVERRIDES`` in its own process (a Ray task with ``sweep.cpus_per_trial``
CPUs, as many in parallel as the resources allow), with its run directory
``<run_dir>/trials/<overrides>/``: the resolved config (``.hydra/``), metrics, checkpoint,
log and ``result.json`` (written atomically, so a killed trial leaves none). Ray is
local unless ``ray.address`` names a cluster.

A failed trial is reported, not fatal. Run again with the same ``hydra.run.dir``, the
sweep skips every trial that has its ``result.json`` (resume). Writes
``result.json`` = ``{"trials": [{"overrides": [..], "status": "completed|failed|skipped",
"result": PATH, ...}], "skipped": n, ...}``; ``supportrl report dir=<run_dir>`` gathers it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.common import finish, run_dir
from supportrl.experiments.entry import command, help_text, precheck_argv

SWEEP_KEYS = ("sweep.", "ray.", "paths.", "hydra.", "threads", "logger.")
"""Overrides that configure the sweep itself rather than its trials."""

_TRIALS: list[list[str]] = []
"""The trials' override lists, set by :func:`main` before Hydra runs the sweep."""


@dataclass(frozen=True)
class Trial:
    overrides: tuple[str, ...]
    name: str
    directory: Path

    @property
    def result(self) -> Path:
        return self.directory / "result.json"


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def is_sweep_key(arg: str) -> bool:
    key = _key(arg)
    return any(key == k.rstrip(".") or key.startswith(k) for k in SWEEP_KEYS)


def experiment_params(trial_args: list[str]) -> list[str]:
    """The ``hydra.sweeper.params`` of the chosen experiment, as overrides (user's win)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from supportrl.experiments.common import CONFIG_PATH

    parsed = OverridesParser.create().parse_overrides(trial_args)
    fixed = [a for a, o in zip(trial_args, parsed, strict=True) if not o.is_sweep_override()]
    if not any(_key(a) == "experiment" for a in fixed):
        return []
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    given = {_key(a) for a in trial_args}
    return [f"{k}={v}" for k, v in params.items() if k not in given]


def expand(trial_args: list[str]) -> list[list[str]]:
    """Every combination of the multirun grammar (Hydra's basic sweeper order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(trial_args)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(combo) for batch in batches for combo in batch] or [[]]


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


def set_aside_failed_attempt(trial: Trial) -> Path | None:
    """Before a trial runs again: move an earlier, unfinished attempt's folder aside.

    Nothing is deleted: the folder (with whatever a user added to it, notes or plots) is
    renamed to ``<name>.attempt-N`` beside it and the path is returned; None when there
    was no unfinished attempt.
    """
    if not os.path.lexists(trial.directory) or trial.result.exists():
        return None
    for n in range(1, 10_000):
        target = trial.directory.with_name(f"{trial.name}.attempt-{n}")
        if not os.path.lexists(target):
            trial.directory.rename(target)
            print(f"sweep: kept the unfinished earlier attempt of {trial.name} as {target}")
            return target
    raise ValueError(f"{trial.directory}: too many earlier attempts kept beside it")


def run_trial(trial: Trial, cmd: str, timeout: float | None, cwd: str) -> dict[str, Any]:
    """Run one trial as ``supportrl CMD OVERRIDES`` in a fresh process; its outcome."""
    set_aside_failed_attempt(trial)
    args = [
        sys.executable,
        "-m",
        "supportrl.experiments.cli",
        cmd,
        *trial.overrides,
        f"hydra.run.dir={_quoted(trial.directory)}",
        f"paths.output_dir={_quoted(trial.directory.parent)}",
        "logger.progress=false",
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        rc, stderr = -1, f"error: timed out after {timeout} s (sweep.trial_timeout_s)"
    wall = time.perf_counter() - start
    ok = rc == 0 and trial.result.exists()
    error = ""
    if not ok:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        if not errors and lines and "Traceback" not in stderr:
            errors = lines[:1]  # Hydra's own message comes first
        error = (errors or lines or [f"exit code {rc}"])[-1]
        trial.directory.parent.mkdir(parents=True, exist_ok=True)
        (trial.directory.parent / f"{trial.name}.stderr.txt").write_text(stderr)
    return {"status": "completed" if ok else "failed", "rc": rc, "wall_s": wall, "error": error}


def run_on_tune(todo: list[Trial], cfg: DictConfig, out: Path) -> dict[str, dict[str, Any]]:
    """Run ``todo`` as Ray Tune trials; outcome by trial name."""
    import ray
    from ray import tune

    cmd, cwd = str(cfg.sweep.command), os.getcwd()
    timeout = cfg.sweep.trial_timeout_s
    trials = {t.name: t for t in todo}

    def trainable(config: dict[str, Any]) -> None:
        tune.report(run_trial(trials[config["trial"]], cmd, timeout, cwd))

    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray.address is None:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        ray.init(address=cfg.ray.address, **kwargs)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": float(cfg.sweep.cpus_per_trial)}),
            param_space={"trial": tune.grid_search(list(trials))},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.sweep.max_concurrent),
            run_config=tune.RunConfig(
                name="tune", storage_path=str((out / "tune").resolve()), verbose=0
            ),
        )
        grid = tuner.fit()
        outcomes: dict[str, dict[str, Any]] = {}
        for res in grid:
            name = res.config["trial"]
            if res.error is not None or not res.metrics or "status" not in res.metrics:
                outcomes[name] = {"status": "failed", "error": str(res.error).splitlines()[-1:]}
            else:
                outcomes[name] = {k: res.metrics[k] for k in ("status", "rc", "wall_s", "error")}
        return outcomes
    finally:
        if started:
            ray.shutdown()


@command
def sweep(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    trials = plan(_TRIALS, out)
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ValueError("sweep: two trials would share a folder; make the overrides differ")
    done = [t for t in trials if t.result.exists()]
    todo = [t for t in trials if not t.result.exists()]
    print(
        f"sweep: {len(trials)} trials of `supportrl {cfg.sweep.command}` "
        f"({len(done)} finished earlier, skipped; {len(todo)} to run on Ray Tune)"
    )
    start = time.perf_counter()
    outcomes = run_on_tune(todo, cfg, out) if todo else {}
    rows = []
    for t in trials:
        row: dict[str, Any] = {"overrides": list(t.overrides), "run_dir": str(t.directory)}
        if t in done:
            row.update(status="skipped", result=str(t.result))
        else:
            outcome = outcomes.get(t.name, {"status": "failed", "error": "trial did not run"})
            row.update(outcome, result=str(t.result) if outcome["status"] == "completed" else None)
        rows.append(row)
        mark = row["status"] + (f": {row.get('error')}" if row["status"] == "failed" else "")
        print(f"  {t.name:<50} {mark}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("completed", "failed", "skipped")}
    return finish(
        {
            "command": str(cfg.sweep.command),
            "trials": rows,
            **counts,
            "wall_s": round(time.perf_counter() - start, 3),
        },
        f"sweep: {len(rows)} trials: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped -> {out}",
    )


def main() -> Any:
    """Split the command line into the sweep's own overrides and the trials' search space."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(help_text("sweep"))
        sys.exit(0)
    multirun = ("-m", "--multirun")  # a sweep is a multirun already
    own = [a for a in argv if (a.startswith("-") and a not in multirun) or is_sweep_key(a)]
    trial_args = [a for a in argv if a not in own and a not in multirun]
    precheck_argv(["-m", *trial_args, *experiment_params(trial_args)])
    _TRIALS[:] = expand([*trial_args, *experiment_params(trial_args)])
    sys.argv = [sys.argv[0], *own]
    return sweep()


if __name__ == "__main__":
    main()
