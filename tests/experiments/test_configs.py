"""Every config group option and experiment file composes, validates and instantiates; a
misspelt key or a wrong type is an error naming the key and its allowed neighbours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from supportrl.agents.bandits import make_bandit
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.entry import check_overrides, help_text
from supportrl.experiments.repo_files import CONFIG_PATH
from supportrl.experiments.schema import ConfigError, check_config, covering_sets
from supportrl.experiments.stages import AgentSpec, dqn_config, stage_settings
from supportrl.simulators.fitted import fit_settings
from supportrl.simulators.synthetic import SyntheticWorld, WorldConfig

CONFIGS = Path(CONFIG_PATH)
GROUPS = ("data", "reward", "world", "simulator", "env", "agent", "ope", "paths", "logger")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def composed(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg, resolve=False)


def staged(overrides: list[str]) -> dict[str, Any]:
    """What every stage receives from the config these overrides compose."""
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return stage_settings(cfg)


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes_validates_and_instantiates(group: str, option: str) -> None:
    cfg = composed([f"{group}={option}"])
    check_config({k: v for k, v in cfg.items() if k != "hydra"})
    node = dict(cfg[group])
    world = SyntheticWorld()
    if group == "agent":
        kind = node.pop("kind")
        if kind == "dqn":
            native = staged(["agent=dqn", "train.total_steps=1234"])["train"]
            config = dqn_config(AgentSpec(kind, node), native)
            assert config.total_steps == 1234 and config.n_step == 3
            rllib = dqn_config(AgentSpec(kind, node), staged(["backend=rllib"])["train"])
            assert rllib.n_step == 1  # RLlib's default that learns
        else:
            make_bandit(kind, world.actions, world.feature_spec, **node)
    elif group == "simulator":
        fit_settings(node.pop("kind"), **node)
    elif group == "world":
        WorldConfig(**node)
    elif group == "reward":
        RewardSpec(**node)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_its_sweep_validates(experiment: str) -> None:
    text = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_")
    cfg = composed([f"experiment={experiment}"])
    params = cfg["hydra"]["sweeper"]["params"]
    assert params, "an experiment declares its sweep"
    sweep = [f"{k}={v}" for k, v in params.items()]
    for chosen in covering_sets([f"experiment={experiment}", *sweep]):
        check_overrides(chosen)


def test_rule_policies_live_outside_the_agent_group() -> None:
    assert not list((CONFIGS / "agent").glob("rules_*.yaml"))
    panel = load_rule_panel(CONFIGS / "rules", SyntheticWorld().actions)
    assert "rules_production" in panel


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent.alpah=1"], "unknown key agent.alpah (agent=linucb); did you mean agent.alpha?"),
        (["+agent.alpah=1"], "did you mean agent.alpha?"),
        (["agent=dqn", "agent.hiden_sizes=[7]"], "did you mean agent.hidden_sizes"),
        (["agent=dqn", "agent.total_steps=5"], "unknown key agent.total_steps"),
        (["train.total_step=5"], "did you mean train.total_steps"),
        (["sed=1"], "did you mean seed"),
        (["agent.alpha=abc"], "agent.alpha: expected float, got 'abc'"),
        (["train.reward_mode=future"], "train.reward_mode: expected one of 'immediate', 'return'"),
        (["seed=1.5"], "seed: expected int"),
        (["agent=linucbb"], "agent=linucbb: no such option; choose one of"),
        (["ope.select=nope"], "ope.select='nope'"),
        (["generate.partitions=0"], "generate.partitions=0: must be at least 1"),
        (["generate.partitions=-3"], "generate.partitions=-3: must be at least 1"),
        (["ope.weight_share=0"], "ope.weight_share=0"),
        (["-m", "agent=linucb,lints", "agent.alpha=1"], "unknown key agent.alpha (agent=lints)"),
    ],
)
def test_config_mistakes_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides([o for o in overrides if not o.startswith("-")])
    assert message in str(err.value)


def test_covering_sets_use_every_value_once() -> None:
    sets = covering_sets(["agent=linucb,lints,dqn", "seed=0,1", "train.total_steps=5"])
    assert len(sets) == 3
    assert {s[0] for s in sets} == {"agent=linucb", "agent=lints", "agent=dqn"}
    assert {s[1] for s in sets} == {"seed=0", "seed=1"}


def test_help_lists_groups_and_the_command_keys() -> None:
    text = help_text("train")
    assert "agent " in text and "linucb (default)" in text and "experiment" in text
    assert "total_steps: 100000" in text and "# decisions (env steps)" in text
    proc = subprocess.run(
        [sys.executable, "-m", "supportrl.experiments.cli", "train", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "config groups" in proc.stdout
