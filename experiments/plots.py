"""Figures of the commands and the report: titled, axes labelled with units, legends.

All functions write a PNG (matplotlib, Agg backend) and return its path. Values are
expected conversation returns under the configured reward (reward units per conversation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.experiments.common import output

VALUE_LABEL = "value (reward per conversation)"
METRIC_LABELS = {
    "charts/episodic_return": "mean return per conversation (reward)",
    "charts/cumulative_regret": "cumulative regret (reward)",
    "losses/td_loss": "TD loss (Huber)",
    "losses/q_values": "mean Q-value (reward)",
    "charts/epsilon": "exploration epsilon",
    "charts/SPS": "env steps per second",
}


def short(label: str, width: int = 60) -> str:
    """A label cut to ``width`` characters (long override lists would squeeze the axes)."""
    return label if len(label) <= width else label[: width - 1] + "…"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # labels are user text (policy file names): "$" must never start matplotlib math text
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "text.parse_math": False})
    return plt


def write_metrics(
    out: Path,
    columns: Mapping[str, np.ndarray],
    *,
    title: str = "",
    reference: Mapping[str, float] | None = None,
) -> Path:
    """``out/metrics.csv`` (fixed metric names, ``env_steps`` first) and ``out/learning_curve.png``.

    ``reference``: horizontal lines on the return panel (e.g. best rule, logging policy).
    """
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    header = ",".join(columns)
    rows = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    np.savetxt(
        output(out / "metrics.csv"), rows, delimiter=",", header=header, comments="", fmt="%.6g"
    )
    steps = np.asarray(columns["env_steps"])
    metrics = [(k, v) for k, v in columns.items() if k != "env_steps"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], metrics, strict=True):
        ax.plot(steps, values, label=title or "agent")
        if name == "charts/episodic_return":
            for i, (ref, value) in enumerate((reference or {}).items()):
                ax.axhline(value, ls="--", lw=1, color=f"C{i + 1}", label=ref)
        ax.set_xlabel("env steps (decisions)")
        ax.set_ylabel(METRIC_LABELS.get(name, name))
        ax.set_title(f"{title}: {name}" if title else name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = output(out / "learning_curve.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def forest_plot(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    level: float = 0.95,
    logging_value: float | None = None,
    title: str = "Off-policy estimates",
) -> Path:
    """One row per ``{"label", "estimate", "ci_low", "ci_high"}`` (optional ``"policy"`` picks
    the colour), x = value with its ``level`` interval; the logging policy and zero as lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.8))
    y = np.arange(len(rows))[::-1]
    labels = [str(r.get("label") or f"{r.get('policy')} · {r.get('estimator')}") for r in rows]
    names = list(
        dict.fromkeys(str(r.get("policy", lab)) for r, lab in zip(rows, labels, strict=True))
    )
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for yi, r, lab in zip(y, rows, labels, strict=True):
        est, lo, hi = float(r["estimate"]), float(r["ci_low"]), float(r["ci_high"])
        if not (np.isfinite(est) and np.isfinite(lo) and np.isfinite(hi)):
            continue  # n/a rows: listed, not drawn
        # an estimate a rounding error outside its interval must not break the plot
        xerr = [[max(est - lo, 0.0)], [max(hi - est, 0.0)]]
        c = colours[str(r.get("policy", lab))]
        ax.errorbar([est], [yi], xerr=xerr, fmt="o", ms=4, capsize=3, color=c)
    ax.set_yticks(y, [short(lab) for lab in labels], fontsize=8)
    ax.axvline(0.0, color="grey", lw=0.8, label="zero")
    if logging_value is not None and np.isfinite(logging_value):
        ax.axvline(logging_value, color="k", ls="--", lw=1, label="logging policy")
    ax.set_xlabel(f"{VALUE_LABEL}, estimate and {level:.0%} interval")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(
    path: Path,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]],
    *,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """Mean return per configuration with its min..max band over seeds.

    ``bands``: ``{config: (env_steps, mean, low, high, n_seeds)}``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, (name, (steps, mean, low, high, n)) in enumerate(bands.items()):
        label = f"{short(name)} ({n} seed{'s' * (n != 1)})"
        ax.plot(steps, mean, color=f"C{i % 10}", label=label)
        ax.fill_between(steps, low, high, color=f"C{i % 10}", alpha=0.2)
    for j, (ref, value) in enumerate((reference or {}).items()):
        ax.axhline(value, ls="--", lw=1, color="k" if j == 0 else "grey", label=ref)
    ax.set_xlabel("env steps (decisions)")
    ax.set_ylabel(METRIC_LABELS["charts/episodic_return"])
    ax.set_title("Learning curves: mean over seeds, band = min..max")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def agreement_scatter(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Simulated value (x) against the OPE estimate (y) with its interval, per configuration."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    xs = []
    for i, r in enumerate(rows):
        sim, est = r["simulated_value"], r["ope_estimate"]
        lo, hi = r.get("ope_low", est), r.get("ope_high", est)
        ax.errorbar([sim], [est], yerr=[[est - lo], [hi - est]], fmt="o", color=f"C{i % 10}",
                    capsize=3, label=short(str(r["config"])))  # fmt: skip
        xs += [sim, lo, hi]
    if xs:
        lo, hi = min(xs), max(xs)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="agreement (y = x)")
    ax.set_xlabel(f"simulated {VALUE_LABEL}")
    ax.set_ylabel(f"OPE estimate, {VALUE_LABEL}")
    ax.set_title("Simulator vs off-policy estimate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
