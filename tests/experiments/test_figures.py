"""Figures a reviewer accepts: one estimand per axis, intervals named, sorted, grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
from supportrl.experiments.plots import forest_figure, learning_curves, write_metrics

ROWS = [
    {"policy": "a", "scope": "conversation", "estimator": "wpdis", "estimate": 0.2,
     "ci_low": 0.1, "ci_high": 0.3},
    {"policy": "a", "scope": "conversation", "estimator": "seq_dr", "estimate": 0.4,
     "ci_low": 0.3, "ci_high": 0.5, "selection_low": -2.0, "selection_high": 1.0},
    {"policy": "a", "scope": "decision", "estimator": "dr", "estimate": 0.03,
     "ci_low": 0.01, "ci_high": 0.05},
    {"policy": "a", "scope": "decision", "estimator": "ips", "estimate": 0.05,
     "ci_low": 0.02, "ci_high": 0.08},
]  # fmt: skip


def test_forest_gives_each_estimand_its_own_axis_sorted_with_named_intervals() -> None:
    fig = forest_figure(ROWS, logging_value=0.25)
    conv, dec = fig.axes
    assert "per conversation" in conv.get_xlabel() and "per decision" in dec.get_xlabel()
    assert "95% interval" in conv.get_xlabel()
    # highest estimate on top (the first tick label sits at the top)
    assert [t.get_text() for t in conv.get_yticklabels()] == ["a · seq_dr", "a · wpdis"]
    assert [t.get_text() for t in dec.get_yticklabels()] == ["a · ips", "a · dr"]
    # the logging policy (a conversation value) is drawn on the conversation axis only
    dashed = [ln for ax in (conv, dec) for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].axes is conv and dashed[0].get_xdata()[0] == 0.25
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "zero" in legend and "logging policy (+0.250)" in legend
    assert any(t.startswith("selection interval") for t in legend)
    # the wide selection interval is cut at the axis, not allowed to flatten the others
    low, high = conv.get_xlim()
    assert low > -2.0 and high < 1.0 and low <= 0.0 and high >= 0.5


def test_training_panels_sit_in_a_grid_and_say_where_returns_come_from(tmp_path: Path) -> None:
    steps = np.arange(1, 11) * 100.0
    names = ["charts/episodic_return", "losses/td_loss", "losses/q_values", "charts/epsilon",
             "charts/SPS"]  # fmt: skip
    columns = {"env_steps": steps, **{n: np.linspace(0, 1, 10) for n in names}}
    png = write_metrics(tmp_path, columns, title="dqn", source="fitted simulator")
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width <= 1200 and height >= width  # 2 columns x 3 rows, not a 2750x400 strip
    bands = {"cfg": (steps, steps / 1000, steps / 1000 - 0.1, steps / 1000 + 0.1, 1)}
    assert learning_curves(tmp_path / "curves.png", bands, source="fitted simulator").exists()
