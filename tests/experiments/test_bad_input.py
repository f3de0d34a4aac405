"""Input that costs too much or says too little (issue 13): clear errors, before any work.

Each test is a reproduction: a label of 100,000 characters, thousands of intents, nested
Parquet columns, parts of different types, a duplicated CSV header, a customers table
with its index or personal data, settings out of range, and a plot that cannot be drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from supportrl.experiments.plots import forest_plot
from supportrl.experiments.results import plot_or_warn
from supportrl.experiments.stages import estimate_text
from supportrl.simulators.logs import (
    LogLimits,
    LogValidationError,
    load_conversations,
    load_decisions,
)

from tests.helpers import result_of, supportrl
from tests.simulators.test_logs import base_frame


def one_turn_conversations(n: int) -> pd.DataFrame:
    """``n`` one-turn conversations, each by its own customer."""
    return pd.DataFrame(
        {
            "conversation_id": [f"c{i}" for i in range(n)],
            "turn": 0,
            "customer_id": [f"u{i}" for i in range(n)],
            "intent": "billing",
            "sentiment": 0.0,
            "action": "clarify",
            "outcome": "resolved",
        }
    )


def test_a_huge_label_is_refused_before_a_fixed_width_array(tmp_path: Path) -> None:
    """Reproduction: one 100,000-character intent took 4.2 GB and 30 s in validate."""
    frame = pd.concat([base_frame()] * 2000, ignore_index=True)
    frame["conversation_id"] = np.repeat(np.arange(4000), [3, 2] * 2000).astype(str)
    frame["turn"] = np.tile([0, 1, 2, 0, 1], 2000)
    frame.loc[7, "intent"] = "x" * 100_000
    path = tmp_path / "long.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(
        LogValidationError,
        match=r"long\.parquet, column 'intent', row\(s\) 7: value of 100000 characters; "
        r"at most 200 \(set data\.max_label_length=N",
    ):
        load_conversations(path)
    # a raised limit lets a long label through (300 characters: at 100,000 the fixed-width
    # array alone is the 4 GB of the reproduction, a minute of the test tier)
    frame.loc[7, "intent"] = "x" * 300
    frame.to_parquet(path, index=False)
    assert load_conversations(path, limits=LogLimits(max_label_length=300)).n_turns == 10_000


def test_too_many_intents_is_refused_with_the_setting_to_change(tmp_path: Path) -> None:
    """Reproduction: 5,130 distinct intents passed validate; evaluate did not finish."""
    frame = one_turn_conversations(5130)
    frame["intent"] = [f"intent_{i}" for i in range(5130)]
    path = tmp_path / "many.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(
        LogValidationError, match=r"column 'intent': 5130 distinct values; at most 1000"
    ):
        load_conversations(path)
    assert load_conversations(path, limits=LogLimits(max_levels=6000)).n_conversations == 5130
    with pytest.raises(ValueError, match="data.max_levels must be an integer >= 1"):
        LogLimits(max_levels=0)


@pytest.mark.parametrize(
    "column",
    [pa.array([["a"], ["b"], [], ["c"], ["d"]]), pa.array([{"x": 1}] * 5)],
    ids=["list", "struct"],
)
def test_nested_parquet_columns_name_the_column(tmp_path: Path, column: pa.Array) -> None:
    """Reproduction: list/struct columns failed with 'unhashable type'."""
    table = pa.Table.from_pandas(base_frame(), preserve_index=False).append_column("tags", column)
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    with pytest.raises(LogValidationError, match=r"nested\.parquet: column\(s\) 'tags' \("):
        load_conversations(path)


def test_parquet_parts_with_different_column_types_are_refused(tmp_path: Path) -> None:
    """Reproduction: float in one part and string in another became levels '2' and '2.0'."""
    parts = tmp_path / "parts"
    parts.mkdir()
    frame = base_frame()
    frame.iloc[:3].assign(level=2.0).to_parquet(parts / "part-0.parquet", index=False)
    frame.iloc[3:].assign(level="2").to_parquet(parts / "part-1.parquet", index=False)
    with pytest.raises(
        LogValidationError, match=r"part-1\.parquet, column 'level': type (object|str) differs"
    ):
        load_conversations(parts)


def test_a_duplicated_csv_column_is_refused(tmp_path: Path) -> None:
    """Reproduction: a second 'action' column was renamed 'action.1' and used as a feature."""
    frame = base_frame()
    path = tmp_path / "dup.csv"
    text = frame.to_csv(index=False).splitlines()
    rows = [line + "," + line.split(",")[5] for line in text]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(
        LogValidationError, match=r"dup\.csv: column\(s\) \['action'\] appear more than once"
    ):
        load_conversations(path)


def test_customers_saved_with_their_index_are_refused(tmp_path: Path) -> None:
    """Reproduction: a customers CSV with 'Unnamed: 0' became a feature."""
    turns = tmp_path / "turns.csv"
    base_frame().to_csv(turns, index=False)
    customers = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": ["u1", "u2"], "tier": ["pro", "free"]}).to_csv(customers)
    with pytest.raises(LogValidationError, match=r"customers\.csv, column 'Unnamed: 0'"):
        load_conversations(turns, customers=customers)


def test_customers_unique_per_row_column_is_refused(tmp_path: Path) -> None:
    """Reproduction: a unique-per-row customers column became a feature."""
    frame = one_turn_conversations(30)
    turns = tmp_path / "turns.csv"
    frame.to_csv(turns, index=False)
    customers = tmp_path / "customers.csv"
    pd.DataFrame(
        {"customer_id": frame["customer_id"], "ref": [f"r-{i}" for i in range(30)]}
    ).to_csv(customers, index=False)
    with pytest.raises(
        LogValidationError, match=r"customers\.csv, column 'ref': a different value on every row"
    ):
        load_conversations(turns, customers=customers)


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("email", [f"user{i}@example.com" for i in range(5)], "its name suggests personal data"),
        (
            "contact",
            [f"user{i}@example.com" for i in range(5)],
            "its values look like e-mail addresses",
        ),
        (
            "callback",
            [f"+1 415 555 01{i:02d}" for i in range(5)],
            "its values look like phone numbers",
        ),
        ("last_name", ["Smith", "Jones", "Smith", "Lee", "Lee"], "its name suggests personal"),
    ],
)
def test_personal_data_columns_are_refused_unless_declared(
    tmp_path: Path, column: str, values: list[str], reason: str
) -> None:
    frame = base_frame().assign(**{column: values})
    path = tmp_path / "turns.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(LogValidationError, match=rf"column '{column}': {reason}"):
        load_conversations(path)
    declared = load_conversations(
        path, categorical=["channel", column], numeric=["prior_contacts_30d"]
    )
    assert column in declared.categorical  # declaring it is the explicit override
    bandit = tmp_path / "bandit.csv"
    pd.DataFrame({"action": ["a", "b"] * 3, "reward": 1.0, column: values + values[:1]}).to_csv(
        bandit, index=False
    )
    with pytest.raises(LogValidationError, match=rf"column '{column}'"):
        load_decisions(bandit, propensity_col=None)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ope.alpha=1.5", "ope.alpha must be a number in (0, 1)"),
        ("ope.n_bootstrap=0", "ope.n_bootstrap must be an integer >= 1"),
        ("data.turns=''", "data.turns must be a path"),
    ],
)
def test_settings_are_checked_before_any_work(tmp_path: Path, override: str, message: str) -> None:
    """Reproduction: found only after loading and fitting; '' read the current directory."""
    turns = tmp_path / "turns.csv"
    base_frame().to_csv(turns, index=False)
    args = ["evaluate", "policies=[configs/rules/rules_production.yaml]", override]
    if not override.startswith("data.turns"):
        args.append(f"data.turns={turns}")
    proc = supportrl(tmp_path / "outputs", *args)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {message}" in proc.stderr and "Traceback" not in proc.stderr
    assert "features inferred" not in proc.stdout  # nothing was loaded


def test_forest_plot_tolerates_rounding_outside_the_interval(tmp_path: Path) -> None:
    """Reproduction: "'xerr' must not contain negative values" failed the whole evaluate."""
    table = [
        {"policy": "p", "scope": "conversation", "estimator": "wdr", "estimate": 0.1,
         "ci_low": 0.1 + 1e-12, "ci_high": 0.3},
        {"policy": "p", "scope": "conversation", "estimator": "pdis", "estimate": float("nan"),
         "ci_low": float("nan"), "ci_high": float("nan")},
    ]  # fmt: skip
    forest_plot(tmp_path / "forest.png", table)
    assert (tmp_path / "forest.png").stat().st_size > 0


def test_a_failing_plot_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(path: Path) -> None:
        path.write_bytes(b"partial")
        raise ValueError("'xerr' must not contain negative values")

    assert plot_or_warn(broken, tmp_path / "forest.png") is False
    assert not (tmp_path / "forest.png").exists()
    out = capsys.readouterr().out
    assert re.search(r"warning: forest\.png not written \(ValueError: 'xerr'", out)


def _row(est: float, scope: str = "conversation", estimator: str = "pdis") -> dict:
    return {"policy": "p", "scope": scope, "estimator": estimator, "estimate": est,
            "ci_low": est - 0.1, "ci_high": est + 0.1}  # fmt: skip


def test_zero_over_zero_is_shown_as_na_with_the_reason() -> None:
    """Reproduction: a target without logged support printed +0.0000 [+0.0000, +0.0000]."""
    shown, flag = estimate_text(_row(0.0), {"ess_decision": 0.0}, (-1.0, 1.0))
    assert shown.split()[0] == "n/a" and "no logged support" in shown and flag
    shown, _ = estimate_text(_row(float("nan")), {"ess_decision": 5.0}, (-1.0, 1.0))
    assert shown.split()[0] == "n/a" and "no estimate" in shown
    shown, flag = estimate_text(_row(0.2), {"ess_decision": 5.0}, (-1.0, 1.0))
    assert shown.strip().startswith("+0.2000") and flag == ""


def test_estimates_outside_the_logged_returns_are_flagged() -> None:
    """Reproduction: pdis -1.5e20 for bounded returns with propensity 1e-6, unflagged."""
    shown, flag = estimate_text(_row(-1.5e20), {"ess_decision": 3.0}, (-1.6, 1.4))
    assert shown.endswith("(!)") and "outside the logged returns [-1.6000, +1.4000]" in flag
    # per-decision estimates are on another scale: not compared with conversation returns
    assert estimate_text(_row(-5.0, scope="decision"), {"ess_decision": 3.0}, (-1.6, 1.4))[1] == ""


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_censored_logs_and_constant_propensities_are_warned(tmp_path: Path, fmt: str) -> None:
    """Reproduction: all conversations censored, and propensity 1 on every row while
    several actions occur, were summarized without a word."""
    frame = base_frame().assign(outcome="continue", propensity=1.0, csat=np.nan)
    path = tmp_path / f"turns.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
    proc = supportrl(tmp_path / "outputs", "validate", f"data.turns={path}")
    assert proc.returncode == 0, proc.stderr
    assert "warning: every conversation is censored" in proc.stdout
    assert "warning: every logged propensity is 1 but 5 different actions occur" in proc.stdout
    assert len(result_of(proc)["summary"]["warnings"]) == 2


def _unreadable(tmp_path: Path, kind: str, turns: Path) -> tuple[str, Path]:
    """(the ``data.turns`` value, the unreadable file it must be named by)."""
    rng = np.random.default_rng(0)
    if kind == "random bytes":
        path = tmp_path / "random.parquet"
        path.write_bytes(rng.bytes(2000))
        return str(path), path
    # a directory of parts, the last one cut in half (a copy that did not finish)
    frame = pd.read_parquet(turns)
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[rows].to_parquet(parts / f"part-{i}.parquet", index=False)
    cut = parts / "part-2.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return str(parts), cut


EVALUATE = ["evaluate", "policies=[configs/rules/rules_production.yaml]"]


@pytest.mark.parametrize(
    ("kind", "command"),
    [
        ("random bytes", ["validate"]),
        ("random bytes", EVALUATE),
        ("random bytes", ["pipeline"]),
        ("truncated part", ["validate"]),
        ("truncated part", [*EVALUATE, "engine=local"]),
        ("truncated part", ["fit", "fit.sample_turns=100"]),
    ],
    ids=lambda c: c if isinstance(c, str) else " ".join(c[:1] + c[2:]),
)
def test_an_unreadable_parquet_file_is_named(
    tmp_path: Path, small_log_files: tuple[Path, Path], kind: str, command: list[str]
) -> None:
    """Reproduction: pyarrow's "Parquet magic bytes not found in footer", no file named."""
    turns, customers = small_log_files
    given, culprit = _unreadable(tmp_path, kind, turns)
    proc = supportrl(
        tmp_path / "outputs", *command, f"data.turns={given}", f"data.customers={customers}"
    )
    assert proc.returncode == 2, proc.stderr
    assert f"error: {culprit}: not a readable Parquet file (" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]


def test_an_unreadable_customers_file_is_named(
    tmp_path: Path, small_log_files: tuple[Path, Path]
) -> None:
    turns, _ = small_log_files
    customers = tmp_path / "customers.parquet"
    customers.write_bytes(np.random.default_rng(1).bytes(500))
    proc = supportrl(
        tmp_path / "outputs", "validate", f"data.turns={turns}", f"data.customers={customers}"
    )
    assert proc.returncode == 2
    assert f"error: {customers}: not a readable Parquet file (" in proc.stderr
