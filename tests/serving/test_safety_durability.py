"""Issue 22: nothing acknowledged to a client is lost. A real server (subprocess, 127.0.0.1)
takes decisions and outcomes, is killed with SIGKILL mid-stream, and is started again on the
same log folder: every decision answered ``"logged": true`` and every outcome answered
``"recorded": true`` is in the log that ``validate``/``evaluate``/``abtest`` read."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.serving.logger import DecisionLogger, JournalError, recover_journals
from supportrl.simulators.logs import load_conversations
from supportrl.simulators.synthetic import SyntheticWorld

from tests.serving.test_serving_http import STATE, call, free_port

WORLD = SyntheticWorld()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("durable")
    out = []
    for seed in (2, 3):
        network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=seed)
        policy = QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)
        out.append(export_policy(policy, root / f"artifact{seed}", epsilon=0.1))
    return out


def start(args: list[str], log: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportrl.serving.http", *args, "--port", str(port)]
        + ["--log-dir", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if call(base, "GET", "/health")[0] == 200:
                return proc, base
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    return stderr


def traffic(base: str, experiment: bool, kill_after: int, pid: int) -> tuple[dict, dict]:
    """Conversations of 1-3 turns, an outcome after most; SIGKILL the server once
    ``kill_after`` calls were acknowledged, from another thread, while calls go on.
    Returns the acknowledged decisions {(conversation, turn): answer} and outcomes."""
    decisions: dict[tuple[str, int], dict] = {}
    outcomes: dict[str, str] = {}
    acked = threading.Event()
    killer = threading.Thread(target=lambda: acked.wait(60) and os.kill(pid, signal.SIGKILL))
    killer.start()
    rng = np.random.default_rng(0)
    try:
        for c in range(10_000):
            cid = f"conv-{c}"
            for turn in range(int(rng.integers(1, 4))):
                body = {"state": {**STATE, "turn": turn}, "conversation_id": cid}
                if experiment:
                    body["customer_id"] = f"customer-{c % 7}"
                status, answer = call(base, "POST", "/v1/decide", body)
                assert status == 200, answer
                if answer["logged"]:
                    decisions[(cid, turn)] = answer
            if c % 4 != 3:  # some conversations stay open
                outcome = ("resolved", "escalated", "abandoned")[c % 3]
                status, answer = call(
                    base, "POST", "/v1/outcome", {"conversation_id": cid, "outcome": outcome}
                )
                assert status == 200, answer
                outcomes[cid] = outcome
            if len(decisions) + len(outcomes) >= kill_after:
                acked.set()
    # the server is gone (refused, reset, or killed mid-answer): calls in flight were never
    # acknowledged
    except (OSError, http.client.HTTPException):
        pass
    killer.join()
    assert decisions and outcomes
    return decisions, outcomes


def read_parts(log: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(log.glob("*.parquet"))])


def check_log(log: Path, decisions: dict, outcomes: dict) -> pd.DataFrame:
    assert not list(log.glob(".journal-*")), "the journal was not turned into parts"
    rows = read_parts(log)
    assert not rows.duplicated(["conversation_id", "turn"]).any()
    keys = set(zip(rows["conversation_id"], rows["turn"].astype(int), strict=True))
    missing = [k for k in decisions if k not in keys]
    assert not missing, f"{len(missing)} acknowledged decisions lost, e.g. {missing[:3]}"
    last = rows.sort_values("turn").groupby("conversation_id").tail(1)
    got = dict(zip(last["conversation_id"], last["outcome"], strict=True))
    wrong = {c: got.get(c) for c, o in outcomes.items() if got.get(c) != o}
    assert not wrong, f"acknowledged outcomes lost: {list(wrong.items())[:3]}"
    load_conversations(log)  # a valid schema-v1 log, as validate/evaluate read it
    return rows


def test_kill_9_mid_stream_loses_no_acknowledged_row(artifacts: list[Path], tmp_path: Path) -> None:
    log = tmp_path / "log"
    proc, base = start([str(artifacts[0])], log)
    decisions, outcomes = traffic(base, False, kill_after=120, pid=proc.pid)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list(log.glob(".journal-*.jsonl"))  # what the killed server left
    proc, base = start([str(artifacts[0])], log)  # a restart on the folder recovers it
    # the restarted server serves and logs on
    assert call(base, "POST", "/v1/decide", {"state": STATE, "conversation_id": "after"})[1][
        "logged"
    ]
    stop(proc)
    rows = check_log(log, decisions, outcomes)
    assert "after" in set(rows["conversation_id"])
    assert len(list(log.glob("part-*-recovered-00001.parquet"))) == 1


def test_kill_9_in_an_experiment_keeps_arm_decision_and_customer(
    artifacts: list[Path], tmp_path: Path
) -> None:
    spec = {
        "arms": {
            "control": {"artifact": str(artifacts[0]), "share": 0.5, "epsilon": 0.1},
            "new": {"artifact": str(artifacts[1]), "share": 0.5, "epsilon": 0.1},
        },
        "control": "control",
        "unit": "customer",
    }
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps(spec))
    log = tmp_path / "log"
    proc, base = start(["--experiment", str(exp)], log)
    decisions, outcomes = traffic(base, True, kill_after=80, pid=proc.pid)
    proc.wait(timeout=30)
    proc, _ = start(["--experiment", str(exp)], log)
    stop(proc)
    rows = check_log(log, decisions, outcomes).set_index(["conversation_id", "turn"])
    for key, answer in decisions.items():
        row = rows.loc[key]
        assert row["decision_id"] == answer["decision_id"]
        assert row["arm"] == answer["arm"]
        assert isinstance(row["customer_id"], str) and len(row["customer_id"]) == 16
        assert row["propensity"] == pytest.approx(answer["propensity"])


# --------------------------------------------------------------------------- the journal


def _logger(log: Path, **options: object) -> DecisionLogger:
    return DecisionLogger(log, categorical=["tier", "channel"], numeric=[], **options)


def _abandon(logger: DecisionLogger) -> None:
    """What a killed process leaves: its journal, unlocked, never closed."""
    assert logger._journal is not None
    os.close(logger._journal.fd)
    logger._journal.fd = -1


def test_the_journal_stays_bounded_and_a_recovery_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    logger = _logger(log, part_rows=1)
    for i in range(200):
        logger.log(f"c{i}", STATE, WORLD.actions[0], 0.5)
        logger.record_outcome(f"c{i}", "resolved")
    logger.log("open", STATE, WORLD.actions[1], 0.5)
    journal = list(log.glob(".journal-*.jsonl"))
    assert len(journal) == 1  # rotated at each part, older segments removed
    lines = journal[0].read_text().splitlines()
    assert len(lines) <= 3  # header, the decision of "open" (plus nothing older)
    # a second logger while the first is alive leaves its journal alone (locked)
    assert recover_journals(log) == []
    _abandon(logger)
    parts = recover_journals(log)
    assert len(parts) == 1 and not list(log.glob(".journal-*"))
    assert recover_journals(log) == []  # nothing twice
    rows = read_parts(log)
    assert rows["conversation_id"].tolist().count("open") == 1 and len(rows) == 201


def test_a_crash_between_the_part_and_the_journal_rotation_duplicates_nothing(
    tmp_path: Path,
) -> None:
    """The segment started before a part is written names that part: if the part exists,
    the older segments are obsolete (its snapshot of the open rows stands for them); if
    not, they are replayed and the snapshot is not."""

    def three_conversations(log: Path, block_part: bool = False) -> tuple[DecisionLogger, Path]:
        logger = _logger(log, part_rows=2)
        logger.log("a", STATE, WORLD.actions[0], 0.5)
        logger.log("b", STATE, WORLD.actions[0], 0.5)
        (first,) = log.glob(".journal-*.jsonl")
        os.link(first, log.parent / f"{log.name}-kept")  # its content, whatever happens next
        if block_part:  # a folder where the part goes: it cannot be renamed into place
            (log / f"part-{logger._stamp}-00001.parquet" / "x").mkdir(parents=True)
        logger.record_outcome("a", "resolved")
        logger.log("c", STATE, WORLD.actions[0], 0.5)
        logger.record_outcome("c", "escalated")  # 2 rows ready: a part; "b" stays open
        _abandon(logger)
        return logger, first

    # killed after the part was written, before the older segment was removed
    log = tmp_path / "log"
    _, first = three_conversations(log)
    assert not first.exists() and len(list(log.glob("part-*.parquet"))) == 1
    os.link(tmp_path / "log-kept", first)
    recover_journals(log)
    rows = read_parts(log)
    assert sorted(rows["conversation_id"]) == ["a", "b", "c"]  # "a", "c" not twice
    # killed after the part failed (it could not be renamed into place)
    log = tmp_path / "log2"
    logger, first = three_conversations(log, block_part=True)
    assert not logger.healthy and first.exists()
    shutil.rmtree(log / f"part-{logger._stamp}-00001.parquet")
    recover_journals(log)
    rows = read_parts(log)
    outcome = dict(zip(rows["conversation_id"], rows["outcome"], strict=True))
    assert len(rows) == 3 and outcome == {"a": "resolved", "b": "continue", "c": "escalated"}


def test_a_torn_last_line_is_skipped_and_a_corrupt_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "log"
    logger = _logger(log)
    logger.log("a", STATE, WORLD.actions[0], 0.5)
    _abandon(logger)
    (segment,) = log.glob(".journal-*.jsonl")
    segment.write_bytes(segment.read_bytes() + b'{"e":"d","c":{"conv')  # killed mid-write
    assert len(recover_journals(log)) == 1
    assert read_parts(log)["conversation_id"].tolist() == ["a"]
    log2 = tmp_path / "log2"
    logger = _logger(log2)
    logger.log("a", STATE, WORLD.actions[0], 0.5)
    logger.log("b", STATE, WORLD.actions[0], 0.5)
    _abandon(logger)
    (segment,) = log2.glob(".journal-*.jsonl")
    lines = segment.read_bytes().split(b"\n")
    lines[1] = b"garbage"
    segment.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match=rf"{segment.name}: line 2 is not a journal line"):
        _logger(log2)


def test_a_damaged_journal_stops_the_server_naming_the_file_and_line(
    artifacts: list[Path], tmp_path: Path
) -> None:
    log = tmp_path / "log"
    logger = _logger(log)
    logger.log("a", STATE, WORLD.actions[0], 0.5)
    logger.log("b", STATE, WORLD.actions[0], 0.5)
    _abandon(logger)
    (segment,) = log.glob(".journal-*.jsonl")
    segment.write_bytes(segment.read_bytes().replace(b'"e":"d"', b'"e":"?"', 1))
    proc = subprocess.run(
        [sys.executable, "-m", "supportrl.serving.http", str(artifacts[0])]
        + ["--port", str(free_port()), "--log-dir", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{segment}: line 2: unknown journal event '?'" in proc.stderr
    assert segment.exists()  # kept for the operator to look at


def test_fsync_syncs_every_journal_line_and_no_journal_writes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync=True`` (``--log-fsync``) syncs each acknowledged line to disk, and the rows
    are recovered as without it; ``journal=False`` (``--no-log-journal``) writes no journal."""
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    log = tmp_path / "synced"
    logger = _logger(log, sync=True)
    for i in range(3):
        logger.log(f"c{i}", STATE, WORLD.actions[0], 0.5)
        logger.record_outcome(f"c{i}", "resolved")
    assert len(synced) >= 6  # every decision and every outcome
    _abandon(logger)
    assert len(recover_journals(log)) == 1 and len(read_parts(log)) == 3

    plain = tmp_path / "memory"
    logger = _logger(plain, journal=False)
    logger.log("c0", STATE, WORLD.actions[0], 0.5)
    assert not list(plain.glob(".journal-*"))
    logger.close()
