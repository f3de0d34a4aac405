"""``evaluate engine=local|ray``: off-policy evaluation of Parquet logs in partitions.

Builds the typed arguments of :func:`supportrl.ope.partitioned.evaluate_partitioned` from
the config and returns what :func:`~supportrl.experiments.stages.evaluate_stage` returns, so
``evaluate`` prints and writes the same tables (``docs/scale.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import log_limits, reward_from_cfg, to_plain
from supportrl.experiments.loading import load_policy, policy_name
from supportrl.experiments.repo_files import resolve_shipped
from supportrl.experiments.stages import (
    OPEResult,
    OPESettings,
    off_policy_evaluation,
    ray_settings,
)
from supportrl.simulators.logs import DEFAULT_ACTIONS


def evaluate_in_partitions(cfg: DictConfig, settings: OPESettings) -> OPEResult:
    """Every candidate of ``policies=[..]`` on ``data.turns`` (Parquet), ``engine`` local or ray."""
    from supportrl.ope.partitioned import LogSource, evaluate_partitioned
    from supportrl.simulators.fitted.csat import CsatImputation

    data = cfg.data
    if data.kind != "conversations" or data.turns is None:
        raise UserError(f"engine={cfg.engine}: needs conversation logs (data.turns=PATH)")
    if cfg.target_probs is not None:
        raise UserError(
            f"engine={cfg.engine}: target_probs files follow the logs' row order, which "
            "partitions do not keep; give policies=[..] or use engine=memory"
        )
    turns = Path(str(data.turns))
    if turns.suffix.lower() not in (".parquet", ".pq") and not turns.is_dir():
        raise UserError(f"engine={cfg.engine}: data.turns must be Parquet (a file or a directory)")
    actions = tuple(to_plain(data.actions) or DEFAULT_ACTIONS)
    paths = [resolve_shipped(p) for p in to_plain(cfg.policies) or []]
    if not paths:
        raise UserError("nothing to evaluate: give policies=[FILE.yaml,..]")
    policies = {policy_name(p): load_policy(p, actions) for p in paths}
    seed = int(cfg.seed)
    source = LogSource(
        turns=turns,
        customers=Path(str(data.customers)) if data.customers is not None else None,
        categorical=to_plain(data.categorical),
        numeric=to_plain(data.numeric),
        actions=actions,
        limits=log_limits(cfg),
    )
    ray = ray_settings(cfg)
    try:
        out = evaluate_partitioned(
            source,
            policies,
            reward_from_cfg(cfg),
            lambda prepared: off_policy_evaluation(prepared, settings, seed=seed),
            csat_imputer=CsatImputation.from_logs,
            sample_turns=settings.sample_turns,
            refit_turns=settings.refit_turns,
            memory_budget_mb=float(data.memory_budget_mb),
            engine=str(cfg.engine),  # type: ignore[arg-type]
            ray_address=ray.address,
            num_cpus=ray.num_cpus or 2,
            seed=seed,
        )
    except ValueError as exc:  # LogValidationError included: file, column and rows named
        raise UserError(str(exc)) from None
    print(
        f"engine={out.engine}: {out.n_turns} turns in {out.n_partitions} partitions; nuisance "
        f"models on {out.sample_conversations} conversations ({out.sample_turns} turns, "
        f"share {out.sample_share:.3g})"
    )
    return _result(out, settings.alpha)


def _result(out: Any, alpha: float) -> OPEResult:
    from scipy.stats import norm

    results, diagnostics, table = {}, {}, []
    for name, res in out.results.items():
        results[name] = res.rows()
        diagnostics[name] = res.as_dict()
        for scope, rows in (("conversation", res.conversation), ("decision", res.decision)):
            for est, e in rows.items():
                table.append({"policy": name, "scope": scope, "estimator": est, **e.as_dict()})
    n, total, squares = out.returns
    mean = total / n
    sd = float(np.sqrt(max(squares - n * mean**2, 0.0) / max(n - 1, 1)))
    half = float(norm.ppf(1 - alpha / 2) * sd / np.sqrt(n))
    logging_value = {"estimate": mean, "ci_low": mean - half, "ci_high": mean + half}
    return OPEResult(
        results, diagnostics, list(out.notes), table, logging_value, out.return_range, out.results
    )
