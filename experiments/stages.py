"""One typed function per step of the loop, shared by the commands and the pipeline.

``generate``, ``fit``, ``train``, ``evaluate`` and ``pipeline`` build these settings from
their config (:func:`agent_spec`, :func:`train_settings`, ... are the only readers of the
config here) and call the same stage functions, so an override reaches every command that
runs the stage it configures. The stage functions take dataclasses, arrays and paths, never
a ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.agents.bandits import BANDITS, make_bandit
from supportrl.agents.base import Policy
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.common import UserError, output, to_plain
from supportrl.simulators.logs import (
    LoggedConversations,
    LoggedDecisions,
    all_propensities_one,
    data_warnings,
)
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class AgentSpec:
    """An agent of group ``agent/``: its kind and hyperparameters (not its step budget)."""

    kind: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class TrainSettings:
    """Section ``train`` (+ ``backend``, ``ray``, ``env.penalized``, ``logger.progress``)."""

    total_steps: int
    """Env steps (decisions) for every agent."""
    conversations_per_round: int = 256
    reward_mode: str = "immediate"
    backend: str = "native"
    penalized: bool = True
    progress: bool = False
    save_replay: bool = False
    resume: str | None = None
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    ray_num_env_runners: int = 0


@dataclass(frozen=True)
class SimulatorSpec:
    """A customer-model family of group ``simulator/`` and its fit settings."""

    family: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class OPESettings:
    """Group ``ope/``: estimators, interval settings and the headline estimator ``select``."""

    conversation_estimators: tuple[str, ...]
    decision_estimators: tuple[str, ...]
    select: str
    n_bootstrap: int = 1000
    alpha: float = 0.05
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    refit: Mapping[str, Any] = field(default_factory=dict)
    """Settings of :class:`supportrl.ope.OffPolicyEvaluation` on conversation logs
    (``n_bootstrap`` = ``ope.n_refit``, ``max_weight``, ``se_multiplier``, ...)."""


def agent_spec(cfg: DictConfig) -> AgentSpec:
    params = dict(to_plain(cfg.agent))
    if "_target_" in params:
        raise UserError(f"agent: {params['_target_']} is a rule policy; there is nothing to train")
    kind = params.pop("kind", None)
    if kind != "dqn" and kind not in BANDITS:
        raise UserError(f"agent.kind={kind!r}: trainable agents are {[*sorted(BANDITS), 'dqn']}")
    return AgentSpec(kind=str(kind), params=params)


def train_settings(cfg: DictConfig) -> TrainSettings:
    return TrainSettings(
        total_steps=int(cfg.train.total_steps),
        conversations_per_round=int(cfg.train.conversations_per_round),
        reward_mode=str(cfg.train.reward_mode),
        backend=str(cfg.backend),
        penalized=bool(cfg.env.get("penalized", True)),
        progress=bool(cfg.logger.progress),
        save_replay=bool(cfg.train.save_replay),
        resume=None if cfg.train.resume is None else str(cfg.train.resume),
        ray_address=cfg.ray.address,
        ray_num_cpus=cfg.ray.num_cpus,
        ray_num_env_runners=int(cfg.ray.num_env_runners),
    )


def simulator_spec(cfg: DictConfig) -> SimulatorSpec:
    params = dict(to_plain(cfg.simulator))
    family = str(params.pop("kind", None))
    return SimulatorSpec(family=family, params=params)


def ope_settings(cfg: DictConfig) -> OPESettings:
    ope = cfg.ope
    return OPESettings(
        conversation_estimators=tuple(ope.conversation_estimators),
        decision_estimators=tuple(ope.decision_estimators),
        select=str(ope.select),
        n_bootstrap=int(ope.n_bootstrap),
        alpha=float(ope.alpha),
        params=to_plain(ope.params) or {},
        refit={key: to_plain(ope.get(key)) for key in REFIT_KEYS if key in ope},
    )


REFIT_KEYS = (
    "n_refit",
    "max_weight",
    "weight_share",
    "interval",
    "se_multiplier",
    "selection_interval",
    "max_deficit",
    "min_ess",
    "min_support",
    "material_support",
)
"""Keys of group ``ope/`` that configure the refit bootstrap of :class:`OffPolicyEvaluation`."""


def world_config(cfg: DictConfig) -> WorldConfig:
    return WorldConfig(**dict(to_plain(cfg.world)))


# --------------------------------------------------------------------------- generate


@dataclass(frozen=True)
class GeneratedData:
    turns: Path
    customers: Path
    conversations: int
    turn_rows: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()}


def generate_stage(
    world: SyntheticWorld,
    n_conversations: int,
    *,
    seed: int,
    out: Path,
    customers_per_conversation: float = 0.7,
    fmt: str = "parquet",
) -> GeneratedData:
    """Simulate ``n_conversations`` logged conversations into ``out/data`` (schema v1)."""
    generated = generate_logs(
        n_conversations,
        seed=seed,
        world=world,
        customers_per_conversation=customers_per_conversation,
    )
    turns, customers = generated.write(out / "data", fmt=fmt)
    return GeneratedData(
        turns=turns,
        customers=customers,
        conversations=generated.logs.n_conversations,
        turn_rows=generated.logs.n_turns,
        seed=seed,
    )


# --------------------------------------------------------------------------- fit


def fit_stage(
    logs: LoggedConversations,
    spec: SimulatorSpec,
    *,
    seed: int,
    out: Path,
    conversation_weights: np.ndarray | None = None,
):
    """Fit the customer model of ``spec`` on ``logs`` and save it to ``out/simulator``
    (``conversation_weights``: a sample's weights per conversation, see
    ``fit_customer_model``).

    Returns the fitted model (:class:`simulators.fitted.FittedCustomerModel`); its
    warnings are printed.
    """
    from supportrl.simulators.fitted import FAMILIES, FitWarning, fit_customer_model, fit_settings

    if spec.family not in FAMILIES:
        raise UserError(f"simulator={spec.family}: fitting needs one of {list(FAMILIES)}")
    fit_settings(spec.family, seed=seed, **spec.params)  # bad settings fail before any work
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        model = fit_customer_model(
            logs,
            spec.family,
            seed=seed,
            conversation_weights=conversation_weights,
            **spec.params,
        )
    for note in model.warnings:
        print(f"warning: {note}")
    model.save(output(out / "simulator"))
    return model


# --------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainedAgent:
    """What :func:`train_stage` returns: the policy, its checkpoint and its learning curve."""

    kind: str
    backend: str
    policy: Policy
    checkpoint: Path
    env_steps: int
    wall_s: float
    curve: Mapping[str, np.ndarray]
    """Metric columns, ``env_steps`` first (fixed names: ``charts/episodic_return``, ...)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sps(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s > 0 else float("inf")


def train_stage(
    spec: AgentSpec,
    model: CustomerModel,
    reward: RewardSpec,
    settings: TrainSettings,
    *,
    seed: int,
    out: Path,
    best_value: float | None = None,
    model_path: Path | None = None,
    writer: Any = None,
    support: tuple[float, np.ndarray] | None = None,
) -> TrainedAgent:
    """Train ``spec`` online in ``model`` for ``settings.total_steps`` env steps.

    Writes the checkpoint to ``out/checkpoint``. ``model_path`` (a saved fitted model) is
    needed for ``backend=rllib`` outside the synthetic world; ``writer`` is an optional
    TensorBoard writer (DQN). ``support``: ``(threshold, weights)`` restricts a linear
    bandit to the actions the logs support (``LinUCB.support_threshold``, ``set_support``).
    """
    if settings.total_steps < 1:
        raise UserError(f"train.total_steps must be >= 1, got {settings.total_steps}")
    if spec.kind != "dqn":
        return _train_bandit(
            spec,
            model,
            reward,
            settings,
            seed=seed,
            out=out,
            best_value=best_value,
            support=support,
        )
    if support is not None:
        raise UserError("train.support_threshold: only linear bandits (linucb, lints) take it")
    return _train_dqn(
        spec, model, reward, settings, seed=seed, out=out, model_path=model_path, writer=writer
    )


def _train_bandit(
    spec, model, reward, settings, *, seed, out, best_value, support=None
) -> TrainedAgent:
    from supportrl.agents.training import REWARD_MODES, train_bandit

    if settings.backend != "native":
        raise UserError(f"backend={settings.backend}: bandits train natively only (backend=native)")
    if settings.reward_mode not in REWARD_MODES:
        raise UserError(
            f"train.reward_mode={settings.reward_mode!r}: expected one of {list(REWARD_MODES)}"
        )
    params = dict(spec.params)
    if support is not None:
        if spec.kind not in ("linucb", "lints"):
            raise UserError(
                f"train.support_threshold: only linear bandits (linucb, lints) take it, not {spec.kind}"
            )
        params["support_threshold"] = support[0]
    agent = make_bandit(spec.kind, model.actions, model.feature_spec, seed=seed, **params)
    if support is not None:
        agent.set_support(support[1])
    result = train_bandit(
        agent,
        model,
        reward,
        total_steps=settings.total_steps,
        conversations_per_round=settings.conversations_per_round,
        reward_mode=settings.reward_mode,
        seed=seed,
        best_value=best_value,
        progress=settings.progress,
    )
    checkpoint = agent.save(output(out / "checkpoint"))
    curve = {
        "env_steps": result.curve.env_steps,
        "charts/episodic_return": result.curve.episodic_return,
    }
    if result.curve.cumulative_regret is not None:
        curve["charts/cumulative_regret"] = result.curve.cumulative_regret
    return TrainedAgent(
        kind=spec.kind,
        backend="native",
        policy=agent,
        checkpoint=Path(checkpoint),
        env_steps=result.env_steps,
        wall_s=result.wall_s,
        curve=curve,
        extra={"reward_mode": settings.reward_mode},
    )


def dqn_config(spec: AgentSpec, settings: TrainSettings):
    """The :class:`agents.dqn.DQNConfig` of ``spec`` with the shared step budget.

    ``n_step: null`` is the backend's default: 3 native, 1 with RLlib (whose n-step TD
    loss climbs on this env).
    """
    from supportrl.agents.dqn import DQNConfig

    params = dict(spec.params)
    if params.get("n_step") is None:
        params["n_step"] = 1 if settings.backend == "rllib" else 3
    params["total_steps"] = settings.total_steps
    return DQNConfig.from_dict(params)


def _train_dqn(spec, model, reward, settings, *, seed, out, model_path, writer) -> TrainedAgent:
    from supportrl.agents.dqn import DQNLearner
    from supportrl.envs import SupportVectorEnv

    config = dqn_config(spec, settings)
    extra: dict[str, Any] = {}
    if settings.backend == "rllib":
        return _train_rllib(
            config, model, reward, settings, seed=seed, out=out, model_path=model_path
        )
    if settings.backend != "native":
        raise UserError(f"backend={settings.backend!r}: expected 'native' or 'rllib'")
    env = SupportVectorEnv(
        config.num_envs, model=model, reward=reward, penalized=settings.penalized
    )
    if settings.resume:
        from supportrl.experiments.common import resolve_shipped

        # The checkpoint's hyperparameters, trained on up to train.total_steps.
        learner = DQNLearner.load(resolve_shipped(settings.resume), env)
        learner.config = dataclasses.replace(learner.config, total_steps=config.total_steps)
        if learner.env_steps >= config.total_steps:
            raise UserError(
                f"train.resume: the checkpoint is at {learner.env_steps} env steps; "
                f"set train.total_steps above that (now {config.total_steps})"
            )
        extra.update(resumed_from=settings.resume, resumed_at_env_steps=learner.env_steps)
    else:
        learner = DQNLearner(config=config, env=env, seed=seed)
    result = learner.train(progress=settings.progress, writer=writer)
    checkpoint = learner.save(output(out / "checkpoint"), include_replay=settings.save_replay)
    import torch

    extra.update(
        torch_threads=torch.get_num_threads(),  # `threads` (default 1), whatever the machine says
        episodes=result.episodes,
        updates=int(result.updates),
        updates_per_env_step=learner.config.updates_per_env_step,
        n_step=learner.config.n_step,
    )
    return TrainedAgent(
        kind="dqn",
        backend="native",
        policy=learner.policy,
        checkpoint=Path(checkpoint),
        env_steps=int(result.env_steps),
        wall_s=float(result.wall_s),
        curve=result.curve,
        extra=extra,
    )


def _train_rllib(config, model, reward, settings, *, seed, out, model_path) -> TrainedAgent:
    from supportrl.agents.rllib import support_env_config, train_rllib

    if settings.resume:
        raise UserError("train.resume: resuming is supported with backend=native only")
    if isinstance(model, SyntheticWorld):
        env_config = support_env_config(
            world=model.config, reward=reward, penalized=settings.penalized
        )
    elif model_path is not None:
        env_config = support_env_config(
            model_path=str(Path(model_path).resolve()), reward=reward, penalized=settings.penalized
        )
    else:
        raise UserError("backend=rllib needs the synthetic world or a saved simulator (env.path)")
    rl = train_rllib(
        config,
        env_config=env_config,
        actions=model.actions,
        feature_spec=model.feature_spec,
        seed=seed,
        address=settings.ray_address,
        num_cpus=settings.ray_num_cpus,
        num_env_runners=settings.ray_num_env_runners,
        progress=settings.progress,
    )
    policy = rl.policy.to_q_policy()
    checkpoint = policy.save(output(out / "checkpoint"))
    return TrainedAgent(
        kind="dqn",
        backend="rllib",
        policy=policy,
        checkpoint=Path(checkpoint),
        env_steps=int(rl.env_steps),
        wall_s=float(rl.wall_s),
        curve=rl.curve,
        extra={
            "updates": int(rl.updates),
            "n_step": config.n_step,
            "ray_address": settings.ray_address,
        },
    )


# --------------------------------------------------------------------------- values


def value_stage(
    policies: Mapping[str, Policy], model: CustomerModel, reward: RewardSpec, n: int, *, seed: int
) -> dict[str, dict[str, float]]:
    """Monte Carlo value of each policy in ``model`` (true in the synthetic world, simulated
    in a fitted one): ``{name: {"value": x, "std_err": x}}``, ``n`` conversations each."""
    from supportrl.envs.collect import policy_value

    out = {}
    for name, policy in policies.items():
        tv = policy_value(policy, n, model=model, reward=reward, seed=seed)
        out[name] = {"value": tv.value, "std_err": tv.std_err}
    return out


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class OPEResult:
    """What :func:`evaluate_stage` returns for every candidate."""

    policies: dict[str, dict[str, dict[str, float]]]
    """``{name: {estimator: {"estimate", "ci_low", "ci_high"}}}``."""
    diagnostics: dict[str, Any]
    notes: list[str]
    table: list[dict[str, Any]]
    """One row per (policy, scope, estimator)."""
    logging_value: dict[str, float]
    """The logging policy's value on its own logs (mean observed return per conversation,
    or mean reward per decision), with a normal 1 - alpha interval."""
    return_range: tuple[float, float] | None = None
    """(lowest, highest) logged conversation return (conversation logs only): where any
    policy's conversation value lies on the logs' support, up to sampling."""
    evaluated: Mapping[str, Any] = field(default_factory=dict)
    """Conversation logs: :class:`supportrl.ope.PolicyEvaluation` by candidate, with the
    honest selection interval (``.selection``), support and diagnostics."""

    def selection(self, name: str, select: str) -> dict[str, float]:
        """The interval the winner is chosen on: the widened selection interval where
        conversation logs were evaluated, else ``select``'s own interval."""
        if name in self.evaluated:
            return self.evaluated[name].selection.as_dict()
        return dict(self.policies[name][select])


def _mean_interval(values: np.ndarray, alpha: float) -> dict[str, float]:
    from scipy.stats import norm

    mean = float(values.mean())
    half = float(norm.ppf(1 - alpha / 2) * values.std(ddof=1) / np.sqrt(len(values)))
    return {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half}


def evaluate_stage(
    data: LoggedConversations | LoggedDecisions,
    reward: RewardSpec,
    candidates: Mapping[str, np.ndarray],
    settings: OPESettings,
    *,
    seed: int,
    prepared: Any = None,
) -> OPEResult:
    """Every configured estimator for every candidate (target probabilities, shape
    (n_rows, n_actions) in the data's row order) on the logs.

    The one place the commands call the ``ope`` package. ``prepared``: the conversations
    already prepared (rewards, propensities) by the caller, to reuse.
    """
    from supportrl.ope.evaluate import evaluate_decisions

    common = {"n_bootstrap": settings.n_bootstrap, "alpha": settings.alpha, "seed": seed}
    params = dict(settings.params)
    results: dict[str, dict[str, dict[str, float]]] = {}
    diagnostics: dict[str, Any] = {}
    notes: list[str] = []
    table: list[dict[str, Any]] = []
    evaluated: dict[str, Any] = {}
    if isinstance(data, LoggedConversations):
        if prepared is None:
            # missing CSAT imputed by the MNAR selection model, refitted in every resample
            prepared = prepare_for_ope(data, reward, seed=seed)
        notes.extend(prepared.notes)
        notes.extend(
            data_warnings(
                data.summary(), propensities_all_one=all_propensities_one(data.propensity)
            )
        )
        returns = np.add.reduceat(prepared.reward, prepared.logs.offsets[:-1])
        logging_value = _mean_interval(returns, settings.alpha)
        return_range = (float(returns.min()), float(returns.max())) if len(returns) else None
        evaluated = off_policy_evaluation(prepared, settings, seed=seed).evaluate(dict(candidates))
        for name, res in evaluated.items():
            results[name] = res.rows()
            diagnostics[name] = res.as_dict()
            for scope, rows in (("conversation", res.conversation), ("decision", res.decision)):
                for est, e in rows.items():
                    table.append({"policy": name, "scope": scope, "estimator": est, **e.as_dict()})
    else:
        return_range = None
        logging_value = _mean_interval(np.asarray(data.reward, dtype=float), settings.alpha)
        for name, probs in candidates.items():
            res = evaluate_decisions(
                data,
                probs,
                estimators=list(settings.decision_estimators),
                estimator_params=params,
                **common,
            )
            results[name] = res.rows()
            diagnostics[name] = res.diagnostics()
            notes.extend(n for n in res.notes if n not in notes)
            for est, row in res.rows().items():
                table.append({"policy": name, "scope": "decision", "estimator": est, **row})
    return OPEResult(results, diagnostics, notes, table, logging_value, return_range, evaluated)


def prepare_for_ope(
    logs: LoggedConversations, reward: RewardSpec, *, seed: int, model: Any = None
) -> Any:
    """The logs prepared for OPE (:func:`supportrl.ope.evaluate.prepare_conversations`),
    missing CSAT imputed by the MNAR selection model and refitted in every resample.

    ``model``: a fitted simulator (``FittedCustomerModel``) fitted on these logs: its CSAT
    model is reused instead of fitting a second one (the pipeline fits the simulator just
    before) when the simulator fitted it with OPE's settings (``selection``, ``l2=1``, the
    default ``max_turns``); otherwise one is fitted with those settings on the state basis
    of the logs at the default ``max_turns`` (the design the reused model has), so OPE's
    numbers do not depend on the simulator's settings. Without ``model``, the per-outcome
    CSAT model is fitted here (:meth:`CsatImputation.from_logs`).
    """
    from supportrl.envs.rewards import DEFAULT_MAX_TURNS
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.simulators.fitted_behaviour import logs_basis
    from supportrl.simulators.fitted_csat import CsatImputation

    csat_model, basis = getattr(model, "csat", None), getattr(model, "basis", None)
    if csat_model is None or basis is None:
        return prepare_conversations(logs, reward, csat_imputer=CsatImputation.from_logs, seed=seed)
    # Reused only when the simulator fitted it as OPE would (MNAR, prior precision 1, one
    # thread): OPE's numbers must not move with the simulator's settings.
    params = getattr(model, "params", None)
    same = (
        csat_model.method == "selection"
        and float(getattr(params, "l2", 1.0)) == 1.0
        and int(getattr(params, "torch_threads", 1)) == 1
        and int(getattr(model, "max_turns", DEFAULT_MAX_TURNS)) == DEFAULT_MAX_TURNS
    )

    def imputer(cut: LoggedConversations) -> CsatImputation:
        if same and cut.n_turns == logs.n_turns:
            return CsatImputation.from_model(cut, basis, csat_model)
        # the basis depends on the simulator's max_turns: OPE's is the default one
        return CsatImputation.from_basis(cut, logs_basis(cut, DEFAULT_MAX_TURNS))

    return prepare_conversations(logs, reward, csat_imputer=imputer, seed=seed)


def off_policy_evaluation(prepared: Any, settings: OPESettings, *, seed: int) -> Any:
    """The :class:`supportrl.ope.OffPolicyEvaluation` that ``settings`` describe: every
    nuisance model refitted in each of ``ope.n_refit`` resamples, the winner chosen on the
    widened interval of ``settings.select``."""
    from supportrl.ope.meta import OffPolicyEvaluation

    refit = dict(settings.refit)
    n_refit = int(refit.pop("n_refit", 50))
    try:
        return OffPolicyEvaluation(
            prepared=prepared,
            conversation_estimators=tuple(settings.conversation_estimators),
            decision_estimators=tuple(settings.decision_estimators),
            estimator_params=dict(settings.params),
            selection_estimator=settings.select,
            n_bootstrap=n_refit,
            alpha=settings.alpha,
            seed=seed,
            **refit,
        )
    except ValueError as exc:
        raise UserError(f"ope: {exc}") from exc


def print_ope(result: OPEResult, alpha: float) -> None:
    """The estimates table, ESS and support warnings, and notes (as ``evaluate`` prints).

    An estimate that cannot be computed (0/0: no logged support) is printed ``n/a`` with the
    reason; a conversation-level estimate outside the range of logged returns is flagged
    ``(!)`` in the table and warned about.
    """
    level = int(round(100 * (1 - alpha)))
    print(f"{'policy':<28}{'scope':<14}{'estimator':<11}{'estimate':>10}   {level}% interval")
    for row in result.table:
        shown, flag = estimate_text(row, result.diagnostics[row["policy"]], result.return_range)
        flags = ", ".join(row.get("flags", ()))
        print(f"{row['policy']:<28}{row['scope']:<14}{row['estimator']:<11}{shown}   {flags}")
        if flag:
            print(f"  warning: {row['policy']} {row['estimator']}: {flag}")
            result.notes.append(f"{row['policy']} {row['estimator']}: {flag}")
    if result.evaluated:
        from supportrl.ope.meta import format_results

        # the selection intervals, then ESS, support, FQE-vs-IS and weight warnings
        for line in format_results(result.evaluated, estimators=[], level=level)[1:]:
            print(line)
        for note in result.notes:
            print(f"note: {note}")
        return
    for name, diag in result.diagnostics.items():
        ess = f"ESS per decision {diag['ess_decision']:.0f}"
        if "ess_conversation" in diag:
            ess += f", per conversation {diag['ess_conversation']:.0f} of {diag['n_conversations']}"
        print(f"{name}: {ess}")
        for warning in diag["warnings"]:
            print(f"  warning: {warning}")
    for note in result.notes:
        print(f"note: {note}")


def estimate_text(
    row: Mapping[str, Any], diag: Mapping[str, Any], bounds: tuple[float, float] | None
) -> tuple[str, str]:
    """(estimate and interval as printed, warning or ""): ``n/a`` with the reason where
    there is no estimate (0/0: no logged support), and a warning for a conversation-level
    estimate outside the range of logged returns."""
    est, lo, hi = row["estimate"], row["ci_low"], row["ci_high"]
    if not np.isfinite(est):
        return f"{'n/a':>10}   (no estimate: {row.get('reason', 'undefined, e.g. 0/0')})", ""
    if diag.get("ess_decision", 1.0) == 0 and row["estimator"] != "dm":
        why = "no logged support: the target gives zero probability to every logged action"
        return f"{'n/a':>10}   ({why})", why
    text = f"{est:>+10.4f}   [{lo:+.4f}, {hi:+.4f}]"
    if bounds is not None and row["scope"] == "conversation":
        low, high = bounds
        slack = 1e-9 + 1e-6 * (high - low)
        if est < low - slack or est > high + slack:
            return text + "  (!)", (
                f"estimate {est:+.4g} lies outside the logged returns [{low:+.4f}, {high:+.4f}]; "
                "unreliable (extreme importance weights?)"
            )
    return text, ""


def timed(timings: dict[str, float], name: str):
    """Context manager adding the block's wall seconds to ``timings[name]``."""
    import contextlib

    @contextlib.contextmanager
    def block():
        start = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(time.perf_counter() - start, 3)

    return block()


# --------------------------------------------------------------------------- segments


def segment_stage(
    logs: LoggedConversations,
    reward: RewardSpec,
    candidates: Mapping[str, np.ndarray],
    settings: OPESettings,
    *,
    seed: int,
    by: tuple[str, ...],
    min_conversations: int = 20,
) -> dict[str, dict[str, Any]]:
    """Per-segment OPE of ``settings.select`` and action mix, beside the logging policy's.

    A conversation's segment is its categorical feature's value at its first turn.
    Segments with fewer than ``min_conversations`` conversations are left out (their
    intervals would say nothing). Returns ``{feature: {value: {"n_conversations": n,
    "logging": {"value": {...}, "action_mix": {action: share}}, "policies": {name:
    {"estimate", "ci_low", "ci_high", "action_mix": {...}}}}}}``; shares sum to 1.
    """
    states = logs.states()
    first = logs.offsets[:-1]
    row_conv = logs.conversation_index
    only = dataclasses.replace(
        settings, conversation_estimators=(settings.select,), decision_estimators=()
    )
    out: dict[str, dict[str, Any]] = {}
    for feature in by:
        categorical = sorted(k for k, v in states.items() if np.asarray(v).dtype.kind in "OUSb")
        if feature not in categorical:
            raise UserError(
                f"report.segment_by: {feature!r} is not a categorical feature of the logs; "
                f"categorical: {categorical}"
            )
        column = np.asarray(states[feature])[first]
        out[feature] = {}
        for value in np.unique(column):
            chosen = column == value
            if chosen.sum() < min_conversations:
                continue
            rows = chosen[row_conv]
            sub = logs.select(chosen)
            sub_probs = {k: np.asarray(p)[rows] for k, p in candidates.items()}
            res = evaluate_stage(sub, reward, sub_probs, only, seed=seed)
            logged = np.bincount(sub.action, minlength=len(logs.actions)) / sub.n_turns
            out[feature][str(value)] = {
                "n_conversations": int(chosen.sum()),
                "logging": {"value": res.logging_value, "action_mix": _mix(logs.actions, logged)},
                "policies": {
                    name: {
                        **res.policies[name][settings.select],
                        "action_mix": _mix(logs.actions, p.mean(axis=0)),
                    }
                    for name, p in sub_probs.items()
                },
            }
    return out


def _mix(actions: tuple[str, ...], shares: np.ndarray) -> dict[str, float]:
    return {a: round(float(s), 4) for a, s in zip(actions, shares, strict=True)}
