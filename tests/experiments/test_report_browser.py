"""``report.html`` as a person sees it: rendered by headless Chromium (Debian's package).

`.ci/run` installs chromium and sets SUPPORTRL_REQUIRE_BROWSER=1, so in CI a missing
browser fails this test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from supportrl.experiments.report import collect, write_report

from tests.experiments.test_sweeps import fake_pipeline_run


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("SUPPORTRL_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium not installed (CI installs it: .ci/run)")
    return found


def _headless(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_report_html_renders_its_table_and_figures_in_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    runs = tmp_path / "runs"
    for config, estimates in {"agent.alpha=0.1": [0.3, 0.4], "agent.alpha=2.0": [0.6, 0.5]}.items():
        for seed, est in enumerate(estimates):
            fake_pipeline_run(runs, config, seed, est, sim=est + 0.1)
    out = tmp_path / "report"
    out.mkdir()
    page = Path(write_report(out, collect(runs, "seq_dr"), select="seq_dr", title="t")["html"])
    dom = _headless(browser, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('src="data:image/png;base64,') == 3  # curves, forest, agreement
    assert "agent.alpha=2.0" in dom.stdout and "<table" in dom.stdout
    shot = tmp_path / "shot.png"
    done = _headless(
        browser, tmp_path, f"--screenshot={shot}", "--window-size=1400,4000", page.as_uri()
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    # matplotlib's first two colours (C0 blue, C1 orange) drawn by the browser: the embedded
    # figures decoded and were laid out, not left as broken images
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        close = np.abs(pixels - np.array(colour) / 255.0).max(axis=-1) < 0.08
        assert close.sum() > 500, colour
