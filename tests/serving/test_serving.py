"""Serving artifacts: export -> Predictor gives the framework policy's probabilities, checksums,
input validation, fallback, decision logs, the serving package's import footprint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.bandits import make_bandit
from supportrl.agents.base import Policy
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.agents.rules import load_rule_policy
from supportrl.agents.training import train_bandit
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.export import export_policy
from supportrl.experiments.repo_files import REPO_ROOT
from supportrl.serving import ArtifactError, DecisionLogger, InvalidStateError, Predictor
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

WORLD = SyntheticWorld()
ATOL = 1e-5


@pytest.fixture(scope="module")
def logged_states() -> dict[str, np.ndarray]:
    """10,000+ logged states of the synthetic world (the states OPE evaluates policies on)."""
    logs = generate_logs(4000, seed=11).logs
    states = logs.states()
    assert logs.n_turns >= 10_000
    return states


def trained_bandit(kind: str, **params: float) -> object:
    agent = make_bandit(kind, WORLD.actions, WORLD.feature_spec, seed=3, **params)
    train_bandit(agent, WORLD, RewardSpec(), total_steps=3000, seed=3, progress=False)
    return agent


def dqn_policy(epsilon: float = 0.0) -> QPolicy:
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (32, 32), True, seed=5)
    return QPolicy(
        actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network, epsilon=epsilon
    )


def rule_policy() -> object:
    return load_rule_policy(REPO_ROOT / "configs/rules/rules_production.yaml", WORLD.actions)


def export(policy: object, tmp_path: Path, name: str = "artifact", **kw: object) -> Path:
    rule_file = kw.pop("rule_file", None)
    return export_policy(
        policy,
        tmp_path / name,
        feature_spec=WORLD.feature_spec,
        bounds={"tenure_months": (0.0, None), "prior_contacts_30d": (0.0, None)},
        rule_file=rule_file,
        **kw,
    )


@pytest.mark.parametrize("kind", ["dqn", "linucb", "lints", "rules"])
def test_artifact_reproduces_the_policy(
    kind: str, tmp_path: Path, logged_states: dict[str, np.ndarray]
) -> None:
    if kind == "dqn":
        policy = dqn_policy(epsilon=0.1)
    elif kind == "rules":
        policy = rule_policy()
    else:
        policy = trained_bandit(kind)
    artifact = export(policy, tmp_path)
    predictor = Predictor.load(artifact)
    assert isinstance(predictor, Policy)
    expected = policy.action_probs(logged_states)
    got = predictor.action_probs(logged_states)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
    # not a constant policy: the comparison above could otherwise pass by accident
    assert len(np.unique(expected.argmax(axis=1))) > 1
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["policy"]["kind"] == kind
    assert manifest["actions"] == list(WORLD.actions)
    assert not any(p.suffix in (".pkl", ".pickle", ".pt") for p in artifact.iterdir())


def test_one_state_and_batch_agree(tmp_path: Path, logged_states: dict[str, np.ndarray]) -> None:
    policy = dqn_policy()
    predictor = Predictor.load(export(policy, tmp_path), seed=0)
    rows = [{k: v[i].item() for k, v in logged_states.items()} for i in range(50)]
    batch = predictor.decide_batch(rows)
    columns = predictor.decide_batch({k: v[:50] for k, v in logged_states.items()})
    np.testing.assert_allclose(batch.probabilities, columns.probabilities)
    for i, row in enumerate(rows):
        d = predictor.decide(row)
        np.testing.assert_allclose(
            list(d.probabilities.values()), batch.probabilities[i], atol=1e-6
        )
        assert d.propensity == pytest.approx(d.probabilities[d.action])
        assert not d.fallback


def test_epsilon_at_load_keeps_propensities_positive(
    tmp_path: Path, logged_states: dict[str, np.ndarray]
) -> None:
    artifact = export(dqn_policy(), tmp_path)
    greedy = Predictor.load(artifact).action_probs(logged_states)
    assert (greedy == 0).any()
    explore = Predictor.load(artifact, epsilon=0.2).action_probs(logged_states)
    assert explore.min() >= 0.2 / len(WORLD.actions) - 1e-7
    np.testing.assert_allclose(explore, 0.8 * greedy + 0.2 / len(WORLD.actions), atol=1e-6)
    # epsilon recorded at export is the default at load
    artifact2 = export(dqn_policy(), tmp_path, "explore", epsilon=0.3)
    assert Predictor.load(artifact2).epsilon == pytest.approx(0.3)


@pytest.mark.parametrize("target", ["policy.onnx", "manifest.json", "manifest.sha256"])
def test_a_changed_byte_is_refused(target: str, tmp_path: Path) -> None:
    artifact = export(dqn_policy(), tmp_path)
    path = artifact / target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="SHA-256|changed"):
        Predictor.load(artifact)


def test_unsupported_schema_and_missing_file(tmp_path: Path) -> None:
    artifact = export(trained_bandit("linucb"), tmp_path)
    (artifact / "theta.npy").unlink()
    with pytest.raises(ArtifactError, match="theta.npy: missing"):
        Predictor.load(artifact)
    with pytest.raises(ArtifactError, match="not an artifact"):
        Predictor.load(tmp_path / "nowhere")


GOOD = {
    "turn": 1,
    "previous_action": "clarify",
    "intent": "billing",
    "sentiment": -0.3,
    "tier": "free",
    "channel": "chat",
    "tenure_months": 12,
    "prior_contacts_30d": 1,
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"tier": "platinum"}, "tier", "unknown category 'platinum'"),
        ({"intent": None}, "intent", "expected a string"),
        ({"sentiment": float("nan")}, "sentiment", "must be finite"),
        ({"sentiment": 1.5}, "sentiment", "out of range"),
        ({"turn": -1}, "turn", "out of range"),
        ({"turn": 1.5}, "turn", "whole number"),
        ({"tenure_months": -3}, "tenure_months", "out of range"),
        ({"tenure_months": 1e300}, "tenure_months", "too large to encode"),
        ({"tenure_months": 10**400}, "tenure_months", "must be finite"),
        ({"tenure_months": "long"}, "tenure_months", "expected a number"),
        ({"sentiment": True}, "sentiment", "expected a number"),
        ({"channel": ...}, "channel", "missing key 'channel'"),
    ],
)
def test_invalid_states(change: dict, field: str, message: str, tmp_path: Path) -> None:
    state = {**GOOD, **change}
    state = {k: v for k, v in state.items() if v is not ...}
    artifact = export(dqn_policy(), tmp_path)
    strict = Predictor.load(artifact)
    with pytest.raises(InvalidStateError, match=message) as err:
        strict.decide(state)
    assert err.value.field == field
    with pytest.raises(InvalidStateError, match=message):
        strict.decide_batch([GOOD, state])
    lenient = Predictor.load(
        artifact, on_invalid="fallback", fallback_action="escalate_human", epsilon=0.1
    )
    d = lenient.decide(state)
    assert d.fallback and message in d.reason
    # the fallback is deterministic: no exploration on states the policy cannot read
    assert d.action == "escalate_human" and d.propensity == 1.0
    assert d.probabilities["escalate_human"] == 1.0
    batch = lenient.decide_batch([GOOD, state, GOOD])
    assert batch.fallback.tolist() == [False, True, False]
    assert message in batch.reasons[1]
    np.testing.assert_allclose(batch.probabilities[0], batch.probabilities[2])


def test_fallback_needs_an_action(tmp_path: Path) -> None:
    artifact = export(dqn_policy(), tmp_path)
    with pytest.raises(ValueError, match="fallback_action"):
        Predictor.load(artifact, on_invalid="fallback")
    with pytest.raises(ValueError, match="unknown action"):
        Predictor.load(artifact, fallback_action="dance")


def test_importing_serving_pulls_no_heavy_stack() -> None:
    code = (
        "import sys; import supportrl.serving, supportrl.serving.http, supportrl.serving.drift; "
        "heavy = [m for m in ('torch', 'ray', 'hydra', 'pandas', 'omegaconf', 'scipy', "
        "'supportrl.agents', 'supportrl.envs', 'supportrl.simulators', 'supportrl.ope', "
        "'supportrl.experiments') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    env = {"PYTHONPATH": "", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_decision_log_round_trip(tmp_path: Path) -> None:
    predictor = Predictor.load(export(rule_policy(), tmp_path, epsilon=0.1), seed=1)
    logger = DecisionLogger.for_predictor(tmp_path / "log", predictor, part_rows=4)
    for c in range(5):
        previous = "none"
        for turn in range(c % 3 + 1):
            state = {**GOOD, "turn": turn, "previous_action": previous}
            d = predictor.decide(state)
            logger.log(f"conv{c}", state, d.action, d.propensity)
            previous = d.action
        logger.record_outcome(
            f"conv{c}", "resolved" if c % 2 else "abandoned", csat=4.0 if c == 1 else None
        )
    with pytest.raises(ValueError, match="expected 0"):
        logger.log("late", {**GOOD, "turn": 2}, "clarify", 0.5)
    with pytest.raises(KeyError, match="no decisions"):
        logger.record_outcome("nobody", "resolved")
    logger.log("open", {**GOOD, "turn": 0, "previous_action": "none"}, "clarify", 0.5)
    logger.close()
    assert len(logger.parts) >= 2  # several parts, read back as one log
    logs = load_conversations(tmp_path / "log")
    assert logs.n_conversations == 6
    assert logs.n_turns == sum(c % 3 + 1 for c in range(5)) + 1
    by_id = dict(zip(logs.conversation_id.tolist(), range(logs.n_conversations), strict=True))
    last = logs.offsets[1:] - 1
    assert logs.outcome[last[by_id["open"]]] == 0  # cut off: continue
    assert logs.csat[last[by_id["conv1"]]] == 4.0
    assert np.all((logs.propensity > 0) & (logs.propensity <= 1))
    # no temporary files left behind
    assert all(p.suffix == ".parquet" for p in (tmp_path / "log").iterdir())
    # a crash while writing a part leaves only its temporary file, which readers skip
    (tmp_path / "log" / ".part-crashed-00009.parquet.tmp").write_bytes(b"PAR1 half a part")
    assert load_conversations(tmp_path / "log").n_turns == logs.n_turns


def test_drift_report_flags_shifted_customers_not_the_same_population() -> None:
    from supportrl.agents.export import training_summary
    from supportrl.serving.drift import drift_report

    train = generate_logs(3000, seed=1).logs
    summary = training_summary(train.states(), WORLD.feature_spec, WORLD.actions, train.action)
    same = generate_logs(3000, seed=2).logs
    labels = np.asarray(WORLD.actions)[same.action]
    calm = drift_report(summary, same.states(), labels)
    assert calm.drifted == [] and max(calm.psi.values()) < 0.1
    assert calm.verdict().startswith("no drift")

    shifted = dict(same.states())
    shifted["sentiment"] = np.clip(shifted["sentiment"] - 0.6, -1, 1)
    tier = shifted["tier"].astype(object)
    tier[:50] = "vip"
    shifted["tier"] = tier
    report = drift_report(summary, shifted, labels)
    assert report.drifted == ["sentiment", "tier"]
    assert report.unseen == {"tier": {"vip": 50}}
    assert report.psi["sentiment"] > 0.25 and report.psi["intent"] < 0.1
    assert "unlike those it was trained" in report.verdict()


def test_deploying_an_artifact_matches_the_policy_in_the_world(tmp_path: Path) -> None:
    """Same seed: the deployed artifact's on-policy value is the policy's Monte Carlo value."""
    from supportrl.experiments.deploy import deploy_stage
    from supportrl.simulators.synthetic import true_value

    policy = rule_policy()
    policy.epsilon = 0.2
    artifact = export(policy, tmp_path)
    deployed = deploy_stage(
        artifact, tmp_path / "log", world=WORLD, reward=RewardSpec(), n_conversations=2000, seed=4
    )
    truth = true_value(policy, 2000, world=WORLD, reward=RewardSpec(), seed=4)
    assert deployed.on_policy_value == pytest.approx(truth.value, abs=1e-12)
    assert deployed.epsilon == 0.2
    logs = load_conversations(deployed.log)
    assert logs.n_conversations == 2000 and logs.n_turns == deployed.n_turns
    # the logged propensities are the artifact's probabilities of the logged actions
    probs = Predictor.load(artifact).action_probs(logs.states())
    np.testing.assert_allclose(logs.propensity, probs[np.arange(logs.n_turns), logs.action])
