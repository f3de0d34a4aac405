"""``supportrl report dir=DIR``: one table over every run under DIR (multirun or sweep).

Finds every ``train``, ``pipeline`` and ``evaluate`` run below DIR (a ``result.json`` and
Hydra's ``.hydra/overrides.yaml``), groups the runs by configuration (their overrides
without ``seed``) and reports per configuration: agent, overrides, number of runs, and the
mean over seeds with its t-interval (``report.confidence``) of the simulated value, the
OPE estimate of ``report.select`` (default ``ope.select``) with its interval, the true
value when the world is known, env steps and wall time. The winner is chosen as in the
pipeline (:func:`experiments.summary.select_winner`): the highest OPE lower bound, only if
above the logging policy's value. Candidates whose simulated value lies outside their
OPE interval are flagged.

Writes ``report.csv``, ``report.md``, a self-contained ``report.html`` (figures embedded
as base64 PNG: learning curves with seed bands, OPE forest plot, simulator-vs-OPE
scatter), the PNGs, and ``result.json`` = ``{"rows": [{"config", "n_runs", ...}], "csv":
PATH, "html": PATH, "md": PATH, "selection": {...}, "n_runs": n}``; prints the table.
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.plots import agreement_scatter, forest_plot, learning_curves
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import run_dir
from supportrl.experiments.summary import (
    Interval,
    RunRecord,
    Selection,
    aggregate,
    curve_band,
    flag_disagreement,
    segment_rows,
    select_winner,
)

from supportrl.files import MALFORMED_ERRORS, FileFormatError, brief, read_json, read_yaml
from supportrl.outputs import CREATED

MAX_PLOTTED = 12
"""Figures show at most this many configurations (the best ones); the table has them all."""

IGNORED_OVERRIDES = ("paths.", "hydra.", "threads", "logger.", "dir")
"""Overrides that do not change what a run computes (left out of configuration labels)."""


REPORT_FIGURES = ("learning_curves.png", "forest.png", "agreement.png")
"""The figures :func:`figures` may write."""

MAX_RESULT_BYTES = 16 * 2**20
"""Largest ``result.json`` (and ``metrics.csv``) a report reads; a larger one is skipped."""


def run_overrides(run: Path) -> list[str]:
    """A run's task overrides (Hydra's ``.hydra/overrides.yaml``), setup keys left out."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    items = read_yaml(path) or []
    if not isinstance(items, list):
        raise FileFormatError(f"{path}: expected a list of overrides, got {brief(items)}")
    return [str(o) for o in items if not str(o).lstrip("+~").startswith(IGNORED_OVERRIDES)]


def _seed(overrides: list[str], result: dict[str, Any], run: Path) -> int | None:
    for o in overrides:
        if o.startswith("seed="):
            return int(o.split("=", 1)[1])
    if "seed" in result:
        return int(result["seed"])
    config = run / ".hydra" / "config.yaml"
    if config.exists():
        seed = read_yaml(config).get("seed")
        return None if seed is None else int(seed)
    return None


def _curve(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    if not path.is_file() or path.stat().st_size > MAX_RESULT_BYTES:
        raise FileFormatError(f"{path}: not a regular file of at most {MAX_RESULT_BYTES} bytes")
    import pandas as pd

    frame = pd.read_csv(path)
    return {c: frame[c].to_numpy(dtype=float) for c in frame.columns}


def records_of(run: Path, result: dict[str, Any], select: str) -> list[RunRecord]:
    """The report's records of one run (one per candidate policy); [] if not a run we know."""
    overrides = run_overrides(run)
    seed = _seed(overrides, result, run)
    label = " ".join(o for o in overrides if not o.startswith("seed=")) or "(defaults)"
    common = {"path": str(run), "overrides": overrides, "seed": seed}
    if "agents" in result and "policies" in result:  # pipeline
        out = []
        logging = result.get("logging_value", {}).get("estimate")
        for name, row in result["policies"].items():
            trained = name == result.get("agent")
            values = {"simulated_value": row.get("simulated_value"), "logging_value": logging}
            # the pipeline's winner is chosen on the honest selection interval (the select
            # estimator widened by model disagreement and missing support): report that one,
            # and the plain interval beside it (ope_ci_*) for the figures
            values.update(_ope_values(row.get("selection") or row.get(select)))
            plain = row.get(select)
            if row.get("selection") and plain:
                values.update(ope_ci_low=plain["ci_low"], ope_ci_high=plain["ci_high"])
            if "true_value" in row:
                values["true_value"] = row["true_value"]
            if trained:
                info = result["agents"][name]
                values.update(env_steps=info.get("env_steps"), wall_s=info.get("wall_s"))
            config = label if trained else f"{name} | {label}"
            curve = _curve(Path(result["agents"][name]["metrics"])) if trained else None
            segments = result.get("segments") if trained else None
            out.append(
                RunRecord(
                    config=config,
                    agent=name,
                    values=values,
                    curve=curve,
                    segments=segments,
                    **common,
                )
            )
        return out
    if "final_return" in result and "agent" in result:  # train
        values: dict[str, Any] = {"env_steps": result["env_steps"], "wall_s": result["wall_s"]}
        source = result.get("final_return_source", "")
        if source.startswith("ope:"):
            low, high = result.get("final_return_ci", [math.nan, math.nan])
            values.update(ope_estimate=result["final_return"], ope_low=low, ope_high=high)
        elif result.get("env") == "synthetic":
            values["true_value"] = result["final_return"]
            for key in ("best_known_value", "logging_true_value"):  # learning-curve references
                if result.get(key) is not None:
                    values[key] = result[key]
        else:
            values["simulated_value"] = result["final_return"]
        curve = _curve(run / "metrics.csv")
        return [
            RunRecord(config=label, agent=result["agent"], values=values, curve=curve, **common)
        ]
    if "policies" in result and "diagnostics" in result:  # evaluate
        logging = result.get("logging_value", {}).get("estimate")
        return [
            RunRecord(
                config=f"{name} | {label}",
                agent=name,
                values={"logging_value": logging, **_ope_values(rows.get(select))},
                **common,
            )
            for name, rows in result["policies"].items()
        ]
    return []


def _ope_values(row: dict[str, float] | None) -> dict[str, float]:
    if not row:
        return {}
    return {"ope_estimate": row["estimate"], "ope_low": row["ci_low"], "ope_high": row["ci_high"]}


AGENT_ONLY = ("agent", "train.", "backend")
"""Override keys that change the trained agent only (a rule baseline is the same without them)."""


def collect(root: Path, select: str) -> list[RunRecord]:
    """Every known run below ``root`` (sorted by path, so the table order is stable).

    Configuration labels keep only the overrides that differ between runs (the ones all
    runs share say nothing); a pipeline's rule baselines ignore the agent's overrides,
    and the same baseline on the same seed counts once.
    """
    records: list[RunRecord] = []
    for path in sorted(root.rglob("result.json")):
        try:
            # bounded: regular files only (never a FIFO or /dev/zero), at most 16 MiB, 64 deep
            result = read_json(path, max_bytes=MAX_RESULT_BYTES)
            if not isinstance(result, dict):
                raise FileFormatError(f"{path}: expected a JSON object, got {brief(result)}")
            records.extend(records_of(path.parent, result, select))
        except FileNotFoundError:
            continue  # removed meanwhile
        except (*MALFORMED_ERRORS, OSError) as exc:
            message = str(exc) if str(path) in str(exc) else f"{path}: {type(exc).__name__} {exc}"
            print(f"warning: skipped {message[:300]}", file=sys.stderr)
    return relabel(records)


def relabel(records: list[RunRecord]) -> list[RunRecord]:
    """Labels from the varying overrides; duplicate baseline runs dropped (see :func:`collect`)."""
    if not records:
        return records
    common = set.intersection(*(set(r.overrides) for r in records))
    seen: set[tuple[str, int | None]] = set()
    out = []
    for rec in records:
        varying = [o for o in rec.overrides if o not in common and not o.startswith("seed=")]
        if " | " in rec.config:  # a rule baseline of a pipeline or an evaluated policy
            varying = [o for o in varying if not o.lstrip("+~").startswith(AGENT_ONLY)]
            rec.config = f"{rec.agent} | {' '.join(varying)}" if varying else rec.agent
        else:
            rec.config = " ".join(varying) or rec.agent
        if (rec.config, rec.seed) in seen:
            continue
        seen.add((rec.config, rec.seed))
        out.append(rec)
    return out


def _fmt(value: Any, low: Any = None, high: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        text = f"{value:+.4f}"
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            text += f" [{low:+.4f}, {high:+.4f}]"
        return text
    return str(value)


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The table as text cells (value and interval in one cell)."""
    out = []
    for r in rows:
        out.append(
            {
                "config": r["config"],
                "agent": r["agent"],
                "runs": str(r["n_runs"]),
                "simulated": _fmt(
                    r.get("simulated_value"),
                    r.get("simulated_value_seed_low"),
                    r.get("simulated_value_seed_high"),
                ),
                "OPE [interval]": _fmt(r.get("ope_estimate"), r.get("ope_low"), r.get("ope_high")),
                "true": _fmt(
                    r.get("true_value"), r.get("true_value_seed_low"), r.get("true_value_seed_high")
                ),
                "env steps": "-" if r.get("env_steps") is None else f"{r['env_steps']:.0f}",
                "wall s": "-" if r.get("wall_s") is None else f"{r['wall_s']:.1f}",
                "flag": "sim outside OPE interval" if r.get("disagrees") else "",
            }
        )
    return out


def markdown(cells: list[dict[str, str]], *, escape: bool = True) -> str:
    """The cells as a Markdown table; ``escape``: HTML escaped (Markdown renders raw HTML)."""

    def cell(text: str) -> str:
        text = html.escape(text) if escape else text
        return text.replace("|", "\\|").replace("\n", " ")

    header = list(cells[0])
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c[h]) for h in header) + " |" for c in cells]
    return "\n".join(lines)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A CSV cell starting with one of these is a formula to a spreadsheet: it gets a ``'``."""


def csv_safe(value: Any) -> Any:
    """``value``, with a leading ``'`` if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def figures(out: Path, rows, records, select: str, level: float, logging: float | None):
    """The report's PNGs: {title: path}."""
    figs: dict[str, Path] = {}
    bands = {}
    by_config: dict[str, list] = {}
    for rec in records:
        if rec.curve is not None:
            by_config.setdefault(rec.config, []).append(rec.curve)
    simulated = {rec.config for rec in records if rec.curve is not None
                 and rec.values.get("simulated_value") is not None}  # fmt: skip
    for config, curves in by_config.items():
        band = curve_band(curves, confidence=level)  # the tables' t-interval over seeds
        if band is not None:
            bands[config] = (*band, len(curves))
    if len(bands) > MAX_PLOTTED:  # a readable figure: the best configurations by final return
        keep = sorted(bands, key=lambda k: -bands[k][1][-1])[:MAX_PLOTTED]
        bands = {k: bands[k] for k in keep}
    references = {}
    for key, label in (
        ("best_known_value", "best rule or logger"),
        ("logging_true_value", "logging policy"),
    ):
        known = [r.values[key] for r in records if r.values.get(key) is not None]
        if known:
            references[f"{label} (true value)"] = float(np.mean(known))
    if bands:
        sim = [c for c in bands if c in simulated]
        source = None
        if sim:
            source = "fitted simulator" if len(sim) == len(bands) else "fitted simulator for some"
            # true values beside simulated curves: say which is which
            references = {f"{k}; curves are simulated" if i == 0 else k: v
                          for i, (k, v) in enumerate(references.items())}  # fmt: skip
        figs["Learning curves"] = learning_curves(
            out / "learning_curves.png",
            bands,
            reference=references,
            band_label=f"band = {level:.0%} t-interval over seeds (as in the table)",
            source=source,
        )
    ope_rows = [r for r in rows if r.get("ope_estimate") is not None]
    # a readable figure: the configurations with the highest lower bounds
    ope_rows = sorted(ope_rows, key=lambda r: -r.get("ope_low", r["ope_estimate"]))[:MAX_PLOTTED]
    if ope_rows:
        forest_rows = []
        for r in ope_rows:
            row = {"label": r["config"], "policy": r["agent"], "estimate": r["ope_estimate"]}
            if r.get("ope_ci_low") is not None:  # a pipeline's: plain and selection intervals
                row.update(ci_low=r["ope_ci_low"], ci_high=r["ope_ci_high"])
                row.update(selection_low=r.get("ope_low"), selection_high=r.get("ope_high"))
            else:
                row.update(ci_low=r.get("ope_low", r["ope_estimate"]),
                           ci_high=r.get("ope_high", r["ope_estimate"]))  # fmt: skip
            forest_rows.append(row)
        n_seeds = sorted({r["n_runs"] for r in ope_rows})
        over = "one seed" if n_seeds == [1] else "mean over seeds"
        figs[f"OPE forest plot ({select})"] = forest_plot(
            out / "forest.png",
            forest_rows,
            level=level,
            logging_value=logging,
            title=f"OPE estimate ({select}) per configuration, {over}",
            interval_label=f"{level:.0%} interval of {select} (mean of the seeds' bounds)",
        )
    both = [r for r in ope_rows if r.get("simulated_value") is not None]
    if both:
        figs["Simulator vs OPE"] = agreement_scatter(out / "agreement.png", both)
    return figs


def _html_table(cells: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in cells[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in c.values()) + "</tr>" for c in cells
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def segment_cells(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Per-segment rows as text: estimate [interval] vs logging value, top actions."""

    def top(mix: dict[str, float]) -> str:
        best = sorted(mix, key=lambda a: -mix[a])[:2]
        return ", ".join(f"{a} {mix[a]:.0%}" for a in best)

    return [
        {
            "config": r["config"],
            "segment": r["segment"],
            "policy": r["policy"],
            "conversations": f"{r['n_conversations']:.0f}",
            "OPE [interval]": _fmt(r["estimate"], r["ci_low"], r["ci_high"]),
            "logging": _fmt(r["logging_value"]),
            "gain": _fmt(r["estimate"] - r["logging_value"]),
            "actions": top(r["action_mix"]),
            "logging actions": top(r["logging_action_mix"]),
        }
        for r in rows
    ]


def write_html(
    path: Path, title: str, selection: str, cells, figs: dict[str, Path], seg_cells=()
) -> Path:
    """One self-contained HTML page: the tables and every figure inline (base64 PNG)."""
    table = _html_table(cells)
    if seg_cells:
        table += "<h2>Per segment (action mix: candidate vs logging policy)</h2>"
        table += _html_table(list(seg_cells))
    images = "".join(
        f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' style='max-width:100%' "
        f"src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>"
        for name, p in figs.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "font-size:13px}th{background:#eee}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(selection)}</p>"
        f"{table}{images}</body></html>"
    )
    path.write_text(page)
    return path


def write_report(
    out: Path,
    records: list[RunRecord],
    *,
    select: str,
    level: float = 0.95,
    disagreement: bool = True,
    title: str,
) -> dict[str, Any]:
    """Aggregate ``records`` and write ``report.csv``, ``report.md``, ``report.html`` and
    the figures into ``out``; print the table. Returns the report's result.json payload.

    The files it creates are recorded as this run's (removed if the run fails later)."""
    names = ("report.csv", "report.md", "report.html", *REPORT_FIGURES)
    new = [
        out / name
        for name in names
        if not os.path.lexists(out / name) or (out / name).absolute() in CREATED.files
    ]
    rows = aggregate(records, level)
    for r in rows:
        r["disagrees"] = disagreement and flag_disagreement(r)
    loggings = [r["logging_value"] for r in rows if r.get("logging_value") is not None]
    logging = float(np.mean(loggings)) if loggings else None
    candidates = {
        r["config"]: Interval(
            r["ope_estimate"], r.get("ope_low", math.nan), r.get("ope_high", math.nan)
        )
        for r in rows
        if r.get("ope_estimate") is not None
    }
    if candidates:
        selection = select_winner(candidates, logging, estimator=select)
    else:
        selection = best_without_ope(rows)
    for r in rows:
        r["winner"] = r["config"] == selection.winner
    cells = display_rows(rows)
    table = markdown(cells)
    print(markdown(cells, escape=False))
    print(selection.reason)
    figs = figures(out, rows, records, select, level, logging)

    import pandas as pd

    csv = out / "report.csv"
    frame = pd.DataFrame([{**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows])
    frame.map(csv_safe).rename(columns=csv_safe).to_csv(csv, index=False)
    md = out / "report.md"
    esc = html.escape
    md.write_text(
        f"# {esc(title)}\n\n{len(records)} runs, {len(rows)} configurations; values are means "
        f"over seeds with {level:.0%} t-intervals; OPE is {esc(select)}.\n\n{table}\n\n"
        f"**Selection:** {esc(selection.reason)}\n\n"
        + "".join(f"![{esc(name)}]({esc(p.name)})\n\n" for name, p in figs.items())
    )
    segments = segment_rows(records)
    seg_cells = segment_cells(segments)
    if seg_cells:
        seg_table = markdown(seg_cells)
        print(markdown(seg_cells, escape=False))
        with md.open("a") as f:
            f.write(f"## Per segment ({esc(select)}; action mix: candidate vs logging policy)\n\n")
            f.write(seg_table + "\n")
    page = write_html(out / "report.html", title, selection.reason, cells, figs, seg_cells)
    for path in new:
        if path.exists():
            CREATED.record_file(path)
    return {
        "segments": segments,
        "rows": rows,
        "csv": str(csv),
        "html": str(page),
        "md": str(md),
        "select": select,
        "logging_value": logging,
        "selection": selection.to_dict(),
        "n_runs": len(records),
    }


def best_without_ope(rows: list[dict[str, Any]]) -> Selection:
    """Runs without OPE (train sweeps): the best configuration by its mean true value over
    seeds (known world), else by its mean simulated value; the metric is stated."""
    for metric, label in (("true_value", "true value"), ("simulated_value", "simulated value")):
        scored = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
        if scored:
            top = max(scored, key=lambda r: r[metric])
            n = top.get("n_runs", 1)
            reason = (
                f"no OPE estimates in these runs; best by {label} (mean over {n} "
                f"seed{'s' * (n != 1)}): {top['config']} ({top[metric]:+.4f})"
            )
            return Selection(top["config"], None, reason)
    return Selection(None, None, "no OPE estimates or values in these runs: no selection")


@command
def report(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    if cfg.dir is None:
        raise UserError("dir is required: supportrl report dir=DIR (a multirun or sweep folder)")
    root = Path(str(cfg.dir))
    if not root.is_dir():
        raise UserError(f"dir={root}: no such directory")
    select = str(cfg.report.select or cfg.ope.select)
    records = collect(root, select)
    if not records:
        raise UserError(f"dir={root}: no train, pipeline or evaluate runs (result.json) below it")
    payload = write_report(
        out,
        records,
        select=select,
        level=float(cfg.report.confidence),
        disagreement=bool(cfg.report.disagreement),
        title=f"supportrl report: {root}",
    )
    n_rows = len(payload["rows"])
    return finish(
        payload,
        f"report: {n_rows} configurations from {len(records)} runs; "
        f"{payload['selection']['reason']}",
    )


main = report

if __name__ == "__main__":
    main()
