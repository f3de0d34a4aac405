"""Customer models fitted from logged conversations (DESIGN.md sections 1 and 10).

:func:`fit_customer_model` turns :class:`~simulators.logs.LoggedConversations` into a
:class:`FittedCustomerModel`, a :class:`~supportrl.envs.model.CustomerModel`: rollouts,
``true_value(policy, n, world=model)`` and the env run on it exactly as on the
ground-truth world.

What is fitted
--------------
* **Initial state**: logged first-turn tuples (context features, intent, sentiment) are
  resampled uniformly; nothing is generated.
* **Response model** for (state, action): the outcome distribution (continue / resolved
  / escalated / abandoned), the next sentiment (Gaussian, clipped to [-1, 1]) and the
  handle time (log-normal on ``log1p`` seconds). Two families:

  - ``glm``: multinomial logit and linear-Gaussian regressions on ``phi(s)`` (see
    :class:`~simulators.fitted_features.Basis`) with shared effects plus one block of
    action-specific effects per action (``one_hot(action) (x) phi(s)``), L2-regularised;
  - ``ensemble``: K torch networks (:mod:`simulators.fitted_ensemble`), each the glm's
    linear design plus an MLP, on bootstrap resamples; their disagreement is the
    uncertainty of each (state, action).
* **Intent evolution**: the detected intent at the next turn given (intent, action) is a
  categorical transition counted on consecutive logged turns (plus one pseudo-count of
  "unchanged"); unseen pairs keep their intent.
* **CSAT** at the end, given the last state, action and outcome, corrected for surveys
  missing not at random (:mod:`simulators.fitted_csat`); :meth:`FittedCustomerModel.
  csat_imputation` fills the logs' missing CSAT for OPE. It is fitted without the
  confounding weights (it conditions on the final state and outcome, and imputation
  needs the observational conditional of the logged rows).

Confounding
-----------
The logging policy saw variables the logs do not record (e.g. how hard a case is) and
chose actions by them; a naive fit then learns that the actions it picked for easy cases
work well for everyone. The logged propensity carries that hidden influence, so
``weighting`` reweights the logged decisions (DESIGN.md section 10):

* ``propensity``: each decision by ``1 / propensity``, divided by the mean of those
  weights over the decisions with the same action (stabilised), clipped at
  ``weight_clip``. This makes the *current* choice look random given the logged state.
* ``sequential``: each decision by the product over its conversation so far of
  ``pi_hat(a | s) / propensity``, normalised to mean 1 and clipped, where ``pi_hat`` is
  a behaviour-cloned logger that sees only the logged state (stabilised weights of a
  marginal structural model). The hidden variable persists through the conversation, so
  which conversations reach turn ``t`` in a given state also depends on the logger's
  earlier, confounded choices; the product undoes those too, and the cloned numerator
  keeps the weights' variance down. On the synthetic world with confounding this is what
  brings policy values close to the truth (``benchmarks/bench_fidelity.py``).

Missing propensities are estimated by a behaviour-cloned logging policy (recorded in
``warnings``; such estimates carry no unlogged confounders).

Pessimism
---------
* ``penalty`` (lambda): every step reports ``Transition.penalty = lambda * u(s, a)``, to
  be subtracted from the reward. ``u`` is the ensemble's disagreement (square root of
  the summed variance of the outcome probabilities across members) for ``ensemble`` and
  ``1 / sqrt(1 + n(s, a))`` for ``glm``, where ``n(s, a)`` is the support count below.
* ``min_support``: the support count ``n(s, a)`` is the fewest logged decisions taking
  ``a`` in the state's cell over each support key (every categorical state variable,
  binned turn, binned sentiment). Pairs with ``n(s, a) < min_support`` are masked:
  :meth:`FittedCustomerModel.action_mask` returns False there, and if a policy takes a
  masked action anyway the customer **abandons** the conversation with CSAT 1 (the worst
  outcome the reward knows), plus the penalty.

Files
-----
:meth:`FittedCustomerModel.save` writes a directory with ``simulator.json`` (format
version, family, schema and reward versions, actions, feature spec, hyperparameters,
warnings, fit diagnostics, and the name, shape and dtype of every array) and
``params.npz`` (every fitted array, including the initial-state pool as codes into the
feature spec's levels and raw numeric values; ensemble weights as plain arrays).
No pickle anywhere: :func:`load_customer_model` reads the npz with
``allow_pickle=False``; a corrupt or foreign file raises ValueError naming it.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from supportrl.agents.base import BasePolicy, States
from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.model import Transition
from supportrl.envs.rewards import ABANDONED, CONTINUE, OUTCOMES, REWARD_VERSION
from supportrl.simulators.fitted_csat import (
    CSAT_LEVELS,
    CSAT_METHODS,
    CsatModel,
    csat_design,
    fit_csat,
)
from supportrl.simulators.fitted_ensemble import EnsembleNet, EnsembleParams, fit_ensemble
from supportrl.simulators.fitted_features import (
    Basis,
    FittedState,
    effective_support,
    support_counts,
)
from supportrl.simulators.fitted_glm import GaussianFit, SoftmaxFit, fit_gaussian, fit_softmax
from supportrl.simulators.logs import SCHEMA_VERSION, LoggedConversations

FORMAT = "supportrl.fitted_customer_model"
FORMAT_VERSION = 1
FAMILIES: tuple[str, ...] = ("glm", "ensemble")
WEIGHTINGS: tuple[str, ...] = ("none", "propensity", "sequential")
JSON_FILE = "simulator.json"
PARAMS_FILE = "params.npz"


class FitWarning(UserWarning):
    """Something the logs did not allow the customer model to learn."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FitConfig:
    """Settings shared by both families (hyperparameters of the fit and of the simulation)."""

    family: str = "glm"
    """``glm`` or ``ensemble``."""
    seed: int = 0
    """Drives every random choice of the fit."""
    weighting: str = "none"
    """``none`` (naive), ``propensity`` (per decision) or ``sequential`` (per conversation so far)."""
    weight_clip: float = 50.0
    """Upper clip of the stabilised weights."""
    penalty: float = 0.0
    """Pessimism lambda: ``Transition.penalty = penalty * uncertainty``."""
    min_support: int = 0
    """(state cell, action) pairs with fewer logged decisions are masked."""
    max_turns: int = 10
    """Conversations are cut off after this many decisions."""
    csat_missing: str = "selection"
    """``selection`` (MNAR-corrected selection model) or ``respondents`` (fit on answered surveys only)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not self.weight_clip >= 1:
            raise ValueError(f"weight_clip must be >= 1, got {self.weight_clip}")
        if not (np.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"penalty must be >= 0, got {self.penalty}")
        if self.min_support < 0:
            raise ValueError(f"min_support must be >= 0, got {self.min_support}")
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.csat_missing not in CSAT_METHODS:
            raise ValueError(
                f"csat_missing must be one of {CSAT_METHODS}, got {self.csat_missing!r}"
            )


@dataclass(frozen=True)
class GLMParams:
    """Hyperparameters of the ``glm`` family."""

    l2: float = 1.0
    """Prior precision of the shared coefficients (on the summed loss; intercept free)."""
    l2_action: float = 1.0
    """Prior precision of the action-specific coefficients."""
    max_iter: int = 500
    """L-BFGS iterations of the multinomial logits."""
    torch_threads: int = 1
    """torch intra-op threads for the losses during the fit."""

    def __post_init__(self) -> None:
        if self.l2 < 0 or self.l2_action <= 0:
            raise ValueError(f"l2 must be >= 0 and l2_action > 0, got {self.l2}, {self.l2_action}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")


FamilyParams = GLMParams | EnsembleParams


# --------------------------------------------------------------------------- dynamics


@dataclass(frozen=True)
class Prediction:
    """Response model output for ``n`` (state, action) pairs (arrays of shape (n,) unless noted)."""

    outcome_probs: np.ndarray
    """(n, 4) in ``OUTCOMES`` order."""
    sentiment_mean: np.ndarray
    sentiment_sd: np.ndarray
    log_handle_mean: np.ndarray
    """Mean of ``log1p(handle_time_s)``."""
    log_handle_sd: np.ndarray
    uncertainty: np.ndarray | None = None
    """Ensemble disagreement; None for the glm family."""


@dataclass(frozen=True)
class GLMDynamics:
    """Multinomial logit for the outcome, linear-Gaussian for sentiment and log handle time."""

    outcome: SoftmaxFit
    sentiment: GaussianFit
    handle: GaussianFit

    def predict(self, phi: np.ndarray, action: np.ndarray) -> Prediction:
        return Prediction(
            outcome_probs=self.outcome.probs(phi, action),
            sentiment_mean=self.sentiment.mean(phi, action),
            sentiment_sd=self.sentiment.sd[action],
            log_handle_mean=self.handle.mean(phi, action),
            log_handle_sd=self.handle.sd[action],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "glm/outcome_coef": self.outcome.coef,
            "glm/sentiment_coef": self.sentiment.coef,
            "glm/sentiment_sd": self.sentiment.sd,
            "glm/handle_coef": self.handle.coef,
            "glm/handle_sd": self.handle.sd,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> GLMDynamics:
        return cls(
            outcome=SoftmaxFit(coef=arrays["glm/outcome_coef"], converged=True, iterations=0),
            sentiment=GaussianFit(coef=arrays["glm/sentiment_coef"], sd=arrays["glm/sentiment_sd"]),
            handle=GaussianFit(coef=arrays["glm/handle_coef"], sd=arrays["glm/handle_sd"]),
        )


@dataclass(frozen=True)
class EnsembleDynamics:
    """K wide-and-deep members (:class:`~simulators.fitted_ensemble.EnsembleNet`)."""

    net: EnsembleNet

    def predict(self, phi: np.ndarray, action: np.ndarray) -> Prediction:
        out = self.net.predict(phi, action)
        return Prediction(
            outcome_probs=out["outcome_probs"],
            sentiment_mean=out["sentiment_mean"],
            sentiment_sd=out["sentiment_sd"],
            log_handle_mean=out["log_handle_mean"],
            log_handle_sd=out["log_handle_sd"],
            uncertainty=out["uncertainty"],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"ensemble/linear": self.net.linear}
        out.update({f"ensemble/weight{i}": w for i, w in enumerate(self.net.weights)})
        out.update({f"ensemble/bias{i}": b for i, b in enumerate(self.net.biases)})
        out["ensemble/handle_standardisation"] = np.array(
            [self.net.handle_center, self.net.handle_scale]
        )
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> EnsembleDynamics:
        n_layers = sum(1 for k in arrays if k.startswith("ensemble/weight"))
        if n_layers == 0:
            raise KeyError("ensemble/weight0")
        std = arrays["ensemble/handle_standardisation"]
        net = EnsembleNet(
            linear=np.asarray(arrays["ensemble/linear"], np.float32),
            weights=tuple(
                np.asarray(arrays[f"ensemble/weight{i}"], np.float32) for i in range(n_layers)
            ),
            biases=tuple(
                np.asarray(arrays[f"ensemble/bias{i}"], np.float32) for i in range(n_layers)
            ),
            handle_center=float(std[0]),
            handle_scale=float(std[1]),
        )
        return cls(net=net)


Dynamics = GLMDynamics | EnsembleDynamics


# --------------------------------------------------------------------------- the model


@dataclass
class FittedCustomerModel:
    """A customer simulator fitted from logs; implements :class:`~supportrl.envs.model.CustomerModel`.

    Build it with :func:`fit_customer_model` or :func:`load_customer_model`.
    """

    actions: tuple[str, ...]
    config: FitConfig
    params: FamilyParams
    feature_spec: FeatureSpec
    dynamics: Dynamics
    csat: CsatModel
    intent_transition: np.ndarray
    """(n_intents, n_actions, n_intents): P(next detected intent | intent, action)."""
    pool: FittedState
    """Logged first turns the initial states are resampled from."""
    support: dict[str, np.ndarray]
    """Support key -> logged decisions per (cell, action), (n_cells, n_actions) int64."""
    handle_time_known: bool = True
    """False when the logs had no handle times: simulated handle time is 0."""
    warnings: list[str] = field(default_factory=list)
    """What the logs did not allow the model to learn."""
    info: dict[str, Any] = field(default_factory=dict)
    """Fit diagnostics (rows, weights, convergence, CSAT response rates)."""

    def __post_init__(self) -> None:
        self.basis = Basis(spec=self.feature_spec, actions=self.actions, max_turns=self.max_turns)

    # ------------------------------------------------------------------ protocol

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def max_turns(self) -> int:
        return self.config.max_turns

    @property
    def intents(self) -> tuple[str, ...]:
        return self.basis.intents

    def initial_state(self, n: int, rng: np.random.Generator) -> FittedState:
        """Start ``n`` conversations by resampling logged first turns uniformly."""
        return self.pool.take(rng.integers(0, len(self.pool), size=n))

    def observe(self, state: FittedState, *, hidden: bool = False) -> dict[str, np.ndarray]:
        """The raw named state (a fitted model has no hidden variables; ``hidden`` adds none)."""
        return self.basis.named(state)

    def support_count(self, state: FittedState) -> np.ndarray:
        """Logged decisions supporting each (state, action), shape (n, n_actions) int64."""
        return effective_support(self.basis, self.support, state)

    def action_mask(self, state: FittedState) -> np.ndarray:
        """Actions with at least ``min_support`` logged decisions, shape (n, n_actions) bool."""
        if self.config.min_support <= 0:
            return np.ones((len(state), len(self.actions)), dtype=bool)
        return self.support_count(state) >= self.config.min_support

    def predict(self, state: FittedState, action: np.ndarray) -> Prediction:
        """The response model for (state, action) pairs (``action`` indices, shape (n,))."""
        action = self._check_action(action, len(state))
        return self.dynamics.predict(self.basis.phi(state), action)

    def outcome_probs(self, state: FittedState, action: np.ndarray) -> np.ndarray:
        """P(outcome | state, action), shape (n, 4) in ``OUTCOMES`` order."""
        return self.predict(state, action).outcome_probs

    def uncertainty(self, state: FittedState, action: np.ndarray) -> np.ndarray:
        """The pessimism's ``u(s, a)`` (see module docstring), shape (n,)."""
        action = self._check_action(action, len(state))
        if self.family == "ensemble":
            pred = self.predict(state, action)
            assert pred.uncertainty is not None
            return pred.uncertainty
        n = self.support_count(state)[np.arange(len(action)), action]
        return 1.0 / np.sqrt(1.0 + n)

    def csat_probs(self, state: FittedState, action: np.ndarray, outcome: np.ndarray) -> np.ndarray:
        """P(csat = k | last state, action, terminal outcome), k = 1..5, shape (n, 5)."""
        psi = csat_design(
            self.basis.phi(state), state.sentiment, action, np.asarray(outcome), len(self.actions)
        )
        return self.csat.probs(psi)

    def step(self, state: FittedState, action: np.ndarray, rng: np.random.Generator) -> Transition:
        """Apply ``action`` (indices, shape (n,)) to ``n`` conversations."""
        n = len(state)
        action = self._check_action(action, n)
        # Fixed draws per step, whatever the branch taken, keep runs reproducible.
        u_outcome, u_csat, u_intent = rng.random(n), rng.random(n), rng.random(n)
        z_sentiment, z_handle = rng.standard_normal(n), rng.standard_normal(n)
        rows = np.arange(n)
        phi = self.basis.phi(state)
        pred = self.dynamics.predict(phi, action)
        cdf = np.cumsum(pred.outcome_probs, axis=1)
        outcome = np.minimum((u_outcome[:, None] * cdf[:, -1:] >= cdf).sum(axis=1), 3)
        supported = self.action_mask(state)[rows, action]
        outcome = np.where(supported, outcome, ABANDONED).astype(np.int64)
        if self.handle_time_known:
            handle = np.expm1(pred.log_handle_mean + pred.log_handle_sd * z_handle)
            handle = np.maximum(handle, 0.0)
        else:
            handle = np.zeros(n)
        sentiment = np.clip(pred.sentiment_mean + pred.sentiment_sd * z_sentiment, -1.0, 1.0)
        csat = np.full(n, np.nan)
        terminal = np.flatnonzero(outcome != CONTINUE)
        if len(terminal):
            psi = csat_design(
                phi[terminal],
                state.sentiment[terminal],
                action[terminal],
                outcome[terminal],
                len(self.actions),
            )
            probs = self.csat.probs(psi)
            pick = (u_csat[terminal, None] >= np.cumsum(probs, axis=1)).sum(axis=1)
            csat[terminal] = CSAT_LEVELS[np.minimum(pick, 4)]
            csat[terminal[~supported[terminal]]] = CSAT_LEVELS[0]
        trans = self.intent_transition[state.intent, action]
        new_intent = (u_intent[:, None] >= np.cumsum(trans, axis=1)).sum(axis=1)
        new_intent = np.minimum(new_intent, trans.shape[1] - 1).astype(np.int64)
        penalty = None
        if self.config.penalty > 0:
            u = (
                pred.uncertainty
                if self.family == "ensemble"
                else 1.0 / np.sqrt(1.0 + self.support_count(state)[rows, action])
            )
            assert u is not None
            penalty = self.config.penalty * u
        next_state = FittedState(
            turn=state.turn + 1,
            previous_action=action,
            intent=new_intent,
            sentiment=sentiment,
            categorical=state.categorical,
            numeric=state.numeric,
        )
        return Transition(
            outcome=outcome, handle_time_s=handle, csat=csat, next_state=next_state, penalty=penalty
        )

    def _check_action(self, action: np.ndarray, n: int) -> np.ndarray:
        action = np.asarray(action)
        if action.shape != (n,) or not np.issubdtype(action.dtype, np.integer):
            raise ValueError(
                f"action: expected {n} action indices, got shape {action.shape} {action.dtype}"
            )
        if n and (action.min() < 0 or action.max() >= len(self.actions)):
            raise ValueError(f"action: indices must be in [0, {len(self.actions)})")
        return action.astype(np.int64)

    # ------------------------------------------------------------------ logs

    def state_of(self, states: States) -> FittedState:
        """This model's state for a raw named state batch (e.g. from :meth:`observe`)."""
        return self.basis.state_from_named(states)

    def logged_states(self, logs: LoggedConversations) -> FittedState:
        """This model's state at every logged turn, length n_turns."""
        self._check_catalogue(logs)
        return self.state_of(logs.states())

    def csat_imputation(self, logs: LoggedConversations) -> tuple[np.ndarray, int]:
        """Logged CSAT with missing terminal scores imputed, and how many were imputed.

        A terminal turn (outcome resolved / escalated / abandoned) without a survey answer
        gets the expected CSAT *of a non-respondent* under the fitted selection model,
        ``sum_k k P(k|x)(1-g_k) / sum_k P(k|x)(1-g_k)`` -- never a neutral 3. Observed
        scores are kept; non-terminal turns (and cut-off last turns) stay NaN.

        Returns:
            csat: shape (n_turns,) float64; n_imputed: number of imputed turns.
        """
        self._check_catalogue(logs)
        csat = np.array(logs.csat, dtype=np.float64, copy=True)
        rows = np.flatnonzero((logs.outcome != CONTINUE) & np.isnan(csat))
        if len(rows) == 0:
            return csat, 0
        state = self.logged_states(logs).take(rows)
        psi = csat_design(
            self.basis.phi(state),
            state.sentiment,
            logs.action[rows],
            logs.outcome[rows],
            len(self.actions),
        )
        csat[rows] = self.csat.imputed(psi)
        return csat, int(len(rows))

    def _check_catalogue(self, logs: LoggedConversations) -> None:
        if tuple(logs.actions) != self.actions:
            raise ValueError(
                f"logs: action catalogue {list(logs.actions)} differs from the model's {list(self.actions)}"
            )

    # ------------------------------------------------------------------ variants

    def with_pessimism(
        self, *, penalty: float | None = None, min_support: int | None = None
    ) -> FittedCustomerModel:
        """The same fitted model with other pessimism settings (no refit)."""
        changes: dict[str, Any] = {}
        if penalty is not None:
            changes["penalty"] = float(penalty)
        if min_support is not None:
            changes["min_support"] = int(min_support)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, **changes))

    def hyperparameters(self) -> dict[str, Any]:
        """Every fit setting as plain values: the common config and the family's parameters."""
        return {**dataclasses.asdict(self.config), **dataclasses.asdict(self.params)}

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write ``simulator.json`` and ``params.npz`` into directory ``path`` (created).

        Files are written to temporary names first and then renamed.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = self._arrays()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "family": self.family,
            "schema_version": SCHEMA_VERSION,
            "reward_version": REWARD_VERSION,
            "actions": list(self.actions),
            "outcomes": list(OUTCOMES),
            "feature_spec": self.feature_spec.to_dict(),
            "config": dataclasses.asdict(self.config),
            "params": dataclasses.asdict(self.params),
            "handle_time_known": self.handle_time_known,
            "csat": {
                "levels": CSAT_LEVELS.tolist(),
                "method": self.csat.method,
                "response_rate_by_level": self.csat.response.tolist(),
                "iterations": self.csat.iterations,
            },
            "initial_state_pool": {
                "size": len(self.pool),
                "arrays": sorted(k for k in arrays if k.startswith("pool/")),
                "encoding": "categorical variables as codes into feature_spec levels; "
                "previous_action -1 = none",
            },
            "support_keys": list(self.support),
            "warnings": list(self.warnings),
            "info": self.info,
            "arrays": {
                k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()
            },
        }
        tmp_npz = path / (PARAMS_FILE + ".tmp")
        with open(tmp_npz, "wb") as fh:
            np.savez(fh, **arrays)
        tmp_npz.replace(path / PARAMS_FILE)
        tmp_json = path / (JSON_FILE + ".tmp")
        tmp_json.write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        tmp_json.replace(path / JSON_FILE)
        return path

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = dict(self.dynamics.arrays())
        arrays["csat/coef"] = self.csat.fit.coef
        arrays["csat/response"] = self.csat.response
        arrays["intent_transition"] = self.intent_transition
        arrays["pool/turn"] = self.pool.turn
        arrays["pool/previous_action"] = self.pool.previous_action
        arrays["pool/intent"] = self.pool.intent
        arrays["pool/sentiment"] = self.pool.sentiment
        for k, v in self.pool.categorical.items():
            arrays[f"pool/categorical/{k}"] = v
        for k, v in self.pool.numeric.items():
            arrays[f"pool/numeric/{k}"] = v
        for k, v in self.support.items():
            arrays[f"support/{k}"] = v
        return arrays


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load_customer_model(path: str | Path) -> FittedCustomerModel:
    """Load a model written by :meth:`FittedCustomerModel.save` (no code runs, no pickle).

    Raises:
        ValueError: naming the file, when it is missing, corrupt, of another format or
            version, or inconsistent with its companion file.
    """
    path = Path(path)
    json_path, npz_path = path / JSON_FILE, path / PARAMS_FILE
    for p in (json_path, npz_path):
        if not p.is_file():
            raise ValueError(
                f"{p}: not found (a fitted simulator directory holds {JSON_FILE} and {PARAMS_FILE})"
            )
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path}: not a valid simulator file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(
            f"{json_path}: not a fitted customer model (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{json_path}: format_version {version!r} unsupported; this supportrl reads version {FORMAT_VERSION}"
        )
    try:
        if meta["schema_version"] != SCHEMA_VERSION or meta["reward_version"] != REWARD_VERSION:
            raise ValueError(
                f"{json_path}: schema/reward version {meta['schema_version']}/{meta['reward_version']} "
                f"unsupported; expected {SCHEMA_VERSION}/{REWARD_VERSION}"
            )
        actions = tuple(str(a) for a in meta["actions"])
        spec = FeatureSpec.from_dict(meta["feature_spec"])
        config = FitConfig(**meta["config"])
        params: FamilyParams = (
            GLMParams(**meta["params"])
            if config.family == "glm"
            else EnsembleParams(**meta["params"])
        )
        csat_meta = meta["csat"]
    except ValueError as exc:
        if str(exc).startswith(str(json_path)):
            raise
        raise ValueError(f"{json_path}: malformed ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{json_path}: malformed, missing or wrong entry {exc}") from None
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{npz_path}: corrupt or unreadable parameter file ({exc})") from None
    expected = meta.get("arrays", {})
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ValueError(f"{npz_path}: missing array(s) {missing[:5]}")
    for name, desc in expected.items():
        if list(arrays[name].shape) != list(desc.get("shape", [])):
            raise ValueError(
                f"{npz_path}: array {name!r} has shape {arrays[name].shape}, {json_path.name} says {desc.get('shape')}"
            )
    try:
        dynamics: Dynamics = (
            GLMDynamics.from_arrays(arrays)
            if config.family == "glm"
            else EnsembleDynamics.from_arrays(arrays)
        )
        basis = Basis(spec=spec, actions=actions, max_turns=config.max_turns)
        pool = FittedState(
            turn=arrays["pool/turn"],
            previous_action=arrays["pool/previous_action"],
            intent=arrays["pool/intent"],
            sentiment=arrays["pool/sentiment"],
            categorical={k: arrays[f"pool/categorical/{k}"] for k in basis.context_categorical},
            numeric={k: arrays[f"pool/numeric/{k}"] for k in basis.context_numeric},
        )
        csat = CsatModel(
            fit=SoftmaxFit(coef=arrays["csat/coef"], converged=True, iterations=0),
            response=arrays["csat/response"],
            method=str(csat_meta["method"]),
            iterations=int(csat_meta.get("iterations", 0)),
        )
        support = {k: arrays[f"support/{k}"] for k in meta["support_keys"]}
        model = FittedCustomerModel(
            actions=actions,
            config=config,
            params=params,
            feature_spec=spec,
            dynamics=dynamics,
            csat=csat,
            intent_transition=arrays["intent_transition"],
            pool=pool,
            support=support,
            handle_time_known=bool(meta.get("handle_time_known", True)),
            warnings=[str(w) for w in meta.get("warnings", [])],
            info=dict(meta.get("info", {})),
        )
    except KeyError as exc:
        raise ValueError(f"{npz_path}: missing array {exc}") from None
    if model.basis.dim != _input_dim(model):
        raise ValueError(
            f"{npz_path}: parameter shapes do not match the feature spec in {json_path.name}"
        )
    return model


def _input_dim(model: FittedCustomerModel) -> int:
    if isinstance(model.dynamics, GLMDynamics):
        return model.dynamics.outcome.coef.shape[1]
    return model.dynamics.net.linear.shape[2]


# --------------------------------------------------------------------------- behaviour cloning


class BehaviourPolicy(BasePolicy):
    """A behaviour-cloned logging policy: a multinomial logit of the logged action on ``phi(s)``.

    It sees only the logged state, so it reproduces the logger's action frequencies per
    observed state but none of its dependence on unlogged variables. Used to estimate
    missing propensities and to replay the logger in the fidelity report.
    """

    def __init__(self, basis: Basis, fit: SoftmaxFit) -> None:
        self.basis = basis
        self.fit = fit
        self.actions = basis.actions

    def action_probs(self, states: States) -> np.ndarray:
        return self.fit.probs(self.basis.phi(self.basis.state_from_named(states)))


def fit_behaviour_policy(
    logs: LoggedConversations,
    basis: Basis | None = None,
    *,
    l2: float = 1.0,
    max_iter: int = 300,
    threads: int = 1,
) -> BehaviourPolicy:
    """Clone the logging policy from ``logs`` (see :class:`BehaviourPolicy`)."""
    basis = basis or _basis_for(logs, max_turns=10)
    phi = basis.phi(basis.state_from_named(logs.states()))
    n_actions = len(logs.actions)
    targets = np.zeros((logs.n_turns, n_actions))
    targets[np.arange(logs.n_turns), logs.action] = 1.0
    return BehaviourPolicy(
        basis, fit_softmax(phi, targets, l2=l2, max_iter=max_iter, threads=threads)
    )


def _basis_for(logs: LoggedConversations, max_turns: int) -> Basis:
    spec = build_feature_spec(
        logs.states(),
        actions=logs.actions,
        categorical=logs.categorical,
        numeric=logs.numeric,
        max_turns=max_turns,
    )
    return Basis(spec=spec, actions=tuple(logs.actions), max_turns=max_turns)


# --------------------------------------------------------------------------- fitting


def propensity_weights(
    propensity: np.ndarray,
    action: np.ndarray,
    n_actions: int,
    clip: float,
    *,
    offsets: np.ndarray | None = None,
    behaviour: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Stabilised, clipped inverse-propensity weights, shape (n,), and their statistics.

    Per decision, the factor is ``behaviour_i / p_i`` when ``behaviour`` (the probability
    of the logged action under a behaviour-cloned logger that sees only the logged state,
    shape (n,)) is given, else ``(1 / p_i) / mean_{j: a_j = a_i}(1 / p_j)``. Without
    ``offsets`` that factor is the weight; with ``offsets`` (shape (n_conversations + 1,))
    the weight is the product of the factors over the conversation's decisions up to and
    including ``i``, divided by its mean. Then ``min(w, clip)``.
    """
    if behaviour is not None:
        w = np.asarray(behaviour, dtype=np.float64) / propensity
    else:
        inv = 1.0 / propensity
        mean = np.bincount(action, weights=inv, minlength=n_actions) / np.maximum(
            np.bincount(action, minlength=n_actions), 1
        )
        w = inv / mean[action]
    if offsets is not None and len(w):
        log_w = np.log(w)
        cum = np.cumsum(log_w)
        before = cum[offsets[:-1]] - log_w[offsets[:-1]]
        w = np.exp(cum - np.repeat(before, np.diff(offsets)))
        w = w / w.mean()
    clipped = w > clip
    w = np.minimum(w, clip)
    ess = float(w.sum() ** 2 / (w**2).sum()) if len(w) else 0.0
    stats = {
        "max_weight": float(w.max()) if len(w) else 0.0,
        "clipped_share": float(clipped.mean()) if len(w) else 0.0,
        "effective_sample_size": ess,
    }
    return w, stats


def fit_settings(family: str = "glm", **settings: Any) -> tuple[FitConfig, FamilyParams]:
    """Validate fit settings without fitting: the common :class:`FitConfig` and the family's
    parameters (:class:`GLMParams` or :class:`~simulators.fitted_ensemble.EnsembleParams`).

    ``settings`` mixes both, as :func:`fit_customer_model` takes them. Unknown names and
    bad values raise ValueError.
    """
    common = {f.name for f in dataclasses.fields(FitConfig)} - {"family"}
    config = FitConfig(family=family, **{k: v for k, v in settings.items() if k in common})
    param_cls = GLMParams if family == "glm" else EnsembleParams
    known = {f.name for f in dataclasses.fields(param_cls)}
    rest = {k: v for k, v in settings.items() if k not in common}
    unknown = sorted(set(rest) - known)
    if unknown:
        raise ValueError(
            f"unknown {family} parameter(s) {unknown}; known: {sorted(known | common)}"
        )
    return config, param_cls(**rest)


def fit_customer_model(
    logs: LoggedConversations,
    family: str = "glm",
    *,
    seed: int = 0,
    weighting: str = "none",
    penalty: float = 0.0,
    min_support: int = 0,
    max_turns: int = 10,
    weight_clip: float = 50.0,
    csat_missing: str = "selection",
    **params: Any,
) -> FittedCustomerModel:
    """Fit a customer model of ``family`` (``glm`` or ``ensemble``) to logged conversations.

    Args:
        logs: validated schema-v1 conversations.
        family: ``glm`` (regularised multinomial / linear-Gaussian models) or ``ensemble``
            (K torch MLPs with a disagreement-based uncertainty).
        seed: drives every random choice of the fit (the ensemble's initial weights,
            bootstrap and batches).
        weighting: ``none``, ``propensity`` or ``sequential`` (see the module docstring,
            Confounding).
        penalty, min_support: pessimism (see the module docstring); they act at
            simulation time and can be changed later with :meth:`FittedCustomerModel.with_pessimism`.
        max_turns: conversations are cut off after this many decisions.
        weight_clip: upper clip of the stabilised inverse-propensity weights.
        csat_missing: ``selection`` (MNAR-corrected) or ``respondents``.
        **params: the family's hyperparameters (:class:`GLMParams` or
            :class:`~simulators.fitted_ensemble.EnsembleParams` fields).

    What the logs could not teach (an action never taken, a single intent, no CSAT, ...)
    is listed in ``model.warnings`` and issued as :class:`FitWarning`.
    """
    config, family_params = fit_settings(
        family,
        seed=int(seed),
        weighting=weighting,
        penalty=float(penalty),
        min_support=int(min_support),
        max_turns=int(max_turns),
        weight_clip=float(weight_clip),
        csat_missing=csat_missing,
        **params,
    )
    if not isinstance(logs, LoggedConversations):
        raise TypeError(f"logs must be LoggedConversations, got {type(logs).__name__}")
    if logs.n_turns == 0:
        raise ValueError("logs: no turns to fit")

    notes: list[str] = []
    actions = tuple(logs.actions)
    n_actions = len(actions)
    basis = _basis_for(logs, config.max_turns)
    state = basis.state_from_named(logs.states())
    phi = basis.phi(state)
    action = logs.action.astype(np.int64)
    outcome = logs.outcome.astype(np.int64)
    n = logs.n_turns
    info: dict[str, Any] = {
        "source": logs.source,
        "conversations": logs.n_conversations,
        "turns": n,
        "basis": list(basis.names),
    }

    # What the logs cannot teach.
    counts = np.bincount(action, minlength=n_actions)
    for a, c in zip(actions, counts, strict=True):
        if c == 0:
            notes.append(
                f"action {a!r} never occurs in the logs: its responses are extrapolated "
                "from the other actions (shared effects only)"
            )
        elif c < 50:
            notes.append(
                f"action {a!r} occurs only {c} times: its specific effects are mostly prior"
            )
    if len(basis.intents) == 1:
        notes.append(
            f"only one intent ({basis.intents[0]!r}) in the logs: intent effects and intent "
            "changes cannot be learned"
        )

    # Row weights.
    weights = np.ones(n)
    if config.weighting != "none":
        threads = family_params.torch_threads
        propensity = np.asarray(logs.propensity, dtype=np.float64)
        missing = np.isnan(propensity)
        behaviour = None
        if missing.any() or config.weighting == "sequential":
            bc = fit_behaviour_policy(logs, basis, threads=threads)
            cloned = bc.fit.probs(phi)[np.arange(n), action]
            behaviour = cloned if config.weighting == "sequential" else None
        if missing.any():
            propensity = propensity.copy()
            propensity[missing] = np.clip(cloned[missing], 1e-3, 1.0)
            notes.append(
                f"{int(missing.sum())} of {n} propensities missing: estimated by a behaviour-cloned "
                "logging policy (these carry no unlogged confounders)"
            )
        weights, stats = propensity_weights(
            propensity,
            action,
            n_actions,
            config.weight_clip,
            offsets=logs.offsets if config.weighting == "sequential" else None,
            behaviour=behaviour,
        )
        info["weights"] = stats
        if stats["clipped_share"] > 0.01:
            notes.append(
                f"{stats['clipped_share']:.1%} of propensity weights clipped at {config.weight_clip:g}"
            )

    # Targets of the response model.
    last = logs.is_last
    has_next = ~last
    next_sentiment = np.full(n, np.nan)
    next_sentiment[np.flatnonzero(has_next)] = logs.sentiment[np.flatnonzero(has_next) + 1]
    handle = np.asarray(logs.handle_time_s, dtype=np.float64)
    log_handle = np.log1p(np.maximum(handle, 0.0))
    handle_known = bool((~np.isnan(handle)).any())
    if not handle_known:
        notes.append("handle_time_s never logged: simulated handle time is 0 s (no time cost)")
    elif np.isnan(handle).any():
        notes.append(f"{int(np.isnan(handle).sum())} handle times missing: fitted on the rest")
    if not has_next.any():
        notes.append("no conversation has a second turn: sentiment and intent never change")

    conversation = logs.conversation_index
    if config.family == "glm":
        assert isinstance(family_params, GLMParams)
        dynamics: Dynamics = _fit_glm(
            phi,
            action,
            outcome,
            next_sentiment,
            log_handle,
            weights,
            n_actions,
            family_params,
            info,
        )
    else:
        assert isinstance(family_params, EnsembleParams)
        net = fit_ensemble(
            phi,
            action,
            outcome,
            next_sentiment,
            log_handle,
            conversation,
            n_actions=n_actions,
            weights=weights,
            params=family_params,
            seed=config.seed,
        )
        dynamics = EnsembleDynamics(net=net)
    if not has_next.any() and isinstance(dynamics, GLMDynamics):
        # Nothing to regress on: sentiment stays as it is.
        coef = np.zeros_like(dynamics.sentiment.coef)
        coef[:, basis.names.index("sentiment")] = 1.0
        dynamics = dataclasses.replace(
            dynamics, sentiment=GaussianFit(coef=coef, sd=np.full(n_actions, 1e-6))
        )

    # CSAT on terminal turns.
    terminal = np.flatnonzero(last & (outcome != CONTINUE))
    l2 = family_params.l2
    if len(terminal) == 0:
        notes.append(
            "no conversation ends (all cut off): CSAT cannot be learned and is uniform on 1..5"
        )
    psi = csat_design(
        phi[terminal], state.sentiment[terminal], action[terminal], outcome[terminal], n_actions
    )
    csat_obs = logs.csat[terminal]
    n_answered = int((~np.isnan(csat_obs)).sum())
    if len(terminal) and n_answered == 0:
        notes.append(
            "no CSAT answer in the logs: CSAT cannot be learned and is uniform on 1..5 (mean 3); "
            "the CSAT part of any value is uninformative"
        )
    # Unweighted on purpose: the CSAT model conditions on the final state, action and
    # outcome, OPE imputes *logged* rows with it (the observational conditional), and
    # confounding weights make the answer rates g_k poorly identified.
    csat = fit_csat(
        psi,
        csat_obs,
        weights=None,
        method=config.csat_missing,
        l2=l2,
        threads=family_params.torch_threads,
    )
    info["csat"] = {
        "terminal_turns": int(len(terminal)),
        "answered": n_answered,
        "method": csat.method,
        "response_rate_by_level": csat.response.round(4).tolist(),
    }

    # Intent transitions between consecutive turns.
    n_int = len(basis.intents)
    trans = np.zeros((n_int, n_actions, n_int))
    src = np.flatnonzero(has_next)
    np.add.at(trans, (state.intent[src], action[src], state.intent[src + 1]), 1.0)
    seen = trans.sum(axis=2) > 0
    trans[np.arange(n_int), :, np.arange(n_int)] += 1.0  # one pseudo-count of "unchanged"
    trans /= trans.sum(axis=2, keepdims=True)
    unseen = int((~seen).sum())
    if unseen and n_int > 1 and has_next.any():
        info["unseen_intent_action_pairs"] = unseen
        notes.append(
            f"{unseen} of {n_int * n_actions} (intent, action) pairs never continue in the logs: "
            "their intent is assumed unchanged"
        )

    pool = state.take(logs.offsets[:-1])
    support = support_counts(basis, state, action, n_actions)
    for note in notes:
        warnings.warn(note, FitWarning, stacklevel=2)
    return FittedCustomerModel(
        actions=actions,
        config=config,
        params=family_params,
        feature_spec=basis.spec,
        dynamics=dynamics,
        csat=csat,
        intent_transition=trans,
        pool=pool,
        support=support,
        handle_time_known=handle_known,
        warnings=notes,
        info=info,
    )


def _fit_glm(
    phi: np.ndarray,
    action: np.ndarray,
    outcome: np.ndarray,
    next_sentiment: np.ndarray,
    log_handle: np.ndarray,
    weights: np.ndarray,
    n_actions: int,
    params: GLMParams,
    info: dict[str, Any],
) -> GLMDynamics:
    """The glm family's response model: outcome logit, sentiment and log-handle regressions."""
    targets = np.zeros((len(outcome), len(OUTCOMES)))
    targets[np.arange(len(outcome)), outcome] = 1.0
    out_fit = fit_softmax(
        phi,
        targets,
        weights=weights,
        group=action,
        n_groups=n_actions,
        l2=params.l2,
        l2_group=params.l2_action,
        max_iter=params.max_iter,
        threads=params.torch_threads,
    )
    info["outcome_fit"] = {"converged": out_fit.converged, "iterations": out_fit.iterations}
    rows = ~np.isnan(next_sentiment)
    sent = fit_gaussian(
        phi[rows],
        next_sentiment[rows],
        action[rows],
        n_actions,
        weights=weights[rows],
        l2=params.l2_action,
    )
    rows = ~np.isnan(log_handle)
    handle = fit_gaussian(
        phi[rows],
        log_handle[rows],
        action[rows],
        n_actions,
        weights=weights[rows],
        l2=params.l2_action,
    )
    return GLMDynamics(outcome=out_fit, sentiment=sent, handle=handle)


__all__ = [
    "FAMILIES",
    "FORMAT_VERSION",
    "WEIGHTINGS",
    "BehaviourPolicy",
    "EnsembleDynamics",
    "EnsembleParams",
    "FitConfig",
    "FitWarning",
    "FittedCustomerModel",
    "FittedState",
    "GLMDynamics",
    "GLMParams",
    "Prediction",
    "fit_behaviour_policy",
    "fit_customer_model",
    "fit_settings",
    "load_customer_model",
    "propensity_weights",
]


def impute_csat(
    logs: LoggedConversations, *, max_turns: int = 10, l2: float = 1.0, threads: int = 1
) -> tuple[np.ndarray, int]:
    """Impute missing terminal CSAT with a CSAT model fitted on ``logs`` alone.

    The same MNAR selection model as a fitted simulator's (``csat_missing="selection"``),
    without fitting the rest of the simulator: what off-policy evaluation needs. Returns
    the CSAT array (n_turns,) with every terminal turn filled and the number imputed.
    """
    csat = np.array(logs.csat, dtype=np.float64, copy=True)
    terminal = np.flatnonzero(logs.outcome != CONTINUE)
    missing = terminal[np.isnan(csat[terminal])]
    if len(missing) == 0:
        return csat, 0
    if (~np.isnan(csat[terminal])).sum() == 0:
        raise ValueError(
            "csat: no conversation in the logs has a CSAT answer, so missing CSAT cannot be "
            "imputed; set reward.csat_weight=0 to evaluate without the CSAT term"
        )
    basis = _basis_for(logs, max_turns)
    state = basis.state_from_named(logs.states()).take(terminal)
    n_actions = len(logs.actions)
    psi = csat_design(
        basis.phi(state), state.sentiment, logs.action[terminal], logs.outcome[terminal], n_actions
    )
    model = fit_csat(psi, csat[terminal], method="selection", l2=l2, threads=threads)
    rows = np.isnan(csat[terminal])
    csat[terminal[rows]] = model.imputed(psi[rows])
    return csat, int(rows.sum())
