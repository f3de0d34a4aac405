"""``supportrl abtest log=DIR``: the always-valid analysis of an experiment's decision log.

``DIR`` is what ``serve serve.experiment=FILE serve.log_dir=DIR`` (or a pipeline round)
wrote: schema-v1 Parquet parts with an ``arm`` column, and ``experiment.json`` (arms,
shares and their changes, control, guardrail). Per arm: conversations, the value under
``reward/`` (missing CSAT imputed by the CSAT model, never counted as neutral) with its
always-valid interval, and resolution, escalation, abandonment, CSAT and handle time.
Per treatment: the difference against control as a confidence sequence
(:mod:`supportrl.ope.abtest`), valid however often the analysis runs, with CUPED-style
regression adjustment on the first turn's state. A sample-ratio-mismatch check, a
per-segment breakdown (``report.segment_by``) and a decision (``promote``, ``roll_back``
on a guardrail breach, or ``continue`` with the conversations still needed).

Writes ``result.json`` (DESIGN §8b), ``report.md``, ``report.html`` (figure embedded) and
``sequence.png`` (each difference's confidence sequence over the conversations).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.envs.rewards import OUTCOMES, RewardSpec
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import reward_from_cfg, to_plain
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import run_dir
from supportrl.ope.abtest import T_STAR, ExperimentData, analyse, segment_breakdown
from supportrl.simulators.logs import LoggedConversations, load_conversations


def read_experiment_description(log: Path) -> dict[str, Any]:
    """``experiment.json`` of a decision-log folder (arms, shares, events, control, guardrail)."""
    path = log / "experiment.json"
    if not path.is_file():
        raise UserError(
            f"{path}: missing; an experiment's log folder holds experiment.json "
            "(written by serve serve.experiment=... serve.log_dir=DIR)"
        )
    if path.stat().st_size > 1 << 20:
        raise UserError(f"{path}: larger than 1 MiB")
    try:
        data = json.loads(path.read_text())
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    arms = data.get("arms") if isinstance(data, dict) else None
    if not isinstance(arms, dict) or data.get("control") not in arms:
        raise UserError(f"{path}: expected arms and a control arm")
    return data


def _arms_per_conversation(log: Path, logs: LoggedConversations, arms: list[str]) -> np.ndarray:
    """Arm index of every conversation, from the log's ``arm`` column (one arm each)."""
    import pyarrow.dataset as ds

    parts = sorted(str(p) for p in log.glob("*.parquet") if not p.name.startswith("."))
    try:
        table = ds.dataset(parts, format="parquet").to_table(columns=["conversation_id", "arm"])
    except Exception as exc:  # pyarrow raises several types; name the folder
        raise UserError(f"{log}: cannot read the arm column of the decision log ({exc})") from None
    cid = np.asarray(table.column("conversation_id").to_pylist(), dtype=object)
    arm = np.asarray(table.column("arm").to_pylist(), dtype=object)
    unknown = sorted({str(a) for a in set(arm.tolist())} - set(arms))
    if unknown:
        raise UserError(f"{log}: arm(s) {unknown} are not in experiment.json's {arms}")
    index = {a: i for i, a in enumerate(arms)}
    of: dict[str, int] = {}
    for c, a in zip(cid.tolist(), arm.tolist(), strict=True):
        k = index[a]
        if of.setdefault(c, k) != k:
            raise UserError(f"{log}: conversation {c!r} appears in two arms")
    return np.array([of[c] for c in logs.conversation_id.tolist()], dtype=np.int64)


def _shares_per_conversation(
    description: dict[str, Any], arms: list[str], starts: np.ndarray | None, n: int
) -> np.ndarray:
    """The shares in force when each conversation started (from the recorded events)."""
    events = [e for e in description.get("events", []) if isinstance(e.get("shares"), dict)]
    if not events:
        events = [{"time": None, "shares": {a: v["share"] for a, v in description["arms"].items()}}]
    if starts is None or len(events) == 1:
        first = [[float(events[0]["shares"].get(a, 0.0)) for a in arms]]
        return np.repeat(np.array(first), n, axis=0)
    try:
        times = np.array([np.datetime64(str(e["time"]).rstrip("Z"), "us") for e in events])
    except ValueError:
        raise UserError("experiment.json: an event's time is not an ISO 8601 date-time") from None
    order = np.argsort(times, kind="stable")
    times = times[order]
    table = np.array([[float(events[i]["shares"].get(a, 0.0)) for a in arms] for i in order])
    idx = np.searchsorted(times, starts.astype("datetime64[us]"), side="right") - 1
    return table[np.maximum(idx, 0)]


def _covariates(logs: LoggedConversations) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first turn's state: one-hot categorical, standardized numeric; and its str values."""
    first = logs.offsets[:-1]
    blocks, segments = [], {}
    for name in ("intent", *logs.categorical):
        values = (logs.intent if name == "intent" else logs.features[name])[first].astype(str)
        segments[name] = values
        levels = np.unique(values)
        blocks.append((values[:, None] == levels[None, 1:]).astype(np.float64))
    for name in ("sentiment", *logs.numeric):
        v = (logs.sentiment if name == "sentiment" else logs.features[name])[first]
        v = np.nan_to_num(np.asarray(v, dtype=np.float64))
        sd = v.std()
        blocks.append(((v - v.mean()) / (sd if sd > 0 else 1.0))[:, None])
    x = np.hstack(blocks) if blocks else np.zeros((len(first), 0))
    return x, segments


def experiment_data(
    log: Path, reward: RewardSpec, *, seed: int = 0
) -> tuple[ExperimentData, dict[str, Any], LoggedConversations]:
    """Read an experiment's decision log into the analysis' arrays (conversations in start order)."""
    from supportrl.experiments.stages import prepare_for_ope

    description = read_experiment_description(log)
    arms = list(description["arms"])
    actions = description.get("actions")
    logs = load_conversations(
        log, **({"actions": list(actions)} if isinstance(actions, list) else {})
    )
    arm = _arms_per_conversation(log, logs, arms)
    prepared = prepare_for_ope(logs, reward, seed=seed)
    kept = prepared.logs
    value = np.bincount(
        kept.conversation_index, weights=prepared.reward, minlength=kept.n_conversations
    )
    last = logs.offsets[1:] - 1
    outcome = np.asarray(OUTCOMES)[logs.outcome[last]]
    per_turn = np.nan_to_num(logs.handle_time_s, nan=np.nan)
    handle = np.bincount(logs.conversation_index, weights=per_turn, minlength=logs.n_conversations)
    metrics = {
        "resolution": (outcome == "resolved").astype(np.float64),
        "escalation": (outcome == "escalated").astype(np.float64),
        "abandonment": (outcome == "abandoned").astype(np.float64),
        "csat": logs.csat[last],
        "handle_time_s": handle,
        "turns": np.diff(logs.offsets).astype(np.float64),
    }
    starts = None if logs.timestamp is None else logs.timestamp[logs.offsets[:-1]]
    order = np.argsort(starts, kind="stable") if starts is not None else np.arange(len(arm))
    x, segments = _covariates(logs)
    units = logs.customer_id[logs.offsets[:-1]] if logs.customer_id is not None else None
    if description.get("unit") == "conversation" or units is None:
        units = logs.conversation_id
    shares = _shares_per_conversation(description, arms, starts, len(arm))
    data = ExperimentData(
        arms=tuple(arms),
        arm=arm[order],
        shares=shares[order],
        value=value[order],
        metrics={k: v[order] for k, v in metrics.items()},
        covariates=x[order],
        units=np.asarray(units)[order],
        segments={k: v[order] for k, v in segments.items()},
    )
    return data, description, logs


def abtest_stage(
    log: Path, reward: RewardSpec, *, seed: int = 0, segment_by: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The analysis of the decision log in ``log`` (result.json's experiment part)."""
    data, description, _ = experiment_data(log, reward, seed=seed)
    guard = description.get("guardrail") or {}
    try:
        result = analyse(
            data,
            control=str(description["control"]),
            alpha=float(description.get("alpha", 0.05)),
            guardrail_metric=str(guard.get("metric", "value")),
            max_drop=float(guard.get("max_drop", 0.0)),
            t_star=float(description.get("horizon") or T_STAR),
        )
        if segment_by:
            result["segments"] = segment_breakdown(
                data, segment_by, control=str(description["control"]), alpha=result["alpha"]
            )
    except ValueError as err:
        raise UserError(f"{log}: {err}") from None
    result["control"] = description["control"]
    result["log"] = str(log)
    return result


def print_analysis(result: dict[str, Any]) -> None:
    control = result["control"]
    print(f"{'arm':<24}{'conversations':>14}{'value':>9}  always-valid interval   resolved  csat")
    for name, arm in result["arms"].items():
        m = arm["metrics"]
        csat = "-" if m.get("csat") is None else f"{m['csat']:.2f}"
        mark = " (control)" if name == control else ""
        print(
            f"{name + mark:<24}{arm['n_conversations']:>14}{arm['value']:>+9.3f}  "
            f"[{arm['ci_low']:+.3f}, {arm['ci_high']:+.3f}]{m['resolution']:>13.3f}  {csat}"
        )
    for name, d in result["differences"].items():
        print(
            f"  {name} - {control}: {d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] "
            f"(confidence sequence, alpha {d['alpha']:g}; variance -{100 * d['variance_reduction']:.0f}% by covariates)"
        )
    srm = result["srm"]
    print(f"  sample ratio: p = {srm['p_value']:.3g}{' FLAGGED' if srm['flag'] else ''}")
    print(f"  decision: {result['decision']['action']} ({result['decision']['reason']})")


def write_sequence_plot(path: Path, result: dict[str, Any]) -> Path | None:
    """Each treatment's difference against control, with its confidence sequence, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result.get("curves") or {}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    lows, highs = [], []
    for name, c in curves.items():
        line = ax.plot(
            c["n"], c["estimate"], label=f"{name} − {result['control']}".replace("$", r"\$")
        )
        ax.fill_between(c["n"], c["ci_low"], c["ci_high"], alpha=0.2, color=line[0].get_color())
        # the first conversations' bands are huge: scale the axis to the rest, cut those at the edge
        late = [i for i, n in enumerate(c["n"]) if n >= max(1000, 0.1 * c["n"][-1])] or [-1]
        lows += [c["ci_low"][i] for i in late]
        highs += [c["ci_high"][i] for i in late]
    pad = 0.15 * (max(highs) - min(lows) or 1.0)
    ax.set_ylim(min(min(lows), 0.0) - pad, max(max(highs), 0.0) + pad)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel("conversations analysed (in start order)")
    ax.set_ylabel("difference in value (reward per conversation)")
    k = len(curves)
    each = f"; each of {k} differences at {100 * (1 - result['alpha'] / k):.1f}%" if k > 1 else ""
    ax.set_title(
        f"Always-valid confidence sequences ({100 * (1 - result['alpha']):.0f}% overall{each})",
        fontsize=10,
    )
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_analysis_report(out: Path, result: dict[str, Any]) -> dict[str, str]:
    """``report.md`` and ``report.html`` (figure embedded) of an analysis."""
    png = write_sequence_plot(out / "sequence.png", result)
    control = result["control"]
    lines = [f"# Experiment analysis: {result['log']}", "", f"Control: `{control}`", ""]
    lines += [
        "| arm | conversations | value | always-valid interval | resolution | escalation | abandonment | CSAT | handle time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in result["arms"].items():
        m = arm["metrics"]

        def f(v: Any, fmt: str = ".3f") -> str:
            return "-" if v is None else format(v, fmt)

        lines.append(
            f"| {html.escape(name)} | {arm['n_conversations']} | {arm['value']:+.3f} | "
            f"[{arm['ci_low']:+.3f}, {arm['ci_high']:+.3f}] | {f(m['resolution'])} | {f(m['escalation'])} | "
            f"{f(m['abandonment'])} | {f(m['csat'], '.2f')} | {f(m['handle_time_s'], '.0f')} |"
        )
    lines += [
        "",
        "| treatment − control | estimate | confidence sequence | variance reduction | more conversations needed |",
        "|---|---|---|---|---|",
    ]
    for name, d in result["differences"].items():
        lines.append(
            f"| {html.escape(name)} | {d['estimate']:+.3f} | [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | "
            f"{100 * d['variance_reduction']:.0f}% | {d['conversations_needed'] if d['conversations_needed'] is not None else '-'} |"
        )
    srm = result["srm"]
    decision = result["decision"]
    lines += [
        "",
        f"Sample ratio mismatch: p = {srm['p_value']:.3g} ({'flagged' if srm['flag'] else 'not flagged'}).",
        "",
        f"**Decision: {decision['action']}** {html.escape(str(decision.get('arm') or ''))}: {html.escape(decision['reason'])}",
        "",
    ]
    if png:
        lines.append("![confidence sequences](sequence.png)")
    md = "\n".join(lines) + "\n"
    (out / "report.md").write_text(md)
    body = (
        f"<p>Decision log: <code>{html.escape(str(result['log']))}</code></p>"
        f"<p>Control: <code>{html.escape(str(control))}</code></p>"
    )
    table = _html_tables(result)
    img = ""
    if png:
        img = f'<img alt="confidence sequences" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>experiment analysis</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .6em;border-bottom:1px solid #ddd}</style>"
        f"</head><body><h1>Experiment analysis</h1>{body}{table}"
        f"<p><b>Decision: {html.escape(decision['action'])}</b> {html.escape(str(decision.get('arm') or ''))}: {html.escape(decision['reason'])}</p>"
        f"<p>Sample ratio mismatch: p = {srm['p_value']:.3g}</p>{img}</body></html>"
    )
    (out / "report.html").write_text(page)
    return {
        "md": str(out / "report.md"),
        "html": str(out / "report.html"),
        **({"png": str(png)} if png else {}),
    }


def _html_tables(result: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{a['n_conversations']}</td><td>{a['value']:+.3f}</td>"
        f"<td>[{a['ci_low']:+.3f}, {a['ci_high']:+.3f}]</td></tr>"
        for name, a in result["arms"].items()
    )
    diffs = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{d['estimate']:+.3f}</td><td>[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]</td></tr>"
        for name, d in result["differences"].items()
    )
    return (
        "<table><tr><th>arm</th><th>conversations</th><th>value</th><th>always-valid interval</th></tr>"
        f"{rows}</table><table><tr><th>treatment − control</th><th>estimate</th><th>confidence sequence</th></tr>{diffs}</table>"
    )


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.log is None:
        raise UserError("log is required: log=DIR (an experiment's decision-log folder)")
    log = Path(str(cfg.log))
    if not log.is_dir():
        raise UserError(f"log={log}: not a directory")
    out = run_dir()
    result = abtest_stage(
        log,
        reward_from_cfg(cfg),
        seed=int(cfg.seed),
        segment_by=tuple(to_plain(cfg.report.segment_by) or ()),
    )
    print_analysis(result)
    result["report"] = write_analysis_report(out, result)
    decision = result["decision"]
    return finish(
        result,
        f"abtest: {decision['action']} {decision.get('arm') or ''} "
        f"({sum(a['n_conversations'] for a in result['arms'].values())} conversations) -> {out}",
    )


if __name__ == "__main__":
    main()
