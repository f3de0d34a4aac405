"""Partitioned evaluation and partitioned generation: defects found in review of the scale work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from supportrl.agents.rules.loading import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import PreparedConversations
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.partitioned import LogSource, evaluate_partitioned
from supportrl.simulators.fitted import fit_customer_model
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import generate_logs

from tests.helpers import REPO

RULES = REPO / "configs" / "rules"


@pytest.fixture(scope="module")
def rare_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """1,500 conversations in one part; one conversation has an intent no other one has."""
    turns, customers = generate_logs(1500, seed=3).write(tmp_path_factory.mktemp("r") / "data")
    frame = pd.read_parquet(turns)
    cid = frame.conversation_id.iloc[0]
    frame.loc[frame.conversation_id == cid, "intent"] = "rare_intent"
    directory = turns.parent / "parts"
    directory.mkdir()
    frame.to_parquet(directory / "part-0.parquet", index=False)
    return directory, customers, str(cid)


def _ope(prepared: PreparedConversations) -> OffPolicyEvaluation:
    return OffPolicyEvaluation(prepared=prepared, n_refit=2, seed=7, decision_estimators=())


def _evaluate(turns: Path, customers: Path, imputer: Any, **kwargs: Any) -> Any:
    logs = load_conversations(turns, customers=customers)
    pol = {"faq": load_rule_policy(RULES / "rules_faq_first.yaml", logs.actions)}
    return evaluate_partitioned(
        LogSource(turns, customers=customers), pol, RewardSpec(), _ope,
        csat_imputer=imputer, seed=7, memory_budget_mb=1, **kwargs,
    )  # fmt: skip


def test_level_outside_the_sample_encodes_like_an_unseen_one(
    rare_logs: tuple[Path, Path, str],
) -> None:
    turns, customers, cid = rare_logs
    out = _evaluate(turns, customers, CsatImputation.from_logs, sample_turns=1500)
    assert out.sample_share < 1.0
    sample_ids = set(out.prepared_sample.logs.conversation_id.tolist())
    assert cid not in sample_ids  # the rare level is only in a partition, not in the sample
    assert "rare_intent" in out.prepared_sample.feature_spec.categorical["intent"]
    assert "rare_intent" in out.prepared_sample.csat_model.spec.categorical["intent"]
    value = out.results["faq"].conversation["seq_dr"].estimate
    assert np.isfinite(value)


def test_imputer_without_the_level_is_refused_by_name(rare_logs: tuple[Path, Path, str]) -> None:
    turns, customers, _ = rare_logs
    with pytest.raises(ValueError, match="'intent' without value.*rare_intent"):
        _evaluate(turns, customers, lambda logs: CsatImputation.from_logs(logs), sample_turns=1500)


def test_imputer_on_a_simulator_basis_is_refused_clearly(
    rare_logs: tuple[Path, Path, str],
) -> None:
    turns, customers, _ = rare_logs
    logs = load_conversations(turns, customers=customers)
    model = fit_customer_model(logs, "glm", seed=0)
    with pytest.raises(ValueError, match="CsatImputation.from_logs"):
        _evaluate(
            turns, customers, lambda lg: CsatImputation.from_basis(lg, model.basis),
            sample_turns=100_000,
        )  # fmt: skip


def test_refits_use_the_imputers_method(rare_logs: tuple[Path, Path, str]) -> None:
    from supportrl.ope.nuisance import _csat_model

    turns, customers, _ = rare_logs
    logs = load_conversations(turns, customers=customers)
    from supportrl.ope.evaluate import prepare_conversations

    def respondents(lg: Any) -> CsatImputation:
        imp = CsatImputation.from_logs(lg)
        return CsatImputation(**{**imp.__dict__, "method": "respondents"})

    prep = prepare_conversations(logs, RewardSpec(), csat_imputer=respondents, seed=0)
    assert _csat_model(prep, np.ones(logs.n_conversations)).method == "respondents"


def _fail_on_one(k: int) -> int:
    from supportrl.simulators.logs import LogValidationError

    if k == 1:
        raise LogValidationError("parts/part-1.parquet, column 'turn', row(s) [55]: bad")
    return k


@pytest.mark.ray
@pytest.mark.slow
def test_ray_task_error_reaches_the_user_as_the_task_raised_it() -> None:
    from supportrl.simulators.logs import LogValidationError
    from supportrl.simulators.logs.partitioned import map_passes

    with pytest.raises(LogValidationError) as info:
        map_passes(_fail_on_one, [(0,), (1,)], engine="ray", num_cpus=1)
    assert type(info.value) is LogValidationError
    assert str(info.value) == "parts/part-1.parquet, column 'turn', row(s) [55]: bad"


def test_sampled_warnings_use_the_whole_logs_figures(rare_logs: tuple[Path, Path, str]) -> None:
    turns, customers, _ = rare_logs
    out = _evaluate(turns, customers, CsatImputation.from_logs, sample_turns=1500)
    diag = out.results["faq"].diagnostics
    assert out.sample_conversations < diag.n_conversations == 1500
    ess = [w for w in diag.warnings if w.startswith("effective sample size")]
    assert ess == [
        f"effective sample size of the conversation weights is {diag.ess_conversation:.0f} of "
        "1500: importance-weighted conversation estimates rest on few conversations; their "
        "intervals are flagged 'low ESS'"
    ]


def test_return_range_and_data_warnings_as_in_memory(
    rare_logs: tuple[Path, Path, str], tmp_path: Path
) -> None:
    turns, customers, _ = rare_logs
    frame = pd.read_parquet(turns / "part-0.parquet")
    frame["propensity"] = 1.0  # a deterministic logger's propensities, several actions
    ones = tmp_path / "ones"
    ones.mkdir()
    frame.to_parquet(ones / "part-0.parquet", index=False)
    out = _evaluate(ones, customers, CsatImputation.from_logs, sample_turns=100_000)
    assert out.sample_share == 1.0 and out.n_partitions > 1
    prep = out.prepared_sample
    returns = np.add.reduceat(prep.reward, prep.logs.offsets[:-1])
    assert out.return_range == (float(returns.min()), float(returns.max()))
    assert any(n.startswith("every logged propensity is 1") for n in out.notes)
    plain = _evaluate(turns, customers, CsatImputation.from_logs, sample_turns=100_000)
    assert not any(n.startswith("every logged propensity is 1") for n in plain.notes)


def test_failed_partitioned_generation_leaves_nothing_behind(tmp_path: Path) -> None:
    from supportrl.simulators.synthetic.parts import write_partitioned_logs

    from supportrl.outputs import CREATED

    parent = tmp_path / "gen"
    parent.mkdir()
    with pytest.raises(ValueError, match="NaN"):  # raised inside a partition's task
        write_partitioned_logs(
            parent / "out", 10, partitions=2, customers_per_conversation=float("nan")
        )
    assert list(parent.iterdir()) == []
    assert not [p for p in CREATED.paths if parent in p.parents]
