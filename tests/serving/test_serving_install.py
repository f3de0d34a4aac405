"""The serving package installs on its own: a fresh venv gets numpy + onnxruntime only and decides."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from supportrl.agents.rules import load_rule_policy
from supportrl.experiments.export import export_policy
from supportrl.experiments.repo_files import REPO_ROOT
from supportrl.simulators.synthetic import SyntheticWorld

DECIDE = """
import json, sys
from supportrl.serving import Predictor
p = Predictor.load(sys.argv[1], seed=0)
d = p.decide(json.loads(sys.argv[2]))
heavy = sorted(m for m in ("torch", "pandas", "ray", "hydra", "yaml", "gymnasium") if m in sys.modules)
print(json.dumps({"decision": d.to_dict(), "heavy": heavy}))
"""


@pytest.mark.slow
def test_fresh_venv_with_only_the_serving_install_decides(tmp_path: Path) -> None:
    world = SyntheticWorld()
    policy = load_rule_policy(REPO_ROOT / "configs/rules/rules_production.yaml", world.actions)
    artifact = export_policy(policy, tmp_path / "artifact", feature_spec=world.feature_spec)
    # build from a copy, so the source tree gets no build/ or egg-info
    source = shutil.copytree(REPO_ROOT / "serving", tmp_path / "serving-src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{source}[http]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"numpy", "onnxruntime", "supportrl-serving", "fastapi", "uvicorn"} <= installed
    assert not installed & {
        "torch",
        "pandas",
        "ray",
        "hydra-core",
        "pyyaml",
        "gymnasium",
        "supportrl",
    }
    state = {
        "turn": 0,
        "previous_action": "none",
        "intent": "billing",
        "sentiment": -0.8,
        "tier": "free",
        "channel": "chat",
        "tenure_months": 12,
        "prior_contacts_30d": 1,
    }
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DECIDE, str(artifact), json.dumps(state)],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: only the installed package is importable
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["heavy"] == []
    expected = policy.action_probs({k: [v] for k, v in state.items()})[0]
    assert list(out["decision"]["probabilities"].values()) == pytest.approx(expected.tolist())

    # and serves it over HTTP, still without the framework
    port = free_port()
    server = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            "-m",
            "supportrl.serving.http",
            str(artifact),
            "--port",
            str(port),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answer = post_when_up(port, {"state": state}, server)
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert answer["probabilities"] == out["decision"]["probabilities"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_when_up(port: int, body: dict, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    while True:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/decide",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the server in the fresh venv did not come up"
            time.sleep(0.2)
