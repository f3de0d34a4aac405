"""``supportrl deploy artifact=DIR n_conversations=N``: the A/B-test stand-in that closes the loop.

The artifact is loaded through :class:`supportrl.serving.Predictor` (with its exploration,
or ``deploy.epsilon``) and serves ``N`` customers of the ground-truth synthetic world; every
decision goes to a schema-v1 decision log (:class:`supportrl.serving.DecisionLogger`,
Parquet parts in ``<run_dir>/decisions/``) that ``validate`` and ``evaluate`` read as it
is. The log is validated on the spot. ``result.json``: ``{"deploy": {"log": PATH,
"n_conversations": n, "on_policy_value": x, ...}}``; the on-policy value is the mean
conversation return under reward v1 (true CSAT), with its standard error.

:func:`ship_winner` is the pipeline's last stage: export the winner, deploy it, and print
the deployed value beside what OPE and the simulator predicted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from supportrl.agents.base import Policy
from supportrl.envs.collect import SimulatedConversations, simulate
from supportrl.envs.rewards import OUTCOMES, RewardSpec
from supportrl.experiments.entry import command
from supportrl.experiments.errors import UserError
from supportrl.experiments.from_config import reward_from_cfg, to_plain, world_from_cfg
from supportrl.experiments.results import finish
from supportrl.experiments.run_dirs import output, run_dir
from supportrl.simulators.logs import LoggedConversations, load_conversations
from supportrl.simulators.synthetic import SyntheticWorld

DEPLOY_START = np.datetime64("2026-03-01T00:00:00", "us")
"""Timestamp of the first deployed conversation (deterministic logs for a given seed)."""
SECONDS_BETWEEN_CONVERSATIONS = 30.0


@dataclass(frozen=True)
class DeployResult:
    """What a deployment served and logged."""

    log: Path
    """The decision log (a directory of schema-v1 Parquet parts)."""
    n_conversations: int
    n_turns: int
    on_policy_value: float
    """Mean conversation return under the reward (true CSAT), reward units."""
    std_err: float
    epsilon: float
    """Exploration the Predictor served with."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": str(self.log),
            "n_conversations": self.n_conversations,
            "on_policy_value": self.on_policy_value,
            "std_err": self.std_err,
            "n_turns": self.n_turns,
            "epsilon": self.epsilon,
        }


def serve_customers(
    world: SyntheticWorld, policy: Policy, n: int, *, seed: int, reward: RewardSpec
) -> SimulatedConversations:
    """``n`` customers of ``world`` served by ``policy`` (the collector over the vector env)."""
    return simulate(world, policy, n, seed=seed, reward=reward)


def deploy_stage(
    artifact: Path,
    log_dir: Path,
    *,
    world: SyntheticWorld,
    reward: RewardSpec,
    n_conversations: int,
    seed: int,
    epsilon: float | None = None,
    part_rows: int = 10_000,
) -> DeployResult:
    """Serve ``n_conversations`` simulated customers with the artifact and log every decision.

    Conversation ``i`` is ``d<i>``; timestamps start at :data:`DEPLOY_START`, one conversation
    every 30 s, each turn advancing by its handle time. CSAT is logged where the customer
    answered the survey (the world's missing-not-at-random response), as production sees it.
    """
    from supportrl.serving import DecisionLogger, Predictor

    if n_conversations < 2:
        raise UserError(f"n_conversations={n_conversations}: deploy at least 2 conversations")
    predictor = Predictor.load(artifact, epsilon=epsilon, seed=seed)
    if predictor.actions != world.actions:
        raise UserError(
            f"{artifact}: actions {list(predictor.actions)} differ from the world's {list(world.actions)}"
        )
    sim = serve_customers(world, predictor, n_conversations, seed=seed, reward=reward)
    returns = sim.returns()
    ro = sim.logs
    conversation = ro.conversation_index
    width = len(str(n_conversations - 1))
    ids = np.char.add("d", np.char.zfill(np.arange(n_conversations).astype(str), width))
    elapsed = np.cumsum(ro.handle_time_s) - ro.handle_time_s
    elapsed -= elapsed[ro.offsets[:-1]][conversation]
    seconds = conversation * SECONDS_BETWEEN_CONVERSATIONS + elapsed
    timestamps = DEPLOY_START + np.round(seconds * 1e6).astype("timedelta64[us]")
    last = ro.offsets[1:] - 1
    answered = world.csat_observed(ro.csat, np.random.default_rng((seed, 1)))
    labels = np.asarray(world.actions)
    # a simulation acknowledges nothing to a client: no journal (docs/security.md)
    logger = DecisionLogger.for_predictor(log_dir, predictor, part_rows=part_rows, journal=False)
    logger.log_batch(
        ids[conversation],
        ro.states(),
        labels[ro.action],
        ro.propensity,
        timestamps=timestamps,
        handle_time_s=np.round(ro.handle_time_s, 2),
    )
    logger.record_outcomes(
        ids,
        [OUTCOMES[o] for o in ro.outcome[last].tolist()],
        np.where(answered[last], ro.csat[last], np.nan),
    )
    logger.close(censor_open=False)
    return DeployResult(
        log=log_dir,
        n_conversations=n_conversations,
        n_turns=len(ro.action),
        on_policy_value=float(returns.mean()),
        std_err=float(returns.std(ddof=1) / np.sqrt(n_conversations)),
        epsilon=predictor.epsilon,
    )


@dataclass(frozen=True)
class ExperimentRun:
    """An experiment served in process to a known world's customers."""

    log: Path
    """The decision log (schema-v1 Parquet parts with ``arm``, plus ``experiment.json``)."""
    n_conversations: dict[str, int]
    """Arm -> conversations it served."""
    true_value: dict[str, float]
    """Arm -> mean conversation return under the reward with the true CSAT (the world knows it)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "log": str(self.log),
            "n_conversations": self.n_conversations,
            "true_value": self.true_value,
        }


def experiment_stage(
    experiment: Any,
    log_dir: Path,
    *,
    world: SyntheticWorld,
    reward: RewardSpec,
    n_conversations: int,
    seed: int,
    prefix: str = "x",
    part_rows: int = 50_000,
    start: int = 0,
    width: int | None = None,
    logger: Any = None,
) -> ExperimentRun:
    """Serve ``n_conversations`` customers of ``world`` through ``experiment`` (a
    :class:`supportrl.serving.experiment.Experiment`) and log every decision.

    The serving code decides: conversation ``<prefix><i>`` is assigned by the experiment's
    salted hash (one customer per conversation), each arm's :class:`Predictor` acts, and
    every logged propensity is the serving mixture's (:func:`mixture_propensities`, the
    batch form of ``Experiment.decide``). Conversations are timestamped in id order, 30 s
    apart; CSAT is logged where the customer answered (the world's missing-not-at-random
    response).

    Served in chunks (an experiment looked at as it runs): ``start`` is the index of the
    chunk's first conversation (ids and the clock go on from there), ``width`` the digits of
    the ids, and ``logger`` the open :class:`DecisionLogger` the chunks share (default: a new
    one, closed at the end).
    """
    from supportrl.serving import DecisionLogger
    from supportrl.serving.experiment import pseudonym

    if n_conversations < 2:
        raise UserError(f"n_conversations={n_conversations}: serve at least 2 conversations")
    if experiment.actions != world.actions:
        raise UserError(
            f"experiment: actions {list(experiment.actions)} differ from the world's {list(world.actions)}"
        )
    width = width or len(str(start + n_conversations - 1))
    ids = np.char.add(
        prefix, np.char.zfill(np.arange(start, start + n_conversations).astype(str), width)
    )
    units = ids if experiment.config.unit == "conversation" else np.char.add("customer-", ids)
    assigned = experiment.assign(units.tolist())
    streams = np.random.SeedSequence(seed).spawn(len(experiment.arms) + 1)
    rec, served, truth = _serve_arms(experiment, assigned, world, reward, streams)
    order = np.lexsort((rec["turn"], rec["conversation"]))
    rec = _take(rec, order)
    conversation = rec["conversation"]
    rec["timestamp"] = _clock(conversation, rec["handle_time_s"], start)
    customers = (
        None
        if experiment.config.unit == "conversation"
        else [pseudonym(experiment.config.salt, u) for u in units[conversation].tolist()]
    )
    own = logger is None
    if own:
        logger = DecisionLogger.for_experiment(
            log_dir, experiment, part_rows=part_rows, journal=False
        )
    answered = world.csat_observed(rec["csat"], np.random.default_rng(streams[-1]))
    _log_rows(logger, rec, ids[conversation], np.asarray(world.actions), customers, answered)
    if own:
        logger.close(censor_open=False)
    else:
        logger.flush()
    experiment.write_description(log_dir)
    return ExperimentRun(log=log_dir, n_conversations=served, true_value=truth)


def _log_rows(
    logger: Any,
    rec: dict[str, Any],
    cids: np.ndarray,
    labels: np.ndarray,
    customers: list[str] | None,
    answered: np.ndarray,
) -> None:
    """Every served decision into ``logger`` (rows ordered by conversation and turn), then
    each conversation's outcome, with CSAT where the customer ``answered``."""
    logger.log_batch(
        cids,
        rec["states"],
        labels[rec["action"]],
        rec["propensity"],
        timestamps=rec["timestamp"],
        handle_time_s=np.round(rec["handle_time_s"], 2),
        arms=rec["arm"].tolist(),
        customer_ids=customers,
        decision_ids=np.char.add(np.char.add(cids, ":"), rec["turn"].astype(str)).tolist(),
    )
    conversation = rec["conversation"]
    last = np.append(conversation[1:] != conversation[:-1], True)
    logger.record_outcomes(
        cids[last],
        [OUTCOMES[o] for o in rec["outcome"][last].tolist()],
        np.where(answered[last], rec["csat"][last], np.nan),
    )


def _serve_arms(
    experiment: Any,
    assigned: np.ndarray,
    world: SyntheticWorld,
    reward: RewardSpec,
    streams: list[np.random.SeedSequence],
) -> tuple[dict[str, Any], dict[str, int], dict[str, float]]:
    """Each arm's assigned conversations served by its Predictor, with the serving
    mixture's propensities (:func:`mixture_propensities`); (rows of every arm, merged;
    conversations per arm; each arm's mean true return)."""
    from supportrl.serving.experiment import mixture_propensities

    parts, served, truth = [], {}, {}
    for k, name in enumerate(experiment.arms):
        where = np.flatnonzero(assigned == k)
        served[name] = int(len(where))
        if len(where) < 2:
            truth[name] = float("nan")
            if len(where) == 0:
                continue
        sim = serve_customers(
            world,
            experiment.predictors[k],
            max(len(where), 2),
            seed=int(streams[k].generate_state(1)[0]),
            reward=reward,
        )
        logs = sim.logs
        keep = logs.conversation_index < len(where)  # the 2-conversation minimum of one served
        truth[name] = float(sim.returns()[: len(where)].mean())
        states = logs.states()
        arm_probs = np.stack([p.action_probs(states) for p in experiment.predictors])
        propensity = mixture_propensities(arm_probs, logs.offsets, logs.action, experiment.shares)
        rows = np.flatnonzero(keep)
        parts.append(
            {
                "conversation": where[logs.conversation_index[rows]],
                "turn": logs.turn[rows],
                "states": {k2: np.asarray(v)[rows] for k2, v in states.items()},
                "action": logs.action[rows],
                "propensity": propensity[rows],
                "outcome": logs.outcome[rows],
                "csat": logs.csat[rows],
                "handle_time_s": logs.handle_time_s[rows],
                "arm": np.full(len(rows), name, dtype=object),
            }
        )
    return _merge(parts), served, truth


def _clock(conversation: np.ndarray, handle_time_s: np.ndarray, start: int) -> np.ndarray:
    """Each row's timestamp: conversations in id order, SECONDS_BETWEEN_CONVERSATIONS apart
    (from index ``start``), turns within one after the earlier turns' handle times."""
    first = np.flatnonzero(np.append(True, conversation[1:] != conversation[:-1]))
    starts = np.repeat(first, np.diff(np.append(first, len(conversation))))
    elapsed = np.cumsum(handle_time_s) - handle_time_s
    elapsed -= elapsed[starts]
    seconds = (start + conversation) * SECONDS_BETWEEN_CONVERSATIONS + elapsed
    return DEPLOY_START + np.round(seconds * 1e6).astype("timedelta64[us]")


def experiment_clock(index: int) -> str:
    """The simulated time conversation ``index`` of an in-process experiment starts (UTC)."""
    at = DEPLOY_START + np.timedelta64(int(index * SECONDS_BETWEEN_CONVERSATIONS * 1e6), "us")
    return str(at.astype("datetime64[s]")) + "Z"


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, dict):
            out[key] = {k: np.concatenate([p[key][k] for p in parts]) for k in value}
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


def _take(rec: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {k: _take(v, rows) if isinstance(v, dict) else v[rows] for k, v in rec.items()}


def validate_log(log: Path, actions: tuple[str, ...]) -> LoggedConversations:
    """Read the decision log back as schema-v1 conversations (raises on any violation)."""
    return load_conversations(log, actions=list(actions))


def ship_winner(
    out: Path,
    *,
    source: Path,
    reference: LoggedConversations,
    world: SyntheticWorld,
    reward: RewardSpec,
    n_conversations: int,
    seed: int,
    predicted: Mapping[str, Any],
    epsilon: float | None = None,
) -> dict[str, Any]:
    """The pipeline's last stage: export ``source`` (the winner) to ``out/artifact``, deploy it
    to ``n_conversations`` customers, validate the decision log, and print the deployed value
    beside ``predicted`` (``{"ope": {"name", "estimate", "ci_low", "ci_high"},
    "simulated_value": x, "true_value": x}``). Returns ``{"artifact": PATH, "deploy": {...}}``.
    """
    from supportrl.experiments.export import export_stage

    artifact = export_stage(
        source, output(out / "artifact"), reference=reference, evaluation=dict(predicted)
    )
    deployed = deploy_stage(
        artifact,
        output(out / "decisions"),
        world=world,
        reward=reward,
        n_conversations=n_conversations,
        seed=seed + 2,
        epsilon=epsilon,
    )
    logs = validate_log(deployed.log, world.actions)
    ope = predicted.get("ope", {})
    print(f"      artifact: {artifact}")
    print(
        f"      decision log: {deployed.log} ({logs.n_conversations} conversations, "
        f"{logs.n_turns} turns, valid schema v1)"
    )
    print(
        f"      deployed on-policy value {deployed.on_policy_value:+.3f} "
        f"(± {1.96 * deployed.std_err:.3f}, epsilon {deployed.epsilon:g}) | predicted: "
        f"{ope.get('name', 'ope')} {ope.get('estimate', float('nan')):+.3f} "
        f"[{ope.get('ci_low', float('nan')):+.3f}, {ope.get('ci_high', float('nan')):+.3f}], "
        f"simulator {predicted.get('simulated_value', float('nan')):+.3f}, "
        f"true {predicted.get('true_value', float('nan')):+.3f}"
    )
    return {"artifact": str(artifact), "deploy": deployed.to_dict()}


@command
def main(cfg: DictConfig) -> dict[str, Any]:
    if cfg.artifact is None:
        raise UserError("artifact is required: artifact=DIR (written by supportrl export)")
    world = world_from_cfg(cfg)
    deployed = deploy_stage(
        Path(str(cfg.artifact)),
        output(run_dir() / "decisions"),
        world=world,
        reward=reward_from_cfg(cfg),
        n_conversations=int(cfg.n_conversations),
        seed=int(cfg.seed),
        epsilon=to_plain(cfg.deploy.epsilon),
        part_rows=int(cfg.deploy.part_rows),
    )
    logs = validate_log(deployed.log, world.actions)
    return finish(
        {"deploy": deployed.to_dict()},
        f"deploy: {deployed.n_conversations} conversations ({logs.n_turns} decisions, log valid) "
        f"-> on-policy value {deployed.on_policy_value:+.4f} ± {1.96 * deployed.std_err:.4f}",
    )


if __name__ == "__main__":
    main()
