"""``supportrl export run=DIR``: write a policy as a serving artifact.

``run`` is a ``train`` run directory (its ``result.json`` names the checkpoint), a
checkpoint directory (DQN, LinUCB, LinTS) or a rule-policy YAML file. The artifact goes
to ``<run_dir>/artifact/`` (layout: docs/artifact.md); ``result.json`` is
``{"artifact": PATH, "policy": KIND, "source": PATH}``.

The feature spec comes from the checkpoint (rule files: from ``data.turns`` when given,
else from the synthetic world). The training-data summary in the manifest (for drift
checks) and the allowed ranges of context features come from ``data.turns`` when given,
else from ``export.summary_conversations`` conversations of the synthetic world.
Options: ``export.epsilon`` (exploration the artifact applies; null keeps the policy's),
``export.fallback_action`` (action for invalid states when serving with the fallback).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from supportrl.experiments.common import (
    CONFIG_PATH,
    UserError,
    finish,
    load_data,
    resolve_shipped,
    run_dir,
    to_plain,
    user_errors,
    world_from_cfg,
)
from supportrl.simulators.logs import LoggedConversations


@dataclass(frozen=True)
class ExportSource:
    """What ``run=`` points at, resolved."""

    policy_path: Path
    """The rule file or checkpoint directory."""
    training: dict[str, Any]
    """Training config and results recorded in the manifest."""
    evaluation: dict[str, Any]


def resolve_source(path: Path) -> ExportSource:
    """A train run directory, a checkpoint directory or a rule YAML -> :class:`ExportSource`."""
    if not path.exists():
        raise UserError(f"run={path}: no such file or directory")
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise UserError(
                f"run={path}: expected a rule-policy .yaml, a checkpoint or a train run"
            )
        return ExportSource(path, {"kind": "rules", "file": str(path)}, {})
    if (path / "bandit.json").exists() or (path / "policy.json").exists():
        return ExportSource(path, _checkpoint_meta(path), {})
    result_path = path / "result.json"
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        checkpoint = result.get("checkpoint")
        if not checkpoint:
            raise UserError(f"{result_path}: names no checkpoint; is {path} a train run?")
        training = {
            "run": str(path),
            "result": {k: v for k, v in result.items() if k != "checkpoint"},
            **_checkpoint_meta(Path(checkpoint)),
        }
        config = path / ".hydra" / "config.yaml"
        if config.is_file():
            import yaml

            training["config"] = yaml.safe_load(config.read_text())
        evaluation = {}
        if "final_return" in result:
            evaluation["final_return"] = {
                "value": result["final_return"],
                "source": result.get(
                    "final_return_source", f"simulated in env={result.get('env')}"
                ),
            }
        return ExportSource(Path(checkpoint), training, evaluation)
    raise UserError(
        f"run={path}: not a train run (no result.json), a checkpoint (no bandit.json or "
        "policy.json) or a rule file"
    )


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    for name in ("bandit.json", "policy.json"):
        if (path / name).is_file():
            meta = json.loads((path / name).read_text())
            keep = ("kind", "hyperparameters", "network", "epsilon", "format_version")
            return {"checkpoint": str(path), **{k: meta[k] for k in keep if k in meta}}
    return {"checkpoint": str(path)}


def export_stage(
    source: Path,
    out: Path,
    *,
    reference: LoggedConversations,
    epsilon: float | None = None,
    fallback_action: str | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> Path:
    """Export the policy at ``source`` (see :func:`resolve_source`) into ``out`` (new).

    ``reference`` is the data the policy was trained and evaluated on: its states give
    the training-data summary, the allowed ranges of context features and, for rule
    files, the feature spec. ``evaluation`` (e.g. OPE estimates) is added to the manifest.
    """
    from supportrl.agents.export import export_policy, numeric_bounds, training_summary
    from supportrl.agents.loading import load_policy, policy_name
    from supportrl.envs.features import FeatureSpec, build_feature_spec

    resolved = resolve_source(source)
    policy = load_policy(resolved.policy_path, reference.actions)
    spec = getattr(policy, "feature_spec", None)
    states = reference.states()
    if not isinstance(spec, FeatureSpec):
        spec = build_feature_spec(
            states,
            actions=reference.actions,
            categorical=reference.categorical,
            numeric=reference.numeric,
        )
    return export_policy(
        policy,
        out,
        feature_spec=spec,
        name=policy_name(resolved.policy_path),
        source=str(source),
        epsilon=epsilon,
        fallback_action=fallback_action,
        bounds=numeric_bounds(states, list(spec.numeric)),
        training=resolved.training,
        evaluation={**resolved.evaluation, **dict(evaluation or {})},
        training_data=training_summary(states, spec, reference.actions, reference.action),
        rule_file=resolved.policy_path if resolved.policy_path.is_file() else None,
    )


def reference_logs(cfg: DictConfig) -> LoggedConversations:
    """``data.turns`` when given, else a sample of the synthetic world's logged conversations."""
    if cfg.data.turns is not None:
        data = load_data(cfg)
        if not isinstance(data, LoggedConversations):
            raise UserError("export: data must be conversation logs (data.turns=PATH)")
        return data
    from supportrl.simulators.synthetic import generate_logs

    world = world_from_cfg(cfg)
    n = int(cfg.export.summary_conversations)
    return generate_logs(n, seed=int(cfg.seed), world=world).logs


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.run is None:
        raise UserError("run is required: run=DIR (a train run, a checkpoint or a rule .yaml)")
    source = resolve_shipped(str(cfg.run))
    reference = reference_logs(cfg)
    artifact = export_stage(
        source,
        run_dir() / "artifact",
        reference=reference,
        epsilon=to_plain(cfg.export.epsilon),
        fallback_action=to_plain(cfg.export.fallback_action),
    )
    manifest = json.loads((artifact / "manifest.json").read_text())
    kind = manifest["policy"]["kind"]
    return finish(
        {"artifact": str(artifact), "policy": kind, "source": str(source)},
        f"export: {kind} policy from {source} -> {artifact} "
        f"({len(manifest['files'])} files, epsilon {manifest['exploration']['epsilon']})",
    )


if __name__ == "__main__":
    main()
