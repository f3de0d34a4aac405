"""A fitted glm simulator stepped one conversation at a time in Python floats.

:class:`GLMScalarSim` is :meth:`FittedCustomerModel.initial_state` and
:meth:`FittedCustomerModel.step` of the ``glm`` family for one conversation: the same
coefficients, the same design ``phi(s)`` (:class:`~simulators.fitted.features.Basis`),
the same support cells, pessimism and CSAT model. It is what ``SupportEnv`` steps over a
glm simulator; the batched step stays the path of the vector env. The two agree in
distribution, not draw for draw (tests/envs/test_scalar_env.py).

Why it is fast: every response of the model is linear in ``phi(s)`` (outcome logits,
sentiment mean, log handle-time mean and the state part of the CSAT logits: ``K`` numbers
per action), and ``phi(s)`` splits into

* a part fixed for the whole conversation (intercept, context features): its product
  with the coefficients of every action is one small matrix product per reset;
* a part set by the discrete state (intent, previous action, turn) and the sentiment
  bin between hinge knots, where the sentiment columns are linear in the sentiment:
  ``base + sentiment * slope``, both memoised per (action, intent, previous action,
  turn, bin), so a step adds three short tuples.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any

import numpy as np
from supportrl.envs.features import NO_PREVIOUS_ACTION
from supportrl.envs.rewards import ABANDONED, CONTINUE, ESCALATED, RESOLVED
from supportrl.envs.scalar import RandomStream
from supportrl.simulators.fitted.dynamics import GLMDynamics
from supportrl.simulators.fitted.features import (
    NUMERIC_CLIP,
    SENTIMENT_KNOTS,
    SUPPORT_SENTIMENT_EDGES,
    SUPPORT_TURN_BINS,
)

if TYPE_CHECKING:
    from supportrl.simulators.fitted.model import FittedCustomerModel

K_OUTCOME, K_SENTIMENT, K_HANDLE, K_CSAT = 0, 3, 4, 5
"""Offsets of each response in a row of ``K = 9`` linear predictors."""
N_CSAT = 5


def glm_scalar_sim(model: FittedCustomerModel, stream: RandomStream) -> GLMScalarSim | None:
    """The scalar sim of a glm simulator; None when the model is of another family."""
    if not isinstance(model.dynamics, GLMDynamics):
        return None
    if model.dynamics.outcome.coef.shape[0] != len(model.actions):
        return None  # a one-action catalogue fitted without groups: the batched path
    return GLMScalarSim(model, stream)


class GLMScalarSim:
    """One conversation of a glm :class:`FittedCustomerModel`; a :class:`~supportrl.envs.scalar.ScalarSim`."""

    def __init__(self, model: FittedCustomerModel, stream: RandomStream) -> None:
        self.model = model
        self.stream = stream
        basis, spec, dyn = model.basis, model.feature_spec, model.dynamics
        assert isinstance(dyn, GLMDynamics)
        self.n_actions = n_actions = len(model.actions)
        self.intents = basis.intents
        self.prev_labels = (NO_PREVIOUS_ACTION, *model.actions)
        self.context_categorical = basis.context_categorical
        self.context_numeric = basis.context_numeric
        self.levels = {name: tuple(spec.categorical[name]) for name in self.context_categorical}
        names = basis.names
        p = len(names)
        self.col = {
            "intent": names.index(f"intent={self.intents[0]}"),
            "prev": names.index(f"previous_action={NO_PREVIOUS_ACTION}"),
            "turn": names.index("turn"),
            "turn==": names.index("turn==0") if basis.n_turn_indicators else -1,
            "sentiment": names.index("sentiment"),
            "hinge": names.index("sentiment") + 1,
            "intent*turn>0": names.index(f"intent={self.intents[0]}*turn>0"),
            "intent*sentiment": names.index(f"intent={self.intents[0]}*sentiment"),
        }
        self.n_turn_indicators = basis.n_turn_indicators
        self.basis_max_turns = float(basis.max_turns)
        self.cat_cols = [
            names.index(f"{name}={spec.categorical[name][0]}") for name in self.context_categorical
        ]
        self.num_cols = [names.index(name) for name in self.context_numeric]
        self.num_scale = [spec.numeric[name] for name in self.context_numeric]
        # (A, p, K): the linear predictors of every response, action by action
        csat_coef = model.csat.fit.coef[0]  # (p + A + 6, 4), classes 2..5 against class 1
        w = np.zeros((n_actions, p, 9))
        w[:, :, K_OUTCOME:K_SENTIMENT] = dyn.outcome.coef
        w[:, :, K_SENTIMENT] = dyn.sentiment.coef
        w[:, :, K_HANDLE] = dyn.handle.coef
        w[:, :, K_CSAT:] = csat_coef[:p][None]
        self.w = w
        self.w_static = np.ascontiguousarray(w.transpose(1, 0, 2).reshape(p, n_actions * 9))
        self.csat_action = csat_coef[p : p + n_actions].tolist()
        self.csat_outcome = csat_coef[p + n_actions : p + n_actions + 3].tolist()
        self.csat_outcome_sentiment = csat_coef[p + n_actions + 3 : p + n_actions + 6].tolist()
        self.sentiment_sd = dyn.sentiment.sd.tolist()
        self.handle_sd = dyn.handle.sd.tolist()
        self.handle_known = model.handle_time_known
        trans = np.cumsum(model.intent_transition, axis=2)
        self.intent_cdf = [[tuple(row) for row in per_intent] for per_intent in trans.tolist()]
        self.penalty = float(model.config.penalty)
        self.min_support = int(model.config.min_support)
        self.needs_support = self.penalty > 0 or self.min_support > 0
        self.support = {k: np.asarray(v).tolist() for k, v in model.support.items()}
        self._dynamic: dict[tuple[int, ...], tuple[tuple[float, ...], tuple[float, ...]]] = {}
        self._dynamic_support: dict[tuple[int, ...], list[int]] = {}
        self._obs_cols = self._observation_columns()
        self._mask = np.ones(n_actions, dtype=bool)
        self.pool_size = len(model.pool)
        self._pool = pool_columns(model)
        self._phi = np.zeros(p)
        self._phi_cols = np.array([0, *self.cat_cols, *self.num_cols])
        self._no_support = [np.iinfo(np.int64).max] * n_actions

    # ------------------------------------------------------------------ conversations

    def reset(self) -> None:
        """A logged first turn, resampled uniformly (as ``initial_state`` does)."""
        i = min(int(self.stream.uniform() * self.pool_size), self.pool_size - 1)
        turn, prev, intent, sentiment, cats, nums = self._pool
        self.turn, self.previous_action = turn[i], prev[i]
        self.intent, self.sentiment = intent[i], sentiment[i]
        self.cat_codes = codes = [column[i] for column in cats]
        self.num_values = values = [column[i] for column in nums]
        # phi's columns fixed for the conversation: intercept, context one-hots, numerics
        phi = self._phi
        phi[self._phi_cols] = 0.0
        self._phi_cols[1 : 1 + len(codes)] = [
            c + k for c, k in zip(self.cat_cols, codes, strict=True)
        ]
        phi[self._phi_cols] = [1.0] * (1 + len(codes)) + [
            min(max((x - center) / scale, -NUMERIC_CLIP), NUMERIC_CLIP)
            for (center, scale), x in zip(self.num_scale, values, strict=True)
        ]
        self.static = (phi @ self.w_static).tolist()
        if self.needs_support:
            rows = [
                self.support[name][k]
                for name, k in zip(self.context_categorical, codes, strict=True)
            ]
            self.static_support = (
                [min(t) for t in zip(*rows, strict=True)] if rows else self._no_support
            )
        self._template = self._context_observation()

    def linear_predictors(self, a: int) -> list[float]:
        """The 9 linear predictors of action ``a`` in the current state: outcome logits
        (resolved, escalated, abandoned vs continue), sentiment mean, log1p handle-time
        mean, and the state part of the CSAT logits (scores 2..5 vs 1)."""
        s = self.sentiment
        key = (a, self.intent, self.previous_action, self.turn, bisect_left(SENTIMENT_KNOTS, s))
        entry = self._dynamic.get(key)
        if entry is None:
            entry = self._dynamic[key] = self._dynamic_rows(*key)
        base, slope = entry
        static = self.static[a * 9 : a * 9 + 9]
        return [x + y + s * z for x, y, z in zip(static, base, slope, strict=True)]

    def _dynamic_rows(
        self, a: int, intent: int, prev: int, turn: int, active: int
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``phi``'s state-dependent columns times action ``a``'s coefficients, split as
        ``base + sentiment * slope`` for sentiments above the first ``active`` hinge knots."""
        w, col = self.w[a], self.col
        base = w[col["intent"] + intent] + w[col["prev"] + prev + 1]
        base = base + (turn / self.basis_max_turns) * w[col["turn"]]
        if turn < self.n_turn_indicators:
            base = base + w[col["turn=="] + turn]
        if turn > 0:
            base = base + w[col["intent*turn>0"] + intent]
        slope = w[col["sentiment"]] + w[col["intent*sentiment"] + intent]
        for k in range(active):
            base = base - SENTIMENT_KNOTS[k] * w[col["hinge"] + k]
            slope = slope + w[col["hinge"] + k]
        return tuple(base.tolist()), tuple(slope.tolist())

    def support_counts(self) -> list[int]:
        """Logged decisions supporting each action in the current state (``effective_support``)."""
        key = (
            self.intent,
            self.previous_action + 1,
            min(self.turn, SUPPORT_TURN_BINS - 1),
            bisect_right(SUPPORT_SENTIMENT_EDGES, self.sentiment),
        )
        dyn = self._dynamic_support.get(key)
        if dyn is None:
            s = self.support
            rows = (
                s["intent"][key[0]],
                s["previous_action"][key[1]],
                s["turn_bin"][key[2]],
                s["sentiment_bin"][key[3]],
            )
            dyn = self._dynamic_support[key] = [min(t) for t in zip(*rows, strict=True)]
        return [min(x, y) for x, y in zip(self.static_support, dyn, strict=True)]

    def step(self, action: int) -> tuple[int, float, float, float]:
        """One turn of :meth:`FittedCustomerModel.step` (outcome, handle, CSAT or NaN, penalty)."""
        st, a, s = self.stream, action, self.sentiment
        v = self.linear_predictors(a)
        m = max(0.0, v[0], v[1], v[2])
        e0, e1, e2, e3 = math.exp(-m), math.exp(v[0] - m), math.exp(v[1] - m), math.exp(v[2] - m)
        x = st.uniform() * (e0 + e1 + e2 + e3)
        outcome = (
            CONTINUE
            if x < e0
            else RESOLVED
            if x < e0 + e1
            else ESCALATED
            if x < e0 + e1 + e2
            else ABANDONED
        )
        penalty = 0.0
        supported = True
        if self.needs_support:
            count = self.support_counts()[a]
            supported = count >= self.min_support
            penalty = self.penalty / math.sqrt(1.0 + count) if self.penalty > 0 else 0.0
        if not supported:
            outcome = ABANDONED
        handle = 0.0
        if self.handle_known:
            handle = max(math.expm1(v[K_HANDLE] + self.handle_sd[a] * st.normal()), 0.0)
        sentiment = v[K_SENTIMENT] + self.sentiment_sd[a] * st.normal()
        sentiment = min(max(sentiment, -1.0), 1.0)
        csat = math.nan
        if outcome != CONTINUE:
            csat = self._csat(v, a, outcome, s) if supported else 1.0
        cdf = self.intent_cdf[self.intent][a]
        self.intent = min(bisect_right(cdf, st.uniform()), len(cdf) - 1)
        self.sentiment = sentiment
        self.turn += 1
        self.previous_action = a
        return outcome, handle, csat, penalty

    def _csat(self, v: list[float], a: int, outcome: int, s: float) -> float:
        """A CSAT draw from ``P(csat = k | last state, action, outcome)``, k = 1..5."""
        o = outcome - 1
        act, out, out_s = self.csat_action[a], self.csat_outcome[o], self.csat_outcome_sentiment[o]
        logits = [0.0] + [v[K_CSAT + k] + act[k] + out[k] + s * out_s[k] for k in range(4)]
        m = max(logits)
        cdf = []
        total = 0.0
        for z in logits:
            total += math.exp(z - m)
            cdf.append(total)
        u = self.stream.uniform() * total
        return float(min(bisect_right(cdf, u), N_CSAT - 1) + 1)

    # ------------------------------------------------------------------ what the env reads

    def _observation_columns(self) -> dict[str, Any]:
        """Where each variable goes in the observation (``FittedCustomerModel.observation``)."""
        spec = self.model.feature_spec
        start, col = {}, 0
        for name, levels in spec.categorical.items():
            start[name] = col
            col += len(levels)
        for name in spec.numeric:
            start[name] = col
            col += 1
        self._obs_cat = [start[name] for name in self.context_categorical]
        self._obs_num = [(start[name], *spec.numeric[name]) for name in self.context_numeric]
        return {"start": start, "dim": spec.dim, "numeric": dict(spec.numeric)}

    def _context_observation(self) -> np.ndarray:
        """The observation's columns fixed for the conversation (context features)."""
        out = np.zeros(self._obs_cols["dim"], dtype=np.float32)
        for col, code in zip(self._obs_cat, self.cat_codes, strict=True):
            out[col + code] = 1.0
        for (col, center, scale), x in zip(self._obs_num, self.num_values, strict=True):
            out[col] = (x - center) / scale
        return out

    def observation(self) -> np.ndarray:
        """``FittedCustomerModel.observation`` of the current state, float32 (dim,)."""
        cols = self._obs_cols
        start, numeric = cols["start"], cols["numeric"]
        out = self._template.copy()
        out[start["intent"] + self.intent] = 1.0
        out[start["previous_action"] + self.previous_action + 1] = 1.0
        center, scale = numeric["turn"]
        out[start["turn"]] = (self.turn - center) / scale
        center, scale = numeric["sentiment"]
        out[start["sentiment"]] = (self.sentiment - center) / scale
        return out

    def state(self) -> dict[str, Any]:
        """``FittedCustomerModel.observe`` of the current state, as Python scalars."""
        out: dict[str, Any] = {
            "turn": self.turn,
            "previous_action": self.prev_labels[self.previous_action + 1],
            "intent": self.intents[self.intent],
            "sentiment": self.sentiment,
        }
        for name, code in zip(self.context_categorical, self.cat_codes, strict=True):
            out[name] = self.levels[name][code]
        for name, x in zip(self.context_numeric, self.num_values, strict=True):
            out[name] = x
        return out

    def action_mask(self) -> np.ndarray:
        """Actions with at least ``min_support`` logged decisions, bool (n_actions,)."""
        if self.min_support <= 0:
            return self._mask.copy()
        return np.array([c >= self.min_support for c in self.support_counts()], dtype=bool)


def pool_columns(model: FittedCustomerModel) -> tuple[list, list, list, list, list, list]:
    """The initial-state pool as Python lists (turn, previous action, intent, sentiment,
    context codes per variable, context numerics per variable); built once per model."""
    cached = model.__dict__.get("_scalar_pool")
    if cached is None:
        pool, basis = model.pool, model.basis
        cached = (
            pool.turn.tolist(),
            pool.previous_action.tolist(),
            pool.intent.tolist(),
            pool.sentiment.astype(np.float64).tolist(),
            [pool.categorical[name].tolist() for name in basis.context_categorical],
            [pool.numeric[name].astype(np.float64).tolist() for name in basis.context_numeric],
        )
        model.__dict__["_scalar_pool"] = cached
    return cached
