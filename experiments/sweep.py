"""``supportrl sweep``: a search space run as Ray Tune trials, the best config named.

    supportrl sweep agent=linucb,lints seed=0,1 train.total_steps=20000
    supportrl sweep sweep=optuna_asha "agent.alpha=tag(log,interval(0.01,10))" \\
        sweep.num_samples=16 [sweep.metric=return sweep.mode=max]
    supportrl sweep experiment=bandits_vs_rules sweep.command=pipeline

**Search space.** Hydra's sweep grammar: ``a=x,y`` and ``choice(x,y)`` (a choice),
``range(start,stop[,step])`` (integers or floats, ``stop`` excluded), ``interval(low,high)``
(a continuous range, ends included), ``tag(log, ...)`` (a log scale) and ``tag(int, ...)``
(integers in an interval, as Hydra's Optuna sweeper reads it); an experiment's ``hydra.sweeper.params`` add axes. With ``sweep.searcher=grid``
every combination of the choices and ranges is a trial (``sweep.num_samples`` times), and
each ``interval`` is drawn at random per trial from ``seed`` (Tune's random search); with
``sweep.searcher=optuna`` Optuna's TPE proposes ``sweep.num_samples`` trials over the
space mapped to Tune's (``tune.choice``, ``tune.randint``, ``tune.uniform``,
``tune.loguniform``, ``tune.lograndint``). ``sweep.scheduler=asha`` lets ASHA stop trials
whose ``sweep.metric`` is behind at its rungs (training iterations).

**Trials.** Each trial runs ``supportrl <sweep.command> OVERRIDES`` with its run directory
``<run_dir>/trials/<overrides>/`` (the resolved config, metrics, checkpoint, log and
``result.json``, written atomically). By default a trial runs inside a Ray worker process
(a Tune function trainable: the command's imports happen once per worker and workers are
reused across trials; Ray starts once per sweep); ``sweep.isolate=true`` runs each trial
in a fresh process instead. Trials report through Tune's API: every training iteration
(``return``: the round's mean conversation return, ``regret``: cumulative regret where the
world is known, ``env_steps``), then the finished run's values (``return``: the trained
policy's final return, true value in the known world; ``regret``; ``ope_value``: the
headline OPE estimate of the trained agent when the command evaluates it). ``ray.*``
configures Ray (local unless ``ray.address`` names a cluster).

**Result.** A failed trial is reported, not fatal; a trial ASHA stopped is ``stopped``.
``result.json`` = ``{"trials": [{"overrides", "status", "result", "metrics", ...}],
"skipped": n, "best": {"overrides", "metric", "value"}, ...}``: the best completed trial
by ``sweep.metric`` (``sweep.mode``), also printed. ``supportrl report dir=<run_dir>``
gathers it. Ctrl-C stops the sweep (exit code 130); run it again with the same
``hydra.run.dir`` and it resumes: finished trials are skipped (an Optuna sweep restores
its searcher from ``<run_dir>/tune``).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from supportrl.experiments.entry import command, help_text, precheck_argv
from supportrl.experiments.errors import UserError
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import run_dir
from supportrl.experiments.sweep_space import (
    Axis,
    SweepSettings,
    Trial,
    _quoted,
    check_args,
    experiment_params,
    grid,
    is_sweep_key,
    parse_space,
    plan,
    sweep_settings,
    trial_name,
)

from supportrl.ray_runtime import start_ray

# --- the search space: Hydra's sweep grammar -> Tune's ------------------------------------------


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


class TrialStopped(BaseException):
    """Raised inside a trial's command when Tune stops the trial (ASHA) or it times out.

    A ``BaseException``, so the command's own error handling lets it through.
    """


def _redo_unfinished(trial: Trial) -> None:
    """Before a trial runs again: the unfinished folder of an earlier attempt is moved
    aside, never deleted (:func:`set_aside_failed_attempt`)."""
    set_aside_failed_attempt(trial)


def trial_args(trial: Trial, cmd: str) -> list[str]:
    """The command line of one trial (its run directory inside the sweep's)."""
    return [
        cmd,
        *trial.overrides,
        f"hydra.run.dir={_quoted(trial.directory)}",
        f"paths.output_dir={_quoted(trial.directory.parent)}",
        "logger.progress=false",
        "logger.mlflow.enabled=false",  # a sweep logs its trials to MLflow through Tune
    ]


def run_in_worker(trial: Trial, cmd: str, timeout: float | None, cwd: str) -> dict[str, Any]:
    """Run one trial's command in this process (a Ray worker); its outcome.

    Each training iteration goes to Tune as it happens (:mod:`.tracking`); when Tune stops
    the trial there (ASHA), the command is unwound, what it wrote is removed, and the
    outcome is ``stopped``.
    """
    from ray import tune
    from supportrl.experiments import cli, tracking

    from supportrl.outputs import CREATED

    _redo_unfinished(trial)
    os.chdir(cwd)
    start = time.perf_counter()

    def report(metrics: dict[str, float]) -> None:
        if timeout is not None and time.perf_counter() - start > timeout:
            raise TrialStopped(f"timed out after {timeout} s (sweep.trial_timeout_s)")
        try:
            tune.report({**metrics, "trial": trial.name})
        except SystemExit:  # Tune's way of ending a trial it stopped
            raise TrialStopped("stopped by the scheduler") from None

    err, out = io.StringIO(), io.StringIO()
    rc, stopped = 0, None
    argv = sys.argv
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            with tracking.tune_trial(report):
                cli.main(trial_args(trial, cmd))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except TrialStopped as exc:
        stopped = str(exc)
    finally:
        sys.argv = argv
        if stopped is not None:  # what the unwound command wrote: ours to remove
            CREATED.remove(within=trial.directory)
        CREATED.forget([p for p in CREATED.paths if trial.directory in p.parents])
    wall = time.perf_counter() - start
    stderr = err.getvalue()
    if stopped is not None:
        return {"status": "stopped" if "scheduler" in stopped else "failed", "error": stopped,
                "rc": rc, "wall_s": wall}  # fmt: skip
    ok = rc == 0 and trial.result.exists()
    error = ""
    if not ok:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        error = (errors or lines or [f"exit code {rc}"])[-1]
        trial.directory.parent.mkdir(parents=True, exist_ok=True)
        (trial.directory.parent / f"{trial.name}.stderr.txt").write_text(stderr)
    return {"status": "completed" if ok else "failed", "rc": rc, "wall_s": wall, "error": error}


def trial_metrics(cmd: str, result: dict[str, Any]) -> dict[str, float]:
    """A finished trial's metrics from its ``result.json`` (see :data:`COMMAND_METRICS`)."""
    out: dict[str, float] = {}
    if cmd == "train":
        out["return"] = result.get("final_return")
        out["regret"] = result.get("cumulative_regret")
    elif cmd in ("pipeline", "evaluate"):
        policies = result.get("policies") or {}
        agent = result.get("agent") if cmd == "pipeline" else None
        if agent is None and len(policies) == 1:
            agent = next(iter(policies))
        row = policies.get(agent) or {}
        select = result.get("select")
        if isinstance(row.get(select), dict):
            out["ope_value"] = row[select].get("estimate")
        if cmd == "pipeline":
            out["return"] = row.get("true_value", row.get("simulated_value"))
            best = result.get("best_known_value")
            if best is not None and out["return"] is not None:
                out["regret"] = best - out["return"]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and math.isfinite(v)}


def _stored_metrics(trial: Trial, cmd: str) -> dict[str, float]:
    try:
        return trial_metrics(cmd, json.loads(trial.result.read_text()))
    except (OSError, ValueError):
        return {}


def _trainable(
    settings: SweepSettings,
    cwd: str,
    planned: dict[str, Trial] | None,
    fixed: list[str],
    axes: list[Axis],
    out: Path,
):
    """The Tune function trainable: one trial, its iterations and its final metrics."""
    cmd, timeout = settings.command, settings.trial_timeout_s
    varying = {a.key for a in axes}

    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        if planned is not None:
            trial = planned[config["trial"]]
        else:  # a searcher's proposal: the fixed overrides plus the sampled values
            chosen = [f"{a.key}={_text(config[a.key])}" for a in axes]
            overrides = [*fixed, *chosen]
            name = trial_name(overrides, varying)
            trial = Trial(tuple(overrides), name, out / "trials" / name)
        info = {"trial": trial.name, "overrides": " ".join(trial.overrides)}
        if trial.result.exists():  # finished in an earlier run of this sweep
            metrics = _stored_metrics(trial, cmd)
            tune.report({**_with_metric(metrics, settings), **info, "status": "skipped"})
            return
        if settings.isolate:
            outcome = run_trial(trial, cmd, timeout, cwd)
        else:
            outcome = run_in_worker(trial, cmd, timeout, cwd)
        if outcome["status"] == "stopped":
            return  # Tune keeps its last reported iteration
        metrics = _stored_metrics(trial, cmd) if outcome["status"] == "completed" else {}
        tune.report({**_with_metric(metrics, settings), **info, **outcome})

    return trainable


def _text(value: Any) -> str:
    """A sampled value as override text."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _with_metric(metrics: dict[str, float], settings: SweepSettings) -> dict[str, Any]:
    """Tune wants the sweep's metric in every result: NaN where a trial has none."""
    return {settings.metric: math.nan, **metrics}


def _tune_environment() -> None:
    """Tune's settings by environment variable, where the caller set none."""
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # the trials write their own TensorBoard files in their run dirs: Tune keeps only its
    # JSON results (what a restore reads); its progress tables stay off the console
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a worker reused after a stopped trial waits this long for that trial's thread to end
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    # Ctrl-C reaches the sweep as KeyboardInterrupt (exit 130, resume later) instead of
    # Tune's own handler, which ends the run as if it had finished
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


def _search(settings: SweepSettings, *, seed: int) -> tuple[Any, Any]:
    """Tune's search algorithm (``sweep.searcher``) and trial scheduler (``sweep.scheduler``);
    None for grid search and FIFO."""
    search_alg = None
    if settings.searcher == "optuna":
        import optuna
        from optuna.samplers import TPESampler

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        from ray.tune.search.optuna import OptunaSearch

        n_startup = max(1, min(10, settings.num_samples // 3))
        search_alg = OptunaSearch(sampler=TPESampler(seed=seed, n_startup_trials=n_startup))
    scheduler = None
    if settings.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=settings.max_t,
            grace_period=settings.grace_period,
            reduction_factor=settings.reduction_factor,
        )
    return search_alg, scheduler


def _row(
    res: Any, by_name: dict[str, Trial] | None, fixed: list[str], axes: list[Axis], out: Path
) -> dict[str, Any]:
    """One trial Tune ran, with its last reported metrics and its status."""
    metrics = dict(res.metrics or {})
    if res.error is not None:
        metrics.setdefault("status", "failed")
        metrics["error"] = (str(res.error).strip().splitlines() or ["error"])[-1]
    elif "status" not in metrics:  # ended after an iteration: stopped by the scheduler
        metrics["status"] = "stopped"
    if by_name is not None:
        trial = by_name[res.config["trial"]]
    else:
        trial = _searched_trial(res.config, fixed, axes, out)
    if metrics.get("trial", trial.name) != trial.name:
        raise RuntimeError(f"sweep: Tune returned {metrics['trial']}'s result for {trial}")
    metrics["trial"] = trial.name
    return {"trial": trial, "metrics": metrics}


def run_on_tune(
    settings: SweepSettings,
    cfg: DictConfig,
    out: Path,
    *,
    planned: list[Trial] | None,
    fixed: list[str],
    axes: list[Axis],
) -> list[dict[str, Any]]:
    """Run the trials on Ray Tune; one row per trial Tune ran (its last reported result)."""
    _tune_environment()
    import ray
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    cwd = os.getcwd()
    by_name = {t.name: t for t in planned} if planned is not None else None
    trainable = tune.with_resources(
        _trainable(settings, cwd, by_name, fixed, axes, out), {"cpu": settings.cpus_per_trial}
    )
    searched = settings.searcher != "grid" or settings.scheduler != "fifo"
    metric = settings.metric if searched else None
    mode = settings.mode if searched else None
    if planned is not None:
        space: dict[str, Any] = {"trial": tune.grid_search([t.name for t in planned])}
        samples = 1
    else:
        space, samples = {a.key: a.tune_domain() for a in axes}, settings.num_samples
    search_alg, scheduler = _search(settings, seed=int(cfg.seed))
    callbacks: list[Any] = [JsonLoggerCallback()]
    tracking = _mlflow_callback(cfg, out)
    if tracking is not None:
        callbacks.append(tracking)
    storage = (out / "tune").resolve()
    started = start_ray(cfg.ray.address, num_cpus=cfg.ray.num_cpus)
    try:
        run_config = tune.RunConfig(
            name="tune", storage_path=str(storage), verbose=0, callbacks=callbacks
        )
        experiment = storage / "tune"
        if planned is None and tune.Tuner.can_restore(str(experiment)):
            tuner = tune.Tuner.restore(
                str(experiment), trainable, resume_unfinished=True, resume_errored=True,
                param_space=space,
            )  # fmt: skip
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    metric=metric,
                    mode=mode,
                    search_alg=search_alg,
                    scheduler=scheduler,
                    num_samples=samples,
                    max_concurrent_trials=settings.max_concurrent,
                    # a worker runs trial after trial (imports once); a trial ASHA stops
                    # ends its worker instead (its thread is unwound mid-command)
                    reuse_actors=settings.scheduler == "fifo",
                ),
                run_config=run_config,
            )
        results = tuner.fit()
        unfinished = [
            t
            for t in results._experiment_analysis.trials
            if t.status not in ("TERMINATED", "ERROR")
        ]
        if unfinished:  # Tune stopped the run early (e.g. SIGUSR1): the sweep is interrupted
            raise KeyboardInterrupt
        return [_row(res, by_name, fixed, axes, out) for res in results]
    finally:
        if started:
            ray.shutdown()


def _searched_trial(config: dict[str, Any], fixed: list[str], axes: list[Axis], out: Path):
    overrides = [*fixed, *(f"{a.key}={_text(config[a.key])}" for a in axes)]
    name = trial_name(overrides, {a.key for a in axes})
    return Trial(tuple(overrides), name, out / "trials" / name)


def _mlflow_callback(cfg: DictConfig, out: Path) -> Any:
    """Tune's MLflow callback (one MLflow run per trial) when ``logger.mlflow.enabled``."""
    from supportrl.experiments.tracking import open_mlflow_experiment, tracking_settings

    settings = tracking_settings(cfg)
    if not settings.mlflow:
        return None
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    open_mlflow_experiment(settings)
    return MLflowLoggerCallback(
        tracking_uri=settings.mlflow_uri,
        experiment_name=settings.experiment,
        tags={"supportrl.sweep": str(out)},
        save_artifact=False,
    )


METRIC_KEYS = ("return", "regret", "ope_value", "env_steps")


def best_trial(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The completed (or skipped) trial with the best ``metric``; None if none has it."""
    scored = [
        r
        for r in rows
        if r["status"] in ("completed", "skipped")
        and isinstance(r.get("metrics", {}).get(metric), int | float)
        and math.isfinite(r["metrics"][metric])
    ]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    top = max(scored, key=lambda r: sign * r["metrics"][metric])
    return {"overrides": top["overrides"], "metric": metric, "value": top["metrics"][metric],
            "mode": mode, "result": top["result"]}  # fmt: skip


@command
def sweep(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    settings = sweep_settings(cfg)
    fixed, axes = _TRIALS_SPACE
    planned = None
    if settings.searcher == "grid":
        planned = plan(grid(fixed, axes, settings.num_samples, int(cfg.seed)), out)
        names = [t.name for t in planned]
        if len(set(names)) != len(names):
            raise UserError("sweep: two trials would share a folder; make the overrides differ")
    elif not axes:
        raise UserError(
            "sweep.searcher=optuna needs a search space (e.g. 'agent.alpha=interval(0.1,2)')"
        )
    before = {p.parent.name for p in (out / "trials").glob("*/result.json")}
    # grid: the planned trials not finished earlier; a searcher: None (Tune proposes them)
    todo = None if planned is None else [t for t in planned if not t.result.exists()]
    label = f"{settings.searcher} search" + (
        f", {settings.scheduler}" if settings.scheduler != "fifo" else ""
    )
    if planned is not None:
        print(
            f"sweep: {len(planned)} trials of `supportrl {settings.command}` ({label}; "
            f"{len(planned) - len(todo)} finished earlier, skipped; {len(todo)} to run on Ray Tune)"
        )
    else:
        print(
            f"sweep: {settings.num_samples} trials of `supportrl {settings.command}` ({label} "
            f"over {', '.join(a.key for a in axes)}; by {settings.metric}, {settings.mode}) on Ray Tune"
        )
    start = time.perf_counter()
    ran = (
        [] if todo == [] else run_on_tune(settings, cfg, out, planned=todo, fixed=fixed, axes=axes)
    )
    by_name = {r["trial"].name: r for r in ran}
    trials = planned if planned is not None else list(dict.fromkeys(r["trial"] for r in ran))
    rows = []
    for t in trials:
        row: dict[str, Any] = {"overrides": list(t.overrides), "run_dir": str(t.directory)}
        got = by_name.get(t.name)
        if t.name in before or (got and got["metrics"].get("status") == "skipped"):
            row.update(status="skipped", result=str(t.result),
                       metrics=_stored_metrics(t, settings.command))  # fmt: skip
        elif got is None:
            row.update(status="failed", error="trial did not run", result=None, metrics={})
        else:
            m = got["metrics"]
            status = m.get("status", "failed")
            metrics = {k: m[k] for k in METRIC_KEYS if isinstance(m.get(k), int | float)
                       and math.isfinite(m[k])}  # fmt: skip
            row.update(status=status, metrics=metrics,
                       result=str(t.result) if status == "completed" else None)  # fmt: skip
            for k in ("rc", "wall_s", "error"):
                if k in m:
                    row[k] = m[k]
        rows.append(row)
        shown = ", ".join(f"{k} {v:+.4g}" for k, v in row["metrics"].items() if k != "env_steps")
        mark = row["status"] + (f": {row.get('error')}" if row["status"] == "failed" else "")
        print(f"  {t.name:<50} {mark}{'  ' + shown if shown else ''}")
    counts = {
        s: sum(r["status"] == s for r in rows)
        for s in ("completed", "failed", "skipped", "stopped")
    }
    best = best_trial(rows, settings.metric, settings.mode)
    if best is not None:
        print(f"best by {settings.metric} ({settings.mode}): {' '.join(best['overrides'])} "
              f"-> {best['value']:+.4f}")  # fmt: skip
    return finish(
        {
            "command": settings.command,
            "searcher": settings.searcher,
            "scheduler": settings.scheduler,
            "trials": rows,
            **counts,
            "best": best,
            "wall_s": round(time.perf_counter() - start, 3),
        },
        f"sweep: {len(rows)} trials: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['stopped']} stopped, {counts['skipped']} skipped -> {out}",
    )


_TRIALS_SPACE: tuple[list[str], list[Axis]] = ([], [])
"""The trials' fixed overrides and search axes, set by :func:`main` before Hydra runs."""


def main() -> Any:
    """Split the command line into the sweep's own overrides and the trials' search space."""
    global _TRIALS_SPACE
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(help_text("sweep"))
        sys.exit(0)
    multirun = ("-m", "--multirun")  # a sweep is a multirun already
    own = [a for a in argv if (a.startswith("-") and a not in multirun) or is_sweep_key(a)]
    args = [a for a in argv if a not in own and a not in multirun]
    try:
        fixed, axes = parse_space([*args, *experiment_params(args)])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    precheck_argv(["-m", *check_args(fixed, axes)])
    _TRIALS_SPACE = (fixed, axes)
    sys.argv = [sys.argv[0], *own]
    return sweep()


if __name__ == "__main__":
    main()
