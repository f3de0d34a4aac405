"""Issue 22 item 16: a busy port, and Ctrl-C at any moment of a command. Real subprocesses,
real signals: ``serve`` on a port another server holds exits 2 naming the port and claims
no URL; Ctrl-C while the imports run, or in any pipeline stage, exits 130 with one
``interrupted`` line, no traceback, and leaves no file the run created."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.experiments.export import export_policy
from supportrl.simulators.synthetic import SyntheticWorld

from tests.experiments.test_pipeline import SMALL
from tests.helpers import supportrl

WORLD = SyntheticWorld()
SCRIPT = Path(sys.executable).with_name("supportrl")


def _not_hydra(path: Path) -> bool:
    """Not Hydra's own bookkeeping (``.hydra/``, ``COMMAND.log``), which Hydra writes first."""
    return ".hydra" not in path.parts and path.suffix != ".log"


def _popen(cmd: list[str]) -> subprocess.Popen[str]:
    # as a foreground run gets it: a shell starts background jobs with SIGINT ignored, and
    # Python keeps it ignored
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=2)
    policy = QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)
    return export_policy(policy, tmp_path_factory.mktemp("signals") / "artifact")


def test_serve_on_a_busy_port_exits_2_naming_it_and_claims_no_url(
    artifact: Path, tmp_path: Path
) -> None:
    """It exited 3 with uvicorn's errno, after writing a result.json that claimed the URL."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = tmp_path / "run"
        proc = supportrl(
            tmp_path, "serve", f"artifact={artifact}", f"serve.port={port}",
            f"serve.log_dir={tmp_path / 'log'}", f"hydra.run.dir={run}", timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        error = proc.stderr.strip().splitlines()[-1]
        assert error == (
            f"error: serve.port={port}: cannot listen on 127.0.0.1:{port}: already in use "
            "(another server listens there; choose another port)"
        )
        assert not (run / "result.json").exists()
        assert not [p for p in run.rglob("*") if _not_hydra(p)] if run.exists() else True
        direct = subprocess.run(
            [sys.executable, "-m", "supportrl.serving.http", str(artifact), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert direct.returncode == 2 and "Traceback" not in direct.stderr
        assert f"error: --port {port}: cannot listen on 127.0.0.1:{port}" in direct.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_ctrl_c_while_importing_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Ctrl-C in the first second of ``supportrl pipeline`` printed a KeyboardInterrupt
    traceback from inside the imports (Gymnasium, numpy)."""
    run = tmp_path / "run"
    proc = _popen([str(SCRIPT), "pipeline", f"hydra.run.dir={run}"])
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 60
    # numpy's core loads while `import supportrl` imports Gymnasium: inside the imports
    while "_multiarray_umath" not in maps.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert not run.exists()


def _interrupt_at(stage: int, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    run = outputs / "run"
    run.mkdir(parents=True)
    (run / "mine.txt").write_text("the user's")
    proc = _popen(
        [sys.executable, "-m", "supportrl.experiments.cli", "pipeline", *SMALL]
        + [f"hydra.run.dir={run}", f"paths.output_dir={outputs}"]
    )
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the stage's first line: the stage has started
        seen.append(line)
        if line.startswith(f"[{stage}/"):
            proc.send_signal(signal.SIGINT)
            break
    else:
        proc.wait()
        pytest.fail(f"stage {stage} never started: {''.join(seen)[-2000:]}")
    out, err = proc.communicate(timeout=300)
    # 130 as a shell shows it: exit(130), or a death by SIGINT after the clean-up and the
    # `interrupted` line (seen in about 1 interrupt in 15 in the fit stage; not pinned down,
    # likely a library re-emitting the signal, as pyarrow's SignalStopHandler does)
    assert proc.returncode in (130, -signal.SIGINT), f"{''.join(seen)}{out}"[-2000:] + err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert (run / "mine.txt").read_text() == "the user's"
    assert sorted(p.name for p in run.iterdir() if _not_hydra(p)) == ["mine.txt"]
    assert sorted(p.name for p in outputs.iterdir()) == ["run"]


def test_ctrl_c_in_the_pipeline_leaves_no_file_it_created(tmp_path: Path) -> None:
    """Ctrl-C in pipeline stage 5 left a run folder in 2 of 9 tries."""
    _interrupt_at(5, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3, 4, 6, 7])
def test_ctrl_c_in_every_pipeline_stage_leaves_no_file_it_created(
    stage: int, tmp_path: Path
) -> None:
    _interrupt_at(stage, tmp_path)


def test_the_bound_socket_says_it_is_tcp() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP: without it every answer
    waited ~40 ms (Nagle and the client's delayed ACK; 85 instead of 320 calls/s)."""
    from supportrl.serving.http import bind_socket

    with bind_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
