"""Reading rule files (YAML) into :class:`~supportrl.agents.rules.RulePolicy` objects, safely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supportrl.agents.rules.policy import (
    _FILE_KEYS,
    RULE_POLICY_TARGET,
    RULE_POLICY_TARGETS,
    RulePolicy,
)

from supportrl.files import brief, read_yaml

# --------------------------------------------------------------------------- loading


def rule_policy_from_dict(
    data: Mapping[str, Any],
    actions: Sequence[str],
    name: str,
    *,
    source: str | None = None,
) -> RulePolicy:
    """Build a :class:`RulePolicy` from a rule-file mapping (keys as in docs/rules.md).

    ``_target_``, if present, must be exactly ``agents.rules.RulePolicy``: the target is
    checked, never imported. ``rules`` and ``default`` are required (``rules: []`` is fine);
    ``epsilon`` defaults to 0. ``source`` (e.g. a file path) is named in error messages.
    """
    where = f"rule policy {name!r}" + (f" ({source})" if source else "")
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where}: a rule policy must be a mapping with keys 'rules' and 'default' "
            f"(optional: '_target_', 'epsilon'), got {type(data).__name__}"
        )
    target = data.get("_target_", RULE_POLICY_TARGET)
    if target not in RULE_POLICY_TARGETS:
        raise ValueError(
            f"{where}: _target_ must be {RULE_POLICY_TARGET!r}, got {brief(target)}; "
            f"rule files cannot name other classes"
        )
    unknown = sorted(map(str, set(data) - _FILE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed keys are {sorted(_FILE_KEYS)}")
    for required in ("rules", "default"):
        if required not in data:
            raise ValueError(
                f"{where}: missing key {required!r} (a rule policy needs 'rules' and "
                f"'default'; write 'rules: []' for a policy that always takes the default)"
            )
    rules = data["rules"]
    if not isinstance(rules, Sequence) or isinstance(rules, str | bytes):
        raise ValueError(
            f"{where}: 'rules' must be a list of {{when, action}} mappings "
            f"(write 'rules: []' for none), got {brief(rules)}"
        )
    return RulePolicy(
        actions,
        rules,
        data["default"],
        data.get("epsilon", 0.0),
        name=name,
        source=source,
    )


def load_rule_policy(path: str | Path, actions: Sequence[str]) -> RulePolicy:
    """Read a rule file (YAML, docs/rules.md) safely; the policy is named by the file's stem.

    The file is parsed safely (:func:`supportrl.files.read_yaml`: bounded size, depth and
    alias expansion) and its ``_target_`` is checked, never
    instantiated. A missing, unreadable or non-YAML file, or one that is not a mapping, is a
    ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: rule file not found")
    if not path.is_file():
        raise ValueError(f"{path}: cannot read rule file: not a file")
    data = read_yaml(path)  # bounded: bytes, nesting, nodes after alias expansion
    if data is None:
        raise ValueError(f"{path}: the rule file is empty")
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a rule file must be a YAML mapping with keys 'rules' and 'default', "
            f"got {type(data).__name__}"
        )
    return rule_policy_from_dict(data, actions, name=path.stem, source=str(path))


def load_rule_panel(directory: str | Path, actions: Sequence[str]) -> dict[str, RulePolicy]:
    """The deterministic rule policies (``rules_*.yaml`` with epsilon 0) in ``directory``, by stem.

    This is the panel that fidelity, regret and OPE accuracy are measured on.
    """
    panel: dict[str, RulePolicy] = {}
    for path in sorted(Path(directory).glob("rules_*.yaml")):
        policy = load_rule_policy(path, actions)
        if policy.epsilon == 0:
            panel[path.stem] = policy
    return panel
