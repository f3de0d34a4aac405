"""Customer models fitted from logs (simulators/fitted/) and the fidelity report."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.base import ConstantPolicy, UniformPolicy
from supportrl.agents.rules import load_rule_panel, load_rule_policy
from supportrl.envs.collect import policy_value, simulate
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import ABANDONED, CONTINUE
from supportrl.simulators.fidelity import fidelity_report, panel_metrics, policy_values
from supportrl.simulators.fitted import (
    FittedCustomerModel,
    FitWarning,
    fit_customer_model,
    load_customer_model,
    propensity_weights,
)
from supportrl.simulators.logs import LoggedConversations
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

from supportrl.outputs import MARKER, write_complete
from tests.helpers import REPO, run_dir_of

AGENTS = REPO / "configs" / "rules"
TINY_ENSEMBLE = {"n_members": 2, "hidden": 16, "epochs": 1, "min_steps": 1, "batch_size": 512}


def quiet_fit(logs: LoggedConversations, family: str = "glm", **kwargs) -> FittedCustomerModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return fit_customer_model(logs, family, **kwargs)


def panel(actions: tuple[str, ...]) -> dict:
    return load_rule_panel(AGENTS, actions)


@pytest.fixture(scope="module")
def generated():
    return generate_logs(3000, seed=11)


@pytest.fixture(scope="module")
def glm(generated) -> FittedCustomerModel:
    return quiet_fit(generated.logs, "glm", weighting="sequential", seed=0)


@pytest.fixture(scope="module")
def ensemble(generated) -> FittedCustomerModel:
    logs = generated.logs.select(np.arange(1000))
    return quiet_fit(logs, "ensemble", weighting="propensity", seed=0, penalty=1.0, **TINY_ENSEMBLE)


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("name", ["glm", "ensemble"])
def test_fitted_model_is_a_customer_model(name, request, generated) -> None:
    model: FittedCustomerModel = request.getfixturevalue(name)
    assert isinstance(model, CustomerModel)
    rng = np.random.default_rng(0)
    state = model.initial_state(50, rng)
    obs = model.observe(state)
    assert set(obs) == set(generated.logs.states())
    assert model.action_mask(state).shape == (50, 6)
    tr = model.step(state, np.arange(50) % 6, rng)
    assert tr.outcome.shape == (50,) and set(np.unique(tr.outcome)) <= {0, 1, 2, 3}
    terminal = tr.outcome != CONTINUE
    assert np.all(np.isnan(tr.csat[~terminal]))
    assert np.all((tr.csat[terminal] >= 1) & (tr.csat[terminal] <= 5))
    assert np.all(tr.handle_time_s >= 0)
    assert np.all(np.abs(tr.next_state.sentiment) <= 1)
    value = policy_value(UniformPolicy(model.actions), 500, model=model, seed=1)
    assert np.isfinite(value.value) and value.std_err > 0
    ro = simulate(model, UniformPolicy(model.actions), 200, seed=2).logs
    assert ro.offsets[-1] == len(ro.action) and ro.n_conversations == 200


def test_same_seed_same_values_and_fit(generated, glm) -> None:
    policy = load_rule_policy(AGENTS / "rules_production.yaml", glm.actions)
    a = policy_value(policy, 2000, model=glm, seed=5).value
    b = policy_value(policy, 2000, model=glm, seed=5).value
    assert a == b
    small = generated.logs.select(np.arange(600))
    m1 = quiet_fit(small, "ensemble", seed=3, **TINY_ENSEMBLE)
    m2 = quiet_fit(small, "ensemble", seed=3, **TINY_ENSEMBLE)
    m3 = quiet_fit(small, "ensemble", seed=4, **TINY_ENSEMBLE)
    assert np.array_equal(m1.dynamics.net.weights[0], m2.dynamics.net.weights[0])
    assert not np.array_equal(m1.dynamics.net.weights[0], m3.dynamics.net.weights[0])


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["glm", "ensemble"])
def test_save_load_round_trip(name, request, tmp_path) -> None:
    model: FittedCustomerModel = request.getfixturevalue(name)
    path = model.save(tmp_path / "sim")
    assert sorted(p.name for p in path.iterdir()) == [MARKER, "params.npz", "simulator.json"]
    meta = json.loads((path / "simulator.json").read_text())
    assert meta["family"] == name and meta["format_version"] == 1
    assert meta["feature_spec"] == model.feature_spec.to_dict()
    np.load(path / "params.npz", allow_pickle=False).close()
    loaded = load_customer_model(path)
    assert loaded.hyperparameters() == model.hyperparameters()
    policy = load_rule_policy(AGENTS / "rules_clarify_first.yaml", model.actions)
    for penalized in (False, True):
        before = policy_values(
            model, {"p": policy}, n=1500, seed=4, reward=_reward(), penalized=penalized
        )
        after = policy_values(
            loaded, {"p": policy}, n=1500, seed=4, reward=_reward(), penalized=penalized
        )
        assert before == after


def _reward():
    from supportrl.envs.rewards import RewardSpec

    return RewardSpec()


def _corrupt_npz(path: Path) -> None:
    (path / "params.npz").write_bytes(b"not a zip file")


def _truncate_npz(path: Path) -> None:
    data = (path / "params.npz").read_bytes()
    (path / "params.npz").write_bytes(data[: len(data) // 2])


def _bad_json(path: Path) -> None:
    (path / "simulator.json").write_text("{not json")


def _edit_json(key: str, value):
    def edit(path: Path) -> None:
        meta = json.loads((path / "simulator.json").read_text())
        meta[key] = value
        (path / "simulator.json").write_text(json.dumps(meta))

    return edit


def _drop_array(path: Path) -> None:
    with np.load(path / "params.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "intent_transition"}
    np.savez(path / "params.npz", **arrays)


def _missing_json(path: Path) -> None:
    (path / "simulator.json").unlink()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_npz, r"params\.npz: not a valid \.npz archive"),
        (_truncate_npz, r"params\.npz: not a valid \.npz archive"),
        (_bad_json, r"simulator\.json: not valid JSON"),
        (_edit_json("format_version", 99), r"simulator\.json: format_version 99 unsupported"),
        (_edit_json("format", "something.else"), r"simulator\.json: not a fitted customer model"),
        (_edit_json("reward_version", 2), r"simulator\.json: schema/reward version"),
        (_drop_array, r"params\.npz: array 'intent_transition' is missing"),
        (_missing_json, r"simulator\.json: not found"),
    ],
)
def test_load_rejects_bad_files(glm, tmp_path, corrupt, message) -> None:
    path = glm.save(tmp_path / "sim")
    corrupt(path)
    write_complete(path, "simulator")  # a tampered directory may carry a valid marker
    with pytest.raises(ValueError, match=message):
        load_customer_model(path)


# --------------------------------------------------------------------------- bad input


def test_missing_action_is_fitted_warned_and_maskable(generated) -> None:
    logs = generated.logs
    credit = logs.actions.index("offer_credit")
    has_credit = np.bincount(logs.conversation_index, weights=logs.action == credit) > 0
    without = logs.select(~has_credit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        model = fit_customer_model(without, "glm", seed=0)
    assert any("'offer_credit' never occurs" in str(w.message) for w in caught)
    assert any("offer_credit" in w for w in model.warnings)
    value = policy_value(ConstantPolicy(model.actions, "offer_credit"), 500, model=model, seed=0)
    assert np.isfinite(value.value)
    masked = model.with_pessimism(min_support=1)
    state = masked.initial_state(100, np.random.default_rng(0))
    mask = masked.action_mask(state)
    assert not mask[:, credit].any() and mask[:, logs.actions.index("direct_answer")].all()
    tr = masked.step(state, np.full(100, credit), np.random.default_rng(1))
    assert np.all(tr.outcome == ABANDONED) and np.all(tr.csat == 1.0)


def test_single_intent_is_fitted_and_warned(generated) -> None:
    logs = generated.logs
    billing = np.bincount(logs.conversation_index, weights=logs.intent != "billing") == 0
    only = logs.select(billing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FitWarning)
        model = fit_customer_model(only, "glm", seed=0)
    assert any("only one intent" in str(w.message) for w in caught)
    assert model.intents == ("billing",)
    assert np.isfinite(policy_value(UniformPolicy(model.actions), 300, model=model, seed=0).value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "forest"}, "family must be one of"),
        ({"weighting": "ipw"}, "weighting must be one of"),
        ({"penalty": -1.0}, "penalty must be >= 0"),
        ({"min_support": -2}, "min_support must be >= 0"),
        ({"csat_missing": "mean"}, "csat_missing must be one of"),
        ({"n_members": 3}, r"unknown glm parameter\(s\) \['n_members'\]"),
    ],
)
def test_fit_rejects_bad_arguments(generated, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_customer_model(generated.logs.select(np.arange(50)), **kwargs)


def test_propensity_weights_are_stabilised_and_clipped() -> None:
    p = np.array([0.5, 0.25, 0.5, 0.1, 1.0])
    a = np.array([0, 0, 1, 1, 1])
    w, stats = propensity_weights(p, a, 2, clip=100.0)
    assert np.allclose([w[a == 0].mean(), w[a == 1].mean()], 1.0)
    w_seq, _ = propensity_weights(p, a, 2, clip=100.0, offsets=np.array([0, 2, 5]))
    assert np.isclose(w_seq.mean(), 1.0)
    assert np.isclose(w_seq[1] / w_seq[0], w[1])  # product over the conversation so far
    clipped, stats = propensity_weights(p, a, 2, clip=1.2)
    assert clipped.max() == 1.2 and stats["clipped_share"] > 0


# --------------------------------------------------------------------------- CSAT and pessimism


def test_csat_imputation_fills_terminal_gaps_and_corrects_mnar(generated, glm) -> None:
    logs = generated.logs
    csat, n_imputed = glm.csat_imputation(logs)
    terminal = logs.outcome != CONTINUE
    missing = terminal & np.isnan(logs.csat)
    assert n_imputed == int(missing.sum()) > 0
    assert not np.isnan(csat[terminal]).any() and np.isnan(csat[~terminal]).all()
    assert np.array_equal(csat[~missing & terminal], logs.csat[~missing & terminal])
    assert np.all((csat[missing] >= 1) & (csat[missing] <= 5))
    g = glm.csat.response  # answer rate by score: extremes answer more (U shape)
    assert g[2] < g[0] and g[2] < g[4]
    # the imputed scores of non-respondents match their (hidden) true scores on average
    # (within ~3 standard errors of this 3000-conversation fit), and better than filling
    # them with the answered scores' mean, which MNAR biases
    truth = generated.true_csat[missing].mean()
    assert abs(csat[missing].mean() - truth) < 0.15
    answered = logs.csat[terminal & ~missing].mean()
    assert abs(csat[missing].mean() - truth) < abs(answered - truth)


def test_pessimism_penalty(glm, ensemble) -> None:
    rng = np.random.default_rng(0)
    for model in (glm.with_pessimism(penalty=0.5), ensemble):
        state = model.initial_state(200, rng)
        tr = model.step(state, rng.integers(0, 6, 200), rng)
        assert tr.penalty is not None and np.all(tr.penalty >= 0) and tr.penalty.max() > 0
    state = glm.initial_state(200, rng)
    assert glm.step(state, np.zeros(200, dtype=np.int64), rng).penalty is None
    # escalate_human is never logged at turn 0 (the logger's support gap)
    gapped = glm.with_pessimism(min_support=1)
    assert not gapped.action_mask(state)[:, glm.actions.index("escalate_human")].any()
    u = glm.uncertainty(state, np.full(200, glm.actions.index("escalate_human")))
    assert np.allclose(u, 1.0)


# --------------------------------------------------------------------------- fidelity


def test_fidelity_report_small(generated, glm, tmp_path) -> None:
    held_out = generate_logs(800, seed=12).logs
    policies = {
        k: v
        for k, v in panel(glm.actions).items()
        if k
        in ("rules_always_direct", "rules_production", "rules_tier_routing", "rules_clarify_first")
    }
    report = fidelity_report(
        glm,
        held_out,
        world=SyntheticWorld(),
        policies=policies,
        n_simulated=3000,
        n_true=4000,
        seed=0,
        plots_dir=tmp_path / "plots",
    )
    json.dumps(report)
    om = report["outcome_model"]
    assert om["pseudo_r2"] > 0.1 and om["ece_mean"] < 0.06
    rp = report["replay"]
    assert rp["length_hist"]["tv_distance"] < 0.12
    assert rp["final_outcome"]["tv_distance"] < 0.12
    assert rp["outcome_rate_mean_abs_gap"] < 0.08
    m = report["panel"]["metrics"]
    assert m["n_policies"] == 4 and m["mae"] < 0.2
    assert report["panel"]["policies"]["rules_tier_routing"]["simulated_value"] < min(
        v["simulated_value"]
        for k, v in report["panel"]["policies"].items()
        if k != "rules_tier_routing"
    )
    assert {Path(p).name for p in report["plots"]} >= {
        "reliability.png",
        "lengths.png",
        "panel.png",
    }


def test_panel_metrics() -> None:
    m = panel_metrics({"a": 0.1, "b": 0.2, "c": 0.3}, {"a": 0.1, "b": 0.35, "c": 0.3})
    assert m["spearman"] == pytest.approx(0.5)
    assert m["regret_at_1"] == pytest.approx(0.1) and m["best_simulated"] == "b"
    assert m["mae"] == pytest.approx(0.05) and m["bias"] == pytest.approx(0.05)


def test_fit_command_writes_simulator_and_result(tmp_path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "supportrl.experiments.fit",
        "simulator=glm",
        "generate.n_conversations=1200",
        "fit.simulated_conversations=800",
        "fit.true_value_conversations=800",
        "fit.plots=false",
        f"policies=[{AGENTS / 'rules_always_direct.yaml'},{AGENTS / 'rules_production.yaml'}]",
        f"paths.output_dir={tmp_path / 'out'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run = run_dir_of(proc)
    result = json.loads((run / "result.json").read_text())
    assert set(result["policies"]) == {"rules_always_direct", "rules_production"}
    assert "simulated_value" in result["policies"]["rules_production"]
    assert "panel" in result["fidelity"] and "outcome_model" in result["fidelity"]
    assert load_customer_model(result["simulator"]).family == "glm"
    assert proc.stdout.strip().splitlines()[-1].startswith("fit: glm simulator")


# --------------------------------------------------------------------------- accuracy (slow)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["glm", "ensemble"])
def test_fidelity_against_ground_truth(family) -> None:
    """100k confounded conversations: panel values in the simulator track the truth."""
    world = SyntheticWorld()
    logs = generate_logs(100_000, seed=1, world=world).logs
    params = {"torch_threads": 2} if family == "ensemble" else {}
    model = quiet_fit(logs, family, weighting="sequential", seed=0, **params)
    policies = panel(model.actions)
    report = fidelity_report(
        model,
        generate_logs(5000, seed=2, world=world).logs,
        world=world,
        policies=policies,
        n_simulated=30_000,
        n_true=50_000,
        seed=0,
    )
    m = report["panel"]["metrics"]
    assert m["spearman"] >= 0.9, m
    assert m["regret_at_1"] <= 0.03, m
    assert m["mae"] <= 0.06, m
    naive = quiet_fit(logs, family, weighting="none", seed=0, **params)
    truth = {k: v["true_value"] for k, v in report["panel"]["policies"].items()}
    sim = policy_values(naive, policies, n=30_000, seed=1, reward=_reward())
    assert panel_metrics(truth, sim)["mae"] > m["mae"]  # weighting is what removes the bias


def test_vector_env_autoresets_on_a_fitted_model() -> None:
    from supportrl.envs.vector import SupportVectorEnv
    from supportrl.simulators.fitted import fit_customer_model
    from supportrl.simulators.synthetic import generate_logs

    model = fit_customer_model(generate_logs(800, seed=3).logs, "glm", seed=0)
    vec = SupportVectorEnv(num_envs=64, model=model)
    obs, _ = vec.reset(seed=0)
    ended = 0
    for _ in range(12):
        obs, rewards, term, trunc, infos = vec.step(np.full(64, 5))
        ended += int((term | trunc).sum())
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
    assert ended > 0


@pytest.mark.parametrize("family", ["glm", "ensemble"])
def test_check_env_passes_on_a_fitted_model(family: str, glm, ensemble) -> None:
    """The Gymnasium checker (spaces, seeding, determinism) on SupportEnv over a simulator."""
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env
    from supportrl.envs import ENV_ID, SupportEnv

    model = {"glm": glm, "ensemble": ensemble}[family]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no checker warnings either
        env = gym.make(ENV_ID, model=model)
        check_env(env.unwrapped)
    assert isinstance(env.unwrapped, SupportEnv) and env.unwrapped.model is model


def test_fitted_observation_fast_path_matches_the_feature_spec(glm, ensemble) -> None:
    """The env encodes a simulator's states from codes; same numbers as encoding the names."""
    rng = np.random.default_rng(0)
    for model in (glm, ensemble):
        state = model.initial_state(300, rng)
        for _ in range(3):
            expected = model.feature_spec.encode(model.observe(state))
            np.testing.assert_array_equal(model.observation(state), expected)
            state = model.step(state, rng.integers(0, len(model.actions), size=300), rng).next_state
