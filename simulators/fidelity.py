"""How faithful is a fitted customer model? Held-out fit, replay gaps, and policy values.

:func:`fidelity_report` checks a :class:`~simulators.fitted.FittedCustomerModel` three
ways and returns a JSON-able dict (optionally writing plots):

1. **Held-out fit** (``outcome_model``) on logs the model was not fitted on: mean
   log-likelihood of the logged outcome per decision against the held-out outcome
   frequencies (``pseudo_r2 = 1 - ll / ll_baseline``), reliability bins and expected
   calibration error per outcome, and the RMSE of next sentiment and ``log1p`` handle
   time. These are *observational*: a naive fit reproduces the logs best; a
   propensity-weighted fit trades some of this for being right under other policies.
2. **Replay** (``replay``): the model is run under a *behaviour-cloned* logging policy
   (:func:`~simulators.fitted.fit_behaviour_policy`, a multinomial logit of the logged
   action on the logged state; it cannot see what the logger saw beyond the logs) and the
   simulated conversations are compared with the logged ones: outcome rates per
   (intent, action) cell, the conversation-length histogram, final outcomes, and CSAT.
   Logged CSAT is what respondents said, so the simulated CSAT is compared after
   weighting each score by the model's answer probability ``g_k`` (``csat_surveyed``);
   the model's full CSAT is reported beside it.
3. **Policy values** (``panel``, when the ground truth is known, e.g. the synthetic
   world): each policy's value in the model against its true value, by Monte Carlo in
   both: Spearman rank correlation, regret@1 (true value lost by picking the model's
   best), mean absolute error, bias, and relative error ``sum |sim - true| / sum |true|``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import spearmanr
from supportrl.agents.base import Policy
from supportrl.envs.collect import simulate
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import OUTCOMES, RewardSpec
from supportrl.simulators.fitted import FittedCustomerModel, fit_behaviour_policy
from supportrl.simulators.fitted.csat import CSAT_LEVELS
from supportrl.simulators.logs import LoggedConversations

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CALIBRATION_BINS = 10
MIN_CELL = 30
"""(intent, action) cells with fewer logged decisions are left out of the replay gaps."""


# --------------------------------------------------------------------------- held-out fit


def calibration(
    predicted: np.ndarray, observed: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Reliability bins of predicted probabilities against observed 0/1 events.

    Args:
        predicted: shape (n,) probabilities; observed: shape (n,) bool.
    Returns:
        ``bin_edges``, per non-empty bin ``mean_predicted``, ``observed`` and ``count``,
        and ``ece`` (count-weighted mean absolute gap).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    pred = np.bincount(which, weights=predicted, minlength=bins)
    obs = np.bincount(which, weights=observed.astype(np.float64), minlength=bins)
    keep = count > 0
    mean_pred = pred[keep] / count[keep]
    freq = obs[keep] / count[keep]
    ece = float((count[keep] * np.abs(mean_pred - freq)).sum() / max(count.sum(), 1))
    return {
        "bin_edges": edges.round(4).tolist(),
        "bins": np.flatnonzero(keep).tolist(),
        "mean_predicted": mean_pred.round(5).tolist(),
        "observed": freq.round(5).tolist(),
        "count": count[keep].tolist(),
        "ece": ece,
    }


def held_out_fit(model: FittedCustomerModel, logs: LoggedConversations) -> dict[str, Any]:
    """Outcome log-likelihood and calibration, sentiment and handle-time error on ``logs``."""
    state = model.logged_states(logs)
    pred = model.predict(state, logs.action)
    probs = np.clip(pred.outcome_probs, 1e-12, 1.0)
    outcome = logs.outcome
    ll = float(np.log(probs[np.arange(logs.n_turns), outcome]).mean())
    freq = np.bincount(outcome, minlength=len(OUTCOMES)) / logs.n_turns
    ll0 = float(np.log(np.clip(freq[outcome], 1e-12, 1.0)).mean())
    out: dict[str, Any] = {
        "n_decisions": logs.n_turns,
        "log_likelihood": ll,
        "baseline_log_likelihood": ll0,
        "pseudo_r2": 1.0 - ll / ll0 if ll0 < 0 else float("nan"),
        "calibration": {
            OUTCOMES[k]: calibration(pred.outcome_probs[:, k], outcome == k)
            for k in range(1, len(OUTCOMES))
        },
    }
    out["ece_mean"] = float(np.mean([c["ece"] for c in out["calibration"].values()]))
    has_next = np.flatnonzero(~logs.is_last)
    if len(has_next):
        err = logs.sentiment[has_next + 1] - np.clip(pred.sentiment_mean[has_next], -1, 1)
        out["sentiment_rmse"] = float(np.sqrt(np.mean(err**2)))
    handle = logs.handle_time_s
    known = ~np.isnan(handle)
    if known.any() and model.handle_time_known:
        err = np.log1p(handle[known]) - pred.log_handle_mean[known]
        out["log_handle_rmse"] = float(np.sqrt(np.mean(err**2)))
    return out


# --------------------------------------------------------------------------- replay


def _outcome_rates(
    intent: np.ndarray,
    action: np.ndarray,
    outcome: np.ndarray,
    intents: tuple[str, ...],
    n_actions: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (n_intents, n_actions) and outcome rates (n_intents, n_actions, 4) per cell."""
    level = {v: i for i, v in enumerate(intents)}
    code = np.array([level.get(v, -1) for v in np.asarray(intent).tolist()], dtype=np.int64)
    ok = code >= 0
    cell = code[ok] * n_actions + action[ok]
    size = len(intents) * n_actions
    counts = np.bincount(cell, minlength=size)
    rates = np.zeros((size, len(OUTCOMES)))
    for k in range(len(OUTCOMES)):
        rates[:, k] = np.bincount(cell, weights=outcome[ok] == k, minlength=size)
    rates /= np.maximum(counts, 1)[:, None]
    return counts.reshape(len(intents), n_actions), rates.reshape(len(intents), n_actions, -1)


def replay_gaps(
    model: FittedCustomerModel,
    logs: LoggedConversations,
    *,
    n: int = 20_000,
    seed: int = 0,
    behaviour: Policy | None = None,
    reward: RewardSpec | None = None,
) -> dict[str, Any]:
    """Logged vs simulated conversations under a behaviour-cloned logging policy."""
    behaviour = behaviour or fit_behaviour_policy(logs)
    # the replay runs up to the simulator's own horizon, like the logs it was fitted on
    horizon = RewardSpec(max_turns=model.max_turns)
    if reward is not None:
        horizon = dataclasses.replace(reward, max_turns=model.max_turns)
    sim = simulate(model, behaviour, n, seed=seed, reward=horizon)
    out: dict[str, Any] = {
        "policy": "behaviour-cloned logging policy (multinomial logit on the logged state)",
        "n_simulated": n,
        "n_logged": logs.n_conversations,
        **_outcome_cells(model, logs, sim.logs),
        **_shape_gaps(model, logs, sim.logs),
    }
    if reward is not None and not np.isnan(logs.handle_time_s).any():
        csat, n_imputed = model.csat_imputation(logs)
        r = reward.rewards(
            actions=logs.action,
            outcomes=logs.outcome,
            handle_time_s=logs.handle_time_s,
            csat=csat,
            catalogue=logs.actions,
        )
        logged_return = np.bincount(
            logs.conversation_index, weights=r, minlength=logs.n_conversations
        )
        out["mean_return"] = {
            "logged": float(logged_return.mean()),
            "simulated": float(sim.returns().mean()),
            "csat_imputed": n_imputed,
        }
    return out


def _outcome_cells(
    model: FittedCustomerModel, logs: LoggedConversations, ro: LoggedConversations
) -> dict[str, Any]:
    """Outcome rates per (intent, action) cell with ``MIN_CELL`` turns on both sides, and gaps."""
    intents = model.intents
    n_actions = len(model.actions)
    log_counts, log_rates = _outcome_rates(
        logs.intent, logs.action, logs.outcome, intents, n_actions
    )
    sim_counts, sim_rates = _outcome_rates(ro.intent, ro.action, ro.outcome, intents, n_actions)
    cells = []
    gaps, weights = [], []
    for i, intent in enumerate(intents):
        for a, action in enumerate(model.actions):
            if log_counts[i, a] < MIN_CELL or sim_counts[i, a] < MIN_CELL:
                continue
            gap = np.abs(log_rates[i, a] - sim_rates[i, a])
            gaps.append(gap[1:].mean())
            weights.append(log_counts[i, a])
            cells.append(
                {
                    "intent": intent,
                    "action": action,
                    "n_logged": int(log_counts[i, a]),
                    "n_simulated": int(sim_counts[i, a]),
                    "logged": dict(zip(OUTCOMES, log_rates[i, a].round(4).tolist(), strict=True)),
                    "simulated": dict(
                        zip(OUTCOMES, sim_rates[i, a].round(4).tolist(), strict=True)
                    ),
                }
            )
    return {
        "outcome_rate_cells": cells,
        "outcome_rate_mean_abs_gap": float(np.average(gaps, weights=weights))
        if gaps
        else float("nan"),
        "outcome_rate_max_abs_gap": float(np.max(gaps)) if gaps else float("nan"),
    }


def _shape_gaps(
    model: FittedCustomerModel, logs: LoggedConversations, ro: LoggedConversations
) -> dict[str, Any]:
    """Conversation lengths, final outcomes and CSAT scores: logged vs simulated (``ro``)."""
    max_turns = model.max_turns
    log_len = np.bincount(np.minimum(logs.lengths, max_turns), minlength=max_turns + 1)[1:]
    sim_len = np.bincount(np.minimum(ro.lengths, max_turns), minlength=max_turns + 1)[1:]
    log_len_p = log_len / max(log_len.sum(), 1)
    sim_len_p = sim_len / max(sim_len.sum(), 1)
    log_final = (
        np.bincount(logs.outcome[logs.is_last], minlength=len(OUTCOMES)) / logs.n_conversations
    )
    sim_final = np.bincount(ro.outcome[ro.is_last], minlength=len(OUTCOMES)) / ro.n_conversations

    answered = logs.csat[logs.is_last & ~np.isnan(logs.csat)]
    log_csat = np.bincount(np.clip(np.round(answered), 1, 5).astype(int) - 1, minlength=5)
    log_csat_p = log_csat / max(log_csat.sum(), 1)
    sim_scores = ro.csat[~np.isnan(ro.csat)]
    sim_csat = np.bincount(sim_scores.astype(int) - 1, minlength=5).astype(np.float64)
    sim_csat_p = sim_csat / max(sim_csat.sum(), 1)
    surveyed = sim_csat * model.csat.response if model.csat.response.any() else sim_csat
    surveyed_p = surveyed / max(surveyed.sum(), 1e-12)
    return {
        "length_hist": {
            "length": list(range(1, max_turns + 1)),
            "logged": log_len_p.round(5).tolist(),
            "simulated": sim_len_p.round(5).tolist(),
            "tv_distance": float(0.5 * np.abs(log_len_p - sim_len_p).sum()),
        },
        "mean_length": {
            "logged": float(logs.lengths.mean()),
            "simulated": float(ro.lengths.mean()),
        },
        "final_outcome": {
            "logged": dict(zip(OUTCOMES, log_final.round(5).tolist(), strict=True)),
            "simulated": dict(zip(OUTCOMES, sim_final.round(5).tolist(), strict=True)),
            "tv_distance": float(0.5 * np.abs(log_final - sim_final).sum()),
        },
        "csat": {
            "levels": CSAT_LEVELS.tolist(),
            "logged_respondents": log_csat_p.round(5).tolist(),
            "simulated_surveyed": surveyed_p.round(5).tolist(),
            "simulated_all": sim_csat_p.round(5).tolist(),
            "tv_distance": float(0.5 * np.abs(log_csat_p - surveyed_p).sum()),
            "answer_rate_by_level": model.csat.response.round(4).tolist(),
        },
    }


# --------------------------------------------------------------------------- policy values


def panel_metrics(
    true_values: Mapping[str, float], simulated: Mapping[str, float]
) -> dict[str, Any]:
    """Agreement of simulated with true policy values (same keys).

    Returns ``spearman``, ``regret_at_1`` (best true value minus the true value of the
    policy the simulator ranks first), ``mae``, ``max_abs_error``, ``bias`` (mean of
    sim - true), ``relative_error`` (``sum |sim - true| / sum |true|``), the policies
    ranked best by each, and ``n_policies``.
    """
    names = list(true_values)
    if set(names) != set(simulated):
        raise ValueError("true_values and simulated must name the same policies")
    t = np.array([true_values[k] for k in names], dtype=np.float64)
    s = np.array([simulated[k] for k in names], dtype=np.float64)
    best_sim = int(np.argmax(s))
    err = s - t
    rho = float(spearmanr(t, s).statistic) if len(names) > 2 else float("nan")
    return {
        "n_policies": len(names),
        "spearman": rho,
        "regret_at_1": float(t.max() - t[best_sim]),
        "mae": float(np.abs(err).mean()),
        "max_abs_error": float(np.abs(err).max()),
        "bias": float(err.mean()),
        "relative_error": float(np.abs(err).sum() / max(np.abs(t).sum(), 1e-12)),
        "best_true": names[int(np.argmax(t))],
        "best_simulated": names[best_sim],
    }


def policy_values(
    model: CustomerModel,
    policies: Mapping[str, Policy],
    *,
    n: int,
    seed: int,
    reward: RewardSpec,
    penalized: bool = False,
) -> dict[str, float]:
    """Monte Carlo value of each policy in ``model`` (same seed for all: common random numbers)."""
    values = {}
    for name, policy in policies.items():
        sim = simulate(model, policy, n, seed=seed, reward=reward, penalized=penalized)
        values[name] = float(sim.returns().mean())
    return values


def panel_comparison(
    model: FittedCustomerModel,
    world: CustomerModel,
    policies: Mapping[str, Policy],
    *,
    reward: RewardSpec,
    n_simulated: int = 20_000,
    n_true: int = 50_000,
    seed: int = 0,
    true_values: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Simulated vs true values of ``policies`` and :func:`panel_metrics`.

    ``true_values`` may be passed when already known (they are then not recomputed).
    With a pessimism penalty, ``simulated_penalized`` and its metrics are added.
    """
    truth = (
        dict(true_values)
        if true_values is not None
        else policy_values(world, policies, n=n_true, seed=seed, reward=reward)
    )
    sim = policy_values(model, policies, n=n_simulated, seed=seed + 1, reward=reward)
    out: dict[str, Any] = {
        "n_true": n_true,
        "n_simulated": n_simulated,
        "policies": {k: {"true_value": truth[k], "simulated_value": sim[k]} for k in policies},
        "metrics": panel_metrics(truth, sim),
    }
    if model.config.penalty > 0:
        pen = policy_values(
            model, policies, n=n_simulated, seed=seed + 1, reward=reward, penalized=True
        )
        for k in policies:
            out["policies"][k]["simulated_penalized"] = pen[k]
        out["metrics_penalized"] = panel_metrics(truth, pen)
    return out


# --------------------------------------------------------------------------- report


def fidelity_report(
    model: FittedCustomerModel,
    logs: LoggedConversations,
    *,
    reward: RewardSpec | None = None,
    world: CustomerModel | None = None,
    policies: Mapping[str, Policy] | None = None,
    n_simulated: int = 20_000,
    n_true: int = 50_000,
    seed: int = 0,
    plots_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The fidelity report of ``model`` against held-out ``logs`` (see the module docstring).

    Args:
        model: a fitted customer model.
        logs: held-out conversations (not used to fit ``model``).
        reward: reward spec for values (default v1 with the model's ``max_turns``).
        world: the ground truth, when known (e.g. the synthetic world); with ``policies``
            it adds the ``panel`` section.
        policies: name -> policy, for the panel.
        n_simulated, n_true: Monte Carlo conversations in the model and in ``world``.
        seed: drives every simulation.
        plots_dir: when given, PNG plots are written there (listed under ``plots``).
    Returns:
        A JSON-able dict with ``model``, ``outcome_model``, ``replay`` and maybe ``panel``.
    """
    reward = reward or RewardSpec(max_turns=model.max_turns)
    report: dict[str, Any] = {
        "model": {
            "family": model.family,
            "weighting": model.config.weighting,
            "penalty": model.config.penalty,
            "min_support": model.config.min_support,
            "warnings": list(model.warnings),
        },
        "outcome_model": held_out_fit(model, logs),
        "replay": replay_gaps(model, logs, n=n_simulated, seed=seed, reward=reward),
    }
    if world is not None and policies:
        report["panel"] = panel_comparison(
            model, world, policies, reward=reward, n_simulated=n_simulated, n_true=n_true, seed=seed
        )
    if plots_dir is not None:
        report["plots"] = write_plots(report, plots_dir)
    return report


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """A few readable lines of a :func:`fidelity_report`."""
    om, rp = report["outcome_model"], report["replay"]
    lines = [
        f"held-out outcome log-lik {om['log_likelihood']:.4f} per decision "
        f"(baseline {om['baseline_log_likelihood']:.4f}, pseudo-R2 {om['pseudo_r2']:.3f}), "
        f"mean ECE {om['ece_mean']:.4f}",
        f"replay (behaviour-cloned logger): outcome-rate gap {rp['outcome_rate_mean_abs_gap']:.4f} "
        f"(max {rp['outcome_rate_max_abs_gap']:.4f}), length TV {rp['length_hist']['tv_distance']:.4f}, "
        f"final-outcome TV {rp['final_outcome']['tv_distance']:.4f}, CSAT TV {rp['csat']['tv_distance']:.4f}",
    ]
    if "mean_return" in rp:
        mr = rp["mean_return"]
        lines.append(
            f"mean return logged {mr['logged']:+.4f} (CSAT imputed on {mr['csat_imputed']} turns) "
            f"vs simulated {mr['simulated']:+.4f}"
        )
    if "panel" in report:
        m = report["panel"]["metrics"]
        lines.append(
            f"panel of {m['n_policies']} policies vs ground truth: Spearman {m['spearman']:.3f}, "
            f"regret@1 {m['regret_at_1']:.4f}, MAE {m['mae']:.4f}, bias {m['bias']:+.4f}, "
            f"relative error {m['relative_error']:.3f}"
        )
        for name, v in report["panel"]["policies"].items():
            lines.append(
                f"  {name:<30} true {v['true_value']:+.4f}  simulated {v['simulated_value']:+.4f}"
            )
    return lines


# --------------------------------------------------------------------------- plots


def write_plots(report: Mapping[str, Any], directory: str | Path) -> list[str]:
    """Write reliability, length, CSAT, outcome-gap and panel plots (PNG) into ``directory``.

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rp = report["replay"]
    figures = {
        "reliability.png": _plot_reliability(report["outcome_model"]),
        "lengths.png": _plot_lengths(rp["length_hist"]),
        "csat.png": _plot_csat(rp["csat"]),
    }
    if rp["outcome_rate_cells"]:
        figures["outcome_rates.png"] = _plot_outcome_rates(rp["outcome_rate_cells"])
    if "panel" in report:
        figures["panel.png"] = _plot_panel(report["panel"])
    written: list[str] = []
    for name, fig in figures.items():
        FigureCanvasAgg(fig)
        path = directory / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        written.append(str(path))
    return written


def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def _plot_reliability(om: Mapping[str, Any]) -> Figure:
    fig, ax = _figure((5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for name, cal in om["calibration"].items():
        ax.plot(
            cal["mean_predicted"],
            cal["observed"],
            marker="o",
            label=f"{name} (ECE {cal['ece']:.3f})",
        )
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title="Outcome model reliability (held out)",
    )
    ax.legend()
    return fig


def _plot_lengths(lh: Mapping[str, Any]) -> Figure:
    fig, ax = _figure((6, 4))
    x = np.asarray(lh["length"], dtype=float)
    ax.bar(x - 0.2, lh["logged"], width=0.4, label="logged")
    ax.bar(x + 0.2, lh["simulated"], width=0.4, label="simulated (cloned logger)")
    ax.set(
        xlabel="turns per conversation",
        ylabel="share",
        title=f"Conversation length (TV {lh['tv_distance']:.3f})",
    )
    ax.legend()
    return fig


def _plot_csat(cs: Mapping[str, Any]) -> Figure:
    fig, ax = _figure((6, 4))
    x = np.asarray(cs["levels"])
    ax.bar(x - 0.27, cs["logged_respondents"], width=0.27, label="logged respondents")
    ax.bar(x, cs["simulated_surveyed"], width=0.27, label="simulated x answer rate")
    ax.bar(x + 0.27, cs["simulated_all"], width=0.27, label="simulated, everyone")
    ax.set(xlabel="CSAT", ylabel="share", title=f"CSAT (TV {cs['tv_distance']:.3f})")
    ax.legend()
    return fig


def _plot_outcome_rates(cells: list[Mapping[str, Any]]) -> Figure:
    fig, ax = _figure((5, 5))
    for k in OUTCOMES[1:]:
        ax.scatter(
            [c["logged"][k] for c in cells], [c["simulated"][k] for c in cells], s=12, label=k
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="logged rate", ylabel="simulated rate", title="Outcome rate per (intent, action)")
    ax.legend()
    return fig


def _plot_panel(panel: Mapping[str, Any]) -> Figure:
    pol = panel["policies"]
    t = [v["true_value"] for v in pol.values()]
    s = [v["simulated_value"] for v in pol.values()]
    fig, ax = _figure((6, 6))
    ax.scatter(t, s)
    for name, tv, sv in zip(pol, t, s, strict=True):
        ax.annotate(name.removeprefix("rules_"), (tv, sv), fontsize=7)
    lo, hi = min(t + s), max(t + s)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    m = panel["metrics"]
    ax.set(
        xlabel="true value",
        ylabel="simulated value",
        title=f"Policy values: Spearman {m['spearman']:.2f}, MAE {m['mae']:.3f}",
    )
    return fig


__all__ = [
    "calibration",
    "fidelity_report",
    "held_out_fit",
    "panel_comparison",
    "panel_metrics",
    "policy_values",
    "replay_gaps",
    "summary_lines",
    "write_plots",
]
