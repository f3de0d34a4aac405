"""The weight clip grows with the logs; the pipeline reuses the simulator's CSAT model."""

from __future__ import annotations

import numpy as np
import pytest
from supportrl.agents.rules import load_rule_panel
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.stages import prepare_for_ope
from supportrl.ope.evaluate import prepare_conversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.simulators.fitted import fit_customer_model
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

from tests.helpers import REPO, truth_imputer


@pytest.fixture(scope="module")
def logs_and_prepared():
    gen = generate_logs(3000, seed=5, world=SyntheticWorld())
    prepared = prepare_conversations(
        gen.logs, RewardSpec(), csat_imputer=truth_imputer(gen.true_csat), seed=5
    )
    return gen, prepared


def test_auto_clip_is_a_share_of_the_conversations(logs_and_prepared) -> None:
    gen, prepared = logs_and_prepared
    panel = load_rule_panel(REPO / "configs" / "rules", gen.logs.actions)
    probs = {"p": panel["rules_empathize_negative"].action_probs(gen.logs.states())}

    def run(**kw):
        ope = OffPolicyEvaluation(
            prepared=prepared, n_refit=2, decision_estimators=(), seed=0, **kw
        )
        return ope, ope.evaluate(probs)["p"]

    ope, tight = run(weight_share=0.005)
    assert ope.clip == pytest.approx(15.0)  # 0.5% of 3000
    ope, loose = run(weight_share=0.5)
    assert ope.clip == pytest.approx(1500.0)
    assert loose.diagnostics.max_weight == pytest.approx(1500.0)
    _, fixed = run(max_weight=15.0)
    # "auto" at 15 is the fixed clip at 15; a looser clip leaves less mass unrepresented
    assert fixed.conversation["seq_dr"].estimate == pytest.approx(
        tight.conversation["seq_dr"].estimate
    )
    assert loose.support.deficit < tight.support.deficit - 0.05
    assert loose.diagnostics.clipped_share < tight.diagnostics.clipped_share


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_weight": "big"}, "max_weight"),
        ({"max_weight": -1.0}, "max_weight"),
        ({"weight_share": 0.0}, "weight_share"),
        ({"weight_share": 2.0}, "weight_share"),
    ],
)
def test_bad_clip_settings_are_named(logs_and_prepared, kw, message) -> None:
    _, prepared = logs_and_prepared
    with pytest.raises(ValueError, match=message):
        OffPolicyEvaluation(prepared=prepared, **kw)


def test_pipeline_reuses_the_simulators_csat_model(logs_and_prepared) -> None:
    """No second CSAT fit: the imputation is the simulator's own, and resamples refit it."""
    gen, _ = logs_and_prepared
    model = fit_customer_model(gen.logs, "glm", seed=0)
    prepared = prepare_for_ope(gen.logs, RewardSpec(), seed=0, model=model)
    assert prepared.csat_model.model is model.csat
    csat, n_imputed = model.csat_imputation(gen.logs)
    np.testing.assert_allclose(prepared.csat, csat, equal_nan=True)
    assert prepared.csat_model.n_imputed == n_imputed > 0
    counts = np.random.default_rng(0).poisson(1.0, gen.logs.n_conversations).astype(float)
    refit = prepared.csat_model.csat(counts)
    missing = np.isnan(gen.logs.csat) & (gen.logs.outcome != 0)
    assert not np.allclose(refit[missing], csat[missing])
    # a resample's fit, not a different model: the mean imputed score moves little
    assert abs(float(np.mean(refit[missing] - csat[missing]))) < 0.3


@pytest.mark.parametrize("override", [{"l2_action": 3.0}, {"max_turns": 6}])
def test_simulator_settings_do_not_move_the_pipelines_csat(logs_and_prepared, override) -> None:
    """The pipeline's imputed CSAT is the same whatever the simulator's settings."""
    gen, _ = logs_and_prepared
    default = prepare_for_ope(
        gen.logs, RewardSpec(), seed=0, model=fit_customer_model(gen.logs, "glm", seed=0)
    )
    model = fit_customer_model(gen.logs, "glm", seed=0, **override)
    other = prepare_for_ope(gen.logs, RewardSpec(), seed=0, model=model)
    np.testing.assert_allclose(other.csat, default.csat, atol=1e-4, equal_nan=True)
