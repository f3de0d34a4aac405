"""The loader works on factorized codes; its arrays must equal a plain pandas reading.

The oracle below sorts and joins with pandas on Python strings, the obvious (slow) way;
the loader must give the same arrays, with the same dtypes, for shuffled rows, numeric
ids, CSV, Parquet parts and a customers join.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from supportrl.envs.rewards import OUTCOMES
from supportrl.simulators.logs import DEFAULT_ACTIONS, load_conversations, load_decisions
from supportrl.simulators.synthetic import generate_logs


def oracle(turns: pd.DataFrame, customers: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """Expected arrays by pandas: string forms, stable sort by (id, turn), merge on id."""
    frame = turns.copy()
    frame["conversation_id"] = frame["conversation_id"].astype(str)
    frame["_row"] = np.arange(len(frame))
    if customers is not None:
        frame = frame.merge(customers.astype({"customer_id": str}), on="customer_id", how="left")
        assert len(frame) == len(turns)
    frame = frame.sort_values(["conversation_id", "turn"], kind="stable")
    ids = frame["conversation_id"].to_numpy(dtype=str)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    out = {
        "conversation_id": ids[starts],
        "offsets": np.r_[starts, len(ids)],
        "turn": frame["turn"].to_numpy(np.int64),
        "intent": frame["intent"].astype(str).to_numpy(dtype=str),
        "action": np.array([DEFAULT_ACTIONS.index(a) for a in frame["action"]]),
        "outcome": np.array([OUTCOMES.index(o) for o in frame["outcome"]]),
        "sentiment": frame["sentiment"].to_numpy(float),
        "csat": frame["csat"].to_numpy(float),
        "source_row": frame["_row"].to_numpy(np.int64),
        "customer_id": frame["customer_id"].astype(str).to_numpy(dtype=str),
    }
    for c in ("channel", "tier", "level"):
        if c in frame:
            out[c] = frame[c].astype(str).to_numpy(dtype=str)
    return out


def variants(tmp_path: Path) -> list[tuple[str, Path, Path | None, pd.DataFrame, pd.DataFrame]]:
    generated = generate_logs(300, seed=3)
    turns_path, customers_path = generated.write(tmp_path / "data")
    turns = pd.read_parquet(turns_path)
    customers = pd.read_parquet(customers_path)
    customers["tier"] = np.where(np.arange(len(customers)) % 3 == 0, "pro", "free")
    customers = customers.sample(frac=1.0, random_state=2)
    customers_path = tmp_path / "customers.parquet"
    customers.to_parquet(customers_path)
    shuffled = turns.sample(frac=1.0, random_state=0).reset_index(drop=True)
    numeric_ids = shuffled.assign(
        conversation_id=shuffled["conversation_id"].str[1:].astype(int) * 37 % 1009,
        level=shuffled["turn"] % 3,  # categorical feature stored as numbers
    )
    out = []
    for name, frame in (("sorted", turns), ("shuffled", shuffled), ("numeric", numeric_ids)):
        path = tmp_path / f"{name}.parquet"
        frame.to_parquet(path)
        out.append((name, path, customers_path, frame, customers))
    csv = tmp_path / "shuffled.csv"
    shuffled.to_csv(csv, index=False)
    customers_csv = tmp_path / "customers.csv"
    customers.to_csv(customers_csv, index=False)
    out.append(("csv", csv, customers_csv, shuffled, customers))
    parts = tmp_path / "parts"
    parts.mkdir()
    half = len(shuffled) // 2
    shuffled.iloc[:half].to_parquet(parts / "a.parquet")
    shuffled.iloc[half:].to_parquet(parts / "b.parquet")
    out.append(("parts", parts, None, shuffled, None))
    return out


def test_loaded_arrays_equal_a_plain_pandas_reading(tmp_path: Path) -> None:
    for name, path, customers_path, turns, customers in variants(tmp_path):
        declared = name == "numeric"  # a numeric column declared categorical
        logs = load_conversations(
            path,
            customers=customers_path,
            categorical=["channel", "level", "tier"] if declared else None,
            numeric=["prior_contacts_30d", "tenure_months"] if declared else None,
        )
        expected = oracle(turns, customers)
        for key, want in expected.items():
            got = logs.features[key] if key in ("channel", "tier", "level") else getattr(logs, key)
            assert got.dtype == want.dtype or key in ("action", "outcome"), (name, key)
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: {key}")
        assert logs.action.dtype == logs.outcome.dtype == np.int64


@pytest.mark.parametrize("given", [None, [str(a) for a in range(12)]])
def test_decisions_actions_by_string_form(tmp_path: Path, given: list[str] | None) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "action": rng.integers(0, 11, 400),
            "reward": rng.normal(size=400),
            "propensity": 0.5,
            "plan": rng.choice(["a", "b"], 400),
        }
    )
    path = tmp_path / "bandit.csv"
    frame.to_csv(path, index=False)
    loaded = load_decisions(path, actions=given)
    catalogue = given or [str(a) for a in sorted(frame["action"].unique())]
    assert loaded.actions == tuple(catalogue)  # numeric labels sorted as numbers: 2 < 10
    np.testing.assert_array_equal(loaded.action, [catalogue.index(str(a)) for a in frame["action"]])
    np.testing.assert_array_equal(loaded.context["plan"], frame["plan"].to_numpy(dtype=str))


def dictionary_variants(
    tmp_path: Path,
) -> list[tuple[str, Path, Path | None, pd.DataFrame, pd.DataFrame | None]]:
    """Files that exercise the loader's Arrow paths: dictionary columns over several row
    groups, a dictionary holding values no row uses, non-ASCII ids and intents, numeric
    customer ids (the join's general path), ids sliced from a larger Arrow buffer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    generated = generate_logs(200, seed=5)
    turns_path, customers_path = generated.write(tmp_path / "dict")
    turns = pd.read_parquet(turns_path).sample(frac=1.0, random_state=1).reset_index(drop=True)
    customers = pd.read_parquet(customers_path)
    out = []

    groups = tmp_path / "groups.parquet"  # row groups of 50 rows: one dictionary per group
    pq.write_table(pa.Table.from_pandas(turns, preserve_index=False), groups, row_group_size=50)
    out.append(("row groups", groups, customers_path, turns, customers))

    unused = tmp_path / "unused.parquet"  # an intent level no row holds
    table = pa.Table.from_pandas(turns, preserve_index=False)
    levels = sorted(set(turns["intent"])) + ["never_used"]
    intent = pa.DictionaryArray.from_arrays(
        pa.array([levels.index(v) for v in turns["intent"]], pa.int32()), pa.array(levels)
    )
    table = table.set_column(table.schema.get_field_index("intent"), "intent", intent)
    pq.write_table(table, unused)
    out.append(("unused level", unused, customers_path, turns, customers))

    accents = turns.assign(
        conversation_id="ç" + turns["conversation_id"],
        customer_id="ü" + turns["customer_id"],
        intent=turns["intent"] + "_é",
    )
    accents_customers = customers.assign(customer_id="ü" + customers["customer_id"])
    accents_path, accents_cust = tmp_path / "accents.parquet", tmp_path / "accents_c.parquet"
    accents.to_parquet(accents_path)
    accents_customers.to_parquet(accents_cust)
    out.append(("non-ascii", accents_path, accents_cust, accents, accents_customers))

    numbers = turns.assign(customer_id=turns["customer_id"].str[1:].astype(int))
    numbers_customers = customers.assign(customer_id=customers["customer_id"].str[1:].astype(int))
    numbers_path, numbers_cust = tmp_path / "numbers.parquet", tmp_path / "numbers_c.parquet"
    numbers.to_parquet(numbers_path)
    numbers_customers.to_parquet(numbers_cust)
    as_text = numbers.astype({"customer_id": str})  # the loader joins on string forms
    out.append(("numeric customers", numbers_path, numbers_cust, as_text, numbers_customers))

    sliced = tmp_path / "sliced.parquet"  # written from a slice: offsets not starting at 0
    big = pa.Table.from_pandas(pd.concat([turns, turns]), preserve_index=False)
    pq.write_table(big.slice(len(turns), len(turns)), sliced)
    out.append(("slice", sliced, customers_path, turns, customers))
    return out


def test_dictionary_reads_equal_a_plain_pandas_reading(tmp_path: Path) -> None:
    for name, path, customers_path, turns, customers in dictionary_variants(tmp_path):
        logs = load_conversations(path, customers=customers_path)
        expected = oracle(turns, customers)
        for key, want in expected.items():
            got = logs.features[key] if key in ("channel", "tier", "level") else getattr(logs, key)
            assert got.dtype == want.dtype or key in ("action", "outcome"), (name, key)
            np.testing.assert_array_equal(got, want, err_msg=f"{name}: {key}")
        if name == "unused level":  # levels are the values rows hold, as in a plain reading
            assert "never_used" not in set(logs.intent.tolist())


def test_string_column_declared_numeric_names_its_values(tmp_path: Path) -> None:
    """A string column the loader reads as a dictionary, declared numeric: the same
    'expected numbers' error, naming the file, column, rows and values."""
    from supportrl.simulators.logs import LogValidationError

    turns_path, _ = generate_logs(50, seed=1).write(tmp_path / "d")
    with pytest.raises(LogValidationError) as err:
        load_conversations(turns_path, categorical=[], numeric=["channel", "prior_contacts_30d"])
    message = str(err.value)
    assert "column 'channel'" in message and "expected numbers, got" in message
    assert "row(s) 0, 1, 2, 3, 4" in message and str(turns_path) in message


def test_loaded_arrays_are_writable_copies(tmp_path: Path) -> None:
    """Rows already in order skip the reordering: every array is still the loader's own
    (writable; not a read-only view of the frame it read)."""
    turns_path, customers_path = generate_logs(100, seed=2).write(tmp_path / "d")
    logs = load_conversations(turns_path, customers=customers_path)
    np.testing.assert_array_equal(logs.source_row, np.arange(logs.n_turns))  # written sorted
    arrays = {k: getattr(logs, k) for k in ("turn", "intent", "sentiment", "action", "csat")}
    arrays.update(logs.features)
    assert all(a.flags.writeable for a in arrays.values()), [
        k for k, a in arrays.items() if not a.flags.writeable
    ]
