"""Contract tests for log schema v1: loading, validation errors, round trips."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supportrl.simulators.logs import (
    LogValidationError,
    load_conversations,
    load_decisions,
    write_conversations,
)
from supportrl.simulators.synthetic import generate_logs


def base_frame() -> pd.DataFrame:
    """Two valid conversations, written out explicitly."""
    return pd.DataFrame(
        {
            "conversation_id": ["a", "a", "a", "b", "b"],
            "turn": [0, 1, 2, 0, 1],
            "customer_id": ["u1", "u1", "u1", "u2", "u2"],
            "intent": ["billing", "billing", "billing", "other", "account"],
            "sentiment": [-0.6, -0.2, 0.1, 0.0, 0.3],
            "action": ["empathize", "offer_credit", "direct_answer", "clarify", "faq_link"],
            "propensity": [0.5, 0.2, 0.6, 0.7, 0.4],
            "outcome": ["continue", "continue", "resolved", "continue", "abandoned"],
            "csat": [np.nan, np.nan, 5.0, np.nan, np.nan],
            "handle_time_s": [30.0, 50.0, 60.0, 20.0, 15.0],
            "channel": ["chat", "chat", "chat", "web", "web"],
            "prior_contacts_30d": [0, 0, 0, 2, 2],
        }
    )


def customers_frame() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["u1", "u2"], "tier": ["pro", "free"]})


def with_value(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        if column in df and df[column].dtype != object and isinstance(value, str):
            df[column] = df[column].astype(object)
        if column in df and df[column].dtype.kind == "i" and isinstance(value, float):
            df[column] = df[column].astype(float)
        df.loc[row, column] = value
        return df

    return edit


def drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: df.drop(columns=[column])


# (edit of the valid frame, message regex): each must fail naming column and rows.
BAD_TURNS = [
    (drop("intent"), r"missing required column\(s\) \['intent'\]"),
    (drop("outcome"), r"missing required column\(s\) \['outcome'\]"),
    (
        with_value("sentiment", 1, "very sad"),
        r"column 'sentiment', row\(s\) 1: expected numbers, got 'very sad'",
    ),
    (with_value("turn", 2, "two"), r"column 'turn', row\(s\) 2: expected numbers"),
    (with_value("turn", 2, 1.5), r"column 'turn', row\(s\) 2: values must be integers >= 0"),
    (
        with_value("sentiment", 3, 1.5),
        r"column 'sentiment', row\(s\) 3: values must be in \[-1, 1\], got 1.5",
    ),
    (with_value("sentiment", 0, np.nan), r"column 'sentiment', row\(s\) 0: missing value"),
    (
        with_value("propensity", 4, 0.0),
        r"column 'propensity', row\(s\) 4: values must be in \(0, 1\]",
    ),
    (
        with_value("propensity", 1, 1.2),
        r"column 'propensity', row\(s\) 1: values must be in \(0, 1\]",
    ),
    (
        with_value("action", 1, "dance"),
        r"column 'action', row\(s\) 1: unknown action\(s\) \['dance'\]",
    ),
    (
        with_value("outcome", 4, "happy"),
        r"column 'outcome', row\(s\) 4: unknown outcome\(s\) \['happy'\]",
    ),
    (with_value("turn", 2, 3), r"column 'turn', row\(s\) 2: turns must be 0, 1, 2"),
    (with_value("turn", 4, 3), r"column 'turn', row\(s\) 4: turns must be 0, 1, 2"),
    (with_value("turn", 1, 0), r"column 'turn', row\(s\) 1: duplicate turn"),
    (
        with_value("outcome", 0, "resolved"),
        r"column 'outcome', row\(s\) 0: terminal outcome before",
    ),
    (with_value("csat", 2, 6.0), r"column 'csat', row\(s\) 2: values must be in \[1, 5\]"),
    (
        with_value("csat", 0, 4.0),
        r"column 'csat', row\(s\) 0: csat is only allowed on a conversation's last row",
    ),
    (
        with_value("handle_time_s", 3, -1.0),
        r"column 'handle_time_s', row\(s\) 3: values must be >= 0",
    ),
    (
        lambda df: with_value("customer_id", 4, "u9")(with_value("customer_id", 3, "u9")(df)),
        r"column 'customer_id', row\(s\) 3, 4: customer_id not in customers table",
    ),
    (
        with_value("customer_id", 1, "u2"),
        r"column 'customer_id', row\(s\) 0, 1, 2: a conversation has several",
    ),
    (
        with_value("conversation_id", 1, np.nan),
        r"column 'conversation_id', row\(s\) 1: missing value",
    ),
]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("edit", "pattern"), BAD_TURNS)
def test_bad_turns_name_file_column_and_rows(tmp_path: Path, fmt: str, edit, pattern: str) -> None:
    turns = tmp_path / f"turns.{fmt}"
    customers = tmp_path / "customers.csv"
    customers_frame().to_csv(customers, index=False)
    frame = edit(base_frame())
    if fmt == "csv":
        frame.to_csv(turns, index=False)
    else:
        for col in frame.columns:  # Parquet columns have one type: mixed ones become strings
            kinds = {type(v) for v in frame[col].dropna()}
            if len(kinds) > 1 and str in kinds:
                frame[col] = frame[col].astype(str)
        frame.to_parquet(turns, index=False)
    with pytest.raises(LogValidationError, match=pattern) as info:
        load_conversations(turns, customers=customers)
    assert str(turns) in str(info.value) or "data config" in str(info.value)


def test_valid_frame_loads(tmp_path: Path) -> None:
    turns, customers = tmp_path / "t.csv", tmp_path / "c.csv"
    base_frame().to_csv(turns, index=False)
    customers_frame().to_csv(customers, index=False)
    logs = load_conversations(turns, customers=customers)
    assert logs.n_conversations == 2 and logs.n_turns == 5
    assert logs.categorical == ("channel", "tier") and logs.numeric == ("prior_contacts_30d",)
    assert logs.features["tier"].tolist() == ["pro"] * 3 + ["free"] * 2
    assert logs.previous_action.tolist() == ["none", "empathize", "offer_credit", "none", "clarify"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"file is empty"),
        (b"conversation_id,turn,intent,sentiment,action,outcome\n", r"no rows"),
        (b"PAR1\x00\x01garbage", r"not a readable Parquet file"),
    ],
)
def test_empty_and_corrupt_files(tmp_path: Path, content: bytes, pattern: str) -> None:
    suffix = ".parquet" if content.startswith(b"PAR1") else ".csv"
    path = tmp_path / f"turns{suffix}"
    path.write_bytes(content)
    with pytest.raises(LogValidationError, match=pattern):
        load_conversations(path)


def test_missing_file_and_unsupported_type(tmp_path: Path) -> None:
    with pytest.raises(LogValidationError, match="no such file"):
        load_conversations(tmp_path / "nope.csv")
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(LogValidationError, match="unsupported file type '.json'"):
        load_conversations(tmp_path / "t.json")


def test_customers_table_errors(tmp_path: Path) -> None:
    turns = tmp_path / "t.csv"
    base_frame().to_csv(turns, index=False)
    dup = tmp_path / "dup.csv"
    pd.DataFrame({"customer_id": ["u1", "u1", "u2"], "tier": ["a", "b", "c"]}).to_csv(
        dup, index=False
    )
    with pytest.raises(
        LogValidationError, match=r"dup.csv, column 'customer_id', row\(s\) 0, 1: duplicate"
    ):
        load_conversations(turns, customers=dup)
    no_id = tmp_path / "no_id.csv"
    pd.DataFrame({"tier": ["a"]}).to_csv(no_id, index=False)
    with pytest.raises(LogValidationError, match=r"missing required column\(s\) \['customer_id'\]"):
        load_conversations(turns, customers=no_id)


def test_rows_in_any_order_and_extra_columns(tmp_path: Path) -> None:
    frame = base_frame()
    frame["mood_score"] = np.arange(5.0)
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    frame.to_csv(a, index=False)
    shuffled.to_csv(b, index=False)
    la, lb = load_conversations(a), load_conversations(b)
    assert "mood_score" in la.numeric and "customer_id" not in la.features
    pd.testing.assert_frame_equal(la.to_frame(), lb.to_frame())


def test_declared_features_must_exist_and_cover_extra_columns(tmp_path: Path) -> None:
    turns = tmp_path / "t.csv"
    base_frame().to_csv(turns, index=False)
    with pytest.raises(
        LogValidationError, match=r"declared feature column\(s\) \['plan'\] not found"
    ):
        load_conversations(turns, categorical=["channel", "plan"], numeric=["prior_contacts_30d"])
    with pytest.raises(
        LogValidationError, match=r"\['prior_contacts_30d'\] are neither schema columns"
    ):
        load_conversations(turns, categorical=["channel"])
    logs = load_conversations(turns, categorical=["channel", "prior_contacts_30d"], numeric=[])
    assert logs.features["prior_contacts_30d"].dtype.kind == "U"


def test_parquet_directory_names_the_part(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    frame = base_frame()
    frame.iloc[:3].to_parquet(parts / "part-000.parquet", index=False)
    bad = frame.iloc[3:].copy()
    bad.loc[4, "sentiment"] = 2.0
    bad.to_parquet(parts / "part-001.parquet", index=False)
    with pytest.raises(
        LogValidationError, match=r"part-001.parquet, column 'sentiment', row\(s\) 1"
    ):
        load_conversations(parts)
    frame.iloc[3:].to_parquet(parts / "part-001.parquet", index=False)
    assert load_conversations(parts).n_turns == 5


def test_generated_logs_round_trip_through_files(small_generated, small_log_files) -> None:
    turns, customers = small_log_files
    loaded = load_conversations(turns, customers=customers)
    original = small_generated.logs
    pd.testing.assert_frame_equal(
        loaded.to_frame()[original.to_frame().columns], original.to_frame(), check_dtype=False
    )
    assert set(loaded.categorical) == {"tier", "channel"}
    assert set(loaded.numeric) == {"tenure_months", "prior_contacts_30d"}


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(min_value=1, max_value=60),
    seed=st.integers(min_value=0, max_value=10_000),
    fmt=st.sampled_from(["parquet", "csv"]),
)
def test_property_write_load_round_trip(tmp_path_factory, n: int, seed: int, fmt: str) -> None:
    logs = generate_logs(n, seed=seed).logs
    path = tmp_path_factory.mktemp("rt") / f"turns.{fmt}"
    if fmt == "parquet":
        write_conversations(logs, path)
    else:
        logs.to_frame().to_csv(path, index=False)
    loaded = load_conversations(path, categorical=logs.categorical, numeric=logs.numeric)
    for name in ("offsets", "turn", "intent", "action", "outcome", "customer_id"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(logs, name), err_msg=name)
    np.testing.assert_array_equal(loaded.conversation_id, logs.conversation_id)
    for name in ("sentiment", "propensity", "csat", "handle_time_s"):
        np.testing.assert_allclose(
            getattr(loaded, name), getattr(logs, name), rtol=1e-12, err_msg=name
        )
    for name, values in logs.features.items():
        np.testing.assert_array_equal(loaded.features[name], values, err_msg=name)
    assert (loaded.timestamp == logs.timestamp).all()


def test_select_keeps_conversations(small_generated) -> None:
    logs = small_generated.logs
    sub = logs.select(np.array([2, 5, 7]))
    assert sub.n_conversations == 3
    for k, c in enumerate([2, 5, 7]):
        rows = slice(logs.offsets[c], logs.offsets[c + 1])
        np.testing.assert_array_equal(
            sub.action[sub.offsets[k] : sub.offsets[k + 1]], logs.action[rows]
        )


def test_load_bandit_feedback(tmp_path: Path) -> None:
    path = tmp_path / "bandit.csv"
    pd.DataFrame(
        {
            "item": [14, 2, 14, 7],
            "click": [1, 0, 0, 1],
            "pscore": [0.1, 0.5, 0.1, 0.4],
            "position": ["left", "right", "left", "left"],
            "age": [20.0, 31.0, 45.0, 33.0],
        }
    ).to_csv(path, index=False)
    data = load_decisions(path, action_col="item", reward_col="click", propensity_col="pscore")
    assert data.actions == ("2", "7", "14")
    assert data.action.tolist() == [2, 0, 2, 1]
    assert data.categorical == ("position",) and data.numeric == ("age",)
    with pytest.raises(LogValidationError, match=re.escape("propensity column 'p' not found")):
        load_decisions(path, action_col="item", reward_col="click", propensity_col="p")
    # an OBP-named propensity left among the context columns is not silently a feature
    with pytest.raises(LogValidationError, match="did you mean propensity"):
        load_decisions(path, action_col="item", reward_col="click", propensity_col=None)
    bare = tmp_path / "bare.csv"
    pd.read_csv(path).drop(columns="pscore").to_csv(bare, index=False)
    no_p = load_decisions(bare, action_col="item", reward_col="click", propensity_col=None)
    assert not no_p.has_propensity


def test_bandit_feedback_bad_propensity(tmp_path: Path) -> None:
    path = tmp_path / "bandit.csv"
    pd.DataFrame({"action": [0, 1], "reward": [1.0, 0.0], "propensity": [0.5, 0.0]}).to_csv(
        path, index=False
    )
    with pytest.raises(
        LogValidationError, match=r"column 'propensity', row\(s\) 1: values must be in \(0, 1\]"
    ):
        load_decisions(path)


def test_bandit_feedback_declared_features_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    pd.DataFrame(
        {"a": [0, 1], "r": [1.0, 0.0], "p": [0.5, 0.5], "seg": ["x", "y"], "x1": [0.1, 0.2]}
    ).to_csv(path, index=False)
    common = dict(action_col="a", reward_col="r", propensity_col="p")
    with pytest.raises(LogValidationError, match=r"\['zzz'\] are not context columns"):
        load_decisions(path, categorical=["seg", "zzz"], numeric=["x1"], **common)
    with pytest.raises(LogValidationError, match=r"\['r'\] are the action, reward or propensity"):
        load_decisions(path, context=["seg", "r"], **common)
    with pytest.raises(LogValidationError, match=r"\['x1'\] are not context columns"):
        load_decisions(path, context=["seg"], categorical=["seg"], numeric=["x1"], **common)


def test_inferred_features_refuse_indexes_and_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.integers(0, 3, 500),
            "r": rng.random(500),
            "p": np.full(500, 1 / 3),
            "event_time": [f"2026-01-01 00:{i // 60:02d}:{i % 60:02d}" for i in range(500)],
        }
    )
    with_index = tmp_path / "with_index.csv"
    frame.to_csv(with_index)  # pandas writes its index as an unnamed first column
    with pytest.raises(
        LogValidationError, match=r"'Unnamed: 0': looks like a saved DataFrame index"
    ):
        load_decisions(with_index, action_col="a", reward_col="r", propensity_col="p")
    ids = tmp_path / "ids.csv"
    frame.to_csv(ids, index=False)
    with pytest.raises(LogValidationError, match=r"'event_time': 500 distinct values"):
        load_decisions(ids, action_col="a", reward_col="r", propensity_col="p")
    ok = load_decisions(ids, action_col="a", reward_col="r", propensity_col="p", context=[])
    assert ok.context == {}


def test_timestamps_in_mixed_iso_formats(tmp_path: Path) -> None:
    frame = base_frame()
    frame["timestamp"] = ["2026-01-01T00:00:00.120"] * 4 + ["2026-01-01 00:30:00"]
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    logs = load_conversations(path)
    assert str(logs.timestamp[-1]).startswith("2026-01-01T00:30:00")
