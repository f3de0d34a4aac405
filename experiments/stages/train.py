"""The train stage: an agent trained in a simulator (bandits online, native DQN, RLlib), one
typed result for every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.bandits import make_bandit
from supportrl.agents.base import Policy
from supportrl.agents.trainer import TrainCallback, TrainResult
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import RewardSpec
from supportrl.experiments.errors import UserError
from supportrl.experiments.run_dirs import output
from supportrl.experiments.stages.settings import (
    AgentSpec,
    TrainSettings,
)
from supportrl.simulators.synthetic import SyntheticWorld


@dataclass(frozen=True)
class TrainedAgent:
    """What :func:`train_stage` returns: the one training result
    (:class:`~supportrl.agents.trainer.TrainResult`) with the agent's kind, backend and
    checkpoint."""

    kind: str
    backend: str
    checkpoint: Path
    result: TrainResult
    """Its ``policy`` is what was saved at ``checkpoint`` (RLlib's module as a QPolicy)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> Policy:
        return self.result.policy

    @property
    def env_steps(self) -> int:
        return self.result.env_steps

    @property
    def wall_s(self) -> float:
        return self.result.wall_s

    @property
    def sps(self) -> float:
        return self.result.sps

    @property
    def curve(self) -> Mapping[str, np.ndarray]:
        """Metric columns, ``env_steps`` first (fixed names: ``charts/episodic_return``, ...)."""
        return self.result.curve


def train_stage(
    spec: AgentSpec,
    model: CustomerModel,
    reward: RewardSpec,
    settings: TrainSettings,
    *,
    seed: int,
    out: Path,
    best_value: float | None = None,
    model_path: Path | None = None,
    support: tuple[float, np.ndarray] | None = None,
    callback: TrainCallback | None = None,
) -> TrainedAgent:
    """Train ``spec`` online in ``model`` for ``settings.total_steps`` env steps.

    Writes the checkpoint to ``out/checkpoint``. ``model_path`` (a saved fitted model) is
    needed for ``backend=rllib`` outside the synthetic world. ``support``:
    ``(threshold, weights)`` restricts a linear bandit to the actions the logs support
    (``LinUCB.support_threshold``, ``set_support``). Every backend trains through the one
    shape ``train(total_steps, callback)`` (:mod:`supportrl.agents.trainer`):
    ``callback(env_steps, metrics)`` gets each learning-curve point as it is made
    (tracking, Tune trials) and may stop the training by returning False.
    """
    if settings.total_steps < 1:
        raise UserError(f"train.total_steps must be >= 1, got {settings.total_steps}")
    if spec.kind != "dqn":
        return _train_bandit(
            spec,
            model,
            reward,
            settings,
            seed=seed,
            out=out,
            best_value=best_value,
            support=support,
            callback=callback,
        )
    if support is not None:
        raise UserError("train.support_threshold: only linear bandits (linucb, lints) take it")
    return _train_dqn(
        spec, model, reward, settings, seed=seed, out=out, model_path=model_path, callback=callback
    )


def _train_bandit(
    spec, model, reward, settings, *, seed, out, best_value, support=None, callback=None
) -> TrainedAgent:
    from supportrl.agents.training import REWARD_MODES, BanditTrainer

    if settings.backend != "native":
        raise UserError(f"backend={settings.backend}: bandits train natively only (backend=native)")
    if settings.reward_mode not in REWARD_MODES:
        raise UserError(
            f"train.reward_mode={settings.reward_mode!r}: expected one of {list(REWARD_MODES)}"
        )
    params = dict(spec.params)
    if support is not None:
        if spec.kind not in ("linucb", "lints"):
            raise UserError(
                f"train.support_threshold: only linear bandits (linucb, lints) take it, not {spec.kind}"
            )
        params["support_threshold"] = support[0]
    agent = make_bandit(spec.kind, model.actions, model.feature_spec, seed=seed, **params)
    if support is not None:
        agent.set_support(support[1])
    trainer = BanditTrainer(
        agent,
        model,
        reward,
        conversations_per_round=settings.conversations_per_round,
        reward_mode=settings.reward_mode,
        penalized=settings.penalized,
        seed=seed,
        best_value=best_value,
        progress=settings.progress,
    )
    result = trainer.train(settings.total_steps, callback)
    checkpoint = agent.save(output(out / "checkpoint"))
    return TrainedAgent(
        kind=spec.kind,
        backend="native",
        checkpoint=Path(checkpoint),
        result=result,
        extra={"reward_mode": settings.reward_mode},
    )


def dqn_config(spec: AgentSpec, settings: TrainSettings):
    """The :class:`agents.dqn.DQNConfig` of ``spec`` with the shared step budget.

    ``n_step: null`` is the backend's default: 3 native, 1 with RLlib (whose n-step TD
    loss climbs on this env).
    """
    from supportrl.agents.dqn import DQNConfig

    params = dict(spec.params)
    if params.get("n_step") is None:
        params["n_step"] = 1 if settings.backend == "rllib" else 3
    params["total_steps"] = settings.total_steps
    return DQNConfig.from_dict(params)


def _train_dqn(spec, model, reward, settings, *, seed, out, model_path, callback) -> TrainedAgent:
    from supportrl.agents.dqn import DQNLearner
    from supportrl.envs import SupportVectorEnv

    config = dqn_config(spec, settings)
    extra: dict[str, Any] = {}
    if settings.backend == "rllib":
        return _train_rllib(
            config, model, reward, settings, seed=seed, out=out, model_path=model_path,
            callback=callback,
        )  # fmt: skip
    if settings.backend != "native":
        raise UserError(f"backend={settings.backend!r}: expected 'native' or 'rllib'")
    env = SupportVectorEnv(
        config.num_envs, model=model, reward=reward, penalized=settings.penalized
    )
    if settings.resume:
        from supportrl.experiments.repo_files import resolve_shipped

        # The checkpoint's hyperparameters, trained on up to train.total_steps.
        learner = DQNLearner.load(resolve_shipped(settings.resume), env)
        learner.config = dataclasses.replace(learner.config, total_steps=config.total_steps)
        if learner.env_steps >= config.total_steps:
            raise UserError(
                f"train.resume: the checkpoint is at {learner.env_steps} env steps; "
                f"set train.total_steps above that (now {config.total_steps})"
            )
        extra.update(resumed_from=settings.resume, resumed_at_env_steps=learner.env_steps)
    else:
        learner = DQNLearner(config=config, env=env, seed=seed)
    result = learner.train(callback=callback, progress=settings.progress)
    checkpoint = learner.save(output(out / "checkpoint"), include_replay=settings.save_replay)
    import torch

    extra.update(
        torch_threads=torch.get_num_threads(),  # `threads` (default 1), whatever the machine says
        episodes=result.episodes,
        updates=int(result.updates),
        updates_per_env_step=learner.config.updates_per_env_step,
        n_step=learner.config.n_step,
    )
    return TrainedAgent(
        kind="dqn", backend="native", checkpoint=Path(checkpoint), result=result, extra=extra
    )


def _train_rllib(
    config, model, reward, settings, *, seed, out, model_path, callback
) -> TrainedAgent:
    from supportrl.agents.rllib import RLlibTrainer, support_env_config

    if settings.resume:
        raise UserError("train.resume: resuming is supported with backend=native only")
    if isinstance(model, SyntheticWorld):
        env_config = support_env_config(
            world=model.config, reward=reward, penalized=settings.penalized
        )
    elif model_path is not None:
        env_config = support_env_config(
            model_path=str(Path(model_path).resolve()), reward=reward, penalized=settings.penalized
        )
    else:
        raise UserError("backend=rllib needs the synthetic world or a saved simulator (env.path)")
    with RLlibTrainer(
        config,
        env_config=env_config,
        actions=model.actions,
        feature_spec=model.feature_spec,
        seed=seed,
        address=settings.ray.address,
        num_cpus=settings.ray.num_cpus,
        num_env_runners=settings.ray.num_env_runners,
        progress=settings.progress,
    ) as trainer:
        rl = trainer.train(settings.total_steps, callback)
    policy = rl.policy.to_q_policy()
    checkpoint = policy.save(output(out / "checkpoint"))
    return TrainedAgent(
        kind="dqn",
        backend="rllib",
        checkpoint=Path(checkpoint),
        result=dataclasses.replace(rl, policy=policy),
        extra={
            "updates": int(rl.updates or 0),
            "n_step": config.n_step,
            "ray_address": settings.ray.address,
        },
    )
