"""Customer data stays private: no raw customer id in anything a pipeline run writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from supportrl.privacy import PREFIX, SALT_ENV, id_salt, pseudonymize
from tests.helpers import result_of, supportrl
from tests.simulators.test_logs import base_frame

TEXT_SUFFIXES = {".json", ".csv", ".yaml", ".yml", ".html", ".log", ".txt", ".md", ".jsonl"}


def test_pseudonyms_are_salted_stable_and_never_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = np.array(["u1", "u2", "u1", "alice@example.com"])
    a = pseudonymize(ids, b"salt-a")
    assert a[0] == a[2] and a[0] != a[1] and all(p.startswith(PREFIX) for p in a)
    assert not set(a) & set(ids)
    assert (pseudonymize(ids, b"salt-b") != a).all()  # the salt is the key
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert id_salt("from-config") == b"from-env"
    monkeypatch.delenv(SALT_ENV)
    assert id_salt("from-config") == b"from-config"
    assert id_salt() == id_salt() and len(id_salt()) == 32  # random per process


def test_unknown_customer_ids_are_not_echoed(tmp_path: Path) -> None:
    turns = tmp_path / "turns.csv"
    base_frame().assign(customer_id=["secret-1"] * 3 + ["secret-2"] * 2).to_csv(turns, index=False)
    customers = tmp_path / "customers.csv"
    pd.DataFrame({"customer_id": ["other"], "tier": ["pro"]}).to_csv(customers, index=False)
    proc = supportrl(
        tmp_path / "outputs", "validate", f"data.turns={turns}", f"data.customers={customers}"
    )
    assert proc.returncode == 2 and "customer_id not in customers table" in proc.stderr
    assert "secret-" not in proc.stderr + proc.stdout


def test_pipeline_outputs_hold_no_raw_customer_id(tmp_path: Path) -> None:
    """Every text file a small pipeline run writes, except the logs it generated, is scanned."""
    proc = supportrl(
        tmp_path / "outputs",
        "pipeline",
        "generate.n_conversations=400",
        "train.total_steps=1000",
        "fit.true_value_conversations=300",
        "fit.simulated_conversations=300",
        "n_conversations=200",
        "ope.n_refit=20",
        "logger.progress=false",
        "loop.rounds=1",
        "loop.conversations=300",
        "loop.look_every=300",
        "loop.extend=0",
    )
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    data_dir = Path(result["data"]["turns"]).parent if "data" in result else None
    run = Path(proc.stdout.split("run_dir: ")[1].splitlines()[0])
    data_dir = data_dir or run / "data"
    ids = set(pd.read_parquet(data_dir / "customers.parquet")["customer_id"].astype(str))
    assert len(ids) > 100
    scanned = 0
    for path in run.rglob("*"):
        if not path.is_file() or data_dir in path.parents:
            continue
        if path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        text = path.read_text(errors="replace")
        # ids are 'u' + digits: match whole tokens only
        tokens = set(text.replace('"', " ").replace(",", " ").split())
        leaked = tokens & ids
        assert not leaked, f"{path} holds raw customer id(s) {sorted(leaked)[:3]}"
        scanned += 1
    assert scanned >= 3
    assert not (set((proc.stdout + proc.stderr).split()) & ids)
