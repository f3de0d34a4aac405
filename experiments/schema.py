"""Config schemas: every key of every group and section, with its type, checked before a run.

Each group option and each section of ``configs/config.yaml`` has a dataclass: the
stages' own settings (:mod:`.stages`: ``generate``, ``fit``, ``train``, ``ray``, ``ope``,
``pipeline``), the library's (agent, simulator, world, reward), or one here for the nodes no
stage reads. Their fields have no defaults: a key's default is declared once, in
``configs/``. Keys that were renamed are errors that name the new key (:data:`RENAMED`). :func:`check_config` walks a composed config
and raises :class:`ConfigError` naming the first unknown key (with its closest allowed
neighbours) or the first value of the wrong type. :func:`precheck_argv` composes the
command line's overrides the way Hydra will (every value of a ``-m`` sweep at least once)
and turns Hydra's own composition errors into the same one-line message, so a misspelt
key is ``error: ...`` and exit code 2, never a traceback or a silently ignored value.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from supportrl.agents.bandits import BANDITS, hyperparameter_names
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.stages import (
    FitSettings,
    GenerateSettings,
    LoopSettings,
    OPESection,
    PipelineSettings,
    RaySettings,
    TrainSection,
)
from supportrl.simulators.synthetic import WorldConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

AGENT_BUDGET_KEY = "train.total_steps"
"""The one step-budget key of every agent (bandits and DQN alike)."""


class ConfigError(ValueError):
    """A key or value of the composed config that no schema allows."""


# --- group options -------------------------------------------------------------------------


@dataclass
class DataConversations:
    kind: Literal["conversations"]
    turns: str | None
    customers: str | None
    categorical: list[str] | None
    numeric: list[str] | None
    actions: list[str] | None
    max_label_length: int
    max_levels: int
    memory_budget_mb: float


@dataclass
class DataBandit:
    kind: Literal["bandit"]
    path: str | None
    action_col: str
    reward_col: str
    propensity_col: str | None
    context: list[str] | None
    categorical: list[str] | None
    numeric: list[str] | None
    actions: list[str] | None
    max_label_length: int
    max_levels: int


@dataclass
class EnvSynthetic:
    model: Literal["synthetic"]
    penalized: bool


@dataclass
class EnvFitted:
    model: Literal["fitted"]
    path: str | None
    penalized: bool


@dataclass
class EnvLogs:
    model: Literal["logs"]
    target: Literal["ips", "dr"]
    clip: float
    penalized: bool


@dataclass
class PathsSection:
    output_dir: str


@dataclass
class MlflowSection:
    enabled: bool
    tracking_uri: str | None
    experiment: str


@dataclass
class LoggerSection:
    progress: bool | Literal["auto"]
    tensorboard: bool
    mlflow: MlflowSection


# --- sections of config.yaml ---------------------------------------------------------------


@dataclass
class AshaSection:
    grace_period: int
    reduction_factor: int
    max_t: int


@dataclass
class SweepSection:
    command: Literal["train", "pipeline", "fit", "evaluate", "generate"]
    searcher: Literal["grid", "optuna"]
    scheduler: Literal["fifo", "asha"]
    metric: str
    mode: Literal["max", "min"]
    num_samples: int
    cpus_per_trial: float
    max_concurrent: int | None
    trial_timeout_s: float | None
    isolate: bool
    asha: AshaSection


@dataclass
class ReportSection:
    select: str | None
    segment_by: list[str]
    confidence: float
    disagreement: bool


@dataclass
class ExportSection:
    epsilon: float | None
    fallback_action: str | None
    summary_conversations: int


@dataclass
class ServeSection:
    host: str
    port: int
    epsilon: float | None
    on_invalid: Literal["error", "fallback"]
    fallback_action: str | None
    log_dir: str | None
    seed: int | None
    experiment: str | None


@dataclass
class DeploySection:
    epsilon: float | None
    part_rows: int


@dataclass
class Root:
    seed: int
    policies: list[str]
    target_probs: str | None
    backend: Literal["native", "rllib"]
    engine: Literal["memory", "local", "ray"]
    threads: int | None
    dir: str | None
    log: str | None
    run: str | None
    artifact: str | None
    n_conversations: int


SECTIONS: dict[str, type] = {
    "ope": OPESection,
    "paths": PathsSection,
    "logger": LoggerSection,
    "generate": GenerateSettings,
    "fit": FitSettings,
    "train": TrainSection,
    "ray": RaySettings,
    "pipeline": PipelineSettings,
    "loop": LoopSettings,
    "sweep": SweepSection,
    "report": ReportSection,
    "export": ExportSection,
    "serve": ServeSection,
    "deploy": DeploySection,
}
"""Nodes with one schema."""

GROUPS: dict[str, tuple[str, dict[str, Callable[[], dict[str, Any]]]]] = {}
"""Nodes whose schema depends on a discriminator key: node -> (key, {value: fields()})."""


def _fields(
    cls: type, *, drop: Sequence[str] = (), keep: Sequence[str] | None = None, **extra: Any
):
    """``() -> {name: type}`` of a dataclass (the library's own), lazily."""

    def build() -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        if keep is not None:
            names = [n for n in names if n in keep]
        out = {n: hints[n] for n in names if n not in drop}
        out.update(extra)
        return out

    return build


def _dqn_fields() -> dict[str, Any]:
    # imported here: agents.dqn imports torch, which the other agents never need
    from supportrl.agents.dqn import DQNConfig

    return _fields(DQNConfig, drop=("total_steps",), kind=str, n_step=int | None)()


def _agent_fields(kind: str):
    keep = [n for n in hyperparameter_names(kind) if n != "seed"]
    return _fields(BANDITS[kind], keep=keep, kind=str)


GROUPS["data"] = (
    "kind",
    {"conversations": _fields(DataConversations), "bandit": _fields(DataBandit)},
)
GROUPS["env"] = (
    "model",
    {"synthetic": _fields(EnvSynthetic), "fitted": _fields(EnvFitted), "logs": _fields(EnvLogs)},
)
GROUPS["agent"] = (
    "kind",
    {
        **{kind: _agent_fields(kind) for kind in BANDITS},
        # The step budget is train.total_steps for every agent, so not an agent key.
        "dqn": _dqn_fields,
    },
)
_FIT_COMMON = ("weighting", "weight_clip", "penalty", "min_support", "max_turns", "csat_missing")


def _family_fields(family: str):
    def build() -> dict[str, Any]:
        # imported here: the fitted families import torch, which most commands never need
        from supportrl.simulators.fitted import FitConfig, GLMParams

        if family == "glm":
            params_cls = GLMParams
        else:
            from supportrl.simulators.fitted.ensemble import EnsembleParams

            params_cls = EnsembleParams
        return {
            "kind": str,
            **_fields(FitConfig, keep=_FIT_COMMON)(),
            **_fields(params_cls)(),
        }

    return build


GROUPS["simulator"] = (
    "kind",
    {"glm": _family_fields("glm"), "ensemble": _family_fields("ensemble")},
)
SINGLE_LIBRARY: dict[str, Callable[[], dict[str, Any]]] = {
    "world": _fields(WorldConfig),
    "reward": _fields(RewardSpec),
}


# --- checking --------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "").replace("collections.abc.", "")
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    """Whether a plain config value (YAML scalar, list, dict) fits type ``tp``."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        item = args[0] if args else Any
        return all(_matches(v, item) for v in value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        item = args[1] if len(args) == 2 else Any
        return all(_matches(v, item) for v in value.values())
    return True  # a type this checker does not know: the library validates it


def _unknown(where: str, key: str, known: Sequence[str], context: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(f'{where}{c}' for c in close)}?" if close else ""
    label = f"{where}{key}"
    return ConfigError(f"unknown key {label}{context}{hint} (allowed: {', '.join(sorted(known))})")


RENAMED: dict[str, str] = {
    "pipeline.simulated_conversations": "fit.simulated_conversations",
    "pipeline.true_value_conversations": "fit.true_value_conversations",
}
"""Old key -> its one name now (one key per setting, read by every command that uses it)."""


def check_node(
    node: Mapping[str, Any], schema: Mapping[str, Any], where: str, context: str = ""
) -> None:
    """Every key of ``node`` is in ``schema`` and every value has its type."""
    for key, value in node.items():
        if f"{where}{key}" in RENAMED:
            new = RENAMED[f"{where}{key}"]
            raise ConfigError(
                f"{where}{key} was renamed: set {new}={value!r} (one key for `fit` and `pipeline`)"
            )
        if key not in schema:
            raise _unknown(where, str(key), list(schema), context)
        if dataclasses.is_dataclass(schema[key]):  # a nested section (logger.mlflow)
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a section of keys, got {value!r}")
            check_node(value, _dataclass_schema(schema[key]), f"{where}{key}.", context)
            continue
        if not _matches(value, schema[key]):
            raise ConfigError(
                f"{where}{key}: expected {_type_name(schema[key])}, got {value!r}"
                f" ({type(value).__name__})"
            )


def _dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_config(cfg: Mapping[str, Any], light: frozenset[str] = frozenset()) -> None:
    """Check a composed config (as plain containers, without the ``hydra`` node).

    Groups in ``light`` (those the command does not read) are checked against the keys of
    their shipped option file instead of the library's dataclass, so a command that never
    fits a simulator or trains DQN does not import torch to check their keys.
    """
    root = _dataclass_schema(Root)
    nodes = set(SECTIONS) | set(GROUPS) | set(SINGLE_LIBRARY)
    for key, value in cfg.items():
        if key == "hydra":
            continue
        if key in nodes:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a section of keys, got {value!r}")
            _check_section(key, value, key in light)
        elif key in root:
            check_node({key: value}, root, "")
        else:
            raise _unknown("", str(key), sorted(set(root) | nodes))
    _check_ranges(cfg)
    select = cfg.get("ope", {}).get("select")
    estimators = [*cfg.get("ope", {}).get("conversation_estimators", [])]
    estimators += cfg.get("ope", {}).get("decision_estimators", [])
    if select is not None and estimators and select not in estimators:
        raise ConfigError(
            f"ope.select={select!r}: choose one of the configured estimators {estimators}"
        )


RANGES: dict[tuple[str, str], tuple[float, bool, str]] = {
    ("generate", "partitions"): (1, True, "at least 1"),
    ("ope", "n_refit"): (2, True, "at least 2 (resamples of the refit bootstrap)"),
    ("ope", "weight_share"): (0, False, "above 0 (the auto clip is weight_share x conversations)"),
    ("ope", "sample_turns"): (1, True, "at least 1"),
    ("ope", "refit_turns"): (1, True, "at least 1"),
    ("fit", "sample_turns"): (1, True, "at least 1"),
    ("fit", "sample_min_per_intent"): (0, True, "at least 0"),
}
"""(section, key) -> (bound, bound allowed, wording): values checked before any work."""


def _check_ranges(cfg: Mapping[str, Any]) -> None:
    """ConfigError naming the key whose value is out of its range (types are checked already)."""
    for (section, key), (bound, inclusive, wording) in RANGES.items():
        value = (cfg.get(section) or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < bound or (value == bound and not inclusive):
                raise ConfigError(f"{section}.{key}={value!r}: must be {wording}")


def _option_file_fields(group: str, option: str) -> dict[str, Any]:
    import yaml

    path = CONFIG_DIR / group / f"{option}.yaml"
    return {k: Any for k in (yaml.safe_load(path.read_text()) or {})} if path.exists() else {}


def _check_section(key: str, value: dict[str, Any], light: bool = False) -> None:
    if key in SECTIONS:
        check_node(value, _dataclass_schema(SECTIONS[key]), f"{key}.")
    elif key in SINGLE_LIBRARY:
        check_node(value, SINGLE_LIBRARY[key](), f"{key}.")
    else:
        disc, options = GROUPS[key]
        choice = value.get(disc)
        if choice not in options:
            raise ConfigError(
                f"{key}.{disc}={choice!r}: expected one of {sorted(options)} "
                f"(choose with {key}=NAME)"
            )
        fields = _option_file_fields(key, str(choice)) if light else {}
        check_node(value, fields or options[choice](), f"{key}.", f" ({key}={choice})")


def group_options(config_dir: Path) -> dict[str, list[str]]:
    """Config groups and their options (file stems), from the config directory."""
    out: dict[str, list[str]] = {}
    for sub in sorted(p for p in config_dir.iterdir() if p.is_dir()):
        options = sorted(p.stem for p in sub.glob("*.yaml"))
        if options:
            out[sub.name] = options
    return out


def covering_sets(overrides: list[str]) -> list[list[str]]:
    """Override lists to compose so every value of every sweep (``a=x,y``) is used once.

    A full grid may be thousands of trials; to find misspelt keys and options it is enough
    that each value appears in one composition (``max(len(values))`` compositions).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, None)
    grid = list(itertools.chain.from_iterable(batches))
    if len(grid) <= 1:
        return grid or [[]]
    by_key: dict[str, list[str]] = {}
    for combo in grid:
        for item in combo:
            k = item.split("=", 1)[0]
            by_key.setdefault(k, [])
            if item not in by_key[k]:
                by_key[k].append(item)
    n = max(len(v) for v in by_key.values())
    return [[v[i % len(v)] for v in by_key.values()] for i in range(n)]
