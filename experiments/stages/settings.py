"""Settings of the stages: one frozen dataclass per stage, its fields named as the config keys,
and the readers that are the only code turning a config into settings.

The dataclasses of whole sections are also the sections' schemas (experiments.schema), so a
key is declared once here, with its default once in configs/ (no field has a default: a key
missing from the config is an error, never a second default)."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from omegaconf import DictConfig
from supportrl.agents.bandits import BANDITS
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import to_plain
from supportrl.simulators.synthetic import WorldConfig

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
    workers: int | Literal["auto"]
    """Worker processes for the simulator fit: its CSAT model is fitted on one meanwhile
    (``auto``: when there are several cores; 0: in the command's process). The simulator
    does not move with it."""


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
    workers: int | Literal["auto"]
    """Worker processes for the resamples' refits (``auto``: one per core when there are
    several; 0: in the command's process). Workers run with the command's ``threads``, so
    the numbers do not move with it."""


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
class GuardrailSettings:
    """Section ``loop.guardrail``: the metric an experiment must not lose on, and how much."""

    metric: Literal["value", "resolution", "csat", "escalation", "abandonment", "handle_time_s"]
    max_drop: float


@dataclass(frozen=True)
class LoopSettings:
    """Section ``loop``: improvement rounds (``experiments.rounds``)."""

    rounds: int
    """Rounds after the pipeline's first pass (0: none)."""
    shortlist: int
    """Candidates per experiment."""
    conversations: int
    """Conversations an experiment serves at most unless it is about to decide (it stops
    earlier once it decides)."""
    extend: int
    """Conversations an experiment still undecided at ``conversations`` may serve past it,
    while its analysis expects to decide within them (0: never)."""
    look_every: int
    """Conversations between two looks at the experiment (the analysis is always valid)."""
    share: float
    """Traffic of all treatments together; control gets the rest."""
    epsilon: float
    """Every arm's uniform exploration."""
    production: str
    """The production policy (a rule file) before round 1."""
    guardrail: GuardrailSettings
    alpha: float
    """Error rate of the always-valid confidence sequences."""


def loop_settings(cfg: DictConfig) -> LoopSettings:
    """Section ``loop``, checked."""
    node = dict(to_plain(cfg.loop))
    guard = node.pop("guardrail")
    try:
        guardrail = GuardrailSettings(
            metric=str(guard["metric"]), max_drop=float(guard["max_drop"])
        )
        settings = LoopSettings(**node, guardrail=guardrail)
    except (TypeError, KeyError) as exc:
        raise UserError(f"loop: {exc}") from None
    if settings.rounds < 0:
        raise UserError(f"loop.rounds={settings.rounds}: expected >= 0")
    if settings.shortlist < 1:
        raise UserError(f"loop.shortlist={settings.shortlist}: expected >= 1")
    if settings.conversations < 200:
        raise UserError(f"loop.conversations={settings.conversations}: expected >= 200")
    if settings.extend < 0:
        raise UserError(f"loop.extend={settings.extend}: expected >= 0")
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
