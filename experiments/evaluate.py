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
    resolve_shipped,
    reward_from_cfg,
    run_dir,
    to_plain,
    user_errors,
)
from supportrl.ope.evaluate import (
    PreparedConversations,
    evaluate_decisions,
    load_target_probs,
    prepare_conversations,
    target_probs_of,
)
from supportrl.ope.meta import OffPolicyEvaluation, format_results
from supportrl.simulators.fitted_csat import CsatImputation
from supportrl.simulators.logs import LoggedConversations


def csat_imputer(logs: LoggedConversations) -> CsatImputation:
    """Missing terminal CSAT imputed by the MNAR selection model, fitted per outcome and
    refitted in every OPE bootstrap resample (``simulators.fitted_csat``)."""
    return CsatImputation.from_logs(logs)


def ope_from_cfg(
    cfg: DictConfig, prepared: PreparedConversations, **overrides: Any
) -> OffPolicyEvaluation:
    """The :class:`OffPolicyEvaluation` that ``cfg.ope`` describes (keys absent from older
    configs take the library defaults)."""
    ope = cfg.ope
    settings: dict[str, Any] = {
        "conversation_estimators": tuple(ope.conversation_estimators),
        "decision_estimators": tuple(ope.decision_estimators),
        "estimator_params": to_plain(ope.params) or {},
        "n_bootstrap": int(ope.get("n_refit", ope.n_bootstrap)),
        "alpha": float(ope.alpha),
        "seed": int(cfg.seed),
    }
    if "max_weight" in ope:  # null: no clipping
        settings["max_weight"] = None if ope.max_weight is None else float(ope.max_weight)
    for key, cast in (
        ("interval", str),
        ("se_multiplier", float),
        ("selection_interval", str),
        ("max_deficit", float),
        ("min_ess", float),
        ("min_support", float),
        ("material_support", float),
    ):
        if ope.get(key) is not None:
            settings[key] = cast(ope.get(key))
    settings.update(overrides)
    try:
        return OffPolicyEvaluation(prepared=prepared, **settings)
    except ValueError as exc:
        raise UserError(f"ope: {exc}") from exc


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
        est = np.array([r["estimate"] for r in rows])
        lo = np.array([r["ci_low"] for r in rows])
        hi = np.array([r["ci_high"] for r in rows])
        ax.errorbar(est, y, xerr=[est - lo, hi - est], fmt="o", ms=3, capsize=2)
        ax.set_yticks(y, [f"{r['policy']} · {r['estimator']}" for r in rows], fontsize=7)
        ax.set_title(f"{scope}-level value")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    lines: list[str] = []
    if isinstance(data, LoggedConversations):
        prepared = prepare_conversations(
            data, reward_from_cfg(cfg), csat_imputer=csat_imputer, seed=int(cfg.seed)
        )
        notes.extend(prepared.notes)
        evaluated = ope_from_cfg(cfg, prepared).evaluate(candidates)
        for name, res in evaluated.items():
            results[name] = res.rows()
            diagnostics[name] = res.as_dict()
            for scope, rows in (("conversation", res.conversation), ("decision", res.decision)):
                for est, e in rows.items():
                    table.append({"policy": name, "scope": scope, "estimator": est, **e.as_dict()})
        lines = format_results(evaluated, level=int(round(100 * (1 - float(ope.alpha)))))
    else:
        for name, probs in candidates.items():
            res = evaluate_decisions(
                data,
                probs,
                estimators=list(ope.decision_estimators),
                estimator_params=params,
                **common,
            )
            results[name] = res.rows()
            diagnostics[name] = res.diagnostics()
            notes.extend(n for n in res.notes if n not in notes)
            for est, row in res.rows().items():
                table.append({"policy": name, "scope": "decision", "estimator": est, **row})
        level = int(round(100 * (1 - float(ope.alpha))))
        lines.append(
            f"{'policy':<28}{'scope':<14}{'estimator':<11}{'estimate':>10}   {level}% interval"
        )
        for row in table:
            lines.append(
                f"{row['policy']:<28}{row['scope']:<14}{row['estimator']:<11}"
                f"{row['estimate']:>+10.4f}   [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
            )
        for name, diag in diagnostics.items():
            lines.append(f"{name}: ESS per decision {diag['ess_decision']:.0f}")
            lines.extend(f"  warning: {w}" for w in diag["warnings"])
    for line in lines:
        print(line)
    for note in notes:
        print(f"note: {note}")
    import pandas as pd

    pd.DataFrame(table).to_csv(out / "estimates.csv", index=False)
    forest_plot(out / "forest.png", table)
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
