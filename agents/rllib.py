"""The RLlib backend: the same DQN config, env and Policy protocol, trained by RLlib 2.60.

:func:`to_rllib_config` translates a :class:`~agents.dqn.DQNConfig` into RLlib's
``DQNConfig`` on the new API stack (RLModule + Learner + EnvRunner) for
``SupportEnv-v0``; :func:`train_rllib` runs it locally (``ray.init`` with this
machine's cores) or on an existing cluster (``address=...``) and hands back the trained
RLModule as a Policy. Both backends train the same network: RLlib's default DQN module
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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from supportrl.agents.base import BasePolicy, States, batch_size, greedy_probs
from supportrl.agents.dqn.config import DQNConfig
from supportrl.agents.dqn.network import QNetwork
from supportrl.agents.dqn.policy import QPolicy
from supportrl.envs.features import FeatureSpec
from supportrl.envs.rewards import RewardSpec

ENV_NAME = "SupportEnv-v0"
"""Name under which the env creator is registered in Ray's tune registry."""


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
    """Register :func:`make_support_env` as ``SupportEnv-v0`` in Ray's tune registry."""
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


def _package_dirs() -> list[str]:
    """The ``supportrl`` package, staged as one folder the cluster's workers import.

    The project's top-level folders install as ``supportrl.envs``, ``supportrl.agents``, ...
    through a package-dir mapping, so no single source folder holds the package; Ray ships
    ``py_modules`` as folders, hence a staged copy (only the library folders, no Hydra).
    """
    import shutil
    import tempfile

    import supportrl

    staging = Path(tempfile.mkdtemp(prefix="supportrl-py-module-")) / "supportrl"
    staging.mkdir()
    shutil.copy2(Path(supportrl.__file__), staging / "__init__.py")
    for name in ("envs", "agents", "simulators", "ope"):
        package = importlib.import_module(f"supportrl.{name}")
        shutil.copytree(
            Path(package.__file__).resolve().parent,
            staging / name,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return [str(staging)]


def _linear_layers(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


@dataclass(frozen=True)
class RLlibTrainResult:
    """What :func:`train_rllib` did."""

    env_steps: int
    """Env steps sampled (RLlib's ``num_env_steps_sampled_lifetime``)."""
    updates: int
    """Gradient updates (learner batches)."""
    wall_s: float
    """Seconds spent in ``algo.train()`` (building the algorithm and callbacks excluded)."""
    build_s: float
    """Seconds to build the algorithm (env runners, learner, replay buffer)."""
    policy: RLModulePolicy
    """The trained module behind the Policy protocol."""
    curve: dict[str, np.ndarray]
    """``env_steps``, ``charts/episodic_return``, ``losses/td_loss``, ``charts/SPS`` per iteration."""

    @property
    def sps(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s > 0 else float("inf")


def _start_ray(address: str | None, num_cpus: int | None) -> bool:
    """Start Ray (a cluster at ``address``, else locally) unless it runs; True if started here."""
    import os

    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(
            address=address,
            runtime_env={"py_modules": _package_dirs()},
            log_to_driver=False,
        )
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return True


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


def train_rllib(
    config: DQNConfig,
    *,
    env_config: Mapping[str, Any],
    actions: tuple[str, ...],
    feature_spec: FeatureSpec,
    total_steps: int | None = None,
    seed: int = 0,
    address: str | None = None,
    num_cpus: int | None = None,
    num_env_runners: int = 0,
    callback: Callable[[int, RLModulePolicy], None] | None = None,
    callback_interval: int = 0,
    progress: bool = True,
) -> RLlibTrainResult:
    """Train DQN with RLlib for ``total_steps`` env steps (default ``config.total_steps``).

    Starts Ray locally (``num_cpus`` default: this machine's cores, no dashboard) unless
    it is already running or ``address`` names a cluster (then the package is shipped to
    the workers as ``py_modules``). Ray is shut down at the end if this call started it.
    ``callback(env_steps, policy)`` runs about every ``callback_interval`` env steps,
    outside the timed part.
    """
    from tqdm.auto import tqdm

    total = int(total_steps if total_steps is not None else config.total_steps)
    rl_config = to_rllib_config(
        config, env_config=env_config, seed=seed, num_env_runners=num_env_runners
    )
    started_ray = _start_ray(address, num_cpus)
    try:
        register_support_env()
        tick = time.perf_counter()
        algo = rl_config.build_algo()
        build_s = time.perf_counter() - tick
        policy = RLModulePolicy(
            algo.get_module(),
            actions=tuple(actions),
            feature_spec=feature_spec,
            hidden_sizes=config.hidden_sizes,
            dueling=config.dueling,
        )
        rows: dict[str, list[float]] = {
            k: [] for k in ("env_steps", "charts/episodic_return", "losses/td_loss", "charts/SPS")
        }
        steps, updates, wall, next_callback = 0, 0, 0.0, callback_interval
        bar = tqdm(total=total, desc="train dqn (rllib)", unit="step", disable=not progress)
        try:
            while steps < total:
                tick = time.perf_counter()
                result = algo.train()
                elapsed = time.perf_counter() - tick
                wall += elapsed
                new_steps, updates = _append_row(rows, result, steps, elapsed, config.batch_size)
                bar.update(new_steps - steps)
                steps = new_steps
                if callback is not None and callback_interval > 0 and steps >= next_callback:
                    callback(steps, policy)
                    next_callback = (steps // callback_interval + 1) * callback_interval
        finally:
            bar.close()
        # The learner holds the trained weights; the local module may lag by one sync.
        policy.module = algo.get_module()
        algo.stop()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return RLlibTrainResult(
        env_steps=steps,
        updates=updates,
        wall_s=wall,
        build_s=build_s,
        policy=policy,
        curve={k: np.asarray(v, dtype=np.float64) for k, v in rows.items()},
    )


__all__ = [
    "ENV_NAME",
    "RLModulePolicy",
    "RLlibTrainResult",
    "SIMULATOR_FACTORY",
    "WORLD_FACTORY",
    "make_support_env",
    "register_support_env",
    "support_env_config",
    "to_rllib_config",
    "train_rllib",
]
