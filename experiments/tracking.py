"""Tracking a run where a lab already looks: TensorBoard, MLflow, and Tune when in a sweep.

One :class:`RunTracker` per command run (``train``, ``evaluate``) fans every metric out to

- **TensorBoard** (``logger.tensorboard``, default on): scalar event files in the run
  directory under the fixed metric names (``charts/episodic_return``, ...), and at the end
  an hparams record (the run's config beside its final metrics) for TensorBoard's HParams
  tab;
- **MLflow** (``logger=mlflow``, or ``logger.mlflow.enabled=true``): one MLflow run per
  command run in experiment ``logger.mlflow.experiment``, with the config as params, every
  metric (with its step), and the run's files as artifacts. The store is
  ``logger.mlflow.tracking_uri``; null means MLflow's embedded SQLite store
  ``<paths.output_dir>/mlflow.db`` with artifacts in ``<paths.output_dir>/mlartifacts``
  (MLflow 3 keeps its plain-file store in maintenance mode and refuses it by default);
- **Ray Tune**, when the run is a trial of ``supportrl sweep``: each training iteration
  is reported with :func:`ray.tune.report` (``return``, ``regret`` where the world is
  known, ``env_steps``) so schedulers such as ASHA can stop a trial early.

Only ``experiments/`` uses this module; every library learner sees it as its training
callback ``(env_steps, {name: value})`` (:meth:`RunTracker.log_iteration`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TUNE_NAMES = {"charts/episodic_return": "return", "charts/cumulative_regret": "regret"}
"""Metric names a trial reports to Tune (short, as ``sweep.metric`` names them)."""

TrialReport = Callable[[dict[str, float]], None]

_TRIAL_REPORT: TrialReport | None = None
"""Set by the sweep's worker while a trial runs in its process (:func:`tune_trial`)."""


@contextlib.contextmanager
def tune_trial(report: TrialReport) -> Iterator[None]:
    """While the block runs, training iterations are also passed to ``report``."""
    global _TRIAL_REPORT
    previous, _TRIAL_REPORT = _TRIAL_REPORT, report
    try:
        yield
    finally:
        _TRIAL_REPORT = previous


def report_iteration(step: int, metrics: Mapping[str, float]) -> None:
    """Report one training iteration to the running Tune trial (if any).

    Tune checks that every result carries the sweep's metric, so an iteration without a
    finite return (no conversation finished yet) is not reported.
    """
    if _TRIAL_REPORT is None:
        return
    out = {TUNE_NAMES[k]: float(v) for k, v in metrics.items() if k in TUNE_NAMES}
    if not math.isfinite(out.get("return", math.nan)):
        return
    _TRIAL_REPORT({"env_steps": int(step), **out})


@dataclass(frozen=True)
class TrackingSettings:
    """Section ``logger`` (the tracking part; defaults in ``configs/logger/console.yaml``)."""

    tensorboard: bool
    mlflow: bool
    tracking_uri: str | None
    """MLflow store; None: ``sqlite:///<output_dir>/mlflow.db``."""
    experiment: str
    output_dir: Path

    @property
    def mlflow_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.output_dir / 'mlflow.db').absolute()}"

    @property
    def artifact_root(self) -> Path:
        return (self.output_dir / "mlartifacts").absolute()


def tracking_settings(cfg: Any) -> TrackingSettings:
    """The tracking settings of a composed config (``logger.*``, ``paths.output_dir``)."""
    logger = cfg.logger
    return TrackingSettings(
        tensorboard=bool(logger.tensorboard),
        mlflow=bool(logger.mlflow.enabled),
        tracking_uri=logger.mlflow.tracking_uri,
        experiment=str(logger.mlflow.experiment),
        output_dir=Path(str(cfg.paths.output_dir)),
    )


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent": {"alpha": 1}}`` -> ``{"agent.alpha": 1}``; lists as text, None as "null"."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = "null" if value is None else str(value)[:500]
    return out


def open_mlflow_experiment(settings: TrackingSettings) -> str:
    """Point MLflow at ``settings``' store; the experiment's id (created when new)."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_uri)
    found = mlflow.get_experiment_by_name(settings.experiment)
    if found is not None:
        return found.experiment_id
    location = None if settings.tracking_uri else settings.artifact_root.as_uri()
    return mlflow.create_experiment(settings.experiment, artifact_location=location)


class RunTracker:
    """TensorBoard + MLflow (+ Tune in a sweep) for one command run.

    Use as a context manager; pass its :meth:`log_iteration` as the training callback.
    """

    def __init__(
        self,
        out: Path,
        settings: TrackingSettings,
        *,
        run_name: str,
        params: Mapping[str, Any],
    ) -> None:
        self.out, self.settings = out, settings
        self.params = flat_params(params)
        self.writer: Any = None
        if settings.tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(logdir=str(out))
        self._metrics: list[tuple[str, float, int]] = []  # buffered for one MLflow batch
        self._pending_step: int | None = None
        self._pending: dict[str, float] = {}
        self.mlflow_run_id: str | None = None
        self._closed = False
        if settings.mlflow:
            import mlflow

            experiment_id = open_mlflow_experiment(settings)
            client = mlflow.MlflowClient(settings.mlflow_uri)
            run = client.create_run(experiment_id, run_name=run_name)
            self.mlflow_run_id = run.info.run_id
            self._client = client

    # -- per step ----------------------------------------------------------------------------

    def add_scalar(self, name: str, value: float, step: int) -> None:
        """One scalar (a ``SummaryWriter``'s interface); non-finite values are skipped."""
        value = float(value)
        if math.isfinite(value):  # e.g. no TD loss before learning starts: nothing to draw
            if self.writer is not None:
                self.writer.add_scalar(name, value, int(step))
            self._metrics.append((name, value, int(step)))
        if self._pending_step is not None and step != self._pending_step:
            self._flush_iteration()
        self._pending_step = int(step)
        self._pending[name] = value

    def log_iteration(self, step: int, metrics: Mapping[str, float]) -> None:
        """Every metric of one training iteration at ``step`` env steps."""
        for name, value in metrics.items():
            self.add_scalar(name, value, step)
        self._flush_iteration()

    def _flush_iteration(self) -> None:
        step, pending = self._pending_step, self._pending
        self._pending_step, self._pending = None, {}
        if step is not None and pending:
            report_iteration(step, pending)

    # -- at the end --------------------------------------------------------------------------

    def log_final(self, metrics: Mapping[str, float | None], files: list[Path] = ()) -> None:
        """Final metrics (TensorBoard hparams beside the config; MLflow) and files (MLflow)."""
        self._flush_iteration()
        final = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        if self.writer is not None and final:
            hparams = {
                k: v for k, v in self.params.items() if isinstance(v, bool | int | float | str)
            }
            metrics = {f"hparam/{k}": v for k, v in final.items()}
            self.writer.add_hparams(hparams, metrics, name="hparams")
        if self.mlflow_run_id is not None:
            for name, value in final.items():
                self._metrics.append((name, value, 0))
            self._flush_mlflow(files)

    def _flush_mlflow(self, files: list[Path]) -> None:
        import time

        from mlflow.entities import Metric, Param

        client, run_id = self._client, self.mlflow_run_id
        now = int(time.time() * 1000)
        params = [Param(k, str(v)[:6000]) for k, v in self.params.items()]
        for i in range(0, len(params), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        metrics = [Metric(k, v, now, s) for k, v, s in self._metrics]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        self._metrics = []
        for path in files:
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.exists():
                client.log_artifact(run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        if self._closed:
            return
        self._closed = True
        if status == "FINISHED":
            self._flush_iteration()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.mlflow_run_id is not None:
            if self._metrics:
                self._flush_mlflow([])
            self._client.set_terminated(self.mlflow_run_id, status=status)

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self.close("FINISHED" if kind is None else "FAILED")


def command_tracker(cfg: Any, out: Path, command: str, run_name: str) -> RunTracker:
    """The :class:`RunTracker` of a command run from its composed config."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    params = {k: v for k, v in plain.items() if k != "hydra"}  # type: ignore[union-attr]
    return RunTracker(
        out, tracking_settings(cfg), run_name=f"{command} {run_name}", params={**params}
    )


def log_estimates(
    cfg: Any,
    out: Path,
    policies: Mapping[str, Mapping[str, Mapping[str, float]]],
    logging_value: Mapping[str, float] | None,
    files: list[Path],
) -> str | None:
    """An evaluation's estimates to TensorBoard and MLflow: ``POLICY/ESTIMATOR`` (the
    estimate), ``.../ci_low``, ``.../ci_high``, and ``logging/value``; the MLflow run id."""
    final: dict[str, float | None] = {}
    for policy, rows in policies.items():
        for estimator, row in rows.items():
            if not isinstance(row, Mapping) or "estimate" not in row:
                continue
            final[f"{policy}/{estimator}"] = row.get("estimate")
            final[f"{policy}/{estimator}/ci_low"] = row.get("ci_low")
            final[f"{policy}/{estimator}/ci_high"] = row.get("ci_high")
    if logging_value:
        final["logging/value"] = logging_value.get("estimate")
    with command_tracker(cfg, out, "evaluate", ",".join(policies)) as tracker:
        for name, value in final.items():
            if tracker.writer is not None and value is not None and math.isfinite(value):
                tracker.writer.add_scalar(name, float(value), 0)
        tracker.log_final(final, files=[f for f in files if f.exists()])
        return tracker.mlflow_run_id
