"""The in-memory evaluate on the partitioned engine's machinery: the plain refit loop's
numbers when the refit subset is all the logs; refits on the subset above ``refit_turns``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from supportrl.agents.rules.loading import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope import progress as progress_module
from supportrl.ope.evaluate import PreparedConversations, prepare_conversations, target_probs_of
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.progress import progress
from supportrl.ope.results import PolicyEvaluation
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.synthetic import generate_logs

from tests.helpers import REPO

RULES = REPO / "configs" / "rules"
POLICIES = ("rules_production", "rules_empathize_negative")


@pytest.fixture(scope="module")
def prepared_and_probs() -> tuple[PreparedConversations, dict[str, np.ndarray]]:
    """400 generated conversations (about 1,000 turns), CSAT imputed by the refittable
    selection model, two rule policies."""
    logs = generate_logs(400, seed=11).logs
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=3
    )
    states = logs.states()
    probs = {
        n: target_probs_of(
            load_rule_policy(RULES / f"{n}.yaml", logs.actions), states, logs.actions
        )
        for n in POLICIES
    }
    return prepared, probs


def _numbers(res: PolicyEvaluation) -> np.ndarray:
    rows = [*res.conversation.values(), *res.decision.values(), res.selection]
    values = [[e.estimate, e.ci_low, e.ci_high, e.std_err] for e in rows]
    d, s = res.diagnostics, res.support
    values.append([d.ess_decision, d.ess_conversation, d.clipped_share, d.disagreement])
    values.append([s.unsupported_decision, s.unsupported_conversation, s.deficit, s.bounds.lower])
    values.append([s.bounds.ci_low, s.bounds.ci_high, s.deficit_bounds.ci_low, d.weights.mean])
    return np.array(values)


def test_evaluate_equals_the_plain_refit_loop_when_the_subset_is_all_the_logs(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]],
) -> None:
    prepared, probs = prepared_and_probs
    ope = OffPolicyEvaluation(prepared=prepared, n_refit=5, seed=2)
    assert ope.refit_share() == 1.0
    fast, reference = ope.evaluate(probs), ope.evaluate_reference(probs)
    for name in POLICIES:
        np.testing.assert_allclose(
            _numbers(fast[name]), _numbers(reference[name]), rtol=0, atol=1e-12
        )
        assert fast[name].diagnostics.warnings == reference[name].diagnostics.warnings
        assert fast[name].diagnostics.weights == reference[name].diagnostics.weights


def test_refits_on_a_subset_keep_the_estimates_and_the_size_of_the_intervals(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]],
) -> None:
    """Above ``refit_turns`` the point estimates are unchanged (they use no resample) and
    the standard errors stay those of the plain loop up to resampling noise: without the
    ``sqrt(share)`` factor the model-based ones (fqe) would come out ``1 / sqrt(share)``
    times too wide."""
    prepared, probs = prepared_and_probs
    n_turns = prepared.logs.n_turns
    ope = OffPolicyEvaluation(prepared=prepared, n_refit=16, seed=2, refit_turns=n_turns // 4)
    share = ope.refit_share()
    assert 0.15 < share < 0.35
    subset, reference = ope.evaluate(probs), ope.evaluate_reference(probs)
    for name in POLICIES:
        for est in ("pdis", "seq_dr", "fqe", "dr"):
            a = {**subset[name].conversation, **subset[name].decision}[est]
            b = {**reference[name].conversation, **reference[name].decision}[est]
            assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
            assert 0.5 < a.std_err / b.std_err < 1.8, (name, est, a.std_err, b.std_err)


@pytest.mark.parametrize("refit_quarter", [False, True], ids=["all-logs", "refit-subset"])
def test_worker_processes_give_the_numbers_of_this_process_bit_for_bit(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]], refit_quarter: bool
) -> None:
    """``workers=2``: the resamples' refits and their statistics run in two worker
    processes (``supportrl.workers``, with this process's BLAS thread count), every number
    equal to the in-process run's."""

    prepared, probs = prepared_and_probs
    turns = prepared.logs.n_turns // 4 if refit_quarter else None
    plain = OffPolicyEvaluation(prepared=prepared, n_refit=5, seed=2, refit_turns=turns)
    on_workers = OffPolicyEvaluation(
        prepared=prepared, n_refit=5, seed=2, refit_turns=turns, workers=2
    )
    assert (plain.refit_share() < 1.0) == refit_quarter
    a, b = plain.evaluate(probs), on_workers.evaluate(probs)
    for name in POLICIES:
        np.testing.assert_array_equal(_numbers(a[name]), _numbers(b[name]))
        assert a[name].diagnostics.warnings == b[name].diagnostics.warnings


def test_workers_must_be_a_count(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]],
) -> None:
    prepared, probs = prepared_and_probs
    for bad in (-1, 1.5, True, "all"):
        with pytest.raises(ValueError, match="workers must be 'auto' or an int >= 0"):
            OffPolicyEvaluation(prepared=prepared, n_refit=2, workers=bad).evaluate(probs)


def test_a_refit_subset_too_small_names_the_setting(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]],
) -> None:
    prepared, probs = prepared_and_probs
    ope = OffPolicyEvaluation(prepared=prepared, n_refit=3, refit_turns=20)
    with pytest.raises(ValueError, match=r"ope.refit_turns=20: .* raise it to at least \d+"):
        ope.evaluate(probs)
    with pytest.raises(ValueError, match="refit_turns must be an int >= 1"):
        OffPolicyEvaluation(prepared=prepared, refit_turns=0)


def test_progress_writes_a_line_when_not_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)
    out = io.StringIO()
    with progress(4, "OPE nuisance fits", stream=out) as bar:
        for _ in range(4):
            bar.update(1)
    lines = out.getvalue().splitlines()
    # a line per step but the last (the work is done; the command says so itself)
    assert lines and all(line.startswith("OPE nuisance fits: ") for line in lines)
    assert lines[0].startswith("OPE nuisance fits: 1/4 after ")
    assert len(lines) == 3


def test_progress_turned_off_writes_nothing(monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)
    out = io.StringIO()
    with progress(4, "OPE nuisance fits", stream=out, enabled=False) as bar:
        for _ in range(4):
            bar.update(1)
    assert bar.done == 4
    assert out.getvalue() == ""


@pytest.mark.parametrize("shown", [True, False])
def test_evaluate_reports_its_resample_fits_only_when_progress_is_on(
    prepared_and_probs: tuple[PreparedConversations, dict[str, np.ndarray]],
    monkeypatch,
    capsys,
    shown: bool,
) -> None:
    """``logger.progress=false`` reaches OPE as ``progress=False``: no progress lines."""
    monkeypatch.setattr(progress_module, "LINE_INTERVAL_S", 0.0)
    prepared, probs = prepared_and_probs
    OffPolicyEvaluation(prepared=prepared, n_refit=3, seed=2, progress=shown).evaluate(probs)
    err = capsys.readouterr().err
    assert ("OPE nuisance fits: " in err) is shown
