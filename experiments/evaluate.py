"""``supportrl evaluate``: off-policy evaluation of candidate policies on logged data.

Conversation logs (``data.turns=...``) get the conversation-level estimators
(``pdis wpdis seq_dr wdr fqe``: expected conversation return under reward v1) and,
separately, the per-decision ones on turns (``dm ips snips dr sndr switch_dr dr_os``:
expected reward of one decision). Generic bandit feedback (``data=bandit``) gets the
per-decision ones. Policies come from ``policies=[FILE.yaml | CHECKPOINT_DIR, ..]`` or, for
external data, ``target_probs=PATH``.

Writes ``result.json`` (``{"policies": {NAME: {ESTIMATOR: {"estimate", "ci_low",
"ci_high"}}}, "diagnostics": .., "notes": ..}``), ``estimates.csv``, ``forest.png`` and
TensorBoard scalars + hparams (``POLICY/ESTIMATOR`` estimates and interval ends); with
``logger=mlflow`` an MLflow run (:mod:`.tracking`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import load_data, reward_from_cfg, to_plain
from supportrl.experiments.loading import load_policy, policy_name
from supportrl.experiments.plots import forest_plot
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.results import finish, plot_or_warn
from supportrl.experiments.run_dirs import output, run_dir
from supportrl.experiments.scale import evaluate_in_partitions
from supportrl.experiments.stages import evaluate_stage, ope_settings, print_ope
from supportrl.ope.evaluate import load_target_probs, target_probs_of
from supportrl.simulators.logs import LoggedConversations


def candidate_probs(cfg: DictConfig, data: Any) -> dict[str, np.ndarray]:
    """Target probabilities of every candidate, shape (n_rows, n_actions), in the data's row order."""
    paths = [resolve_shipped(p) for p in to_plain(cfg.policies) or []]
    if not paths and cfg.target_probs is None:
        raise UserError("nothing to evaluate: give policies=[FILE.yaml,..] or target_probs=PATH")
    states = data.states()
    # a rule's string literals must be values the logs give their variable
    vocabulary = {k: np.unique(v) for k, v in states.items() if np.asarray(v).dtype.kind in "OUS"}
    out: dict[str, np.ndarray] = {}
    for path in paths:
        name = policy_name(path)
        if name in out:
            raise UserError(f"policies: two policies are named {name!r}; rename one file")
        policy = load_policy(path, data.actions)
        if hasattr(policy, "check_literals"):
            for note in policy.check_literals(vocabulary):
                print(f"note: {note}")
        out[name] = target_probs_of(policy, states, data.actions)
    if cfg.target_probs is not None:
        n_rows = data.n_turns if isinstance(data, LoggedConversations) else data.n_rounds
        probs = load_target_probs(cfg.target_probs, data.actions, n_rows)
        if isinstance(data, LoggedConversations):
            probs = probs[data.source_row]  # file order -> the logs' sorted turn order
        out["target"] = probs
    return out


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    settings = ope_settings(cfg)
    data: Any = None
    if cfg.get("engine", "memory") in ("local", "ray"):
        # Parquet read in partitions of whole conversations (docs/scale.md)
        result = evaluate_in_partitions(cfg, settings)
    else:
        data = load_data(cfg)
        candidates = candidate_probs(cfg, data)
        result = evaluate_stage(
            data, reward_from_cfg(cfg), candidates, settings, seed=int(cfg.seed)
        )
    print_ope(result, settings.alpha)
    import pandas as pd

    pd.DataFrame(result.table).to_csv(output(out / "estimates.csv"), index=False)
    plot_or_warn(
        forest_plot,
        output(out / "forest.png"),
        [{"label": f"{r['policy']} · {r['estimator']}", **r} for r in result.table],
        level=1 - settings.alpha,
        logging_value=result.logging_value["estimate"]
        if data is None or isinstance(data, LoggedConversations)
        else None,
        title="Off-policy estimates on the logs",
    )
    headline = settings.select
    if not all(headline in rows for rows in result.policies.values()):
        # ope.select names a conversation-level estimator; bandit feedback has decisions only
        headline = "dr" if "dr" in settings.decision_estimators else settings.decision_estimators[0]
        print(
            f"note: ope.select={settings.select} does not apply to this data; headline {headline}"
        )
    from supportrl.experiments.tracking import log_estimates

    mlflow_run = log_estimates(
        cfg, out, result.policies, result.logging_value, [out / "estimates.csv", out / "forest.png"]
    )
    best = max(
        result.policies,
        key=lambda k: np.nan_to_num(result.policies[k][headline]["estimate"], nan=-np.inf),
    )
    return finish(
        {
            "policies": result.policies,
            "diagnostics": result.diagnostics,
            "notes": result.notes,
            "select": headline,
            "logging_value": result.logging_value,
            **({"mlflow_run_id": mlflow_run} if mlflow_run else {}),
        },
        f"evaluate: {len(result.policies)} policies; highest {headline}: {best} "
        f"({result.policies[best][headline]['estimate']:+.4f})",
    )


if __name__ == "__main__":
    main()
