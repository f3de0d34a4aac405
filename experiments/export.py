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

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.agents.base import Policy
from supportrl.envs.features import FeatureSpec
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import load_data, to_plain, world_from_cfg
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import output, run_dir
from supportrl.serving.artifact import FORMAT, SCHEMA_VERSION, redact_paths, write_manifest
from supportrl.simulators.logs import LoggedConversations

from supportrl.files import brief, read_json, read_yaml
from supportrl.outputs import CREATED


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
        result = read_json(result_path)
        if not isinstance(result, dict):
            raise UserError(
                f"{result_path}: expected a JSON object (a train run's result), got {brief(result)}"
            )
        checkpoint = result.get("checkpoint")
        if not checkpoint or not isinstance(checkpoint, str):
            raise UserError(f"{result_path}: names no checkpoint; is {path} a train run?")
        training = {
            "run": str(path),
            "result": {k: v for k, v in result.items() if k != "checkpoint"},
            **_checkpoint_meta(Path(checkpoint)),
        }
        config = path / ".hydra" / "config.yaml"
        if config.is_file():
            training["config"] = read_yaml(config)  # bounded: no alias bomb, no deep nesting
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
            meta = read_json(path / name)
            if not isinstance(meta, dict):
                raise UserError(f"{path / name}: expected a JSON object, got {brief(meta)}")
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
    from supportrl.agents.export import numeric_bounds, training_summary
    from supportrl.envs.features import FeatureSpec, build_feature_spec
    from supportrl.experiments.loading import load_policy, policy_name

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
    if not isinstance(getattr(policy, "feature_spec", None), FeatureSpec):
        # a rule policy: type errors in its conditions surface here, before anything is written
        policy.action_probs({k: v[:100] for k, v in states.items()})
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


def _checked_export(
    policy: Policy,
    directory: Path,
    feature_spec: FeatureSpec | None,
    fallback_action: str | None,
) -> tuple[FeatureSpec, list[str]]:
    """:func:`export_policy`'s arguments checked before anything is written: the feature
    spec to record and the action catalogue."""
    if directory.exists():
        raise ValueError(f"{directory}: already exists; export into a new directory")
    spec = feature_spec if feature_spec is not None else getattr(policy, "feature_spec", None)
    if spec is None:
        raise ValueError(f"export: {type(policy).__name__} has no feature spec; pass feature_spec")
    actions = list(policy.actions)
    if fallback_action is not None and fallback_action not in actions:
        raise ValueError(
            f"fallback_action: unknown action {fallback_action!r}; catalogue is {actions}"
        )
    return spec, actions


def export_policy(
    policy: Policy,
    directory: str | Path,
    *,
    feature_spec: FeatureSpec | None = None,
    name: str = "policy",
    source: str | None = None,
    epsilon: float | None = None,
    fallback_action: str | None = None,
    bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    rule_file: str | Path | None = None,
) -> Path:
    """Write ``policy`` as an artifact into the new directory ``directory``.

    Args:
        policy: a :class:`~supportrl.agents.dqn.QPolicy`, :class:`~supportrl.agents.bandits.LinUCB`,
            :class:`~supportrl.agents.bandits.LinTS` or :class:`~supportrl.agents.rules.RulePolicy`.
        feature_spec: the state encoding; defaults to the policy's own (rules have none:
            give the spec of the data or world they serve).
        epsilon: exploration the artifact applies by default; None keeps the policy's own
            (``policy.epsilon``, 0 for bandits).
        fallback_action: default action for invalid states when the Predictor is loaded
            with ``on_invalid="fallback"`` (None: the caller must choose at load).
        bounds: allowed ranges of context numeric features (:func:`supportrl.agents.export.numeric_bounds`).
        training, evaluation, training_data: recorded in the manifest as given.
        rule_file: the rule policy's YAML file, copied as ``policy.yaml``.

    Written to a new, uniquely named hidden directory beside ``directory`` first and
    renamed, so a failure leaves nothing behind and nothing that existed is removed.
    Absolute paths in the manifest (training data, run and checkpoint folders) are cut
    to their last part: ``GET /manifest`` serves it. Raises ValueError for a policy kind
    that cannot be exported or an existing directory.
    """
    from supportrl.agents.export import feature_manifest, write_policy_files

    directory = Path(directory)
    spec, actions = _checked_export(policy, directory, feature_spec, fallback_action)
    records = {"training": training, "evaluation": evaluation, "training_data": training_data}
    with CREATED.new_directory(directory, "export into a new directory") as tmp:
        info = write_policy_files(policy, tmp, spec, rule_file)
        own = float(getattr(policy, "epsilon", 0.0))
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "name": name,
            "source": source,
            "actions": actions,
            "features": feature_manifest(spec, bounds),
            "policy": info["policy"],
            "exploration": {
                "epsilon": own if epsilon is None else float(epsilon),
                "policy_epsilon": own,
            },
            "fallback_action": fallback_action,
            **{k: dict(v or {}) for k, v in records.items()},
            "files": info["files"],
        }
        write_manifest(tmp, redact_paths(_finite(manifest)))
    return directory


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as None (the manifest is strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


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


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.run is None:
        raise UserError("run is required: run=DIR (a train run, a checkpoint or a rule .yaml)")
    source = resolve_shipped(str(cfg.run))
    reference = reference_logs(cfg)
    artifact = export_stage(
        source,
        output(run_dir() / "artifact"),
        reference=reference,
        epsilon=to_plain(cfg.export.epsilon),
        fallback_action=to_plain(cfg.export.fallback_action),
    )
    manifest = read_json(artifact / "manifest.json")
    kind = manifest["policy"]["kind"]
    return finish(
        {"artifact": str(artifact), "policy": kind, "source": str(source)},
        f"export: {kind} policy from {source} -> {artifact} "
        f"({len(manifest['files'])} files, epsilon {manifest['exploration']['epsilon']})",
    )


if __name__ == "__main__":
    main()
