"""``supportrl evaluate``: off-policy evaluation of candidate policies on logged data.

Conversation logs (``data.turns=...``) get the conversation-level estimators
(``pdis wpdis seq_dr wdr fqe``: expected conversation return under reward v1) and,
separately, the per-decision ones on turns (``dm ips snips dr sndr switch_dr dr_os``:
expected reward of one decision). Generic bandit feedback (``data=bandit``) gets the
per-decision ones. Policies come from ``policies=[FILE.yaml | CHECKPOINT_DIR, ..]`` or, for
external data, ``target_probs=PATH``.

Writes ``result.json`` (``{"policies": {NAME: {ESTIMATOR: {"estimate", "ci_low",
"ci_high"}}}, "diagnostics": .., "notes": ..}``), ``estimates.csv`` and ``forest.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from supportrl.agents.loading import load_policy, policy_name
from supportrl.experiments.common import (
    CONFIG_PATH,
    UserError,
    finish,
    load_data,
    output,
    plot_or_warn,
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    user_errors,
)
from supportrl.ope.evaluate import (
    evaluate_conversations,
    evaluate_decisions,
    load_target_probs,
    prepare_conversations,
    target_probs_of,
)
from supportrl.simulators.logs import (
    LoggedConversations,
    all_propensities_one,
    data_warnings,
)


def csat_imputer(logs: LoggedConversations) -> tuple[np.ndarray, int]:
    """Impute missing terminal CSAT with the MNAR-corrected CSAT model (``simulators.fitted``)."""
    from supportrl.simulators.fitted import impute_csat

    return impute_csat(logs)


def candidate_probs(cfg: DictConfig, data: Any) -> dict[str, np.ndarray]:
    """Target probabilities of every candidate, shape (n_rows, n_actions), in the data's row order."""
    paths = [resolve_shipped(p) for p in to_plain(cfg.policies) or []]
    if not paths and cfg.target_probs is None:
        raise UserError("nothing to evaluate: give policies=[FILE.yaml,..] or target_probs=PATH")
    states = data.states()
    out: dict[str, np.ndarray] = {}
    for path in paths:
        name = policy_name(path)
        if name in out:
            raise UserError(f"policies: two policies are named {name!r}; rename one file")
        out[name] = target_probs_of(load_policy(path, data.actions), states, data.actions)
    if cfg.target_probs is not None:
        n_rows = data.n_turns if isinstance(data, LoggedConversations) else data.n_rounds
        probs = load_target_probs(cfg.target_probs, data.actions, n_rows)
        if isinstance(data, LoggedConversations):
            probs = probs[data.source_row]  # file order -> the logs' sorted turn order
        out["target"] = probs
    return out


def forest_plot(path: Path, table: list[dict[str, Any]]) -> None:
    """Estimates with intervals, one row per (policy, estimator)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = sorted({row["scope"] for row in table})
    fig, axes = plt.subplots(
        1, len(scopes), figsize=(6 * len(scopes), 0.28 * len(table) + 1.5), squeeze=False
    )
    for ax, scope in zip(axes[0], scopes, strict=True):
        rows = [r for r in table if r["scope"] == scope]
        y = np.arange(len(rows))[::-1]
        est = np.array([r["estimate"] for r in rows], dtype=np.float64)
        lo = np.array([r["ci_low"] for r in rows], dtype=np.float64)
        hi = np.array([r["ci_high"] for r in rows], dtype=np.float64)
        # an estimate a rounding error outside its interval must not break the plot; rows
        # without an estimate (n/a) are left out
        shown = np.isfinite(est) & np.isfinite(lo) & np.isfinite(hi)
        xerr = [np.maximum(est - lo, 0.0)[shown], np.maximum(hi - est, 0.0)[shown]]
        ax.errorbar(est[shown], y[shown], xerr=xerr, fmt="o", ms=3, capsize=2)
        ax.set_yticks(y, [f"{r['policy']} · {r['estimator']}" for r in rows], fontsize=7)
        ax.set_title(f"{scope}-level value")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def return_range(prepared: Any) -> tuple[float, float]:
    """(lowest, highest) logged conversation return: what any policy's value lies between
    on the logs' support (up to sampling)."""
    offsets = prepared.logs.offsets
    returns = np.add.reduceat(prepared.reward, offsets[:-1]) if len(prepared.reward) else [0.0]
    return float(np.min(returns)), float(np.max(returns))


def estimate_text(
    row: dict[str, Any], diag: dict[str, Any], bounds: tuple[float, float] | None
) -> tuple[str, str]:
    """(estimate and interval as printed, warning or ""): ``n/a`` with the reason where
    there is no estimate (0/0: no logged support), and a warning for a conversation-level
    estimate outside the range of logged returns."""
    est, lo, hi = row["estimate"], row["ci_low"], row["ci_high"]
    if not np.isfinite(est):
        return f"{'n/a':>10}   (no estimate: {row.get('reason', 'undefined, e.g. 0/0')})", ""
    if diag.get("ess_decision", 1.0) == 0 and row["estimator"] != "dm":
        why = "no logged support: the target gives zero probability to every logged action"
        return f"{'n/a':>10}   ({why})", why
    text = f"{est:>+10.4f}   [{lo:+.4f}, {hi:+.4f}]"
    if bounds is not None and row["scope"] == "conversation":
        low, high = bounds
        slack = 1e-9 + 1e-6 * (high - low)
        if est < low - slack or est > high + slack:
            return text + "  (!)", (
                f"estimate {est:+.4g} lies outside the logged returns [{low:+.4f}, {high:+.4f}]; "
                "unreliable (extreme importance weights?)"
            )
    return text, ""


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    data = load_data(cfg)
    candidates = candidate_probs(cfg, data)
    ope = cfg.ope
    params = to_plain(ope.params) or {}
    common = {"n_bootstrap": int(ope.n_bootstrap), "alpha": float(ope.alpha), "seed": int(cfg.seed)}
    notes: list[str] = []
    results: dict[str, dict[str, Any]] = {}
    diagnostics: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    if isinstance(data, LoggedConversations):
        prepared = prepare_conversations(
            data, reward_from_cfg(cfg), csat_imputer=csat_imputer, seed=int(cfg.seed)
        )
        notes.extend(prepared.notes)
        notes.extend(
            data_warnings(
                data.summary(), propensities_all_one=all_propensities_one(data.propensity)
            )
        )
        for name, probs in candidates.items():
            res = evaluate_conversations(
                prepared,
                probs,
                conversation_estimators=list(ope.conversation_estimators),
                decision_estimators=list(ope.decision_estimators),
                estimator_params=params,
                **common,
            )
            results[name] = {**res["conversation"], **res["decision"]}
            diagnostics[name] = res["diagnostics"]
            for scope in ("conversation", "decision"):
                for est, row in res[scope].items():
                    table.append({"policy": name, "scope": scope, "estimator": est, **row})
    else:
        for name, probs in candidates.items():
            res = evaluate_decisions(
                data,
                probs,
                estimators=list(ope.decision_estimators),
                estimator_params=params,
                **common,
            )
            results[name] = res["decision"]
            diagnostics[name] = res["diagnostics"]
            notes.extend(n for n in res["notes"] if n not in notes)
            for est, row in res["decision"].items():
                table.append({"policy": name, "scope": "decision", "estimator": est, **row})

    level = int(round(100 * (1 - float(ope.alpha))))
    print(f"{'policy':<28}{'scope':<14}{'estimator':<11}{'estimate':>10}   {level}% interval")
    bounds = return_range(prepared) if isinstance(data, LoggedConversations) else None
    for row in table:
        shown, flag = estimate_text(row, diagnostics[row["policy"]], bounds)
        print(f"{row['policy']:<28}{row['scope']:<14}{row['estimator']:<11}{shown}")
        if flag:
            print(f"  warning: {row['policy']} {row['estimator']}: {flag}")
            notes.append(f"{row['policy']} {row['estimator']}: {flag}")
    for name, diag in diagnostics.items():
        ess = f"ESS per decision {diag['ess_decision']:.0f}"
        if "ess_conversation" in diag:
            ess += f", per conversation {diag['ess_conversation']:.0f} of {diag['n_conversations']}"
        print(f"{name}: {ess}")
        for warning in diag["warnings"]:
            print(f"  warning: {warning}")
    for note in notes:
        print(f"note: {note}")
    import pandas as pd

    pd.DataFrame(table).to_csv(output(out / "estimates.csv"), index=False)
    plot_or_warn(forest_plot, output(out / "forest.png"), table)
    headline = "wdr" if isinstance(data, LoggedConversations) else "dr"
    best = max(
        results, key=lambda k: results[k].get(headline, next(iter(results[k].values())))["estimate"]
    )
    return finish(
        {"policies": results, "diagnostics": diagnostics, "notes": notes},
        f"evaluate: {len(results)} policies; highest {headline}: {best} "
        f"({results[best].get(headline, next(iter(results[best].values())))['estimate']:+.4f})",
    )


if __name__ == "__main__":
    main()
