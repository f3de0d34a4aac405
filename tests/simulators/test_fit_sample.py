"""``fit`` on a stratified, weighted sample of Parquet logs larger than the fit needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from supportrl.simulators.fitted import fit_customer_model
from supportrl.simulators.logs import LogValidationError, load_conversations
from supportrl.simulators.logs.bounded import sample_conversations, stratified_sample
from supportrl.simulators.synthetic import generate_logs

from tests.helpers import result_of, supportrl

N, RARE = 3000, 60


@pytest.fixture(scope="module")
def rare_logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """N conversations in three Parquet parts; RARE of them (2%) have intent "rare_intent"."""
    turns, customers = generate_logs(N, seed=4).write(tmp_path_factory.mktemp("f") / "data")
    frame = pd.read_parquet(turns)
    ids = frame["conversation_id"].drop_duplicates().to_numpy()[:RARE]
    frame.loc[frame["conversation_id"].isin(ids), "intent"] = "rare_intent"
    directory = turns.parent / "parts"
    directory.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[chunk].to_parquet(directory / f"part-{i}.parquet", index=False)
    return directory, customers


def _load(customers: Path):  # noqa: ANN202
    return lambda table: load_conversations(table, customers=customers)


def _first_intents(logs) -> np.ndarray:  # noqa: ANN001
    return np.asarray(logs.intent)[logs.offsets[:-1]]


def test_rare_intent_is_kept_and_weighted_back_to_its_share(rare_logs: tuple[Path, Path]) -> None:
    directory, customers = rare_logs
    drawn = stratified_sample(directory, 0.1, 0, _load(customers), min_per_intent=40)
    rare = _first_intents(drawn.logs) == "rare_intent"
    assert drawn.strata["rare_intent"] == {"conversations": RARE, "probability": 40 / RARE}
    assert 25 <= rare.sum() <= RARE  # about 40, where a 10% sample keeps about 6
    first = _first_intents(drawn.logs)
    expected = [1 / drawn.strata[intent]["probability"] for intent in first]
    np.testing.assert_allclose(drawn.weights, expected)
    assert np.allclose(drawn.weights[rare], RARE / 40) and drawn.weights.max() == 10
    # the weights give the logs' mix back (unbiased over draws; one draw is noisy)
    shares, raw = [], []
    for seed in range(8):
        d = stratified_sample(directory, 0.1, seed, _load(customers), min_per_intent=40)
        r = _first_intents(d.logs) == "rare_intent"
        shares.append(d.weights[r].sum() / d.weights.sum())
        raw.append(r.mean())
    assert abs(np.mean(shares) - RARE / N) < 0.004 < np.mean(raw) - RARE / N
    # no floor: the uniform sample of sample_conversations, with weights 1/share
    plain = stratified_sample(directory, 0.1, 0, _load(customers))
    uniform = sample_conversations(directory, 0.1, 0, _load(customers))
    assert sorted(plain.logs.conversation_id) == sorted(uniform.conversation_id)
    assert np.allclose(plain.weights, 10)


def test_weights_restore_the_first_states_and_equal_weights_change_nothing(
    rare_logs: tuple[Path, Path],
) -> None:
    directory, customers = rare_logs
    drawn = stratified_sample(directory, 0.1, 0, _load(customers), min_per_intent=40)
    weighted = fit_customer_model(drawn.logs, "glm", seed=1, conversation_weights=drawn.weights)
    unweighted = fit_customer_model(drawn.logs, "glm", seed=1)
    code = list(weighted.feature_spec.categorical["intent"]).index("rare_intent")
    oversampled = (_first_intents(drawn.logs) == "rare_intent").mean()
    assert oversampled > 0.08  # the sample's own mix: rare intent over-represented
    assert np.mean(unweighted.pool.intent == code) == pytest.approx(oversampled)
    assert np.mean(weighted.pool.intent == code) < 0.045  # near the logs' 2%
    assert (
        weighted.info["conversation_weights"]["max"] > weighted.info["conversation_weights"]["min"]
    )
    # the response model weighs the rows too
    assert not np.allclose(weighted.dynamics.outcome.coef, unweighted.dynamics.outcome.coef)
    same = fit_customer_model(
        drawn.logs, "glm", seed=1, conversation_weights=np.full(drawn.logs.n_conversations, 3.0)
    )
    np.testing.assert_array_equal(same.dynamics.outcome.coef, unweighted.dynamics.outcome.coef)
    with pytest.raises(ValueError, match="conversation_weights"):
        fit_customer_model(drawn.logs, "glm", conversation_weights=np.ones(3))


def test_fit_command_states_the_stratified_sample(
    rare_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = rare_logs
    proc = supportrl(
        tmp_path, "fit", f"data.turns={directory}", f"data.customers={customers}",
        "fit.sample_turns=800", "fit.sample_min_per_intent=30", "fit.simulated_conversations=300",
        "fit.plots=false",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sample = result_of(proc)["fidelity"]["sample"]
    assert "stratified by the first turn's intent" in sample["method"]
    assert sample["strata"]["rare_intent"]["conversations"] == RARE
    assert sample["strata"]["rare_intent"]["probability"] == pytest.approx(30 / RARE)
    assert sample["conversations"] < N


def test_conversation_without_turn_zero_is_named_not_dropped(
    rare_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, customers = rare_logs
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in sorted(directory.glob("*.parquet")):
        frame = pd.read_parquet(part)
        if part.name == "part-1.parquet":  # one conversation loses its first turn
            victim = frame.loc[frame["turn"] == 0, "conversation_id"].iloc[5]
            frame = frame[~((frame["conversation_id"] == victim) & (frame["turn"] == 0))]
        frame.to_parquet(broken / part.name, index=False)
    with pytest.raises(LogValidationError, match=r"part-1\.parquet.*turns must be 0, 1, 2"):
        stratified_sample(broken, 0.1, 0, _load(customers), min_per_intent=40)
