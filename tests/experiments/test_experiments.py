"""A/B experiments: the serving object, the decision log, the always-valid analysis, rounds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from supportrl.agents.rules import load_rule_policy
from supportrl.envs.collect import simulate
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.abtest import abtest_stage
from supportrl.experiments.deploy import experiment_stage
from supportrl.experiments.export import export_policy
from supportrl.experiments.rounds import arms_to_stop, conversations_left, shortlist, stop_arms
from supportrl.ope.abtest import (
    ExperimentData,
    analyse,
    confidence_sequence,
    difference_terms,
    srm_test,
)
from supportrl.serving import DecisionLogger
from supportrl.serving.experiment import (
    Experiment,
    ExperimentConfig,
    ExperimentError,
    mixture_propensities,
    read_experiment_file,
)
from supportrl.serving.http import create_app
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld

from tests.helpers import REPO, result_of, supportrl
from tests.serving.test_serving_http import STATE, call, free_port

WORLD = SyntheticWorld()
RULES = REPO / "configs" / "rules"


def rule_artifact(directory: Path, name: str) -> Path:
    path = RULES / f"{name}.yaml"
    return export_policy(
        load_rule_policy(path, WORLD.actions),
        directory / name,
        feature_spec=WORLD.feature_spec,
        rule_file=path,
        bounds={"tenure_months": (0.0, None), "prior_contacts_30d": (0.0, None)},
    )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arms")
    return {n: rule_artifact(root, n) for n in ("rules_production", "rules_empathize_negative")}


def write_experiment(path: Path, artifacts: dict[str, Path], **extra: object) -> Path:
    spec = {
        "arms": {
            "control": {
                "artifact": str(artifacts["rules_production"]),
                "share": 0.5,
                "epsilon": 0.1,
            },
            "empathy": {
                "artifact": str(artifacts["rules_empathize_negative"]),
                "share": 0.5,
                "epsilon": 0.1,
            },
        },
        "control": "control",
        "unit": "customer",
        **extra,
    }
    path.write_text(json.dumps(spec))
    return path


# ------------------------------------------------------------------ the experiment file


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"control": "nobody"}, r"control: 'nobody' is not an arm"),
        ({"unit": "session"}, r"unit: must be one of"),
        ({"guardrail": {"metric": "mood"}}, r"guardrail.metric"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
        ({"alpha": 2}, r"alpha: must be in \(0, 1\)"),
    ],
)
def test_experiment_file_errors_name_the_field(artifacts, tmp_path, change, message) -> None:
    path = write_experiment(tmp_path / "exp.json", artifacts, **change)
    with pytest.raises(ExperimentError, match=message):
        read_experiment_file(path)


def test_shares_must_sum_to_one_and_yaml_aliases_are_refused(artifacts, tmp_path) -> None:
    spec = json.loads(write_experiment(tmp_path / "e.json", artifacts).read_text())
    spec["arms"]["empathy"]["share"] = 0.6
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(ExperimentError, match="shares must sum to 1"):
        read_experiment_file(tmp_path / "bad.json")
    (tmp_path / "bomb.yaml").write_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(ExperimentError, match="anchors and aliases"):
        read_experiment_file(tmp_path / "bomb.yaml")


# ------------------------------------------------------------------ assignment and propensity


def test_assignment_is_sticky_follows_shares_and_skips_stopped_arms(artifacts, tmp_path) -> None:
    exp = Experiment.load(write_experiment(tmp_path / "e.json", artifacts), seed=0)
    ids = [f"cust-{i}" for i in range(20_000)]
    first = exp.assign(ids)
    assert (exp.assign(ids) == first).all()  # sticky
    assert abs(first.mean() - 0.5) < 0.02
    exp.set_shares({"control": 0.9, "empathy": 0.1}, "ramp down")
    assert abs(exp.assign(ids).mean() - 0.1) < 0.01
    exp.stop("empathy")
    assert (exp.assign(ids) == 0).all()
    assert [e["event"] for e in exp.events] == ["start", "shares", "shares"]
    with pytest.raises(ExperimentError, match="control arm cannot be stopped"):
        exp.stop("control")


def test_online_propensities_equal_the_batch_mixture(artifacts, tmp_path) -> None:
    """Experiment.decide's per-decision propensities are mixture_propensities of the log."""
    exp = Experiment.load(write_experiment(tmp_path / "e.json", artifacts), seed=3)
    sim = simulate(WORLD, exp.predictors[0], 200, seed=1)
    logs = sim.logs
    states = logs.states()
    online = np.empty(logs.n_turns)
    actions = np.empty(logs.n_turns, dtype=np.int64)
    for c in range(logs.n_conversations):
        for row in range(logs.offsets[c], logs.offsets[c + 1]):
            state = {
                k: v[row].item() if hasattr(v[row], "item") else v[row] for k, v in states.items()
            }
            d = exp.decide(state, conversation_id=f"c{c}", customer_id=f"u{c}")
            online[row] = d.propensity
            actions[row] = WORLD.actions.index(d.action)
        exp.end(f"c{c}")
    probs = np.stack([p.action_probs(states) for p in exp.predictors])
    batch = mixture_propensities(probs, logs.offsets, actions, exp.shares)
    # the posterior after turn t depends on the action actually taken online
    assert batch == pytest.approx(online, rel=1e-12)
    assert (online > 0).all() and (online <= 1).all()


def test_mixture_weights_are_bounded_by_the_inverse_share() -> None:
    """Two opposite deterministic arms: a conversation's product of weights is 1 / share."""
    rng = np.random.default_rng(0)
    n_conv, length = 50, 4
    offsets = np.arange(0, n_conv * length + 1, length)
    pi = np.empty((2, n_conv * length, 3))
    pi[0] = [0.98, 0.01, 0.01]
    pi[1] = [0.01, 0.98, 0.01]
    arm = rng.integers(0, 2, n_conv)
    action = np.repeat(np.where(arm == 0, 0, 1), length)
    p = mixture_propensities(pi, offsets, action, np.array([0.5, 0.5]))
    target = pi[0, np.arange(len(action)), action]
    w = np.exp(np.add.reduceat(np.log(target / p), offsets[:-1]))
    assert w.max() <= 2.0 + 1e-9


# ------------------------------------------------------------------ the analysis


def synthetic(seed: int, n: int, delta: float, shares=(0.5, 0.5)) -> ExperimentData:
    rng = np.random.default_rng(seed)
    arm = (rng.random(n) < shares[1]).astype(np.int64)
    x = rng.normal(size=(n, 2))
    y = 0.2 + x @ np.array([0.6, 0.3]) + rng.normal(0, 0.8, n) + delta * arm
    return ExperimentData(
        arms=("control", "treatment"),
        arm=arm,
        shares=np.tile(np.array([0.5, 0.5]), (n, 1)),
        value=y,
        metrics={"resolution": (y > 0).astype(float)},
        covariates=x,
    )


def test_aa_false_promotions_stay_under_alpha_when_looked_at_every_500() -> None:
    promoted = 0
    for seed in range(60):
        data = synthetic(seed, 20_000, 0.0)
        psi, _ = difference_terms(data, 1, 0, data.value)
        cs = confidence_sequence(psi, 0.05)
        looks = np.arange(499, len(psi), 500)
        promoted += bool((cs.low[looks] > 0).any())
    assert promoted / 60 <= 0.05


def test_a_real_difference_is_promoted_and_a_harm_rolled_back() -> None:
    up = analyse(synthetic(1, 20_000, 0.1), control="control")
    assert up["decision"]["action"] == "promote" and up["decision"]["arm"] == "treatment"
    assert up["differences"]["treatment"]["variance_reduction"] > 0.2  # covariates help
    down = analyse(synthetic(2, 20_000, -0.1), control="control")
    assert down["decision"]["action"] == "roll_back"
    flat = analyse(synthetic(3, 2_000, 0.0), control="control")
    assert flat["decision"]["action"] == "continue"
    assert set(flat["arms"]["control"]) >= {
        "n_conversations",
        "value",
        "ci_low",
        "ci_high",
        "metrics",
    }


def test_srm_flags_a_45_55_split_declared_50_50_and_not_a_true_one() -> None:
    rng = np.random.default_rng(0)
    wrong = np.bincount((rng.random(20_000) < 0.55).astype(int), minlength=2)
    assert srm_test(wrong, np.array([0.5, 0.5]))["flag"]
    fair = np.bincount((rng.random(20_000) < 0.5).astype(int), minlength=2)
    assert not srm_test(fair, np.array([0.5, 0.5]))["flag"]


def test_shortlist_leaves_out_production_and_clearly_worse_candidates() -> None:
    sel = {
        "prod": {"estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2},
        "good": {"estimate": 0.3, "ci_low": -1.0, "ci_high": 1.0},
        "bad": {"estimate": -0.3, "ci_low": -0.5, "ci_high": 0.05},
        "ok": {"estimate": 0.05, "ci_low": -0.2, "ci_high": 0.3},
    }
    assert shortlist(sel, "prod", 2) == ["good", "ok"]


def _analysis(action: str = "continue", flag: bool = False, **diffs: tuple) -> dict:
    """An analysis with ``arm=(estimate, ci_low, ci_high, n_conversations)`` differences."""
    return {
        "decision": {"action": action, "stop": []},
        "srm": {"flag": flag},
        "differences": {
            a: {"estimate": e, "ci_low": lo, "ci_high": hi} for a, (e, lo, hi, _) in diffs.items()
        },
        "arms": {a: {"n_conversations": n} for a, (*_, n) in diffs.items()},
    }


def test_a_dominated_treatment_is_stopped_and_its_traffic_goes_to_the_leader(
    artifacts, tmp_path
) -> None:
    live = ["a", "b", "c"]
    # b's interval lies wholly below a's estimate: dominated; c's reaches above it: kept
    analysis = _analysis(
        a=(0.03, -0.01, 0.07, 5000), b=(-0.02, -0.06, 0.02, 5000), c=(0.0, -0.04, 0.04, 5000)
    )
    assert list(arms_to_stop(analysis, live)) == ["b"]
    assert "dominated by a" in arms_to_stop(analysis, live)["b"]
    assert arms_to_stop(analysis, ["a", "c"]) == {}  # b already stopped
    assert arms_to_stop({**analysis, "decision": {"action": "promote"}}, live) == {}
    assert (
        arms_to_stop(
            _analysis(flag=True, a=(0.03, -0.01, 0.07, 5000), b=(-0.02, -0.06, 0.02, 5000)), live
        )
        == {}
    )
    assert (
        arms_to_stop(_analysis(a=(0.03, -0.01, 0.07, 5000), b=(-0.02, -0.06, 0.02, 50)), live) == {}
    )
    breached = _analysis(a=(0.03, -0.01, 0.07, 5000), c=(-0.09, -0.12, -0.05, 5000))
    breached["decision"]["stop"] = ["c"]
    assert arms_to_stop(breached, live) == {"c": "guardrail breached"}
    # the freed share goes to the treatments still running, to control when none is
    path = tmp_path / "three.json"
    spec = json.loads(write_experiment(path, artifacts).read_text())
    spec["arms"]["control"]["share"] = 0.5
    spec["arms"]["empathy"]["share"] = 0.25
    spec["arms"]["again"] = {**spec["arms"]["empathy"], "share": 0.25}
    path.write_text(json.dumps(spec))
    exp = Experiment.load(path, seed=0)
    stop_arms(exp, {"again": "dominated by empathy"}, at="2026-01-01T00:00:00Z")
    assert exp.shares.tolist() == [0.5, 0.5, 0.0]
    assert exp.events[-1]["reason"] == "stop again: dominated by empathy"
    assert exp.events[-1]["time"] == "2026-01-01T00:00:00Z"
    stop_arms(exp, {"empathy": "guardrail breached"}, at="2026-01-01T01:00:00Z")
    assert exp.shares.tolist() == [1.0, 0.0, 0.0]


def test_an_undecided_experiment_runs_past_its_budget_only_when_a_decision_is_near() -> None:
    from hydra import compose, initialize_config_dir
    from supportrl.experiments.repo_files import CONFIG_PATH
    from supportrl.experiments.stages import loop_settings

    def composed_cfg(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            return compose("config", overrides=list(overrides))

    loop = loop_settings(composed_cfg("loop.conversations=60000", "loop.extend=20000"))
    undecided = {"action": "continue", "conversations_needed": None}
    assert conversations_left(0, None, loop) == 60_000
    assert conversations_left(50_000, undecided, loop) == 10_000
    assert conversations_left(30_000, {"action": "promote"}, loop) == 0
    assert conversations_left(30_000, {"action": "roll_back"}, loop) == 0
    # at the budget: on only while the analysis expects to decide within the extension
    assert conversations_left(60_000, undecided, loop) == 0
    near = {"action": "continue", "conversations_needed": 1_937}
    assert conversations_left(60_000, near, loop) == 20_000
    assert conversations_left(70_000, near, loop) == 10_000
    assert conversations_left(60_000, {**near, "conversations_needed": 20_001}, loop) == 0
    assert conversations_left(80_000, near, loop) == 0
    never = loop_settings(composed_cfg("loop.extend=0"))
    assert conversations_left(never.conversations, near, never) == 0


# ------------------------------------------------------------------ served in process


@pytest.fixture(scope="module")
def served(artifacts, tmp_path_factory) -> Path:
    path = write_experiment(tmp_path_factory.mktemp("exp") / "e.json", artifacts)
    exp = Experiment.load(path, seed=0)
    log = tmp_path_factory.mktemp("served") / "log"
    experiment_stage(exp, log, world=WORLD, reward=RewardSpec(), n_conversations=3000, seed=4)
    return log


def test_experiment_log_is_schema_v1_and_ope_covers_each_arm(served: Path) -> None:
    """The decision log validates, and each arm's policy evaluated off-policy on the whole log
    has a conversation ESS of at least half that arm's conversations."""
    logs = load_conversations(served)
    assert logs.has_propensity and "arm" not in logs.features
    assert np.isfinite(logs.handle_time_s).all()
    exp_desc = json.loads((served / "experiment.json").read_text())
    exp = Experiment.load(
        ExperimentConfig.from_dict({k: exp_desc[k] for k in ("arms", "control", "unit")})
    )
    import pyarrow.dataset as ds

    table = ds.dataset(sorted(str(p) for p in served.glob("*.parquet"))).to_table()
    arm_of = dict(
        zip(
            table.column("conversation_id").to_pylist(),
            table.column("arm").to_pylist(),
            strict=True,
        )
    )
    states = logs.states()
    for k, name in enumerate(exp.arms):
        target = exp.predictors[k].action_probs(states)[np.arange(logs.n_turns), logs.action]
        w = np.exp(np.add.reduceat(np.log(target / logs.propensity), logs.offsets[:-1]))
        ess = w.sum() ** 2 / (w**2).sum()
        n_arm = sum(arm_of[c] == name for c in logs.conversation_id.tolist())
        assert ess >= n_arm / 2, (name, ess, n_arm)


def test_abtest_analyses_the_log(served: Path, tmp_path: Path) -> None:
    result = abtest_stage(served, RewardSpec(), seed=0, segment_by=("intent",))
    assert set(result) >= {"arms", "differences", "srm", "decision"}
    assert set(result["arms"]) == {"control", "empathy"}
    assert sum(a["n_conversations"] for a in result["arms"].values()) == 3000
    d = result["differences"]["empathy"]
    assert d["ci_low"] <= d["estimate"] <= d["ci_high"]
    assert result["decision"]["action"] in ("promote", "roll_back", "continue")
    assert "billing" in result["segments"]["intent"]
    proc = supportrl(tmp_path / "out", "abtest", f"log={served}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = result_of(proc)
    assert out["differences"]["empathy"]["estimate"] == pytest.approx(d["estimate"])
    assert out["srm"]["flag"] is False


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def exp_server(artifacts, tmp_path_factory) -> Iterator[tuple[str, Path, Experiment]]:
    exp = Experiment.load(
        write_experiment(tmp_path_factory.mktemp("e") / "e.json", artifacts), seed=0
    )
    log_dir = tmp_path_factory.mktemp("exp_http") / "log"
    logger = DecisionLogger.for_experiment(log_dir, exp, part_rows=1)
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(experiment=exp, logger=logger),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", log_dir, exp
    srv.should_exit = True
    thread.join(timeout=10)


def test_http_experiment_is_sticky_per_customer_and_logs_arm_and_handle_time(exp_server) -> None:
    base, log_dir, _ = exp_server
    arms: dict[str, set[str]] = {}
    for i in range(40):
        customer = f"customer-{i % 10}"
        cid = f"hc{i}"
        status, d = call(
            base,
            "POST",
            "/v1/decide",
            {"state": STATE, "conversation_id": cid, "customer_id": customer},
        )
        assert status == 200, d
        assert {"action", "arm", "propensity", "decision_id"} <= set(d)
        assert d["decision_id"] == f"{cid}:0"
        arms.setdefault(customer, set()).add(d["arm"])
        status, ok = call(
            base,
            "POST",
            "/v1/outcome",
            {"conversation_id": cid, "outcome": "resolved", "csat": None, "handle_time_s": [42.5]},
        )
        assert status == 200 and ok["recorded"], ok
    assert all(len(a) == 1 for a in arms.values())  # a customer never changes arm
    logs = load_conversations(log_dir)
    assert (logs.handle_time_s == 42.5).all()
    assert logs.customer_id is not None and not any(
        c.startswith("customer-") for c in logs.customer_id
    )
    status, err = call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "x"})
    assert status == 422 and err["field"] == "customer_id"
    status, err = call(base, "POST", "/v1/decide_batch", {"states": [STATE]})
    assert status == 409


def test_http_shares_change_without_restart_and_are_recorded(exp_server) -> None:
    base, log_dir, exp = exp_server
    status, info = call(
        base,
        "POST",
        "/v1/experiment/shares",
        {"shares": {"control": 0.8, "empathy": 0.2}, "reason": "ramp"},
    )
    assert status == 200 and info["shares"] == {"control": 0.8, "empathy": 0.2}
    status, err = call(base, "POST", "/v1/experiment/shares", {"shares": {"control": 0.8}})
    assert status == 422 and err["field"] == "shares"
    status, info = call(
        base, "POST", "/v1/experiment/stop", {"arm": "empathy", "reason": "guardrail"}
    )
    assert status == 200 and info["shares"]["empathy"] == 0.0
    recorded = json.loads((log_dir / "experiment.json").read_text())
    assert [e["event"] for e in recorded["events"]][-2:] == ["shares", "shares"]
    assert "stop empathy" in recorded["events"][-1]["reason"]
    exp.set_shares({"control": 0.5, "empathy": 0.5}, "reset for other tests")


def test_serve_rejects_the_experiment_preset_group(tmp_path: Path) -> None:
    proc = supportrl(tmp_path / "out", "serve", "experiment=whatever")
    assert proc.returncode == 2
    assert "serve.experiment" in proc.stderr


# ------------------------------------------------------------------ support-restricted candidates


def test_support_restricted_linucb_acts_where_the_logs_support_and_exports_the_same(
    small_generated, tmp_path: Path
) -> None:
    from supportrl.agents.bandits import make_bandit
    from supportrl.agents.bandits.linear import support_mask
    from supportrl.agents.training import train_bandit
    from supportrl.experiments.learn import logging_logit
    from supportrl.serving import Predictor

    logs = small_generated.logs
    spec = WORLD.feature_spec
    weights = logging_logit(logs, spec, seed=0)
    agent = make_bandit("linucb", WORLD.actions, spec, seed=0, support_threshold=0.1)
    agent.set_support(weights)
    train_bandit(agent, WORLD, RewardSpec(), total_steps=2000, progress=False)
    states = logs.states()
    probs = agent.action_probs(states)
    x = agent.encode(states)
    allowed = support_mask(x, weights, 0.1)
    assert (probs[~allowed] == 0).all() and (~allowed).any()
    free = make_bandit("linucb", WORLD.actions, spec, seed=0)
    train_bandit(free, WORLD, RewardSpec(), total_steps=2000, progress=False)
    assert (free.action_probs(states)[~allowed] > 0).any()  # unrestricted, it goes there
    artifact = export_policy(agent, tmp_path / "art", epsilon=0.0)
    served = Predictor.load(artifact).action_probs(states)
    assert served == pytest.approx(probs, abs=1e-6)
    agent.save(tmp_path / "ckpt")
    from supportrl.agents.bandits import load_bandit

    assert load_bandit(tmp_path / "ckpt").action_probs(states) == pytest.approx(probs)


def test_rule_scorer_one_state_path_equals_the_column_path(small_generated, tmp_path) -> None:
    """Predictor.probabilities (plain Python for one state) = action_probs (columns), every rule file."""
    from supportrl.serving import Predictor

    states = small_generated.logs.states()
    rows = range(0, small_generated.logs.n_turns, 7)
    for path in sorted(RULES.glob("rules_*.yaml")):
        p = Predictor.load(rule_artifact(tmp_path, path.stem), epsilon=0.1)
        batch = p.action_probs(states)
        for r in rows:
            one = {k: (v[r].item() if hasattr(v[r], "item") else v[r]) for k, v in states.items()}
            assert p.probabilities(one) == pytest.approx(batch[r]), (path.stem, r)


def test_shares_follow_the_recorded_events_by_start_time(artifacts, tmp_path) -> None:
    """A stop recorded at a (simulated) time applies to conversations that start after it."""
    from supportrl.experiments.abtest import _shares_per_conversation
    from supportrl.experiments.deploy import experiment_clock

    exp = Experiment.load(
        write_experiment(tmp_path / "e.json", artifacts, horizon=5000),
        start_time=experiment_clock(0),
    )
    assert exp.config.horizon == 5000 and exp.describe()["horizon"] == 5000
    exp.stop("empathy", "guardrail", at=experiment_clock(100))
    starts = np.array(["2026-03-01T00:10:00", "2026-03-01T01:00:00"], dtype="datetime64[ns]")
    shares = _shares_per_conversation(exp.describe(), list(exp.arms), starts, 2)
    assert shares.tolist() == [[0.5, 0.5], [1.0, 0.0]]  # 100 conversations x 30 s = 50 min


def test_http_experiment_view_names_artifacts_without_absolute_paths(exp_server) -> None:
    base, _, _ = exp_server
    status, info = call(base, "GET", "/v1/experiment")
    assert status == 200
    assert all(not arm["artifact"].startswith("/") for arm in info["arms"].values())
