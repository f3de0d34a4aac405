"""Hypothesis fuzz of artifact folders (issue 22): whatever bytes, names and manifest
values a folder holds, ``Predictor.load`` ends in a Predictor or a ``ValueError``
(:class:`ArtifactError` for the folder) with a bounded message; a loaded one decides with
a real distribution. Fast tier: a few dozen examples."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supportrl.agents.bandits import make_bandit
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.agents.rules import load_rule_policy
from supportrl.experiments.export import export_policy
from supportrl.experiments.repo_files import REPO_ROOT
from supportrl.serving import InvalidStateError, Predictor
from supportrl.simulators.synthetic import SyntheticWorld

WORLD = SyntheticWorld()
STATE = {
    "turn": 1,
    "previous_action": "clarify",
    "intent": "billing",
    "sentiment": -0.3,
    "tier": "free",
    "channel": "chat",
    "tenure_months": 12,
    "prior_contacts_30d": 1,
}
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
    deadline=None,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=1)
    policies = {
        "dqn": QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network),
        "linucb": make_bandit("linucb", WORLD.actions, WORLD.feature_spec, seed=0),
        "rules": load_rule_policy(REPO_ROOT / "configs/rules/rules_production.yaml", WORLD.actions),
    }
    return {
        kind: export_policy(p, root / kind, feature_spec=WORLD.feature_spec)
        for kind, p in policies.items()
    }


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["actions", "features", "policy", "exploration", "fallback_action", "files", "format"]


def _resign(directory: Path, manifest: object) -> None:
    text = json.dumps(manifest)
    (directory / "manifest.json").write_text(text)
    (directory / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest())


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, str, object, object]:
    kind = draw(st.sampled_from(["dqn", "linucb", "rules"]))
    what = draw(
        st.sampled_from(["manifest_key", "policy_key", "extra_file", "flip_byte", "rules", "link"])
    )
    key = draw(st.sampled_from(KEYS)) if what == "manifest_key" else draw(st.text(max_size=8))
    value = draw(JSON)
    return kind, what, key, value


def _mutate(directory: Path, what: str, key: object, value: object) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    listed = sorted(manifest["files"])
    if what == "manifest_key":
        manifest[key] = value
        _resign(directory, manifest)
    elif what == "policy_key":
        manifest["policy"][str(key) or "file"] = value
        _resign(directory, manifest)
    elif what == "extra_file":
        name = "".join(c for c in str(key) if c.isalnum()) or "x"
        (directory / name).write_bytes(json.dumps(value).encode())
    elif what == "flip_byte":
        target = directory / listed[hash(str(key)) % len(listed)]
        data = bytearray(target.read_bytes())
        data[hash(str(value)) % len(data)] ^= 0xFF
        target.write_bytes(bytes(data))
    elif what == "rules" and (directory / "rules.json").exists():
        rules = json.loads((directory / "rules.json").read_text())
        rules["rules"][0]["when"] = value
        (directory / "rules.json").write_text(json.dumps(rules))
        manifest["files"]["rules.json"] = hashlib.sha256(
            (directory / "rules.json").read_bytes()
        ).hexdigest()
        _resign(directory, manifest)
    elif what == "link":
        target = directory / listed[0]
        target.unlink()
        os.symlink("/dev/zero", target)


@FUZZ
@given(mutation=mutations())
def test_a_mutated_artifact_loads_cleanly_or_is_refused(
    artifacts: dict[str, Path], mutation: tuple[str, str, object, object]
) -> None:
    kind, what, key, value = mutation
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "artifact"
        shutil.copytree(artifacts[kind], directory)
        _mutate(directory, what, key, value)
        try:
            predictor = Predictor.load(directory)
        except ValueError as exc:  # ArtifactError, or a check of the Predictor's settings
            assert len(str(exc)) < 2000
            return
        try:
            decision = predictor.decide(STATE)
        except InvalidStateError:
            return  # a manifest edit changed the feature spec: the state no longer fits
        probs = np.array(list(decision.probabilities.values()))
        assert np.isfinite(probs).all() and (probs >= 0).all()
        assert probs.sum() == pytest.approx(1.0)
