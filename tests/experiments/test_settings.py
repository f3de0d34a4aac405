"""Every setting reaches its stage under one name (issue #21): the silent no-ops fixed.

Each test here failed before its fix: ``env.penalized`` never reached bandit training,
``train_bandit`` defaulted to another ``reward_mode`` than the config, the pipeline read no
``fit.*`` key (its end-to-end test is in ``test_pipeline.py``, beside the other
overrides), and ``ope.n_bootstrap`` on conversation logs did nothing.
"""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from supportrl.agents.bandits import make_bandit
from supportrl.agents.training import BanditTrainer, train_bandit
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.entry import check_overrides
from supportrl.experiments.repo_files import CONFIG_PATH
from supportrl.experiments.schema import ConfigError
from supportrl.experiments.stages import (
    fit_data_stage,
    stage_settings,
    train_stage,
)
from supportrl.simulators.fitted import fit_customer_model
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import GeneratedLogs

from tests.helpers import supportrl


def staged(*overrides: str) -> dict[str, Any]:
    """What every stage receives from the config these overrides compose."""
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return stage_settings(cfg)


@pytest.mark.filterwarnings("ignore::supportrl.simulators.fitted.FitWarning")
def test_env_penalized_reaches_bandit_training(
    small_generated: GeneratedLogs, tmp_path: Path
) -> None:
    # a fitted simulator with a pessimism penalty: penalized and plain rewards differ
    model = fit_customer_model(small_generated.logs, "glm", seed=0, penalty=2.0, max_iter=50)
    small = ("agent=ucb1", "train.total_steps=400", "train.conversations_per_round=40")
    curves = {}
    for penalized in (True, False):
        settings = staged(*small, f"env.penalized={str(penalized).lower()}")
        assert settings["train"].penalized is penalized
        trained = train_stage(
            settings["agent"],
            model,
            RewardSpec(),
            settings["train"],
            seed=0,
            out=tmp_path / str(penalized),
        )
        curves[penalized] = trained.curve["charts/episodic_return"]
    assert not np.array_equal(curves[True], curves[False])
    # what the stage ran is the library's training with that setting
    agent = make_bandit("ucb1", model.actions, model.feature_spec, seed=0, c=1.0)
    direct = train_bandit(
        agent,
        model,
        RewardSpec(),
        total_steps=400,
        conversations_per_round=40,
        penalized=False,
        seed=0,
        progress=False,
    )
    np.testing.assert_array_equal(direct.curve["charts/episodic_return"], curves[False])


def test_reward_mode_default_is_the_configs() -> None:
    configured = staged()["train"].reward_mode
    assert configured == "return"
    assert inspect.signature(BanditTrainer).parameters["reward_mode"].default == configured


def test_fit_settings_reach_the_fit_data(small_log_files: tuple[Path, Path]) -> None:
    turns, customers = small_log_files
    logs = load_conversations(turns, customers=customers)

    def split(*overrides: str):  # noqa: ANN202
        settings = staged(*overrides)["fit"]
        return fit_data_stage(
            settings,
            seed=0,
            turns=turns,
            load=lambda table: load_conversations(table, customers=customers),
            logs=logs,
        )

    base, half = split(), split("fit.holdout=0.5")
    assert base.test is not None and half.test is not None
    assert base.test.n_conversations == round(0.2 * logs.n_conversations)
    assert half.test.n_conversations == round(0.5 * logs.n_conversations)
    assert split("fit.holdout=0").whole
    sampled = split("fit.sample_turns=300", "fit.sample_min_per_intent=0")
    assert sampled.sample is not None and sampled.weights is not None
    assert sampled.train.n_conversations + sampled.test.n_conversations < logs.n_conversations
    floored = split("fit.sample_turns=300", "fit.sample_min_per_intent=50")
    assert floored.sample["strata"] != sampled.sample["strata"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pipeline.simulated_conversations", "fit.simulated_conversations"),
        ("pipeline.true_value_conversations", "fit.true_value_conversations"),
    ],
)
def test_old_pipeline_keys_are_errors_naming_the_new_key(old: str, new: str) -> None:
    with pytest.raises(ConfigError, match=rf"{old} was renamed: set {new}=300"):
        check_overrides([f"{old}=300"])
    with pytest.raises(ConfigError, match=rf"{old} was renamed"):
        check_overrides([f"+{old}=300"])


def test_n_refit_below_two_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"ope.n_refit=1: must be at least 2"):
        check_overrides(["ope.n_refit=1"])


def test_n_bootstrap_on_conversation_logs_is_an_error_naming_n_refit(
    small_log_files: tuple[Path, Path], tmp_path: Path
) -> None:
    turns, customers = small_log_files
    proc = supportrl(
        tmp_path,
        "evaluate",
        f"data.turns={turns}",
        f"data.customers={customers}",
        "policies=[configs/rules/rules_production.yaml]",
        "ope.n_bootstrap=20",
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: ope.n_bootstrap does nothing on conversation logs" in proc.stderr
    assert "ope.n_refit (now 50)" in proc.stderr


# --- the key walk ------------------------------------------------------------------------

WALKED = ("seed", "backend", "logger", "ray", "generate", "world", "reward", "simulator")
WALKED += ("fit", "agent", "env", "train", "ope", "pipeline", "loop")
"""Config nodes whose every key reaches a stage's typed settings (:func:`stage_settings`)."""

STAGE_OF = {"backend": "train", "logger": "train", "ray": "train"}
STAGE_OF |= {
    f"logger.{k}": "tracking"
    for k in ("tensorboard", "mlflow.enabled", "mlflow.tracking_uri", "mlflow.experiment")
}
"""Keys read into another node's settings (``train`` reads ``backend``, ``logger.progress``
and ``ray``; the tracking settings read ``logger.tensorboard`` and ``logger.mlflow.*``);
every other node's keys show in the settings of the same name."""

NOT_A_STAGE = {
    "data": "the logs every command loads (experiments.from_config.load_data, validate, "
    "evaluate engine=local|ray): the loaders' input, read by name there, not a stage setting",
    "policies": "rule policies / checkpoints / artifacts to evaluate or value (evaluate, fit)",
    "target_probs": "evaluate's per-row target probabilities",
    "engine": "where evaluate, validate and generate run (memory | local | ray)",
    "threads": "BLAS/torch threads of the process (experiments.entry.limit_threads)",
    "dir": "report's input directory",
    "log": "abtest's input: an experiment's decision-log folder",
    "run": "export's input",
    "artifact": "serve's and deploy's input",
    "n_conversations": "deploy's conversations",
    "paths": "the run directory's root (Hydra's hydra.run.dir interpolates it)",
    "sweep": "the sweep command's own section (experiments/sweep.py)",
    "report": "the report command's own section (experiments/report.py)",
    "export": "the export command's own section (experiments/export.py)",
    "serve": "the serve command's own section (experiments/serve.py)",
    "deploy": "the deploy command's own section (experiments/deploy.py)",
}
"""Top-level keys no stage reads: each is read by name by the one command it belongs to.
Documented here so that a new key has to be placed: walked, or listed with its reader."""

ALTERNATIVE = {
    "generate.format": "csv",
    "train.reward_mode": "immediate",
    "train.resume": "some/checkpoint",
    "train.regret_panel": "configs/other_rules",
    "env.path": "some/simulator",
    "env.target": "dr",
    "ope.select": "wpdis",
    "ope.max_weight": 50.0,
    "ope.interval": "percentile",
    "ope.selection_interval": "auto",
    "ope.workers": 0,
    "fit.workers": 0,
    "fit.sample_turns": 1000,
    "ray.address": "auto",
    "ray.num_cpus": 3,
    "backend": "rllib",
    "logger.progress": True,
    "simulator.weighting": "none",
    "simulator.csat_missing": "respondents",
    "agent.n_step": 5,
    "loop.production": "configs/rules/rules_clarify_first.yaml",
    "loop.guardrail.metric": "resolution",
    "train.support_threshold": 0.2,
    "logger.mlflow.tracking_uri": "sqlite:///elsewhere.db",
    "logger.mlflow.experiment": "another",
}
"""A changed value for keys whose type the walk cannot guess from the default."""

GROUP_OPTIONS = {
    "agent": sorted(p.stem for p in Path(CONFIG_PATH, "agent").glob("*.yaml")),
    "simulator": sorted(p.stem for p in Path(CONFIG_PATH, "simulator").glob("*.yaml")),
    "env": sorted(p.stem for p in Path(CONFIG_PATH, "env").glob("*.yaml")),
}


def leaves(node: Any, prefix: str) -> dict[str, Any]:
    """``{dotted key: value}`` of every leaf (lists are leaves) under ``prefix``."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def changed(key: str, value: Any) -> Any:
    if key in ALTERNATIVE:
        return ALTERNATIVE[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.5 + 0.01, 6) if 0 < value < 1 else value + 0.5
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else [*value, *value]
    raise AssertionError(f"{key}={value!r}: add a changed value to ALTERNATIVE")


@functools.cache
def composed_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def composed_plain(*overrides: str) -> dict[str, Any]:
    return OmegaConf.to_container(composed_cfg(*overrides), resolve=False)  # type: ignore[return-value]


CHECKED = {"reward.version": "the reward contract's version: only v1 exists, another is refused"}
"""Keys whose only allowed value is the default: changing one must be refused, not ignored."""


@functools.cache
def walk_cases() -> list[tuple[str, str, Any]]:
    """(group choice or "", key, default value) for every walked key of every option."""
    cases = []
    for choice in ["", *(f"{g}={o}" for g, opts in GROUP_OPTIONS.items() for o in opts)]:
        cfg = composed_plain(*([choice] if choice else []))
        for node in WALKED:
            if choice and node != choice.split("=")[0]:
                continue  # an option's own keys
            if not choice and node in GROUP_OPTIONS:
                continue  # walked with each option
            for key, value in leaves(cfg[node], node).items():
                # a group's discriminator is chosen by the group override (agent=dqn), not set
                if key not in ("simulator.kind", "agent.kind", "env.model"):
                    cases.append((choice, key, value))
    return cases


@pytest.mark.parametrize(("choice", "key", "value"), walk_cases(), ids=lambda x: str(x))
def test_every_key_reaches_its_stage(choice: str, key: str, value: Any) -> None:
    """Changing the key (as an override would) changes the settings its stage receives."""
    head = key.split(".")[0]
    stage = STAGE_OF.get(key, STAGE_OF.get(head, head))
    base = (choice,) if choice else ()
    cfg = copy.deepcopy(composed_cfg(*base))
    before = stage_settings(cfg)[stage]
    OmegaConf.update(cfg, key, changed(key, value), force_add=False)
    if key in CHECKED:
        with pytest.raises(ValueError):
            stage_settings(cfg)
        return
    after = stage_settings(cfg)[stage]
    assert after != before, f"{key} (with {choice or 'the defaults'}) reaches nothing"


def test_every_key_is_walked_or_said_to_belong_to_one_command() -> None:
    top = set(composed_plain())
    assert top == set(WALKED) | set(NOT_A_STAGE), (
        "a new top-level key: walk it (stage_settings) or say which command reads it"
    )


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in Path(CONFIG_PATH, "experiment").glob("*.yaml"))
)
def test_every_experiment_key_is_walked(experiment: str) -> None:
    import yaml

    text = yaml.safe_load(Path(CONFIG_PATH, "experiment", f"{experiment}.yaml").read_text())
    walked = {key for _, key, _ in walk_cases()}
    for key in leaves({k: v for k, v in text.items() if k not in ("defaults", "hydra")}, ""):
        assert key in walked or key.split(".")[0] in NOT_A_STAGE, key
    for entry in text.get("defaults", []):
        group = next(iter(entry)).removeprefix("override /")
        assert group in WALKED, entry
    for swept in text["hydra"]["sweeper"]["params"]:  # a group (agent) or a key (agent.alpha)
        assert swept in WALKED or swept in walked, swept


# --- defaults of the library-backed groups -----------------------------------------------

TUNED = {
    ("agent/ucb1", "c"): "the config's choice; the library keeps Auer et al.'s sqrt(2)",
    ("agent/linucb", "alpha"): "the config's choice; the library keeps 1.0",
    ("agent/lints", "v"): "the config's choice; the library keeps 0.5",
    ("agent/thompson_bernoulli", "reward_range"): "reward v1's range; the library's is [0, 1]",
    ("agent/dqn", "n_step"): "null: the backend's default (3 native, 1 RLlib), see dqn_config",
    ("simulator/glm", "weighting"): "sequential for confounded logs; the library fits "
    "unweighted unless asked",
    ("simulator/ensemble", "weighting"): "as simulator/glm",
}
"""Group options whose value differs from the library dataclass's default, and why; every
other key of an agent, simulator, world or reward option equals the library's default, so
the two declarations cannot drift apart silently."""


def _library_defaults(group: str, option: str) -> dict[str, Any]:
    import dataclasses

    from supportrl.agents.bandits import BANDITS
    from supportrl.envs.rewards import RewardSpec
    from supportrl.simulators.synthetic import WorldConfig

    def of(cls: type) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out

    if group == "world":
        return of(WorldConfig)
    if group == "reward":
        return of(RewardSpec)
    if group == "agent" and option == "dqn":
        from supportrl.agents.dqn import DQNConfig

        return of(DQNConfig)
    if group == "agent":
        return of(BANDITS[option])
    from supportrl.simulators.fitted import FitConfig, GLMParams

    if option == "glm":
        return {**of(FitConfig), **of(GLMParams)}
    from supportrl.simulators.fitted.ensemble import EnsembleParams

    return {**of(FitConfig), **of(EnsembleParams)}


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, p.stem)
        for g in ("agent", "simulator", "world")
        for p in sorted(Path(CONFIG_PATH, g).glob("*.yaml"))
    ]
    + [("reward", "v1")],
)
def test_library_group_defaults_agree_with_the_library(group: str, option: str) -> None:
    import yaml

    values = yaml.safe_load(Path(CONFIG_PATH, group, f"{option}.yaml").read_text())
    library = _library_defaults(group, option)
    for key, value in values.items():
        if key == "kind" or (f"{group}/{option}", key) in TUNED:
            continue
        expected = library[key]
        expected = list(expected) if isinstance(expected, tuple) else expected
        assert value == expected, f"configs/{group}/{option}.yaml {key}: {value} != {expected}"
    for (where, key), _ in TUNED.items():
        if where == f"{group}/{option}":
            assert values[key] != library[key], f"{where} {key} agrees now: drop it from TUNED"


@pytest.mark.filterwarnings("ignore::supportrl.simulators.fitted.FitWarning")
def test_ope_does_not_move_with_the_share_the_simulator_was_fitted_on(
    small_generated: GeneratedLogs,
) -> None:
    """The pipeline reuses the simulator's CSAT model when it was fitted on all the logs;
    fitted on part of them (fit.holdout), the same design is refitted on all of them, so
    the rewards OPE reads are the same either way (were: another CSAT model)."""
    from supportrl.experiments.stages import prepare_for_ope, split_conversations

    logs = small_generated.logs
    train, _ = split_conversations(logs, 0.2, seed=0)
    on_all = fit_customer_model(logs, "glm", seed=0, max_iter=50)
    on_part = fit_customer_model(train, "glm", seed=0, max_iter=50)
    reward = RewardSpec()
    reused = prepare_for_ope(logs, reward, seed=0, model=on_all)
    refitted = prepare_for_ope(logs, reward, seed=0, model=on_part, fitted_on_all=False)
    assert np.isnan(logs.csat).any()  # there is CSAT to impute
    np.testing.assert_allclose(refitted.reward, reused.reward, atol=1e-6)


@pytest.mark.parametrize("name", ["fit", "pipeline"])
def test_help_lists_the_fit_keys_of_both_commands_that_read_them(name: str) -> None:
    from supportrl.experiments.entry import help_text

    text = help_text(name)
    assert "holdout: 0.2" in text and "true_value_conversations: 50000" in text


@pytest.mark.parametrize("shown", [True, False])
def test_logger_progress_reaches_off_policy_evaluation(shown: bool) -> None:
    """OPE's progress lines follow ``logger.progress`` as training's do."""
    from supportrl.experiments.stages import off_policy_evaluation, ope_settings
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.simulators.fitted.csat import CsatImputation
    from supportrl.simulators.synthetic import generate_logs

    settings = ope_settings(composed_cfg(f"logger.progress={str(shown).lower()}"))
    assert settings.progress is shown
    logs = generate_logs(50, seed=1).logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=0
    )
    assert off_policy_evaluation(prepared, settings, seed=0).progress is shown


@pytest.mark.parametrize(("value", "workers"), [("0", 0), ("2", 2), ("auto", "auto")])
def test_ope_workers_reach_off_policy_evaluation(value: str, workers: int | str) -> None:
    """``ope.workers``: the processes the resamples' refits run on (``auto``: resolved by
    the size of the logs, ``supportrl.workers.n_workers``); a bad one names the key."""
    from supportrl.experiments.errors import UserError
    from supportrl.experiments.stages import off_policy_evaluation, ope_settings
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.simulators.fitted.csat import CsatImputation
    from supportrl.simulators.synthetic import generate_logs

    logs = generate_logs(50, seed=1).logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=0
    )
    settings = ope_settings(composed_cfg(f"ope.workers={value}"))
    assert off_policy_evaluation(prepared, settings, seed=0).workers == workers
    bad = ope_settings(composed_cfg("ope.workers=-1"))
    with pytest.raises(UserError, match="ope: workers must be 'auto' or an int >= 0"):
        off_policy_evaluation(prepared, bad, seed=0)
