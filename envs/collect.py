"""The collector: the one loop that steps the vector env, for every consumer.

:class:`Collector` drives a same-step-autoreset vector env (a
:class:`~supportrl.envs.vector.SupportVectorEnv`, possibly behind Gymnasium wrappers)
through its spaces and its documented info keys only. Two ways to use it:

* :meth:`Collector.step` -- one vector step with actions chosen by the caller, returned
  as a :class:`StepBatch` with the autoreset bookkeeping done (the real next observation
  on rows that ended, its action mask, the returns of the conversations that ended).
  DQN collects its replay this way.
* :meth:`Collector.collect` -- whole conversations under a
  :class:`~supportrl.policy.Policy` reading the raw named states of
  ``infos["state"]``, returned as :class:`SimulatedConversations` (per-turn arrays in the
  project's one per-turn type, :class:`~supportrl.envs.conversations.LoggedConversations`).
  Bandit training, true and simulated policy values, the fidelity report and log
  generation use it; :func:`simulate` is the one-call form.

Which conversations come back: every conversation gets an id when it starts (slot order
at reset, then in the order slots free up), and ``collect(policy, n)`` returns the next
``n`` ids, stepping until all of them have ended. Taking conversations by start order
(not by end order, which favours short ones) keeps the sample unbiased; conversations
that started later stay in flight and come back on the next call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.model import CustomerModel
from supportrl.envs.rewards import RewardSpec
from supportrl.envs.vector import SupportVectorEnv

from supportrl.policy import Policy, sample_actions

REQUIRED_STEP_INFOS: tuple[str, ...] = ("outcome", "handle_time_s", "csat", "penalty")
"""Step info keys :meth:`Collector.collect` reads besides ``state`` and ``action_mask``."""
DEFAULT_SLOTS = 4096
"""Conversations :func:`simulate` steps at once (fewer when it needs fewer)."""


@dataclass(frozen=True)
class StepBatch:
    """One vector step, with same-step autoreset undone (arrays over ``num_envs`` rows)."""

    obs: np.ndarray
    """(num_envs, obs_dim) observations the actions were taken in."""
    actions: np.ndarray
    """(num_envs,) int64 action indices."""
    rewards: np.ndarray
    """(num_envs,) float rewards."""
    next_obs: np.ndarray
    """(num_envs, obs_dim) the observation after the action (the final one on rows that ended)."""
    next_mask: np.ndarray
    """(num_envs, n_actions) bool action mask of ``next_obs`` (all True on ended rows
    when the env gives no ``final_action_mask``)."""
    terminated: np.ndarray
    """(num_envs,) bool: the conversation ended with an outcome."""
    truncated: np.ndarray
    """(num_envs,) bool: the conversation hit ``max_turns``."""
    ended_returns: np.ndarray
    """(n_ended,) undiscounted returns of the conversations that ended in this step."""
    infos: dict[str, Any]
    """The env's step infos."""

    @property
    def ended(self) -> np.ndarray:
        """(num_envs,) bool: terminated or truncated."""
        return self.terminated | self.truncated


@dataclass(frozen=True)
class SimulatedConversations:
    """Conversations collected under a policy: the logs plus what only a simulation knows."""

    logs: LoggedConversations
    """Per-turn arrays. ``propensity`` is the acting policy's probability of the chosen
    action, ``csat`` the model's CSAT on every terminal turn (never missing), the last turn
    of a conversation cut at ``max_turns`` has outcome ``continue``."""
    reward: np.ndarray
    """(n_turns,) the env's reward of every turn (pessimism penalty subtracted when the
    env is ``penalized``)."""
    penalty: np.ndarray
    """(n_turns,) the model's pessimism penalty (0 for the ground-truth world)."""
    hidden: dict[str, np.ndarray] = field(default_factory=dict)
    """The model's hidden variables per turn (env built with ``hidden_state=True``)."""

    @property
    def n_conversations(self) -> int:
        return self.logs.n_conversations

    def returns(self) -> np.ndarray:
        """Undiscounted return of every conversation, shape (n_conversations,)."""
        return np.bincount(
            self.logs.conversation_index, weights=self.reward, minlength=self.n_conversations
        )


class Collector:
    """Steps one same-step-autoreset vector env; see the module docstring.

    ``env`` must follow the info contract of :class:`~supportrl.envs.vector.SupportVectorEnv`
    (``action_mask`` always; for :meth:`collect` also ``state`` and the keys in
    :data:`REQUIRED_STEP_INFOS`). Wrappers in front of it are fine.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.num_envs = int(env.num_envs)
        self.infos: dict[str, Any] = {}
        """Infos of the last reset or step: they describe the current observations."""
        self.obs: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self._episode_return = np.zeros(self.num_envs)
        self._slot_id = np.arange(self.num_envs)
        self._next_id = self.num_envs
        self._returned = 0
        self._steps = 0
        self._buffer: list[dict[str, Any]] = []

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Reset the env (fresh conversations everywhere); returns the reset infos."""
        self.obs, self.infos = self.env.reset(seed=seed)
        if "action_mask" not in self.infos:
            raise ValueError("env: reset infos lack 'action_mask' (see SupportVectorEnv)")
        self.mask = np.asarray(self.infos["action_mask"], dtype=bool)
        self._episode_return[:] = 0.0
        self._slot_id = np.arange(self.num_envs)
        self._next_id = self.num_envs
        self._returned = 0
        self._buffer = []
        return self.infos

    def step(self, actions: np.ndarray) -> StepBatch:
        """Step every conversation with ``actions`` (num_envs,); see :class:`StepBatch`."""
        if self.obs is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64)
        # A copy: the env may keep (and later overwrite) the array it is given.
        next_obs, rewards, terminated, truncated, infos = self.env.step(actions.copy())
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        ended = terminated | truncated
        mask = np.asarray(infos["action_mask"], dtype=bool)
        real_next, next_mask = next_obs, mask
        self._episode_return += rewards
        ended_returns = self._episode_return[ended]
        if ended.any():
            # Same-step autoreset: next_obs already starts the next conversation.
            real_next = np.where(ended[:, None], infos["final_obs"], next_obs)
            final_mask = infos.get("final_action_mask")
            final_mask = np.ones_like(mask) if final_mask is None else final_mask
            next_mask = np.where(ended[:, None], final_mask, mask)
            self._episode_return[ended] = 0.0
            k = int(ended.sum())
            self._slot_id[ended] = self._next_id + np.arange(k)
            self._next_id += k
        batch = StepBatch(
            obs=self.obs,
            actions=actions,
            rewards=np.asarray(rewards, dtype=np.float64),
            next_obs=real_next,
            next_mask=next_mask,
            terminated=terminated,
            truncated=truncated,
            ended_returns=ended_returns,
            infos=infos,
        )
        self.obs, self.mask, self.infos = next_obs, mask, infos
        self._steps += 1
        return batch

    def collect(self, policy: Policy, n: int, rng: np.random.Generator) -> SimulatedConversations:
        """The next ``n`` conversations (by start order) under ``policy``, all steps batched.

        The policy sees ``infos["state"]``; with ``sees_hidden_state = True`` (the world's
        logging policy) it also sees ``infos["hidden_state"]`` (env built with
        ``hidden_state=True``). ``rng`` draws the actions from ``policy.action_probs``.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if self.obs is None:
            raise RuntimeError("call reset() before collect()")
        sees_hidden = bool(getattr(policy, "sees_hidden_state", False))
        if "state" not in self.infos:
            raise ValueError("env: infos lack 'state' (the raw named state a Policy reads)")
        if sees_hidden and "hidden_state" not in self.infos:
            raise ValueError(
                f"{type(policy).__name__} reads hidden state: build the env with hidden_state=True"
            )
        target = self._returned + int(n)
        while (self._slot_id < target).any():
            self._buffer.append(self._act_and_record(policy, rng, sees_hidden))
        return self._take(target)

    def _act_and_record(
        self, policy: Policy, rng: np.random.Generator, sees_hidden: bool
    ) -> dict[str, Any]:
        """One step under ``policy``; returns the per-row record of the decisions made."""
        # Copies: the model may reuse (and autoreset may overwrite) these arrays later.
        # previous_action is not kept: the logs derive it from the actions.
        states = {k: np.array(v) for k, v in self.infos["state"].items() if k != "previous_action"}
        hidden = {k: np.array(v) for k, v in self.infos.get("hidden_state", {}).items()}
        view = {**self.infos["state"], **hidden} if sees_hidden else self.infos["state"]
        probs = np.asarray(policy.action_probs(view))
        actions = sample_actions(probs, rng)
        ids, step = self._slot_id.copy(), self._steps
        batch = self.step(actions)
        missing = [k for k in REQUIRED_STEP_INFOS if k not in batch.infos]
        if missing:
            raise ValueError(f"env: step infos lack {missing} (see SupportVectorEnv)")
        return {
            "id": ids,
            "step": np.full(self.num_envs, step),
            "states": states,
            "hidden": hidden,
            "action": actions,
            "propensity": probs[np.arange(len(actions)), actions],
            "reward": batch.rewards,
            **{k: np.asarray(batch.infos[k]) for k in REQUIRED_STEP_INFOS},
        }

    def _take(self, target: int) -> SimulatedConversations:
        """Move the recorded turns of conversations ``[returned, target)`` out of the buffer."""
        rec = _concat(self._buffer)
        keep = rec["id"] < target
        self._buffer = [] if keep.all() else [_rows(rec, ~keep)]
        ids = rec["id"][keep] - self._returned
        order = np.lexsort((rec["step"][keep], ids))
        sel = np.flatnonzero(keep)[order]
        n = target - self._returned
        self._returned = target
        lengths = np.bincount(ids, minlength=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        logs = conversations_from_states(
            _rows(rec["states"], sel),
            actions=tuple(self.infos.get("actions") or _catalogue(self.env)),
            offsets=offsets,
            action=rec["action"][sel],
            outcome=rec["outcome"][sel].astype(np.int64),
            propensity=rec["propensity"][sel],
            csat=rec["csat"][sel].astype(np.float64),
            handle_time_s=rec["handle_time_s"][sel].astype(np.float64),
        )
        return SimulatedConversations(
            logs=logs,
            reward=rec["reward"][sel],
            penalty=rec["penalty"][sel].astype(np.float64),
            hidden=_rows(rec["hidden"], sel),
        )


def _rows(value: Any, rows: np.ndarray) -> Any:
    """``value[rows]`` for an array, or for every array of a (nested) dict."""
    if isinstance(value, dict):
        return {k: _rows(v, rows) for k, v in value.items()}
    return value[rows]


def _concat(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-step records (dicts of arrays or of dicts of arrays) along rows."""
    first = records[0]
    if len(records) == 1:
        return first
    return {
        k: _concat([r[k] for r in records])
        if isinstance(v, dict)
        else np.concatenate([r[k] for r in records])
        for k, v in first.items()
    }


def _catalogue(env: Any) -> tuple[str, ...]:
    """The action catalogue of ``env`` when no reset info named it (wrappers forward attributes)."""
    actions = getattr(env, "actions", None) or getattr(
        getattr(env, "unwrapped", None), "actions", None
    )
    if actions is None:
        raise ValueError("env: no action catalogue (reset infos lack 'actions')")
    return tuple(actions)


def conversations_from_states(
    states: dict[str, np.ndarray],
    *,
    actions: tuple[str, ...],
    offsets: np.ndarray,
    **arrays: np.ndarray,
) -> LoggedConversations:
    """Per-turn raw named states plus turn arrays -> :class:`LoggedConversations`.

    ``states`` holds ``turn``, ``intent``, ``sentiment`` (and ``previous_action``, which
    the logs derive) plus context features: string arrays become categorical features,
    the others numeric. ``arrays`` are the remaining per-turn fields (``action``,
    ``outcome``, ``propensity``, ``csat``, ``handle_time_s``).
    """
    base = ("turn", "intent", "sentiment", "previous_action")
    features = {k: v for k, v in states.items() if k not in base}
    categorical = tuple(k for k, v in features.items() if v.dtype.kind in "USO")
    numeric = tuple(k for k in features if k not in categorical)
    n_conversations = len(offsets) - 1
    return LoggedConversations(
        actions=actions,
        conversation_id=np.arange(n_conversations).astype(str),
        offsets=offsets,
        turn=np.asarray(states["turn"]).astype(np.int64),
        intent=np.asarray(states["intent"]),
        sentiment=np.asarray(states["sentiment"], dtype=np.float64),
        features={
            **{k: features[k] for k in categorical},
            **{k: np.asarray(features[k], dtype=np.float64) for k in numeric},
        },
        categorical=categorical,
        numeric=numeric,
        source="simulated",
        **arrays,
    )


def simulate(
    model: CustomerModel,
    policy: Policy,
    n: int,
    *,
    seed: int = 0,
    reward: RewardSpec | None = None,
    penalized: bool = False,
    hidden_state: bool | None = None,
    num_envs: int | None = None,
) -> SimulatedConversations:
    """``n`` conversations of ``policy`` in ``model``: a fresh vector env plus a collector.

    Deterministic given ``seed`` (it seeds the env's reset and the action draws).
    ``reward`` (default reward v1) sets the rewards and the cut-off ``max_turns``;
    ``penalized`` subtracts a fitted simulator's pessimism penalty from the rewards;
    ``hidden_state`` records the model's hidden variables (default: when the policy
    declares ``sees_hidden_state``, as the world's logging policy does). ``num_envs`` conversations are stepped at once (default
    ``min(n, DEFAULT_SLOTS)``).
    """
    env_seed, policy_seed = np.random.SeedSequence(seed).spawn(2)
    env = SupportVectorEnv(
        num_envs or min(int(n), DEFAULT_SLOTS),
        model=model,
        reward=reward,
        penalized=penalized,
        hidden_state=(
            bool(getattr(policy, "sees_hidden_state", False))
            if hidden_state is None
            else hidden_state
        ),
    )
    collector = Collector(env)
    collector.reset(seed=int(env_seed.generate_state(1)[0]))
    return collector.collect(policy, n, np.random.default_rng(policy_seed))


@dataclass(frozen=True)
class PolicyValue:
    """Monte Carlo value of a policy in a customer model (reward units)."""

    value: float
    """Mean undiscounted conversation return."""
    std_err: float
    """Standard error of ``value`` (conversations are independent)."""
    n_conversations: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "value": self.value,
            "std_err": self.std_err,
            "n_conversations": self.n_conversations,
        }


def policy_value(
    policy: Policy,
    n: int = 100_000,
    *,
    model: CustomerModel,
    reward: RewardSpec | None = None,
    seed: int = 0,
    penalized: bool = False,
) -> PolicyValue:
    """Value of ``policy`` in ``model`` (expected conversation return under ``reward``).

    In the ground-truth world this is the *true* value
    (:func:`supportrl.simulators.synthetic.true_value`); in a fitted simulator it is the
    *simulated* value. ``reward`` defaults to reward v1 cut at ``model.max_turns``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    reward = reward or RewardSpec(max_turns=model.max_turns)
    sim = simulate(model, policy, int(n), seed=seed, reward=reward, penalized=penalized)
    returns = sim.returns()
    return PolicyValue(
        value=float(returns.mean()),
        std_err=float(returns.std(ddof=1) / np.sqrt(n)),
        n_conversations=int(n),
    )
