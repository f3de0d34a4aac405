"""The RLlib backend: the same DQN config, env and Policy protocol, trained by RLlib 2.60.

:func:`to_rllib_config` translates a :class:`~agents.dqn.DQNConfig` into RLlib's
``DQNConfig`` on the new API stack (RLModule + Learner + EnvRunner) for
``supportrl/SupportEnv-v1``; :class:`RLlibTrainer` runs it locally or on an existing cluster
(``address=...``, Ray started by :func:`supportrl.ray_runtime.start_ray`) through the one
training shape, ``train(total_steps, callback) -> TrainResult``, whose ``policy`` is the
trained RLModule behind the Policy protocol. Both backends train the same network: RLlib's default DQN module
with ``fcnet_hiddens=hidden_sizes`` (ReLU) and no hidden layers in the heads is
:class:`~agents.dqn.QNetwork` with the same layer sizes, so :meth:`RLModulePolicy.to_q_policy`
copies the weights into a :class:`~agents.dqn.QPolicy` (checkpoint, OPE and export then
treat both backends alike).

Translation (native field -> RLlib):

| native | RLlib |
|---|---|
| hidden_sizes, dueling, double_q | model_config.fcnet_hiddens (relu), head_fcnet_hiddens=[], dueling, double_q |
| learning_rate, adam_eps, max_grad_norm | lr, adam_epsilon, grad_clip (global_norm) |
| gamma, n_step, batch_size | gamma, n_step, train_batch_size |
| buffer_size, prioritized, per_alpha, per_beta | replay_buffer_config (EpisodeReplayBuffer or PrioritizedEpisodeReplayBuffer; beta held constant) |
| learning_starts, target_update_interval, tau | num_steps_sampled_before_learning_starts, target_network_update_freq, tau |
| start/end_epsilon, exploration_fraction | epsilon schedule [(0, start), (fraction * total_steps, end)] |
| updates_per_step / num_envs | training_intensity = updates per env step * batch_size |
| num_envs | num_envs_per_env_runner |

Not translated (ValueError when set away from the default that RLlib matches):
``huber_delta`` (RLlib's Huber uses 1.0) and ``bootstrap_on_truncation=False`` (RLlib
always bootstraps on truncation). RLlib steps single ``SupportEnv`` instances through
gymnasium's ``SyncVectorEnv`` (it expects next-step autoreset; the numpy vector env resets
in the same step, so RLlib cannot take it), each on the model's scalar sim when it has one
(``support_env_config(scalar=True)``), and it ignores action masks: use it with models
whose support masks allow every action (the synthetic world).

Measured differences (``benchmarks/bench_dqn.py``): RLlib samples a few more env steps per
round than ``rollout_fragment_length * num_envs`` (autoreset steps), so it realises ~10%
fewer updates per env step than configured; and with ``n_step=3`` its TD loss grows
(0.4 -> 1.7 over 40k env steps) and the greedy value falls back to ~+0.03..0.12, while
``n_step=1`` learns like the native learner (+0.24 at 30k). Not root-caused; one
difference found: RLlib 2.60's ``EpisodeReplayBuffer`` bootstraps with ``gamma**n_step``
even when the window is cut short by the end of the stored data.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

import numpy as np
import torch
from supportrl.agents.base import BasePolicy, States, batch_size, greedy_probs
from supportrl.agents.dqn.config import DQNConfig
from supportrl.agents.dqn.network import QNetwork
from supportrl.agents.dqn.policy import QPolicy
from supportrl.agents.trainer import TrainCallback, TrainResult, curve_arrays, go_on
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import RewardSpec

from supportrl import ENV_ID
from supportrl.ray_runtime import start_ray

ENV_NAME = ENV_ID
"""Name under which the env creator is registered in Ray's tune registry (the env id: RLlib
builds the v1 env, the scalar path included)."""


WORLD_FACTORY = "supportrl.simulators.synthetic:world_from_config"
"""Model factory of ``support_env_config(world=...)``: the ground-truth world from its config."""
SIMULATOR_FACTORY = "supportrl.simulators.fitted:load_customer_model"
"""Model factory of ``support_env_config(model_path=...)``: a saved fitted simulator."""


def support_env_config(
    *,
    world: Any = None,
    model_path: str | None = None,
    model_factory: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    reward: RewardSpec | None = None,
    penalized: bool = True,
    scalar: bool = True,
) -> dict[str, Any]:
    """Plain-data ``env_config`` from which every Ray worker rebuilds the same SupportEnv.

    Exactly one customer model: ``world`` (the synthetic world's ``WorldConfig``),
    ``model_path`` (a fitted simulator directory, readable on every node), or a
    ``model_factory`` (``"module:function"``, importable on every node) called with
    ``model_kwargs``. The factory is named, not imported, so this module depends on no
    simulator. ``scalar`` is SupportEnv's: step the model's scalar sim when it has one
    (the world and glm simulators: a few microseconds a step instead of ~0.2 ms).
    """
    if sum(x is not None for x in (world, model_path, model_factory)) != 1:
        raise ValueError(
            "support_env_config: give exactly one of world=, model_path= or model_factory="
        )
    if world is not None:
        model_factory, model_kwargs = WORLD_FACTORY, asdict(world)
    elif model_path is not None:
        model_factory, model_kwargs = SIMULATOR_FACTORY, {"path": str(model_path)}
    if not isinstance(model_factory, str) or ":" not in model_factory:
        raise ValueError(f"model_factory: expected 'module:function', got {model_factory!r}")
    reward = reward or RewardSpec()
    reward_dict = {f.name: getattr(reward, f.name) for f in fields(reward)}
    reward_dict["action_costs"] = dict(reward.action_costs)
    return {
        "model_factory": model_factory,
        "model_kwargs": dict(model_kwargs or {}),
        "reward": reward_dict,
        "penalized": bool(penalized),
        "scalar": bool(scalar),
    }


def make_support_env(env_config: Mapping[str, Any]) -> Any:
    """Env creator for Ray workers: a SupportEnv from :func:`support_env_config` output."""
    import supportrl.envs  # noqa: F401  (workers need the registration too)
    from supportrl.envs.support_env import SupportEnv

    module, _, name = str(env_config["model_factory"]).partition(":")
    factory = getattr(importlib.import_module(module), name)
    model = factory(**env_config.get("model_kwargs", {}))
    reward = RewardSpec(**env_config["reward"]) if env_config.get("reward") else RewardSpec()
    return SupportEnv(
        model=model,
        reward=reward,
        penalized=bool(env_config.get("penalized", True)),
        scalar=bool(env_config.get("scalar", True)),
    )


def register_support_env() -> None:
    """Register :func:`make_support_env` as :data:`ENV_NAME` in Ray's tune registry."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_support_env)


def to_rllib_config(
    config: DQNConfig,
    *,
    env_config: Mapping[str, Any],
    seed: int = 0,
    num_env_runners: int = 0,
) -> Any:
    """RLlib ``DQNConfig`` (new API stack, torch) equivalent to ``config`` (table in the module doc).

    ``num_env_runners=0`` samples in the driver process (cheapest on one machine); more
    runners sample in parallel Ray actors (each with ``config.num_envs`` envs).
    """
    from ray.rllib.algorithms.dqn import DQNConfig as RLlibDQNConfig

    if config.huber_delta != 1.0:
        raise ValueError(f"huber_delta={config.huber_delta}: the RLlib backend supports 1.0 only")
    if not config.bootstrap_on_truncation:
        raise ValueError(
            "bootstrap_on_truncation=false: the RLlib backend always bootstraps on truncation"
        )
    if config.prioritized:
        buffer = {
            "type": "PrioritizedEpisodeReplayBuffer",
            "capacity": config.buffer_size,
            "alpha": config.per_alpha,
            "beta": config.per_beta,
        }
    else:
        buffer = {"type": "EpisodeReplayBuffer", "capacity": config.buffer_size}
    decay_steps = max(1, int(config.exploration_fraction * config.total_steps))
    return (
        RLlibDQNConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(ENV_NAME, env_config=dict(env_config))
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=config.num_envs,
            rollout_fragment_length=config.n_step,
        )
        .training(
            lr=config.learning_rate,
            adam_epsilon=config.adam_eps,
            grad_clip=config.max_grad_norm,
            grad_clip_by="global_norm",
            gamma=config.gamma,
            n_step=config.n_step,
            train_batch_size=config.batch_size,
            double_q=config.double_q,
            dueling=config.dueling,
            td_error_loss_fn="huber",
            tau=config.tau,
            target_network_update_freq=config.target_update_interval,
            num_steps_sampled_before_learning_starts=config.learning_starts,
            epsilon=[(0, config.start_epsilon), (decay_steps, config.end_epsilon)],
            training_intensity=config.updates_per_env_step * config.batch_size,
            replay_buffer_config=buffer,
        )
        .rl_module(
            model_config={
                "fcnet_hiddens": list(config.hidden_sizes),
                "fcnet_activation": "relu",
                "head_fcnet_hiddens": [],
            }
        )
        .reporting(min_sample_timesteps_per_iteration=config.n_step * config.num_envs)
        .debugging(seed=seed)
    )


class RLModulePolicy(BasePolicy):
    """A trained RLlib DQN RLModule behind the :class:`~agents.base.Policy` protocol.

    Q-values come from the module's Q head (``compute_q_values(...)["qf_preds"]``, the
    values its ``forward_inference`` takes the argmax of) on ``feature_spec.encode(states)``;
    :meth:`action_probs` is greedy with ties split, like :class:`~agents.dqn.QPolicy`.
    """

    def __init__(
        self,
        module: Any,
        *,
        actions: tuple[str, ...],
        feature_spec: FeatureSpec,
        hidden_sizes: tuple[int, ...],
        dueling: bool,
    ) -> None:
        self.module = module
        self.actions = tuple(actions)
        self.feature_spec = feature_spec
        self.hidden_sizes = tuple(hidden_sizes)
        self.dueling = bool(dueling)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of encoded observations (n, feature_spec.dim), float32 (n, n_actions)."""
        from ray.rllib.core.columns import Columns

        obs = np.asarray(obs, dtype=np.float32)
        with torch.inference_mode():
            out = self.module.compute_q_values({Columns.OBS: torch.from_numpy(obs)})
        return out["qf_preds"].numpy()

    def action_probs(self, states: States) -> np.ndarray:
        batch_size(states)
        return greedy_probs(self.q_values(self.feature_spec.encode(states)).astype(np.float64))

    def to_q_policy(self) -> QPolicy:
        """The same Q-function as a native :class:`~agents.dqn.QPolicy` (weights copied, checked)."""
        network = QNetwork(
            self.feature_spec.dim, len(self.actions), self.hidden_sizes, self.dueling
        )
        linears = _linear_layers(self.module.encoder)
        heads = (
            [_linear_layers(self.module.vf), _linear_layers(self.module.af)]
            if self.dueling
            else [_linear_layers(self.module.af)]
        )
        if len(linears) != len(self.hidden_sizes) or any(len(h) != 1 for h in heads):
            raise ValueError(
                "RLModule layout differs from QNetwork (expected fcnet_hiddens=hidden_sizes, "
                "head_fcnet_hiddens=[])"
            )
        targets = list(network.trunk)
        targets += [network.value, network.advantage] if self.dueling else [network.q]
        with torch.no_grad():
            for dst, src in zip(targets, linears + [h[0] for h in heads], strict=True):
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)
        policy = QPolicy(actions=self.actions, feature_spec=self.feature_spec, network=network)
        probe = np.random.default_rng(0).normal(size=(64, self.feature_spec.dim)).astype(np.float32)
        if not np.allclose(policy.q_values(probe), self.q_values(probe), atol=1e-5):
            raise ValueError("RLModule -> QPolicy: Q-values differ after copying the weights")
        return policy


def _linear_layers(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def _append_row(
    rows: dict[str, list[float]],
    result: Mapping[str, Any],
    steps: int,
    elapsed: float,
    batch_size: int,
) -> tuple[int, int]:
    """Append the metrics of one ``algo.train()`` result; returns (env steps, updates) so far."""
    runner = result.get("env_runners", {})
    new_steps = int(runner.get("num_env_steps_sampled_lifetime", steps))
    learner = result.get("learners", {}).get("default_policy", {})
    updates = int(learner.get("num_module_steps_trained_lifetime", 0)) // batch_size
    rows["env_steps"].append(new_steps)
    rows["charts/episodic_return"].append(float(runner.get("episode_return_mean", float("nan"))))
    rows["losses/td_loss"].append(float(learner.get("qf_loss", float("nan"))))
    rows["charts/SPS"].append((new_steps - steps) / elapsed if elapsed > 0 else 0.0)
    return new_steps, updates


class RLlibTrainer:
    """Trains DQN with RLlib, the one training shape of :mod:`supportrl.agents.trainer`.

    The first :meth:`train` call starts Ray (:func:`~supportrl.ray_runtime.start_ray`: a
    local Ray of ``num_cpus`` CPUs unless Ray already runs, or the cluster at ``address``
    with the package shipped to its workers) and builds the algorithm; later calls go on
    training it. :meth:`close` (or leaving the ``with`` block) stops the algorithm, and Ray
    if this trainer started it.
    """

    def __init__(
        self,
        config: DQNConfig,
        *,
        env_config: Mapping[str, Any],
        actions: tuple[str, ...],
        feature_spec: FeatureSpec,
        seed: int = 0,
        address: str | None = None,
        num_cpus: int | None = None,
        num_env_runners: int = 0,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.rl_config = to_rllib_config(
            config, env_config=env_config, seed=seed, num_env_runners=num_env_runners
        )
        self.actions = tuple(actions)
        self.feature_spec = feature_spec
        self.address, self.num_cpus, self.progress = address, num_cpus, progress
        self.algo: Any = None
        self.policy: RLModulePolicy | None = None
        self.env_steps = 0
        """Env steps sampled over the trainer's life (RLlib's ``num_env_steps_sampled_lifetime``)."""
        self.updates = 0
        """Gradient updates (learner batches) over the trainer's life."""
        self._started_ray = False

    def _build(self) -> float:
        """Start Ray and build the algorithm; the seconds the build took."""
        self._started_ray = start_ray(self.address, num_cpus=self.num_cpus)
        register_support_env()
        tick = time.perf_counter()
        self.algo = self.rl_config.build_algo()
        build_s = time.perf_counter() - tick
        self.policy = RLModulePolicy(
            self.algo.get_module(),
            actions=self.actions,
            feature_spec=self.feature_spec,
            hidden_sizes=self.config.hidden_sizes,
            dueling=self.config.dueling,
        )
        return build_s

    def train(
        self, total_steps: int | None = None, callback: TrainCallback | None = None
    ) -> TrainResult:
        """Train for ``total_steps`` more env steps (default ``config.total_steps``).

        ``callback(env_steps, metrics)`` runs after every ``algo.train()`` iteration with
        its learning-curve row, outside the timed part; it stops the training by returning
        False. ``build_s`` of the result is the algorithm's build time (0 after the first
        call).
        """
        from tqdm.auto import tqdm

        total = int(total_steps if total_steps is not None else self.config.total_steps)
        if total < 1:
            raise ValueError(f"total_steps: must be >= 1, got {total}")
        build_s = self._build() if self.algo is None else 0.0
        rows: dict[str, list[float]] = {
            k: [] for k in ("env_steps", "charts/episodic_return", "losses/td_loss", "charts/SPS")
        }
        start, start_updates, wall, stopped = self.env_steps, self.updates, 0.0, False
        bar = tqdm(total=total, desc="train dqn (rllib)", unit="step", disable=not self.progress)
        try:
            while self.env_steps - start < total:
                tick = time.perf_counter()
                result = self.algo.train()
                elapsed = time.perf_counter() - tick
                wall += elapsed
                steps, self.updates = _append_row(
                    rows, result, self.env_steps, elapsed, self.config.batch_size
                )
                bar.update(steps - self.env_steps)
                self.env_steps = steps
                point = {k: v[-1] for k, v in rows.items() if k != "env_steps"}
                if not go_on(callback, self.env_steps, point):
                    stopped = self.env_steps - start < total
                    break
        finally:
            bar.close()
        # The learner holds the trained weights; the local module may lag by one sync.
        assert self.policy is not None
        self.policy.module = self.algo.get_module()
        return TrainResult(
            env_steps=self.env_steps - start,
            wall_s=wall,
            curve=curve_arrays(rows),
            policy=self.policy,
            total_env_steps=self.env_steps,
            stopped=stopped,
            updates=self.updates - start_updates,
            build_s=build_s,
        )

    def close(self) -> None:
        """Stop the algorithm, and Ray if this trainer started it."""
        try:
            if self.algo is not None:
                self.algo.stop()
        finally:
            if self._started_ray:
                import ray

                ray.shutdown()
                self._started_ray = False

    def __enter__(self) -> RLlibTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ENV_NAME",
    "RLModulePolicy",
    "RLlibTrainer",
    "SIMULATOR_FACTORY",
    "WORLD_FACTORY",
    "make_support_env",
    "register_support_env",
    "support_env_config",
    "to_rllib_config",
]
