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
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

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
    LogLimits,
    all_propensities_one,
    data_warnings,
)
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig, generate_logs

# --------------------------------------------------------------------------- settings
#
# One frozen dataclass per stage, its fields named as the config keys; the dataclasses of
# whole sections are also the sections' schemas (experiments.schema), so a key is declared
# once here, with its default once in configs/ (no field has a default: a key missing from
# the config is an error, never a second default). The readers below are the only code
# that turns a config into settings.

T = TypeVar("T")


@dataclass(frozen=True)
class AgentSpec:
    """An agent of group ``agent/``: its kind and hyperparameters (not its step budget)."""

    kind: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class SimulatorSpec:
    """A customer-model family of group ``simulator/`` and its fit settings."""

    family: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class RaySettings:
    """Section ``ray``: where Ray runs (``backend=rllib``, ``engine=ray``, ``sweep``)."""

    address: str | None
    """An existing cluster's address; None: start Ray in this process."""
    num_cpus: int | None
    """CPUs of a local Ray (None: 2 for validate/evaluate/generate; all for rllib/sweep)."""
    num_env_runners: int
    """RLlib env-runner actors (0: sample in the driver)."""


@dataclass(frozen=True)
class GenerateSettings:
    """Section ``generate``: synthetic logs from the ground-truth world."""

    n_conversations: int
    format: Literal["parquet", "csv"]
    customers_per_conversation: float
    """Customers per conversation (< 1: returning customers)."""
    partitions: int
    """> 1: that many Parquet parts, each simulated from its own seed."""


@dataclass(frozen=True)
class FitSettings:
    """Section ``fit``: how the simulator is fitted and scored, by ``fit`` and ``pipeline``."""

    holdout: float
    """Share of conversations held out (not fitted on) for the fidelity report, in [0, 1)."""
    sample_turns: int | None
    """Fit on a stratified sample of whole conversations of about this many turns (Parquet
    logs with more rows); None: on all of them."""
    sample_min_per_intent: int
    """Conversations a rarer first-turn intent keeps in the sample (all it has, if fewer)."""
    simulated_conversations: int
    """Monte Carlo conversations per policy in the fitted simulator (simulated values)."""
    true_value_conversations: int
    """Monte Carlo conversations per true value (the synthetic world only)."""
    plots: bool
    """Fidelity plots into ``RUN_DIR/plots/``."""


@dataclass(frozen=True)
class TrainSection:
    """Section ``train``: the step budget and the training loop."""

    total_steps: int
    """Env steps (decisions) for every agent."""
    conversations_per_round: int
    """Bandits: conversations collected per update round."""
    reward_mode: Literal["immediate", "return"]
    """Bandits: learn from the conversation's reward-to-go or from the turn's reward."""
    eval_conversations: int
    """Conversations for the final evaluation (``train``)."""
    regret_panel: str
    """Rule policies whose best true value is the regret baseline (synthetic world)."""
    save_replay: bool
    """DQN checkpoints also hold the replay buffer."""
    resume: str | None
    """DQN: a native checkpoint directory to continue from."""
    support_threshold: float | None
    """Pipeline and loop: also train a linear bandit restricted to the actions whose estimated
    logging probability is at least this (null: none)."""


@dataclass(frozen=True)
class TrainSettings(TrainSection):
    """:class:`TrainSection` with what training reads outside ``train``: ``backend``,
    ``env.penalized``, ``logger.progress`` and section ``ray``."""

    backend: Literal["native", "rllib"]
    penalized: bool
    """Subtract a fitted simulator's pessimism penalty from rewards (``env.penalized``)."""
    progress: bool
    ray: RaySettings


@dataclass(frozen=True)
class EnvSettings:
    """Group ``env/``: the customer model agents train in and how its rewards are read."""

    model: Literal["synthetic", "fitted", "logs"]
    penalized: bool
    path: str | None
    """``env=fitted``: the saved simulator (a ``fit`` run's ``simulator/``); else None."""
    target: Literal["ips", "dr"] | None
    """``env=logs``: importance-weighted or doubly robust updates; else None."""
    clip: float | None
    """``env=logs``: upper bound of the importance weight; else None."""


@dataclass(frozen=True)
class OPESection:
    """Group ``ope/``: estimators, intervals and the headline estimator ``select``. Field
    names are the keys; ``n_bootstrap`` and ``n_refit`` are two bootstraps: fixed-model on
    generic bandit feedback, every nuisance model refitted on conversation logs."""

    conversation_estimators: tuple[str, ...]
    decision_estimators: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]]
    """Hyperparameters by estimator name."""
    select: str
    """The headline estimator: winner selection (its lower bound), summaries, reports."""
    alpha: float
    """Two-sided interval level 1 - alpha."""
    n_bootstrap: int
    """Resamples of the fixed-model bootstrap (generic bandit feedback, ``data=bandit``)."""
    n_refit: int
    """Resamples of the refit bootstrap (conversation logs)."""
    sample_turns: int
    """``engine=local|ray``: nuisance models fitted on about this many turns."""
    refit_turns: int
    """Refitted models are evaluated on a subset of about this many turns (all logs when smaller)."""
    max_weight: float | Literal["auto"] | None
    weight_share: float
    interval: Literal["normal", "percentile"]
    se_multiplier: float
    selection_interval: Literal["auto", "widened", "bounds"]
    max_deficit: float
    material_support: float
    min_ess: float
    min_support: float


@dataclass(frozen=True)
class OPESettings(OPESection):
    """:class:`OPESection` with what OPE reads outside ``ope``: ``logger.progress``."""

    progress: bool
    """Report long loops (resample fits, partitions) on stderr."""


@dataclass(frozen=True)
class PipelineSettings:
    """Section ``pipeline``: what the pipeline adds to the stages it shares."""

    baselines: tuple[str, ...]
    """Rule policy files evaluated beside the trained agent."""


def read_section(cls: type[T], node: Any, **extra: Any) -> T:
    """``cls`` from a config node whose keys are ``cls``'s fields (their names and types
    checked by the schema before any command runs), ``extra`` filling the others. Ints
    become floats and lists tuples where the field says so."""
    values = {**dict(to_plain(node) or {}), **extra}
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            values[name] = tuple(value)
    try:
        return cls(**values)
    except TypeError as exc:  # a key missing from the config (a custom config directory)
        raise UserError(f"{cls.__name__}: {exc}") from None


def agent_spec(cfg: DictConfig) -> AgentSpec:
    params = dict(to_plain(cfg.agent))
    if "_target_" in params:
        raise UserError(f"agent: {params['_target_']} is a rule policy; there is nothing to train")
    kind = params.pop("kind", None)
    if kind != "dqn" and kind not in BANDITS:
        raise UserError(f"agent.kind={kind!r}: trainable agents are {[*sorted(BANDITS), 'dqn']}")
    return AgentSpec(kind=str(kind), params=params)


def simulator_spec(cfg: DictConfig) -> SimulatorSpec:
    params = dict(to_plain(cfg.simulator))
    family = str(params.pop("kind", None))
    return SimulatorSpec(family=family, params=params)


def ray_settings(cfg: DictConfig) -> RaySettings:
    return read_section(RaySettings, cfg.ray)


def generate_settings(cfg: DictConfig) -> GenerateSettings:
    return read_section(GenerateSettings, cfg.generate)


def fit_settings_of(cfg: DictConfig) -> FitSettings:
    return read_section(FitSettings, cfg.fit)


def env_settings(cfg: DictConfig) -> EnvSettings:
    env = dict(to_plain(cfg.env))
    return read_section(EnvSettings, {"path": None, "target": None, "clip": None, **env})


def train_settings(cfg: DictConfig) -> TrainSettings:
    return read_section(
        TrainSettings,
        cfg.train,
        backend=str(cfg.backend),
        penalized=env_settings(cfg).penalized,
        progress=cfg.logger.progress is True,  # "auto" is resolved before a command runs
        ray=ray_settings(cfg),
    )


def ope_settings(cfg: DictConfig) -> OPESettings:
    """Group ``ope/``. ``ope.n_bootstrap`` acts on generic bandit feedback only and
    ``ope.n_refit`` on conversation logs only: set on the command line for the other kind of
    data, it would do nothing, so it is an error naming the key that acts."""
    conversations = cfg.data.kind == "conversations"
    acting, idle = ("n_refit", "n_bootstrap") if conversations else ("n_bootstrap", "n_refit")
    if f"ope.{idle}" in command_line_keys():
        data = "conversation logs" if conversations else "generic bandit feedback"
        raise UserError(
            f"ope.{idle} does nothing on {data}: their bootstrap resamples are "
            f"ope.{acting} (now {cfg.ope[acting]})"
        )
    # "auto" is resolved before a command runs
    return read_section(OPESettings, cfg.ope, progress=cfg.logger.progress is True)


def command_line_keys() -> set[str]:
    """Keys this run's command line overrides (empty outside a Hydra run)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    task = HydraConfig.get().overrides.task
    return {o.split("=", 1)[0].lstrip("+~") for o in task}


def pipeline_settings(cfg: DictConfig) -> PipelineSettings:
    return read_section(PipelineSettings, cfg.pipeline)


def world_config(cfg: DictConfig) -> WorldConfig:
    return WorldConfig(**dict(to_plain(cfg.world)))


def reward_spec(cfg: DictConfig) -> RewardSpec:
    return RewardSpec(**dict(to_plain(cfg.reward)))


@dataclass(frozen=True)
class LoopSettings:
    """Section ``loop``: improvement rounds (``experiments.loop``)."""

    rounds: int
    """Rounds after the pipeline's first pass (0: none)."""
    shortlist: int
    """Candidates per experiment."""
    conversations: int
    """Most conversations an experiment serves (it stops earlier once it decides)."""
    look_every: int
    """Conversations between two looks at the experiment (the analysis is always valid)."""
    share: float
    """Traffic of all treatments together; control gets the rest."""
    epsilon: float
    """Every arm's uniform exploration."""
    production: str
    """The production policy (a rule file) before round 1."""
    guardrail_metric: str
    max_drop: float
    alpha: float
    """Error rate of the always-valid confidence sequences."""


def loop_settings(cfg: DictConfig) -> LoopSettings:
    """Section ``loop`` (its ``guardrail`` flattened), checked."""
    node = dict(to_plain(cfg.loop))
    guard = node.pop("guardrail")
    try:
        settings = LoopSettings(
            **node, guardrail_metric=str(guard["metric"]), max_drop=float(guard["max_drop"])
        )
    except (TypeError, KeyError) as exc:
        raise UserError(f"loop: {exc}") from None
    if settings.rounds < 0:
        raise UserError(f"loop.rounds={settings.rounds}: expected >= 0")
    if settings.shortlist < 1:
        raise UserError(f"loop.shortlist={settings.shortlist}: expected >= 1")
    if settings.conversations < 200:
        raise UserError(f"loop.conversations={settings.conversations}: expected >= 200")
    if not 100 <= settings.look_every <= settings.conversations:
        raise UserError(
            f"loop.look_every={settings.look_every}: expected 100 .. loop.conversations"
        )
    if not 0 < settings.share < 1:
        raise UserError(f"loop.share={settings.share}: expected in (0, 1)")
    if not 0 < settings.epsilon <= 1:
        raise UserError(
            f"loop.epsilon={settings.epsilon}: expected in (0, 1] (arms must explore so the "
            "decision log supports every action)"
        )
    if not 0 < settings.alpha < 1:
        raise UserError(f"loop.alpha={settings.alpha}: expected in (0, 1)")
    return settings


def tracking_settings(cfg: DictConfig) -> Any:
    """``logger.tensorboard`` and ``logger.mlflow.*`` (:mod:`.tracking`)."""
    from supportrl.experiments.tracking import tracking_settings as read

    return read(cfg)


def stage_settings(cfg: DictConfig) -> dict[str, Any]:
    """Every stage's typed settings, by the config node they are read from: what the stages
    receive (the key-walk test changes each key and finds it here)."""
    return {
        "seed": int(cfg.seed),
        "generate": generate_settings(cfg),
        "world": world_config(cfg),
        "reward": reward_spec(cfg),
        "simulator": simulator_spec(cfg),
        "fit": fit_settings_of(cfg),
        "agent": agent_spec(cfg),
        "env": env_settings(cfg),
        "train": train_settings(cfg),
        "ope": ope_settings(cfg),
        "pipeline": pipeline_settings(cfg),
        "loop": loop_settings(cfg),
        "tracking": tracking_settings(cfg),
    }


# --------------------------------------------------------------------------- generate


@dataclass(frozen=True)
class GeneratedData:
    turns: Path
    customers: Path
    conversations: int
    turn_rows: int
    seed: int
    partitions: int

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()}


def generate_stage(
    world: SyntheticWorld,
    settings: GenerateSettings,
    *,
    seed: int,
    out: Path,
    engine: str = "local",
    ray: RaySettings | None = None,
) -> GeneratedData:
    """Simulate ``settings.n_conversations`` logged conversations into ``out/data`` (schema
    v1): ``data/turns.parquet`` and ``data/customers.parquet`` (``.csv`` with
    ``format="csv"``), or with ``partitions > 1`` the Parquet parts ``data/turns/`` and
    ``data/customers/``, one simulated per task (``engine="ray"``: as Ray tasks on
    ``ray``), byte-identical either way."""
    if settings.partitions > 1:
        from supportrl.simulators.synthetic_parts import write_partitioned_logs

        if settings.format != "parquet":
            raise UserError(
                "generate.partitions > 1 writes Parquet parts; set generate.format=parquet"
            )
        try:
            written = write_partitioned_logs(
                out / "data",
                settings.n_conversations,
                partitions=settings.partitions,
                seed=seed,
                world=world,
                customers_per_conversation=settings.customers_per_conversation,
                engine="ray" if engine == "ray" else "local",
                ray_address=None if ray is None else ray.address,
                num_cpus=(None if ray is None else ray.num_cpus) or 2,
            )
        except ValueError as exc:
            raise UserError(f"generate: {exc}") from None
        return GeneratedData(
            turns=Path(written.turns),
            customers=Path(written.customers),
            conversations=written.conversations,
            turn_rows=written.turn_rows,
            seed=seed,
            partitions=written.partitions,
        )
    generated = generate_logs(
        settings.n_conversations,
        seed=seed,
        world=world,
        customers_per_conversation=settings.customers_per_conversation,
    )
    turns, customers = generated.write(out / "data", fmt=settings.format)
    return GeneratedData(
        turns=turns,
        customers=customers,
        conversations=generated.logs.n_conversations,
        turn_rows=generated.logs.n_turns,
        seed=seed,
        partitions=1,
    )


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class FitData:
    """The conversations a simulator is fitted on (``train``) and scored against (``test``)."""

    train: LoggedConversations
    test: LoggedConversations | None
    """The held-out conversations (``fit.holdout``); None when nothing is held out."""
    weights: np.ndarray | None
    """Sampling weight of each ``train`` conversation (``fit.sample_turns``); None: no sample."""
    sample: dict[str, Any] | None
    """How the sample was drawn (stated in the fidelity report); None: no sample."""

    @property
    def whole(self) -> bool:
        """Whether ``train`` is all of the logs (no sample drawn, nothing held out)."""
        return self.test is None and self.sample is None


def split_conversations(
    logs: LoggedConversations, holdout: float, seed: int
) -> tuple[LoggedConversations, LoggedConversations | None]:
    """(train, held-out) by conversation; held-out is None when ``holdout`` is 0."""
    if not 0 <= holdout < 1:
        raise UserError(f"fit.holdout must be in [0, 1), got {holdout}")
    if holdout == 0 or logs.n_conversations < 2:
        return logs, None
    order = np.random.default_rng(seed).permutation(logs.n_conversations)
    n_test = max(1, int(round(holdout * logs.n_conversations)))
    test = np.zeros(logs.n_conversations, dtype=bool)
    test[order[:n_test]] = True
    return logs.select(~test), logs.select(test)


def fit_data_stage(
    settings: FitSettings,
    *,
    seed: int,
    turns: Path,
    load: Callable[[Any], LoggedConversations],
    logs: LoggedConversations | Callable[[], LoggedConversations],
    limits: LogLimits | None = None,
) -> FitData:
    """The conversations to fit on and to score against, as ``settings`` say.

    With ``settings.sample_turns=N`` and Parquet ``turns`` of more than N rows: a random
    sample of whole conversations of about N turns, stratified by the first turn's intent
    (``settings.sample_min_per_intent``; each kept by a hash of its id) and read from
    ``turns`` by ``load`` (a table -> validated conversations), weighted back to the logs'
    mix; otherwise ``logs`` (the loaded logs, or a function that loads them). Then
    ``settings.holdout`` of the conversations are held out.
    """
    from supportrl.simulators.logs_bounded import parquet_parts, stratified_sample

    n = settings.sample_turns
    turns = Path(turns)
    parquet = turns.is_dir() or turns.suffix.lower() in (".parquet", ".pq")
    rows = sum(r for _, r in parquet_parts(turns)) if n is not None and parquet else 0
    sample, weights = None, None
    if n is None or not parquet or rows <= n:
        chosen = logs if isinstance(logs, LoggedConversations) else logs()
    else:
        share = n / rows
        floor = settings.sample_min_per_intent
        drawn = stratified_sample(turns, share, seed, load, limits, min_per_intent=floor)
        chosen, weights = drawn.logs, drawn.weights
        sample = {
            "method": "random sample of whole conversations by a hash of conversation_id, "
            "stratified by the first turn's intent; each conversation weighted by its inverse "
            f"probability of inclusion (fit.sample_min_per_intent={floor})",
            "share": share,
            "conversations": chosen.n_conversations,
            "turns": chosen.n_turns,
            "of_turns": rows,
            "strata": drawn.strata,
        }
        print(
            f"fit.sample_turns={n}: fitting on a random sample of {chosen.n_conversations} "
            f"conversations ({chosen.n_turns} of {rows} turns), stratified by intent"
        )
    train, test = split_conversations(chosen, settings.holdout, seed)
    if weights is not None:  # the training conversations' sampling weights
        import pandas as pd

        index = pd.Index(chosen.conversation_id).get_indexer(train.conversation_id)
        weights = weights[index]
    return FitData(train=train, test=test, weights=weights, sample=sample)


def fidelity_stage(
    model: Any,
    data: FitData,
    reward: RewardSpec,
    settings: FitSettings,
    *,
    seed: int,
    out: Path,
    world: CustomerModel | None = None,
    policies: Mapping[str, Policy] | None = None,
) -> dict[str, Any]:
    """The fidelity report (:func:`simulators.fidelity.fidelity_report`) of ``model`` on the
    held-out conversations (in-sample when none are held out): ``settings.
    simulated_conversations`` per policy in the simulator, ``settings.
    true_value_conversations`` in ``world`` (with ``policies``: the panel), plots into
    ``out/plots`` when ``settings.plots``."""
    from supportrl.simulators.fidelity import fidelity_report

    if data.test is None:
        print("warning: fit.holdout=0: the fidelity report is in-sample")
    held_out = data.test if data.test is not None else data.train
    report_model = model
    if data.weights is not None:
        # the held-out conversations keep the stratified sample's mix of intents, where the
        # model's pool has the logs' mix: the replay starts from their own first states
        first = model.logged_states(held_out).take(held_out.offsets[:-1])
        report_model = dataclasses.replace(model, pool=first)
    report = fidelity_report(
        report_model,
        held_out,
        reward=reward,
        world=world,
        policies=policies,
        n_simulated=settings.simulated_conversations,
        n_true=settings.true_value_conversations,
        seed=seed,
        plots_dir=output(out / "plots") if settings.plots else None,
    )
    if data.sample is not None:
        # the fit and the held-out scores come from the sample: say so with the fidelity
        report["sample"] = data.sample
    return report


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
    callback: Any = None,
) -> TrainedAgent:
    """Train ``spec`` online in ``model`` for ``settings.total_steps`` env steps.

    Writes the checkpoint to ``out/checkpoint``. ``model_path`` (a saved fitted model) is
    needed for ``backend=rllib`` outside the synthetic world; ``writer`` is an optional
    TensorBoard writer (DQN). ``support``: ``(threshold, weights)`` restricts a linear
    bandit to the actions the logs support (``LinUCB.support_threshold``, ``set_support``).
    ``callback(env_steps, metrics)`` gets each bandit round's learning-curve point
    (tracking, Tune trials).
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
            callback=callback,
        )
    if support is not None:
        raise UserError("train.support_threshold: only linear bandits (linucb, lints) take it")
    return _train_dqn(
        spec, model, reward, settings, seed=seed, out=out, model_path=model_path, writer=writer
    )


def _train_bandit(
    spec, model, reward, settings, *, seed, out, best_value, support=None, callback=None
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
        penalized=settings.penalized,
        seed=seed,
        best_value=best_value,
        progress=settings.progress,
        callback=callback,
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
        address=settings.ray.address,
        num_cpus=settings.ray.num_cpus,
        num_env_runners=settings.ray.num_env_runners,
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
            "ray_address": settings.ray.address,
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
        evaluation = off_policy_evaluation(prepared, settings, seed=seed)
        evaluated = evaluation.evaluate(dict(candidates))
        share = evaluation.refit_share()
        if share < 1.0:
            notes.append(
                f"bootstrap: every resample's nuisance models refitted on a random {share:.3g} "
                f"of the conversations (ope.refit_turns={evaluation.refit_turns}), their "
                "variation scaled to the whole logs (docs/ope.md)"
            )
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
                params=params,
                **common,
            )
            results[name] = res.rows()
            diagnostics[name] = res.diagnostics()
            notes.extend(n for n in res.notes if n not in notes)
            for est, row in res.rows().items():
                table.append({"policy": name, "scope": "decision", "estimator": est, **row})
    return OPEResult(results, diagnostics, notes, table, logging_value, return_range, evaluated)


def prepare_for_ope(
    logs: LoggedConversations,
    reward: RewardSpec,
    *,
    seed: int,
    model: Any = None,
    fitted_on_all: bool = True,
) -> Any:
    """The logs prepared for OPE (:func:`supportrl.ope.evaluate.prepare_conversations`),
    missing CSAT imputed by the MNAR selection model and refitted in every resample.

    ``model``: a fitted simulator (``FittedCustomerModel``) fitted on these logs
    (``fitted_on_all``) or on part of them (``fit.holdout``, ``fit.sample_turns``): its CSAT
    model is reused instead of fitting a second one (the pipeline fits the simulator just
    before) when the simulator fitted it on all of them with OPE's settings
    (``selection``, ``l2=1``, the default ``max_turns``); otherwise one is fitted with those
    settings on the state basis of the logs at the default ``max_turns`` (the design the
    reused model has), so OPE's numbers depend neither on the simulator's settings nor on
    the share it was fitted on. Without ``model``, the per-outcome CSAT model is fitted here
    (:meth:`CsatImputation.from_logs`).
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
        fitted_on_all
        and csat_model.method == "selection"
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
    widened interval of ``ope.select``. The library's names are the keys' (``n_refit``,
    ``select``, ``params``).
    """
    from supportrl.ope.meta import OffPolicyEvaluation

    try:
        return OffPolicyEvaluation(
            prepared=prepared,
            conversation_estimators=settings.conversation_estimators,
            decision_estimators=settings.decision_estimators,
            params=dict(settings.params),
            select=settings.select,
            n_refit=settings.n_refit,
            alpha=settings.alpha,
            seed=seed,
            max_weight=settings.max_weight,
            weight_share=settings.weight_share,
            interval=settings.interval,
            se_multiplier=settings.se_multiplier,
            selection_interval=settings.selection_interval,
            max_deficit=settings.max_deficit,
            min_ess=settings.min_ess,
            min_support=settings.min_support,
            material_support=settings.material_support,
            refit_turns=settings.refit_turns,
            progress=settings.progress,
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
            elapsed = time.perf_counter() - start
            timings[name] = round(timings.get(name, 0.0) + elapsed, 3)

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
