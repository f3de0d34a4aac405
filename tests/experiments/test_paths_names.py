"""Paths the tool names with ``=``, other tools' column names, drift on small logs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from supportrl.experiments.entry import quote_paths

from tests.helpers import result_of, supportrl


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("run=out/multirun/agent=linucb,seed=0", "run='out/multirun/agent=linucb,seed=0'"),
        ("dir=/a/b=c", "dir='/a/b=c'"),
        ("artifact=/x/it's=1", "artifact='/x/it\\'s=1'"),
        ("run='already=quoted'", "run='already=quoted'"),
        ("run=plain/path", "run=plain/path"),
        ("data.turns=a.csv,b.csv", "data.turns=a.csv,b.csv"),  # a -m sweep over two files
        ("agent.alpha=0.1,0.2", "agent.alpha=0.1,0.2"),  # not a path key
    ],
)
def test_path_values_with_equals_are_quoted_for_hydra(arg: str, expected: str) -> None:
    assert quote_paths([arg]) == [expected]


def test_export_takes_a_run_folder_named_by_its_overrides(tmp_path: Path) -> None:
    run = tmp_path / "multirun" / "agent=linucb,seed=0"
    train = supportrl(
        tmp_path / "outputs", "train", "train.total_steps=300", "train.eval_conversations=200",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    export = supportrl(tmp_path / "outputs", "export", f"run={run}")  # as a shell passes it
    assert export.returncode == 0, export.stderr[-2000:]
    assert Path(result_of(export)["artifact"]).is_dir()


@pytest.fixture(scope="module")
def small_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("logs")
    gen = supportrl(out / "outputs", "generate", "generate.n_conversations=300",
                    "generate.format=csv")  # fmt: skip
    assert gen.returncode == 0, gen.stderr[-2000:]
    return result_of(gen)


def test_obp_propensity_column_gets_a_did_you_mean(small_logs, tmp_path: Path) -> None:
    turns = pd.read_csv(small_logs["turns"]).rename(columns={"propensity": "propensity_score"})
    path = tmp_path / "turns.csv"
    turns.to_csv(path, index=False)
    proc = supportrl(tmp_path / "outputs", "validate", f"data.turns={path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "column 'propensity_score': did you mean propensity?" in proc.stderr


def test_drift_on_a_tiny_log_says_it_has_too_few_rows(small_logs, tmp_path: Path) -> None:
    export = supportrl(
        tmp_path / "outputs", "export", "run=configs/rules/rules_production.yaml",
        "export.summary_conversations=300",
    )  # fmt: skip
    assert export.returncode == 0, export.stderr[-2000:]
    artifact = result_of(export)["artifact"]
    turns = pd.read_csv(small_logs["turns"])
    first = turns[turns["conversation_id"].isin(turns["conversation_id"].unique()[:2])]
    path = tmp_path / "tiny.csv"
    first.to_csv(path, index=False)
    proc = supportrl(
        tmp_path / "outputs", "validate", f"data.turns={path}",
        f"data.customers={small_logs['customers']}", f"artifact={artifact}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "too few rows to read drift" in proc.stdout and "major shift" not in proc.stdout


def test_rule_literals_are_checked_against_the_vocabulary() -> None:
    from supportrl.agents.rules import RulePolicy
    from supportrl.simulators.logs import DEFAULT_ACTIONS

    vocabulary = {"intent": ["billing", "other", "cancel"], "tier": ["free", "pro"]}
    typo = RulePolicy(
        DEFAULT_ACTIONS,
        [{"when": 'sentiment < 0 and intent == "othr"', "action": "empathize"}],
        default="direct_answer",
    )
    with pytest.raises(
        ValueError, match=r"rules\[0\].*'othr' is not a value of intent; did you mean 'other'\?"
    ):
        typo.check_literals(vocabulary)
    listed = RulePolicy(
        DEFAULT_ACTIONS,
        [{"when": 'tier in ["pro", "enterprise"]', "action": "escalate_human"},
         {"when": 'intent != "billing"', "action": "faq_link"}],
        default="direct_answer",
    )  # fmt: skip
    notes = listed.check_literals(vocabulary)
    assert len(notes) == 1 and "'enterprise' is not a value of tier" in notes[0]


def test_evaluate_refuses_a_rule_with_a_misspelt_value(small_logs, tmp_path: Path) -> None:
    rules = tmp_path / "rules_typo.yaml"
    rules.write_text(
        "rules:\n  - when: 'intent == \"biling\"'\n    action: empathize\ndefault: direct_answer\n"
    )
    proc = supportrl(
        tmp_path / "outputs", "evaluate", f"data.turns={small_logs['turns']}",
        f"data.customers={small_logs['customers']}", f"policies=[{rules}]",
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'biling' is not a value of intent; did you mean 'billing'?" in proc.stderr
