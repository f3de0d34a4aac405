"""Load any saved policy from a path: rule YAML files and agent checkpoints alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from supportrl.agents.base import Policy


def policy_name(path: str | Path) -> str:
    """Policies are named by their YAML file's stem; a checkpoint directory by its agent kind
    and the directory (``linucb@<run>`` for ``<run>/checkpoint``)."""
    path = Path(path)
    if not path.is_dir():
        return path.stem
    if (path / "manifest.json").exists():  # a serving artifact (supportrl export)
        import json

        try:
            kind = str(json.loads((path / "manifest.json").read_text())["policy"]["kind"])
        except (OSError, ValueError, KeyError, TypeError):
            kind = "policy"
        where = path.parent.name if path.name == "artifact" and path.parent.name else path.name
        return f"{kind}-artifact@{where}"
    kind = "dqn" if (path / "policy.json").exists() else None
    if (path / "bandit.json").exists():
        from supportrl.files import read_json

        try:  # bounded: the file is checked properly when the policy loads
            meta = read_json(path / "bandit.json")
            kind = str(meta.get("kind", "bandit"))[:40] if isinstance(meta, dict) else "bandit"
        except (OSError, ValueError):
            kind = "bandit"
    where = path.parent.name if path.name == "checkpoint" and path.parent.name else path.name
    return f"{kind}@{where}" if kind else where


def load_policy(path: str | Path, actions: Sequence[str]) -> Policy:
    """A policy from ``path``: a rule-policy YAML file (docs/rules.md) or a checkpoint
    directory written by ``supportrl train`` (bandits; DQN when available), or an artifact
    directory written by ``supportrl export`` (loaded as a :class:`supportrl.serving.Predictor`).

    Nothing named in the file is imported or executed; the kind of checkpoint is looked up
    in fixed registries.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such policy file or checkpoint directory")
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise ValueError(f"{path}: a policy file must be a rule-policy .yaml")
        from supportrl.agents.rules import load_rule_policy

        return load_rule_policy(path, actions)
    if (path / "bandit.json").exists():
        from supportrl.agents.bandits import load_bandit

        policy = load_bandit(path)
    elif (path / "policy.json").exists():
        from supportrl.agents.dqn import load_q_policy

        policy = load_q_policy(path)
    elif (path / "manifest.json").exists():  # a serving artifact: checksums verified on load
        from supportrl.serving import Predictor

        policy = Predictor.load(path)
    else:
        raise ValueError(
            f"{path}: not a checkpoint or artifact directory (no bandit.json, policy.json "
            "or manifest.json)"
        )
    if tuple(policy.actions) != tuple(actions):
        raise ValueError(
            f"{path}: the policy's actions {list(policy.actions)} differ from the data's {list(actions)}"
        )
    return policy
