"""Figures of the commands and the report: titled, axes labelled with units, legends.

All functions write a PNG (matplotlib, Agg backend) and return its path. Values are
expected conversation returns under the configured reward (reward units per conversation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.experiments.run_dirs import output

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


SCOPE_LABELS = {
    "conversation": "value (reward per conversation)",
    "decision": "reward per decision (one bot decision)",
}
"""The x-axis of each estimand: conversation-level and decision-level values never share one."""


def _grid(plt, n: int, *, width: float = 5.5, height: float = 4.0, ncols: int = 2):
    """A figure with ``n`` panels in rows of ``ncols`` (never a long strip); unused hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def write_metrics(
    out: Path,
    columns: Mapping[str, np.ndarray],
    *,
    title: str = "",
    reference: Mapping[str, float] | None = None,
    source: str | None = None,
    regret_baseline: str | None = None,
) -> Path:
    """``out/metrics.csv`` (fixed metric names, ``env_steps`` first) and ``out/learning_curve.png``.

    ``reference``: horizontal lines on the return panel (e.g. best rule, logging policy).
    ``source``: where the returns come from, said on the figure (``"true world"``,
    ``"fitted simulator"``: a simulator's returns are not true values). ``regret_baseline``:
    the policy the cumulative regret is measured against, named on its axis. Panels sit in
    a grid of two columns.
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
    fig, axes = _grid(plt, len(metrics))
    for ax, (name, values) in zip(axes, metrics, strict=True):
        ax.plot(steps, values, label=title or "agent")
        ylabel = METRIC_LABELS.get(name, name)
        if name == "charts/episodic_return":
            for i, (ref, value) in enumerate((reference or {}).items()):
                ax.axhline(value, ls="--", lw=1, color=f"C{i + 1}", label=f"{ref}: {value:+.3f}")
            if source:
                ylabel = f"{ylabel}\n({source})"
        if name == "charts/cumulative_regret" and regret_baseline:
            ylabel = f"cumulative regret vs {regret_baseline} (reward)"
        ax.set_xlabel("env steps (decisions)")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_title(name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    heading = title or "training"
    if source:
        heading += f": returns in the {source}"
    fig.suptitle(heading, fontsize=12)
    fig.tight_layout()
    path = output(out / "learning_curve.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(*values: Any) -> bool:
    try:
        return all(np.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def forest_plot(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    level: float = 0.95,
    logging_value: float | None = None,
    title: str = "Off-policy estimates",
    interval_label: str | None = None,
) -> Path:
    """:func:`forest_figure` written to ``path`` (PNG)."""
    plt = _plt()
    fig = forest_figure(
        rows, level=level, logging_value=logging_value, title=title, interval_label=interval_label
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_interval(
    ax: Any,
    yi: float,
    r: Mapping[str, Any],
    colour: str,
    limits: tuple[float, float],
    handles: dict[str, Any],
    plain_name: str,
) -> None:
    """One row of :func:`forest_figure` at height ``yi``: the estimate with its plain
    interval, and its selection interval (thin, cut at the axis ``limits`` with an arrow);
    rows without finite numbers are listed, not drawn. Legend entries go to ``handles``."""
    est, c_lo, c_hi = r["estimate"], r["ci_low"], r["ci_high"]
    if not _finite(est, c_lo, c_hi):
        return
    est, c_lo, c_hi = float(est), float(c_lo), float(c_hi)
    lo, hi = limits
    if _finite(r.get("selection_low"), r.get("selection_high")):
        s_lo, s_hi = float(r["selection_low"]), float(r["selection_high"])
        handles["selection interval (widened: model disagreement, support)"] = ax.plot(
            [max(s_lo, lo), min(s_hi, hi)], [yi, yi], color=colour, lw=0.8, ls=":"
        )[0]
        for edge, cut, marker in ((s_lo, lo, "<"), (s_hi, hi, ">")):
            if (edge < cut) if marker == "<" else (edge > cut):
                ax.plot([cut], [yi], marker=marker, color=colour, ms=5)
    # an estimate a rounding error outside its interval must not break the plot
    xerr = [[max(est - c_lo, 0.0)], [max(c_hi - est, 0.0)]]
    handles[plain_name] = ax.errorbar(
        [est], [yi], xerr=xerr, fmt="o", ms=4, capsize=3, color=colour, lw=1.8
    )


def forest_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    level: float = 0.95,
    logging_value: float | None = None,
    title: str = "Off-policy estimates",
    interval_label: str | None = None,
) -> Any:
    """Estimates with their intervals, one panel per estimand (a matplotlib figure).

    ``rows``: ``{"label", "estimate", "ci_low", "ci_high"}`` with optional ``"policy"``
    (the colour), ``"scope"`` (``conversation`` | ``decision``: each scope gets its own
    panel and axis, never one axis for both) and ``"selection_low"``/``"selection_high"``
    (the widened selection interval, drawn thin and named beside the plain ``level``
    interval). Rows are sorted by estimate, highest on top. Zero (grey, dotted) and the
    logging policy's value (black, dashed; conversation panel only: it is a conversation
    value) are lines with their values in the legend, which sits outside the panels. The
    axis fits the point estimates and plain intervals; a selection interval that reaches
    beyond is cut at the edge with an arrow, so one wide interval cannot flatten the rest.
    """
    plt = _plt()
    scopes: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        scopes.setdefault(str(r.get("scope") or "conversation"), []).append(r)
    order = [s for s in ("conversation", "decision") if s in scopes] + [
        s for s in scopes if s not in ("conversation", "decision")
    ]
    labels_all = [str(r.get("label") or f"{r.get('policy')} · {r.get('estimator')}") for r in rows]
    names = list(
        dict.fromkeys(str(r.get("policy", lab)) for r, lab in zip(rows, labels_all, strict=True))
    )
    colours = {n: f"C{i % 10}" for i, n in enumerate(names)}
    heights = [0.32 * len(scopes[s]) + 1.3 for s in order]
    fig, axes = plt.subplots(
        len(order), 1, figsize=(9, sum(heights) + 1.0), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    plain_name = interval_label or f"{level:.0%} interval"
    handles: dict[str, Any] = {}
    for ax, scope in zip(axes[:, 0], order, strict=True):
        group = sorted(
            scopes[scope],
            key=lambda r: -float(r["estimate"]) if _finite(r["estimate"]) else np.inf,
        )
        y = np.arange(len(group))[::-1]
        labels = [str(r.get("label") or f"{r.get('policy')} · {r.get('estimator')}") for r in group]
        core = [
            v
            for r in group
            if _finite(r["estimate"], r["ci_low"], r["ci_high"])
            for v in (r["estimate"], r["ci_low"], r["ci_high"])
        ]
        if scope == "conversation" and _finite(logging_value):
            core.append(logging_value)
        lo, hi = (min(core + [0.0]), max(core + [0.0])) if core else (-1.0, 1.0)
        pad = 0.08 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
        for yi, r, lab in zip(y, group, labels, strict=True):
            colour = colours[str(r.get("policy", lab))]
            _draw_interval(ax, yi, r, colour, (lo, hi), handles, plain_name)
        ax.set_xlim(lo, hi)
        ax.set_yticks(y, [short(lab) for lab in labels], fontsize=8)
        handles["zero"] = ax.axvline(0.0, color="grey", lw=0.9, ls=":")
        if scope == "conversation" and _finite(logging_value):
            handles[f"logging policy ({float(logging_value):+.3f})"] = ax.axvline(
                float(logging_value), color="k", ls="--", lw=1.2
            )
        ax.set_xlabel(f"{SCOPE_LABELS.get(scope, scope)}: estimate and {plain_name}", fontsize=9)
        ax.set_title(f"{scope}-level estimators", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=12)
    fig.legend(
        list(handles.values()), list(handles), loc="lower center", ncol=min(3, len(handles)),
        fontsize=8, frameon=False,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(handles) > 3), 1, 1))
    return fig


def learning_curves(
    path: Path,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]],
    *,
    reference: Mapping[str, float] | None = None,
    band_label: str = "band = 95% t-interval over seeds (as in the table)",
    source: str | None = None,
) -> Path:
    """Mean return per configuration with its band over seeds (none for one seed).

    ``bands``: ``{config: (env_steps, mean, low, high, n_seeds)}``; ``band_label`` says what
    the band is; ``source`` where the returns come from (``"fitted simulator"`` when the
    agents trained in one: the curve is a simulated value, not the true one).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    counts = set()
    for i, (name, (steps, mean, low, high, n)) in enumerate(bands.items()):
        counts.add(n)
        label = f"{short(name)} ({n} seed{'s' * (n != 1)})"
        ax.plot(steps, mean, color=f"C{i % 10}", label=label)
        if n > 1:
            ax.fill_between(steps, low, high, color=f"C{i % 10}", alpha=0.2)
    for j, (ref, value) in enumerate((reference or {}).items()):
        ax.axhline(value, ls="--", lw=1, color="k" if j == 0 else "grey", label=ref)
    ax.set_xlabel("env steps (decisions)")
    ylabel = METRIC_LABELS["charts/episodic_return"]
    if source:
        ylabel += f"\n({source})"
    ax.set_ylabel(ylabel)
    what = "mean over seeds" if counts - {1} else "one seed per configuration"
    title = f"Learning curves: {what}" + (f"; {band_label}" if counts - {1} else "")
    if source:
        title += f"\nreturns in the {source}"
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
