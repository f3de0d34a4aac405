"""Steps 3-5 of the pipeline on one set of logs: fit the simulator, train the agent (and its
support-restricted twin), evaluate every candidate off-policy and in the simulator.

The pipeline's first pass and every improvement round (:mod:`.rounds`) learn through
:func:`learn`, so a round re-learns exactly as the first pass does, on the pooled logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.base import Policy
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.plots import write_metrics
from supportrl.experiments.stages import (
    OPEResult,
    OPESettings,
    TrainedAgent,
    evaluate_stage,
    fidelity_stage,
    fit_data_stage,
    fit_stage,
    prepare_for_ope,
    start_csat_fit,
    timed,
    train_stage,
    value_stage,
)
from supportrl.experiments.tracking import report_iteration
from supportrl.ope.evaluate import target_probs_of

STEPS = 7
"""The pipeline's numbered steps (:mod:`.pipeline`)."""


def step(k: int, text: str) -> None:
    print(f"[{k}/{STEPS}] {text}", flush=True)


@dataclass
class Learned:
    """What one pass of steps 3-5 learned on a set of logs."""

    model: Any
    trained: TrainedAgent
    candidates: dict[str, Policy]
    sources: dict[str, Path]
    """Candidate -> what export reads (trained agents' checkpoints)."""
    probs: dict[str, Any]
    result: OPEResult
    simulated: dict[str, dict[str, float]]
    fidelity: dict[str, Any] | None = None


def learn(
    logs: LoggedConversations,
    baselines: dict[str, Policy],
    spec: Any,
    settings: Any,
    sim_spec: Any,
    ope: OPESettings,
    reward: RewardSpec,
    fit: Any,
    *,
    out: Path,
    seed: int,
    timings: dict[str, float],
    name: str,
    extra: dict[str, Policy] | None = None,
    fit_data: Any = None,
    fidelity: bool = True,
) -> Learned:
    """Steps 3-5 on ``logs``: fit the simulator (``out/simulator``) on ``fit_data()`` (the
    ``fit.*`` sample and holdout; default: ``logs`` with ``fit.holdout`` held out), train the
    agent (``out/agents/<kind>``) as candidate ``name`` (and, with
    ``train.support_threshold``, ``<name>-supported``, restricted to the actions the logs
    support), evaluate them, the baselines and ``extra`` (e.g. production) off-policy, and
    simulate their values. ``fidelity``: score the simulator on the held-out conversations
    (the first pass reports it; the rounds' re-fits are not reported, so they skip it)."""
    step(
        3, f"fit the customer simulator ({sim_spec.family}) on {logs.n_conversations} conversations"
    )
    with timed(timings, "fit"):
        if fit_data is None:  # logs pooled in memory: no file to sample from
            fitted = fit_data_stage(fit, seed=seed, turns=Path("pooled"), load=None, logs=logs)
        else:
            fitted = fit_data()
        # fitted on part of the logs, the simulator's CSAT model cannot serve OPE: OPE's own
        # is fitted on a worker while the simulator is fitted and the agents trained
        csat_fit = None
        if not fitted.whole:
            csat_fit = start_csat_fit(logs, reward, workers=ope.workers)
        model = fit_stage(
            fitted.train, sim_spec, seed=seed, out=out, conversation_weights=fitted.weights,
            workers=fit.workers,
        )  # fmt: skip
        report = None
        if fidelity and fitted.test is not None:
            report = fidelity_stage(model, fitted, reward, fit, seed=seed, out=out)
    print(f"      simulator: {out / 'simulator'} ({timings['fit']:.1f} s)")

    step(4, f"train {spec.kind} in the fitted simulator for {settings.total_steps} env steps")
    trained, restricted, sources = _train(
        logs, model, spec, settings, reward, out=out, seed=seed, timings=timings, name=name
    )

    step(5, "evaluate the candidates off-policy on the logs, and in the simulator")
    candidates = {name: trained.policy, **restricted, **baselines, **(extra or {})}
    states = logs.states()
    with timed(timings, "evaluate"):
        probs = {k: target_probs_of(p, states, logs.actions) for k, p in candidates.items()}
        # missing CSAT: the simulator's CSAT model where it was fitted on all the logs, else
        # the same design refitted on all of them (OPE does not move with fit.holdout)
        prepared = prepare_for_ope(
            logs, reward, seed=seed, model=model, fitted_on_all=fitted.whole, csat_fit=csat_fit
        )
        result = evaluate_stage(logs, reward, probs, ope, seed=seed, prepared=prepared)
        simulated = value_stage(
            candidates, model, reward, fit.simulated_conversations, seed=seed + 1
        )
    return Learned(model, trained, candidates, sources, probs, result, simulated, report)


def _train(
    logs: LoggedConversations,
    model: Any,
    spec: Any,
    settings: Any,
    reward: RewardSpec,
    *,
    out: Path,
    seed: int,
    timings: dict[str, float],
    name: str,
) -> tuple[TrainedAgent, dict[str, Policy], dict[str, Path]]:
    """Step 4: the agent as candidate ``name`` and, with ``train.support_threshold``, its
    support-restricted twin ``<name>-supported``; (agent, {twin}, candidate -> checkpoint)."""
    agent_dir = out / "agents" / spec.kind
    with timed(timings, "train"):
        trained = train_stage(
            spec, model, reward, settings, seed=seed, out=agent_dir, model_path=out / "simulator",
            callback=report_iteration,  # a sweep's Tune trial sees every curve point (else a no-op)
        )  # fmt: skip
    write_metrics(
        agent_dir, trained.curve, title=f"{spec.kind} (seed {seed})", source="fitted simulator"
    )
    print(f"      {spec.kind}: {trained.env_steps} env steps in {trained.wall_s:.1f} s")
    sources = {name: trained.checkpoint}
    threshold = settings.support_threshold
    if threshold is not None and spec.kind not in ("linucb", "lints"):
        print(f"      train.support_threshold: not applied to {spec.kind} (linear bandits only)")
    if threshold is None or spec.kind not in ("linucb", "lints"):
        return trained, {}, sources
    with timed(timings, "train"):
        weights = logging_logit(logs, model.feature_spec, seed=seed)
        supported = train_stage(
            spec, model, reward, settings, seed=seed,
            out=out / "agents" / f"{spec.kind}-supported", model_path=out / "simulator",
            support=(float(threshold), weights),
        )  # fmt: skip
    sources[f"{name}-supported"] = supported.checkpoint
    print(
        f"      {spec.kind}-supported: actions with estimated logging probability >= "
        f"{threshold:g} only; {supported.env_steps} env steps in {supported.wall_s:.1f} s"
    )
    return trained, {f"{name}-supported": supported.policy}, sources


def logging_logit(
    logs: LoggedConversations, spec: Any, *, seed: int, max_rows: int = 50_000
) -> Any:
    """The logging policy's multinomial logit on the agent's design rows (features and an
    intercept), fitted on up to ``max_rows`` logged decisions: weights (n_actions, dim + 1)."""
    from supportrl.ope.models import MultinomialLogit

    rows = np.arange(logs.n_turns)
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    states = {k: np.asarray(v)[rows] for k, v in logs.states().items()}
    x = spec.encode(states)
    return MultinomialLogit.fit(x, logs.action[rows], len(logs.actions)).weights
