"""DQNLearner: collects from the vector env (through the collector), owns replay, target network and optimizer, and updates.

Read top to bottom: :func:`dqn_targets` (Double DQN, masked), then :class:`DQNLearner`
with ``_act`` (epsilon-greedy on the batch of conversations), ``update`` (one gradient
step on a replay batch: n-step targets, Huber loss, importance weights, gradient
clipping, priority update), ``train`` (the collection loop with metrics; the one
training shape of :mod:`supportrl.agents.trainer`), and the
checkpoint methods.

Algorithm: DQN (Mnih et al. 2015) with Double DQN targets (van Hasselt et al. 2016), a
dueling head (Wang et al. 2016), n-step returns and proportional prioritized replay
(Schaul et al. 2016), as in Rainbow (Hessel et al. 2018) without the distributional and
noisy parts. Episodes end with termination (resolved, escalated, abandoned: no
bootstrap) or truncation at ``max_turns`` (bootstrap from the env's ``final_obs`` unless
``bootstrap_on_truncation`` is off).

Metrics (fixed names): ``charts/episodic_return`` (mean return of the conversations that
ended since the last row), ``losses/td_loss``, ``losses/q_values``, ``charts/epsilon``,
``charts/SPS`` (env steps per second of training, callbacks excluded).
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from supportrl.agents.dqn.checks import check_learner_meta, learner_specs, replay_specs
from supportrl.agents.dqn.config import DQNConfig, DQNUpdateStats
from supportrl.agents.dqn.fused import FusedDQNUpdate
from supportrl.agents.dqn.network import build_q_network
from supportrl.agents.dqn.policy import (
    QPolicy,
    load_module_arrays,
    load_q_policy,
    module_arrays,
    read_json,
    read_npz,
    write_npz,
)
from supportrl.agents.dqn.replay import ReplayBuffer
from supportrl.agents.trainer import TrainCallback, TrainResult, curve_arrays, go_on
from supportrl.envs.collect import Collector
from supportrl.envs.features import FeatureSpec
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from supportrl.files import reports_malformed
from supportrl.outputs import atomic_write_text, check_complete, write_complete

FORMAT = "supportrl.dqn_learner"
FORMAT_VERSION = 1
LEARNER_JSON = "learner.json"
LEARNER_NPZ = "learner.npz"
REPLAY_NPZ = "replay.npz"

METRICS: tuple[str, ...] = (
    "charts/episodic_return",
    "losses/td_loss",
    "losses/q_values",
    "charts/epsilon",
    "charts/SPS",
)
"""Metric names of every learning-curve row, besides ``env_steps``."""


def dqn_targets(
    q_next_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    next_mask: torch.Tensor,
    q_next_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """n-step Q-learning targets ``returns + discounts * Q_target(s', a*)``, shape (B,).

    ``a*`` is the argmax over the allowed actions (``next_mask``, bool (B, n_actions)) of
    ``q_next_online`` (Double DQN) or, when it is None, of ``q_next_target`` (plain DQN).
    ``discounts`` is ``gamma**m`` or 0 after a terminal step (then the Q-value is unused).
    """
    chooser = q_next_target if q_next_online is None else q_next_online
    best = chooser.masked_fill(~next_mask, -torch.inf).argmax(dim=1, keepdim=True)
    return returns + discounts * q_next_target.gather(1, best).squeeze(1)


def td_loss(
    q: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, delta: float = 1.0
) -> torch.Tensor:
    """Importance-weighted mean Huber loss of the TD errors ``q - targets`` (all shape (B,)).

    ``huber(x) = x**2 / 2`` for ``|x| <= delta``, else ``delta * (|x| - delta / 2)``;
    ``weights`` None means all 1 (uniform replay).
    """
    if weights is None:
        return F.huber_loss(q, targets, delta=delta)
    return (weights * F.huber_loss(q, targets, reduction="none", delta=delta)).mean()


class DQNLearner:
    """Trains a :class:`QPolicy` online in a same-step-autoreset vector env (SupportVectorEnv).

    The learner sees the env through its spaces and the documented info keys only (the
    info contract of :class:`~supportrl.envs.vector.SupportVectorEnv`), so Gymnasium
    wrappers may sit in front: ``infos["action_mask"]`` (num_envs, n_actions) bool, on steps
    where conversations end ``infos["final_obs"]``/``infos["_final_obs"]`` (and, if it has
    them, ``infos["final_action_mask"]``; otherwise every action counts as allowed in a
    final observation), and on reset ``infos["actions"]`` and ``infos["feature_spec"]``
    unless ``actions`` and ``feature_spec`` are given. Stepping goes through the project's
    one :class:`~supportrl.envs.collect.Collector`. All randomness comes from ``seed``:
    network initialisation, exploration, replay sampling and the env resets at the start
    of each :meth:`train`.
    """

    def __init__(
        self,
        *,
        config: DQNConfig,
        env: Any,
        seed: int = 0,
        feature_spec: FeatureSpec | None = None,
        actions: tuple[str, ...] | None = None,
    ) -> None:
        if not isinstance(config, DQNConfig):
            raise ValueError(f"config: expected a DQNConfig, got {type(config).__name__}")
        if getattr(env, "num_envs", None) != config.num_envs:
            raise ValueError(
                f"env: has {getattr(env, 'num_envs', None)} envs, config.num_envs is {config.num_envs}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
        self.config = config
        self.env = env
        self.seed = int(seed)
        self.env_steps = 0
        self.collector = Collector(env)
        if feature_spec is None or actions is None:
            infos = self.collector.reset(seed=self._segment_seed())
            missing = [k for k in ("actions", "feature_spec") if k not in infos]
            if missing:
                raise ValueError(
                    f"env: reset infos lack {missing}; pass actions= and feature_spec= instead"
                )
            actions = infos["actions"] if actions is None else actions
            feature_spec = infos["feature_spec"] if feature_spec is None else feature_spec
        self.actions = tuple(actions)
        self.feature_spec = feature_spec
        obs_dim = int(env.single_observation_space.shape[0])
        n_actions = int(env.single_action_space.n)
        arch = (obs_dim, n_actions, config.hidden_sizes, config.dueling)
        self.network = build_q_network(*arch, seed=self.seed)
        self.target = copy.deepcopy(self.network).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
        )
        self._fused = FusedDQNUpdate(
            self.network,
            self.target,
            self.optimizer,
            huber_delta=config.huber_delta,
            max_grad_norm=config.max_grad_norm,
            double_q=config.double_q,
        )
        """The update in numpy on the network's and the optimizer's own memory (:mod:`.fused`)."""
        self.replay = ReplayBuffer(
            capacity=config.buffer_size,
            num_envs=config.num_envs,
            obs_dim=obs_dim,
            n_actions=n_actions,
            n_step=config.n_step,
            gamma=config.gamma,
            prioritized=config.prioritized,
            alpha=config.per_alpha,
            eps=config.per_eps,
        )
        if config.learning_starts > self.replay.rows * config.num_envs:
            raise ValueError(
                f"learning_starts: {config.learning_starts} exceeds the replay capacity "
                f"{self.replay.rows * config.num_envs}"
            )
        self.policy = QPolicy(
            actions=self.actions, feature_spec=self.feature_spec, network=self.network
        )
        """The greedy policy over the online network (shares its weights)."""
        self.rng = np.random.default_rng(self.seed)
        self.updates = 0
        self._update_credit = 0.0
        self._last_target_update = 0

    # ------------------------------------------------------------------ acting

    def _act(self, obs: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
        """Epsilon-greedy actions over the allowed ones, shape (num_envs,) int64."""
        q, _ = self._fused.online.forward(obs)  # the online network, without torch dispatch
        greedy = np.where(mask, q, -np.inf).argmax(axis=1)
        explore = self.rng.random(len(obs)) < epsilon
        uniform = (self.rng.random(mask.shape) * mask).argmax(axis=1)  # uniform among allowed
        return np.where(explore, uniform, greedy)

    # ------------------------------------------------------------------ learning

    def update(self) -> DQNUpdateStats:
        """One gradient step on a replay batch; returns its statistics.

        Double-DQN n-step targets (:func:`dqn_targets`), importance-weighted Huber loss
        (:func:`td_loss`), gradient clipping and Adam, computed in numpy by
        :class:`~supportrl.agents.dqn.fused.FusedDQNUpdate` (the same maths as autograd).
        """
        cfg = self.config
        batch = self.replay.sample(cfg.batch_size, self.rng, beta=cfg.beta(self.env_steps))
        out = self._fused.step(
            batch.obs,
            batch.actions,
            batch.returns,
            batch.discounts,
            batch.next_obs,
            batch.next_mask,
            batch.weights if cfg.prioritized else None,
        )
        self.replay.update_priorities(batch.index, out.td_abs)
        self.updates += 1
        return DQNUpdateStats(out.loss, out.q_mean, out.target_mean, out.td_abs_mean, out.grad_norm)

    def _sync_target(self) -> None:
        """target <- tau * online + (1 - tau) * target (an exact copy when tau is 1)."""
        with torch.no_grad():
            for t, o in zip(self.target.parameters(), self.network.parameters(), strict=True):
                if self.config.tau == 1.0:
                    t.copy_(o)
                else:
                    t.lerp_(o, self.config.tau)

    # ------------------------------------------------------------------ training loop

    def train(
        self,
        total_steps: int | None = None,
        callback: TrainCallback | None = None,
        *,
        progress: bool = True,
    ) -> TrainResult:
        """Collect and learn for ``total_steps`` more env steps (default: up to
        ``config.total_steps``), the one training shape of :mod:`supportrl.agents.trainer`.

        Steps come in vector steps of ``num_envs``, so a call may run up to ``num_envs - 1``
        env steps past ``total_steps``.

        Every call starts fresh conversations (the env is reset with a seed derived from
        ``seed`` and the step count), so a run resumed from a checkpoint continues exactly
        like the run that wrote it. ``callback(env_steps, metrics)`` runs after every
        learning-curve row (every ``config.log_interval`` env steps, and at the end) with
        that row's metrics (:data:`METRICS`), e.g. to write them to TensorBoard or to
        evaluate the policy; it stops the training by returning False. Its time is not
        counted in ``wall_s`` and ``charts/SPS``. numpy's BLAS runs on one thread during the
        call.
        """
        cfg = self.config
        if total_steps is None:
            total_steps = cfg.total_steps - self.env_steps
        if total_steps < 1:
            raise ValueError(f"total_steps: must be >= 1, got {total_steps}")
        end = self.env_steps + int(total_steps)
        self.replay.mark_cut()
        self.collector.reset(seed=self._segment_seed())
        rows: dict[str, list[float]] = {"env_steps": [], **{m: [] for m in METRICS}}
        start_steps, start_updates = self.env_steps, self.updates
        bar = tqdm(total=int(total_steps), desc="train dqn", unit="step", disable=not progress)
        # one BLAS thread for the numpy update: its matrices are small, and a BLAS pool
        # contending for busy cores makes them ~30x slower (results do not change)
        limiter = threadpool_limits(limits=1, user_api="blas")
        try:
            train_time, episodes = self._train_loop(end, rows, callback, bar)
        finally:
            limiter.restore_original_limits()
        bar.update(self.env_steps - start_steps - bar.n)
        bar.close()
        return TrainResult(
            env_steps=self.env_steps - start_steps,
            wall_s=train_time,
            curve=curve_arrays(rows),
            policy=self.policy,
            total_env_steps=self.env_steps,
            stopped=self.env_steps < end,
            episodes=episodes,
            updates=self.updates - start_updates,
        )

    def _train_loop(
        self,
        end: int,
        rows: dict[str, list[float]],
        callback: TrainCallback | None,
        bar: Any,
    ) -> tuple[float, int]:
        """Collect and learn until ``end`` env steps or until ``callback`` says stop;
        returns (training seconds, episodes)."""
        cfg, n = self.config, self.config.num_envs
        start_steps = self.env_steps
        window = _Window()
        train_time, episodes = 0.0, 0
        tick = time.perf_counter()
        while self.env_steps < end:
            ended_returns = self._collect_and_learn(window.stats)
            if len(ended_returns):
                window.returns.append(ended_returns)
                episodes += len(ended_returns)
            window.steps += n
            if _crossed(self.env_steps, n, cfg.log_interval) or self.env_steps >= end:
                now = time.perf_counter()
                train_time += now - tick
                window.seconds += now - tick
                row = self._log_row(window, rows)
                bar.set_postfix(ret=f"{row['charts/episodic_return']:+.3f}", refresh=False)
                bar.update(self.env_steps - start_steps - bar.n)
                window = _Window()
                if not go_on(callback, self.env_steps, row):
                    break
                tick = time.perf_counter()
        return train_time, episodes

    def _collect_and_learn(self, stats: list[DQNUpdateStats]) -> np.ndarray:
        """One vector step into replay, then the updates and target sync it earns.

        Appends each update's statistics to ``stats``; returns the returns of the
        conversations that ended in the step, shape (n_ended,).
        """
        cfg, n = self.config, self.config.num_envs
        collector = self.collector
        actions = self._act(collector.obs, collector.mask, cfg.epsilon(self.env_steps))
        batch = collector.step(actions)
        terminal = batch.terminated if cfg.bootstrap_on_truncation else batch.ended
        self.replay.add(
            batch.obs,
            actions,
            batch.rewards,
            batch.next_obs,
            batch.ended,
            terminal,
            batch.next_mask,
        )
        self.env_steps += n
        if self.replay.filled * n >= cfg.learning_starts and len(self.replay) > 0:
            self._update_credit += cfg.updates_per_step
            while self._update_credit >= 1.0:
                stats.append(self.update())
                self._update_credit -= 1.0
        if self.env_steps - self._last_target_update >= cfg.target_update_interval:
            self._sync_target()
            self._last_target_update = self.env_steps
        return batch.ended_returns

    def _log_row(self, window: _Window, rows: dict[str, list[float]]) -> dict[str, float]:
        """Append one learning-curve row (the metrics of ``window``) and return it."""
        ended = np.concatenate(window.returns) if window.returns else np.empty(0)
        row = {
            "charts/episodic_return": float(ended.mean()) if len(ended) else float("nan"),
            "losses/td_loss": _mean(s.td_loss for s in window.stats),
            "losses/q_values": _mean(s.q_mean for s in window.stats),
            "charts/epsilon": self.config.epsilon(self.env_steps),
            "charts/SPS": window.steps / window.seconds if window.seconds > 0 else float("nan"),
        }
        rows["env_steps"].append(self.env_steps)
        for name, value in row.items():
            rows[name].append(value)
        return row

    def _segment_seed(self) -> int:
        """Env reset seed of the training call starting at the current step count."""
        return int(np.random.SeedSequence([self.seed, self.env_steps]).generate_state(1)[0])

    # ------------------------------------------------------------------ checkpoints

    def save(self, path: str | os.PathLike[str], *, include_replay: bool = False) -> Path:
        """Write a checkpoint directory: the policy files plus learner state (plain arrays + JSON).

        ``policy.json``/``policy.npz`` (:meth:`QPolicy.save`, readable by
        :func:`~agents.dqn.load_q_policy`), ``learner.json`` (config, counters, generator
        state, optimizer hyperparameters), ``learner.npz`` (target network, Adam moments)
        and, with ``include_replay``, ``replay.npz``. No pickle anywhere.
        """
        path = Path(path)
        self.policy.save(path)
        arrays = module_arrays(self.target, prefix="target.")
        params = list(self.network.parameters())
        for i, p in enumerate(params):
            state = self.optimizer.state.get(p, {})
            for key in ("step", "exp_avg", "exp_avg_sq"):
                if key in state:
                    arrays[f"adam.{i}.{key}"] = state[key].detach().cpu().numpy().copy()
        groups = self.optimizer.state_dict()["param_groups"]
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "seed": self.seed,
            "env_steps": self.env_steps,
            "updates": self.updates,
            "update_credit": self._update_credit,
            "last_target_update": self._last_target_update,
            "rng_state": self.rng.bit_generator.state,
            "adam_param_groups": [{k: v for k, v in g.items() if k != "params"} for g in groups],
            "replay": include_replay,
        }
        write_npz(path / LEARNER_NPZ, arrays)
        if include_replay:
            write_npz(path / REPLAY_NPZ, self.replay.state_arrays())
        elif (path / REPLAY_NPZ).exists():
            (path / REPLAY_NPZ).unlink()
        atomic_write_text(path / LEARNER_JSON, _json_dumps(meta))
        write_complete(path, "dqn")  # last: lists the learner files too
        return path

    @classmethod
    @reports_malformed(lambda cls, path, env: Path(path) / LEARNER_JSON)
    def load(cls, path: str | os.PathLike[str], env: Any) -> DQNLearner:
        """Rebuild a learner from :meth:`save` output, on ``env`` (same spaces and num_envs).

        The replay buffer comes back when it was saved; otherwise it starts empty and
        updates resume once ``learning_starts`` new env steps are collected.
        """
        path = Path(path)
        check_complete(path, "dqn", required=(LEARNER_JSON, LEARNER_NPZ))
        meta = read_json(path / LEARNER_JSON)
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path / LEARNER_JSON}: not a {FORMAT} v{FORMAT_VERSION} checkpoint "
                f"(format {meta.get('format')!r}, version {meta.get('format_version')!r})"
            )
        policy = load_q_policy(path)
        check_learner_meta(meta, policy.network.architecture(), path / LEARNER_JSON)
        learner = cls(
            config=DQNConfig.from_dict(meta["config"]),
            env=env,
            seed=int(meta["seed"]),
            feature_spec=policy.feature_spec,
        )
        if policy.actions != learner.actions:
            raise ValueError(
                f"{path}: actions {policy.actions} differ from the env's {learner.actions}"
            )
        learner.network.load_state_dict(policy.network.state_dict())
        # every tensor checked (name, shape, dtype) before torch sees it: Adam does not check
        arrays = read_npz(path / LEARNER_NPZ, *learner_specs(learner.target, learner.network))
        where = str(path / LEARNER_NPZ)
        load_module_arrays(learner.target, arrays, where=where, prefix="target.")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for i, _ in enumerate(learner.network.parameters()):
            keys = [f"adam.{i}.{k}" for k in ("step", "exp_avg", "exp_avg_sq")]
            if all(k in arrays for k in keys):
                state[i] = {
                    k.rsplit(".", 1)[1]: torch.from_numpy(np.array(arrays[k])) for k in keys
                }
        groups = learner.optimizer.state_dict()["param_groups"]
        for group, saved in zip(groups, meta["adam_param_groups"], strict=True):
            group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
        learner.optimizer.load_state_dict({"state": state, "param_groups": groups})
        learner._fused.bind()  # load_state_dict replaced the Adam state tensors
        learner.env_steps = int(meta["env_steps"])
        learner.updates = int(meta["updates"])
        learner._update_credit = float(meta["update_credit"])
        learner._last_target_update = int(meta["last_target_update"])
        learner.rng.bit_generator.state = meta["rng_state"]
        if meta.get("replay"):
            learner.replay.load_state_arrays(
                read_npz(path / REPLAY_NPZ, *replay_specs(learner.replay)),
                where=str(path / REPLAY_NPZ),
            )
        return learner


@dataclass
class _Window:
    """What happened since the last learning-curve row."""

    returns: list[np.ndarray] = field(default_factory=list)
    """Returns of the conversations that ended, one array per vector step."""
    stats: list[DQNUpdateStats] = field(default_factory=list)
    steps: int = 0
    """Env steps collected."""
    seconds: float = 0.0
    """Training time (callbacks excluded)."""


def _crossed(env_steps: int, n: int, interval: int) -> bool:
    """Whether the last vector step of ``n`` env steps crossed a multiple of ``interval``."""
    return interval > 0 and env_steps // interval > (env_steps - n) // interval


def _mean(values: Any) -> float:
    arr = np.fromiter(values, dtype=np.float64)
    return float(arr.mean()) if len(arr) else float("nan")


def _json_dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2) + "\n"
