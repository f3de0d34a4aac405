"""Evaluation of logs in partitions (one process or Ray): the numbers of the in-memory path."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from supportrl.agents.rules.loading import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.evaluate import PreparedConversations, prepare_conversations, target_probs_of
from supportrl.ope.finish import finish
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.nuisance import fit_nuisance
from supportrl.ope.partitioned import LogSource, evaluate_partitioned
from supportrl.ope.resample import poisson_weights
from supportrl.ope.results import PolicyEvaluation
from supportrl.ope.streaming import partition_sums, refit_subset
from supportrl.ope.sums import add_sums
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.logs import LogValidationError, load_conversations
from supportrl.simulators.logs.bounded import sample_conversations
from supportrl.simulators.logs.validation import validate_conversations_bounded
from supportrl.simulators.synthetic import generate_logs
from supportrl.simulators.synthetic.parts import write_partitioned_logs

from tests.helpers import REPO, result_of, supportrl

RULES = REPO / "configs" / "rules"
POLICIES = ("rules_production_explore", "rules_empathize_negative", "rules_faq_first")
N_REFIT = 4


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """About 4,000 turn rows in three Parquet parts, rows shuffled (conversations interleave)."""
    turns, customers = generate_logs(1500, seed=3).write(tmp_path_factory.mktemp("s") / "data")
    frame = pd.read_parquet(turns).sample(frac=1.0, random_state=1).reset_index(drop=True)
    directory = turns.parent / "parts"
    directory.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[chunk].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory, customers


def _ope(prepared: PreparedConversations) -> OffPolicyEvaluation:
    return OffPolicyEvaluation(prepared=prepared, n_refit=N_REFIT, seed=7)


def _policies(actions: tuple[str, ...]) -> dict[str, Any]:
    return {n: load_rule_policy(RULES / f"{n}.yaml", actions) for n in POLICIES}


def _numbers(res: PolicyEvaluation) -> np.ndarray:
    rows = [*res.conversation.values(), *res.decision.values(), res.selection]
    values = [[e.estimate, e.ci_low, e.ci_high, e.std_err] for e in rows]
    d, s = res.diagnostics, res.support
    values.append([d.ess_decision, d.ess_conversation, d.clipped_share, d.disagreement])
    values.append([s.unsupported_decision, s.unsupported_conversation, s.deficit, s.bounds.lower])
    return np.array(values)


def _partitioned(logs_dir: tuple[Path, Path], **kwargs: Any) -> Any:
    directory, customers = logs_dir
    actions = load_conversations(directory, customers=customers).actions
    return evaluate_partitioned(
        LogSource(directory, customers=customers),
        _policies(actions),
        RewardSpec(),
        _ope,
        csat_imputer=CsatImputation.from_logs,
        seed=7,
        **kwargs,
    )


@pytest.fixture(scope="module")
def in_memory(logs_dir: tuple[Path, Path]) -> dict[str, PolicyEvaluation]:
    directory, customers = logs_dir
    logs = load_conversations(directory, customers=customers)
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=7
    )
    states = logs.states()
    probs = {
        k: target_probs_of(p, states, logs.actions) for k, p in _policies(logs.actions).items()
    }
    return _ope(prepared).evaluate_reference(probs)  # the plain refit loop


@pytest.fixture(scope="module")
def streamed(logs_dir: tuple[Path, Path]) -> Any:
    return _partitioned(logs_dir, memory_budget_mb=0.01)


def test_resample_counts_follow_the_conversation_not_its_position() -> None:
    ids = np.array([f"conv-{i}" for i in range(50_000)])
    counts = poisson_weights(ids, 3, seed=11)
    order = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(poisson_weights(ids[order], 3, seed=11), counts[:, order])
    np.testing.assert_array_equal(poisson_weights(ids[:10], 3, seed=11), counts[:, :10])
    assert not np.array_equal(poisson_weights(ids, 3, seed=12), counts)
    # Poisson(1): mean 1, variance 1, P(0) = e^-1
    assert abs(counts.mean() - 1.0) < 0.01 and abs(counts.var() - 1.0) < 0.02
    assert abs((counts == 0).mean() - np.exp(-1.0)) < 0.005


def test_partitions_give_the_in_memory_numbers(
    in_memory: dict[str, PolicyEvaluation], streamed: Any
) -> None:
    assert streamed.n_partitions >= 3 and streamed.sample_share == 1.0
    assert set(streamed.results) == set(POLICIES)
    for name in POLICIES:
        a, b = _numbers(in_memory[name]), _numbers(streamed.results[name])
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
        assert streamed.results[name].diagnostics.warnings == in_memory[name].diagnostics.warnings
    # the intervals come from the resamples: a different seed moves them
    assert _numbers(in_memory[POLICIES[0]])[0, 3] > 0


def test_sampled_nuisance_models_are_stated(logs_dir: tuple[Path, Path], streamed: Any) -> None:
    sampled = _partitioned(logs_dir, memory_budget_mb=0.01, sample_turns=2000)
    assert 0.3 < sampled.sample_share < 0.7
    assert sampled.sample_conversations < 1500
    assert any("random sample of" in note for note in sampled.notes)
    for name in POLICIES:
        # the statistics still sum over every conversation
        assert sampled.results[name].diagnostics.n_conversations == 1500
        full = streamed.results[name].selection
        # models fitted on half the conversations: an estimate inside the full-data interval
        assert full.ci_low < sampled.results[name].selection.estimate < full.ci_high
    assert sampled.returns[0] == 1500


def test_schema_error_in_the_middle_partition_names_file_and_row(
    logs_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = logs_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in sorted(directory.iterdir()):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":
            frame.loc[321, "outcome"] = "teleported"
        frame.to_parquet(broken / part.name, index=False)
    with pytest.raises(
        LogValidationError, match=r"part-1\.parquet, column 'outcome', row\(s\) 321"
    ):
        _partitioned((broken, customers), memory_budget_mb=0.01, sample_turns=1500)


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.parquet"))
    }


def test_partitioned_generate_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_partitioned_logs(tmp_path / "a", 1001, partitions=3, seed=5)
    write_partitioned_logs(tmp_path / "b", 1001, partitions=3, seed=5)
    c = write_partitioned_logs(tmp_path / "c", 1001, partitions=3, seed=6)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert len(_files(tmp_path / "a")) == 6
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    logs = load_conversations(a.turns, customers=a.customers)
    assert logs.n_conversations == 1001 == len(set(logs.conversation_id))
    assert logs.n_turns == a.turn_rows and c.turn_rows > 0
    assert "tier" in logs.features  # the customers parts join
    with pytest.raises(ValueError, match="already exists"):
        write_partitioned_logs(tmp_path / "a", 1001, partitions=3, seed=5)


def _broken(directory: Path, out: Path, column: str, row: int, value: Any) -> Path:
    """A copy of the parts with one bad value in the middle part."""
    out.mkdir()
    for part in sorted(directory.iterdir()):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":
            frame.loc[row, column] = value
        frame.to_parquet(out / part.name, index=False)
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_ray_gives_the_single_process_numbers(
    logs_dir: tuple[Path, Path], streamed: Any, tmp_path: Path
) -> None:
    import ray
    from threadpoolctl import threadpool_limits

    directory, customers = logs_dir
    # the fits run in Ray's workers on one BLAS thread each: this process does too (as the
    # command line's threads=1 sets), else the optimisers amplify the last bits
    with threadpool_limits(1):
        one_process = _partitioned(logs_dir, memory_budget_mb=0.01)
        subset = _partitioned(logs_dir, memory_budget_mb=0.01, refit_turns=1000)
    # one local Ray for the whole test (map_passes uses it and leaves it running)
    ray.init(num_cpus=2, object_store_memory=128 * 2**20, include_dashboard=False)
    try:
        with threadpool_limits(1):
            on_ray = _partitioned(logs_dir, memory_budget_mb=0.01, engine="ray", num_cpus=2)
            subset_on_ray = _partitioned(
                logs_dir, memory_budget_mb=0.01, engine="ray", num_cpus=2, refit_turns=1000
            )
        local = validate_conversations_bounded(directory, customers=customers, memory_budget_mb=0.1)
        remote = validate_conversations_bounded(
            directory, customers=customers, memory_budget_mb=0.1, engine="ray"
        )
        broken = _broken(directory, tmp_path / "broken", "turn", 55, -3)
        with pytest.raises(LogValidationError) as single:
            validate_conversations_bounded(broken, customers=customers, memory_budget_mb=0.1)
        with pytest.raises(LogValidationError) as tasks:
            validate_conversations_bounded(
                broken, customers=customers, memory_budget_mb=0.1, engine="ray"
            )
        write_partitioned_logs(tmp_path / "local", 901, partitions=3, seed=2)
        write_partitioned_logs(tmp_path / "ray", 901, partitions=3, seed=2, engine="ray")
    finally:
        ray.shutdown()
    assert on_ray.engine == "ray" and on_ray.n_partitions == streamed.n_partitions
    for name in POLICIES:
        np.testing.assert_allclose(
            _numbers(on_ray.results[name]), _numbers(one_process.results[name]), rtol=0, atol=1e-12
        )
        # the refit subset's sums travel through Ray and its reduce too
        assert subset_on_ray.refit_share == subset.refit_share < 0.5
        np.testing.assert_allclose(
            _numbers(subset_on_ray.results[name]), _numbers(subset.results[name]), atol=1e-12
        )
    # at least one pass per CPU on Ray; the summary does not depend on the passes
    assert remote.pop("passes") == 2 and local.pop("passes") == 1
    assert remote == local
    assert str(tasks.value) == str(single.value)
    assert "part-1.parquet, column 'turn'" in str(tasks.value) and "55" in str(tasks.value)
    # generate: Ray tasks write the bytes one process writes
    assert _files(tmp_path / "ray") == _files(tmp_path / "local") != {}


def test_evaluate_command_in_partitions_matches_memory(
    logs_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = logs_dir
    args = [
        "evaluate",
        f"data.turns={directory}",
        f"data.customers={customers}",
        f"policies=[{RULES / 'rules_faq_first.yaml'}]",
        "ope.n_refit=3",
        "data.memory_budget_mb=0.01",
    ]
    memory = supportrl(tmp_path / "m", *args, "engine=memory")
    local = supportrl(tmp_path / "l", *args, "engine=local")
    assert memory.returncode == 0 and local.returncode == 0, local.stderr[-2000:]
    assert "engine=local: " in local.stdout and "partitions" in local.stdout
    a, b = result_of(memory), result_of(local)
    for est, row in a["policies"]["rules_faq_first"].items():
        for key in ("estimate", "ci_low", "ci_high"):
            assert b["policies"]["rules_faq_first"][est][key] == pytest.approx(row[key], abs=1e-12)
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in sorted(directory.iterdir()):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":
            frame.loc[77, "sentiment"] = 9.0
        frame.to_parquet(broken / part.name, index=False)
    args[1] = f"data.turns={broken}"
    bad = supportrl(tmp_path / "b", *args, "engine=local")
    assert bad.returncode == 2
    assert "part-1.parquet, column 'sentiment', row(s) 77" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


PEAK = """
import sys
from pathlib import Path
from supportrl.agents.rules.loading import load_rule_policy
from supportrl.envs.rewards import RewardSpec
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.partitioned import LogSource, evaluate_partitioned
from supportrl.simulators.fitted.csat import CsatImputation
from supportrl.simulators.logs import DEFAULT_ACTIONS
from supportrl.simulators.logs.bounded import sample_conversations, validate_conversations_bounded
turns = Path(sys.argv[1])
validate_conversations_bounded(turns, memory_budget_mb=2)
policy = load_rule_policy(sys.argv[2], DEFAULT_ACTIONS)
out = evaluate_partitioned(
    LogSource(turns), {"p": policy}, RewardSpec(),
    lambda prep: OffPolicyEvaluation(prepared=prep, n_refit=2, decision_estimators=()),
    csat_imputer=CsatImputation.from_logs, sample_turns=4000, memory_budget_mb=6,
)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(out.n_partitions, out.n_turns, int(hwm) // 1024)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_ten_times_the_logs(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    turns, _ = generate_logs(2000, seed=9).write(tmp_path / "block")
    table = pq.read_table(turns).drop_columns(["customer_id"])
    peaks = []
    for copies in (1, 10):
        directory = tmp_path / f"x{copies}"
        directory.mkdir()
        for i in range(copies):  # the block again with fresh conversation ids
            ids = pc.binary_join_element_wise(pa.scalar(f"k{i}-"), table["conversation_id"], "")
            column = table.schema.get_field_index("conversation_id")
            pq.write_table(
                table.set_column(column, "conversation_id", ids), directory / f"{i}.parquet"
            )
        out = subprocess.run(
            [sys.executable, "-c", PEAK, str(directory), str(RULES / "rules_faq_first.yaml")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        n_partitions, n_turns, peak = map(int, out.stdout.split()[-3:])
        peaks.append((n_partitions, n_turns, peak))
    (p1, t1, m1), (p10, t10, m10) = peaks
    assert t10 == 10 * t1 and p10 >= 5 * p1
    # ten times the rows, more partitions of the same size: the peak stays where it was
    assert m10 < m1 * 1.15 + 20, peaks


def test_sample_is_whole_conversations_whatever_the_file_layout(
    logs_dir: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = logs_dir
    whole = load_conversations(directory, customers=customers)
    one_file = tmp_path / "one.parquet"
    pd.concat([pd.read_parquet(p) for p in sorted(directory.iterdir())]).sort_values(
        "conversation_id"
    ).to_parquet(one_file, index=False)

    def load(table: Any) -> Any:
        return load_conversations(table, customers=customers)

    a = sample_conversations(directory, 0.3, 4, load)
    b = sample_conversations(one_file, 0.3, 4, load)
    assert 0.2 < a.n_conversations / whole.n_conversations < 0.4
    np.testing.assert_array_equal(np.sort(a.conversation_id), np.sort(b.conversation_id))
    # every sampled conversation with all its turns
    lengths = dict(zip(whole.conversation_id, whole.lengths, strict=True))
    assert all(lengths[c] == n for c, n in zip(a.conversation_id, a.lengths, strict=True))
    assert not np.array_equal(
        np.sort(sample_conversations(directory, 0.3, 5, load).conversation_id),
        np.sort(a.conversation_id),
    )


def _sample_fits(logs_dir: tuple[Path, Path], **kwargs: Any) -> tuple[Any, ...]:
    directory, customers = logs_dir
    logs = load_conversations(directory, customers=customers)
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=7
    )
    policies = _policies(logs.actions)
    states = logs.states()
    probs = np.stack([target_probs_of(p, states, logs.actions) for p in policies.values()])
    ope = _ope(prepared)
    return logs, policies, ope, probs, fit_nuisance(ope, probs, list(policies), **kwargs)


def test_sums_of_a_short_partition_add_up_exactly(logs_dir: tuple[Path, Path]) -> None:
    """A partition whose conversations are all shorter than the others' (fewer turn terms
    in the self-normalised estimators) adds up to the statistics of the whole logs."""
    logs, policies, _, _, fits = _sample_fits(logs_dir)
    short = logs.lengths <= 2
    assert short.any() and logs.lengths.max() > 2
    parts = [partition_sums(fits, logs.select(m), policies) for m in (short, ~short)]
    whole = partition_sums(fits, logs, policies)
    total = add_sums(parts)
    assert set(total.arrays) == set(whole.arrays)
    for key, value in whole.arrays.items():
        np.testing.assert_allclose(total.arrays[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


def test_resamples_with_the_point_models_are_the_refits_when_models_do_not_change(
    logs_dir: tuple[Path, Path],
) -> None:
    """The one-pass resamples (point fit's models, every resample's counts by a matrix
    product) equal the per-resample loop when every resample's models are the point fit's."""
    logs, policies, _, _, fits = _sample_fits(logs_dir)
    n = 1 + fits.n_resamples
    same = dataclasses.replace(
        fits,
        q_coef=(fits.q_coef[0],) * n,
        reward_models=(fits.reward_models[0],) * n,
        csat_models=(fits.csat_models[0],) * n,
    )
    looped = partition_sums(same, logs, policies)
    once = partition_sums(dataclasses.replace(same, refit_share=0.3), logs, policies)
    assert any(k.startswith("refit:") for k in once.arrays)
    for key, value in looped.arrays.items():
        np.testing.assert_allclose(once.arrays[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    # with the real refits, the subset's refitted resamples differ from its one-pass ones
    real = partition_sums(dataclasses.replace(fits, refit_share=0.3), logs, policies)
    np.testing.assert_array_equal(real.arrays["0/fqe/num"], once.arrays["0/fqe/num"])
    assert not np.allclose(real.arrays["refit:0/fqe/num"][1:], real.arrays["fixed:0/fqe/num"][1:])


def test_refit_subset_of_every_conversation_gives_the_in_memory_numbers(
    logs_dir: tuple[Path, Path], in_memory: dict[str, PolicyEvaluation]
) -> None:
    """Below share 1 the resamples are (one-pass resamples) + (refitted - one-pass) on the
    subset: with every conversation in the subset that is the refit bootstrap itself."""
    logs, policies, ope, probs, fits = _sample_fits(logs_dir, refit_share=1 - 1e-9)
    assert refit_subset(logs.conversation_id, 7, fits.refit_share).all()
    parts = [
        partition_sums(fits, logs.select(m), policies)
        for m in (logs.lengths <= 2, logs.lengths > 2)
    ]
    results = finish(ope, fits, probs, add_sums(parts))
    for name in POLICIES:
        np.testing.assert_allclose(
            _numbers(results[name]), _numbers(in_memory[name]), rtol=0, atol=1e-12
        )


def test_refits_on_a_subset_keep_the_estimates_and_the_model_variation(
    logs_dir: tuple[Path, Path], in_memory: dict[str, PolicyEvaluation]
) -> None:
    """Refits evaluated on a quarter of the conversations: estimates exact, interval widths
    near the full refit bootstrap's; without the subset's refit term fqe's would collapse."""
    out = _partitioned(logs_dir, memory_budget_mb=0.01, refit_turns=1000)
    assert 0.15 < out.refit_share < 0.35
    assert any("ope.refit_turns=1000" in note for note in out.notes)
    for name in POLICIES:
        got, mem = out.results[name], in_memory[name]
        for est, e in got.conversation.items():
            assert e.estimate == pytest.approx(mem.conversation[est].estimate, abs=1e-12)
            ratio = (e.ci_high - e.ci_low) / (
                mem.conversation[est].ci_high - mem.conversation[est].ci_low
            )
            assert 0.8 < ratio < 1.5, (name, est, ratio)


@pytest.fixture(scope="module")
def unlogged_propensities(logs_dir: tuple[Path, Path]) -> tuple[Path, Path]:
    """The logs of ``logs_dir`` with the propensity of every third conversation not logged."""
    directory, customers = logs_dir
    out = directory.parent / "unlogged"
    out.mkdir()
    for part in sorted(directory.glob("*.parquet")):
        frame = pd.read_parquet(part)
        number = frame["conversation_id"].str.extract(r"(\d+)$")[0].astype(int)
        frame.loc[number % 3 == 0, "propensity"] = np.nan
        frame.to_parquet(out / part.name, index=False)
    return out, customers


def test_estimated_propensities_give_the_in_memory_numbers(
    unlogged_propensities: tuple[Path, Path],
) -> None:
    """Missing propensities are estimated as in memory (cross-fitted, refitted per resample):
    the partitions give the in-memory numbers; on a sample, its models estimate the rest."""
    directory, customers = unlogged_propensities
    logs = load_conversations(directory, customers=customers)
    assert np.isnan(logs.propensity).mean() > 0.2
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=CsatImputation.from_logs, seed=7
    )
    assert prepared.propensity_estimated
    states = logs.states()
    policies = _policies(logs.actions)
    memory = _ope(prepared).evaluate_reference(
        {k: target_probs_of(p, states, logs.actions) for k, p in policies.items()}
    )
    streamed = _partitioned(unlogged_propensities, memory_budget_mb=0.01)
    for name in POLICIES:
        np.testing.assert_allclose(
            _numbers(streamed.results[name]), _numbers(memory[name]), rtol=0, atol=1e-12
        )
    sampled = _partitioned(
        unlogged_propensities, memory_budget_mb=0.01, sample_turns=2000, refit_turns=1000
    )
    assert sampled.sample_share < 0.7 and sampled.refit_share < 0.5
    for name in POLICIES:
        full = memory[name].selection
        assert full.ci_low < sampled.results[name].selection.estimate < full.ci_high


def test_weight_statistics_and_support_warnings_come_from_the_whole_logs(
    logs_dir: tuple[Path, Path], in_memory: dict[str, PolicyEvaluation], streamed: Any
) -> None:
    """Partitions report the whole logs' weight statistics (quantiles to 0.5% from a
    histogram) and support warnings, also when the nuisance sample is a part of them."""
    sampled = _partitioned(logs_dir, memory_budget_mb=0.01, sample_turns=1200)
    assert sampled.sample_share < 0.5
    for name in POLICIES:
        mem = in_memory[name].diagnostics
        for out in (streamed, sampled):
            got = out.results[name].diagnostics
            assert got.weights.n == mem.weights.n
            assert got.weights.max == pytest.approx(mem.weights.max, rel=1e-12)
            assert got.weights.mean == pytest.approx(mem.weights.mean, rel=1e-12)
            assert got.weights.share_zero == pytest.approx(mem.weights.share_zero, rel=1e-12)
            for q, v in mem.weights.quantiles.items():
                assert got.weights.quantiles[q] == pytest.approx(v, rel=0.006, abs=1e-12)


def test_support_warning_counts_the_whole_logs(logs_dir: tuple[Path, Path], tmp_path: Path) -> None:
    """A policy that always offers credit, which the logger rarely does: the warning names
    the whole logs' count of that action, not the nuisance sample's."""
    directory, customers = logs_dir
    credit = tmp_path / "always_credit.yaml"
    credit.write_text(
        "_target_: supportrl.agents.rules.RulePolicy\nrules: []\ndefault: offer_credit\n"
    )
    logs = load_conversations(directory, customers=customers)
    policy = {"always_credit": load_rule_policy(credit, logs.actions)}
    logged = int((np.asarray(logs.actions)[logs.action] == "offer_credit").sum())
    out = evaluate_partitioned(
        LogSource(directory, customers=customers), policy, RewardSpec(), _ope,
        csat_imputer=CsatImputation.from_logs, seed=7, memory_budget_mb=0.01, sample_turns=1200,
    )  # fmt: skip
    assert out.sample_share < 0.5
    warnings = [w for w in out.results["always_credit"].diagnostics.warnings if "credit" in w]
    assert len(warnings) == 1 and f"({logged} times)" in warnings[0], warnings


def test_too_small_a_refit_subset_is_refused_before_the_partitions(
    logs_dir: tuple[Path, Path],
) -> None:
    with pytest.raises(ValueError, match=r"ope.refit_turns=20: .* about \d+ conversations"):
        _partitioned(logs_dir, memory_budget_mb=0.01, refit_turns=20)
    with pytest.raises(ValueError, match="ope.refit_turns must be at least 1"):
        _partitioned(logs_dir, memory_budget_mb=0.01, refit_turns=0)
