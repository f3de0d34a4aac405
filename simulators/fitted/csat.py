"""CSAT at the end of a conversation, fitted when CSAT is missing not at random.

Surveys are answered more often by very happy or very unhappy customers (docs/reward.md),
so the CSAT of respondents is not the CSAT of everyone, even given the
state. Treating a missing CSAT as neutral, or fitting on respondents only, biases values.

Model (``method="selection"``, the default): a *self-masking selection model*

    P(csat = k | x)           = softmax(psi(x) @ coef)_k        k = 1..5
    P(answered | csat = k, x) = g_k                             (depends on the score only)

fitted by maximum likelihood over the coefficients and ``g`` jointly, the unobserved
score of a non-respondent summed out (``P(k | x, missing) ∝ P(k | x) (1 - g_k)``). The assumption that the
answer probability depends on the score and not on the state given the score is what
identifies the model (the state shifts the CSAT distribution, the response rate moves
with it only through ``g``); it holds in the synthetic world by construction and is
checked there. ``method="respondents"`` fits on answered surveys only (correct when
answering depends on the state only, MAR), and is the fallback when no survey is missing.

Scores are on 1..5; a fractional score (e.g. 4.5) is split between its neighbours so the
mean is kept. :meth:`CsatModel.imputed` gives the posterior mean of a missing score,
``sum_k k P(k|x)(1-g_k) / sum_k P(k|x)(1-g_k)``: what OPE uses for missing CSAT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from supportrl.envs.conversations import LoggedConversations
from supportrl.envs.features import FeatureSpec, build_feature_spec
from supportrl.envs.rewards import CONTINUE, OUTCOMES
from supportrl.simulators.fitted.features import Basis
from supportrl.simulators.fitted.glm import SoftmaxFit, fit_softmax, minimize_torch, preconditioners

CSAT_LEVELS = np.arange(1.0, 6.0)
"""The CSAT scores the model distributes over, shape (5,)."""
CSAT_METHODS: tuple[str, ...] = ("selection", "respondents")
_TERMINAL_OUTCOMES = len(OUTCOMES) - 1


def csat_design(
    phi: np.ndarray,
    sentiment: np.ndarray,
    action: np.ndarray,
    outcome: np.ndarray,
    n_actions: int,
) -> np.ndarray:
    """CSAT design rows ``psi``, shape (n, p + n_actions + 6).

    Columns: ``phi`` (the state at the last decision, shape (n, p)), one-hot action,
    one-hot terminal outcome (resolved, escalated, abandoned) and outcome x sentiment.
    ``sentiment`` (n,) is the sentiment at the last decision; ``outcome`` (n,) codes.
    """
    n = phi.shape[0]
    a = np.zeros((n, n_actions))
    a[np.arange(n), action] = 1.0
    o = np.zeros((n, len(OUTCOMES) - 1))
    terminal = outcome != CONTINUE
    o[np.flatnonzero(terminal), outcome[terminal] - 1] = 1.0
    return np.concatenate([phi, a, o, o * sentiment[:, None]], axis=1)


def csat_soft_labels(csat: np.ndarray) -> np.ndarray:
    """Scores in [1, 5] as probabilities over :data:`CSAT_LEVELS`, shape (n, 5); NaN rows are 0."""
    y = np.clip(np.nan_to_num(csat, nan=3.0), 1.0, 5.0)
    lo = np.floor(y).astype(np.int64)
    frac = y - lo
    hi = np.minimum(lo + 1, 5)
    out = np.zeros((len(y), 5))
    rows = np.arange(len(y))
    out[rows, lo - 1] += 1.0 - frac
    out[rows, hi - 1] += frac
    out[np.isnan(csat)] = 0.0
    return out


@dataclass(frozen=True)
class CsatModel:
    """CSAT distribution given the final state, action and outcome, plus the response model."""

    fit: SoftmaxFit
    response: np.ndarray
    """(5,) estimated P(survey answered | csat = k)."""
    method: str
    iterations: int = 0
    """Optimiser iterations of the joint fit."""

    def probs(self, psi: np.ndarray) -> np.ndarray:
        """P(csat = k | x) for everyone (respondents or not), shape (n, 5)."""
        return self.fit.probs(psi)

    def posterior_missing(self, psi: np.ndarray) -> np.ndarray:
        """P(csat = k | x, survey not answered), shape (n, 5)."""
        p = self.probs(psi) * (1.0 - self.response)[None, :]
        total = p.sum(axis=1, keepdims=True)
        return np.where(total > 0, p / np.maximum(total, 1e-300), self.probs(psi))

    def imputed(self, psi: np.ndarray) -> np.ndarray:
        """Expected CSAT of a non-respondent, shape (n,)."""
        return self.posterior_missing(psi) @ CSAT_LEVELS

    def expected(self, psi: np.ndarray) -> np.ndarray:
        """Expected CSAT of everyone, shape (n,)."""
        return self.probs(psi) @ CSAT_LEVELS


def fit_csat(
    psi: np.ndarray,
    csat: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    method: str = "selection",
    l2: float = 1.0,
    max_iter: int = 400,
    threads: int = 1,
    init: CsatModel | None = None,
) -> CsatModel:
    """Fit :class:`CsatModel` on terminal rows by maximum likelihood.

    ``selection`` maximises the observed-data likelihood of the selection model over the
    multinomial coefficients and ``g`` jointly (L-BFGS; EM's fixed point, reached in one
    optimisation instead of many refits): an answered row contributes
    ``sum_k y_k (log P(k|x) + log g_k)``, a missing one ``log sum_k P(k|x) (1 - g_k)``.

    Args:
        psi: CSAT design rows of the terminal turns, shape (n, q).
        csat: logged CSAT of those turns, NaN where the survey was not answered, shape (n,).
        weights: row weights (e.g. stabilised inverse propensities), shape (n,).
        method: ``"selection"`` (MNAR) or ``"respondents"`` (MAR).
        l2: prior precision of the coefficients (intercept unpenalised); ``g`` gets a weak
            logistic prior centred on the overall answer rate.
        threads: torch threads for the loss.
        init: warm start (a fit of the same design, e.g. on the full data when refitting
            on a bootstrap resample).
    """
    if method not in CSAT_METHODS:
        raise ValueError(f"csat_missing must be one of {CSAT_METHODS}, got {method!r}")
    n, q = psi.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    observed = ~np.isnan(csat)
    labels = csat_soft_labels(csat)
    if not observed.any():
        # Nothing to learn from: a flat distribution; the caller records a warning.
        fit = SoftmaxFit(coef=np.zeros((1, q, 4)), converged=True, iterations=0)
        return CsatModel(fit=fit, response=np.zeros(5), method="none")
    rate = float(w[observed].sum() / w.sum())
    fit = (
        init.fit
        if init is not None and init.method == "selection"
        else fit_softmax(
            psi[observed],
            labels[observed],
            weights=w[observed],
            l2=l2,
            max_iter=max_iter,
            init=None if init is None else init.fit,
        )
    )
    if method == "respondents" or observed.all():
        return CsatModel(fit=fit, response=np.full(5, rate), method="respondents")
    return _fit_selection(
        psi, labels, w, observed, fit, rate, l2=l2, max_iter=max_iter, threads=threads, init=init
    )


def _fit_selection(
    psi: np.ndarray,
    labels: np.ndarray,
    w: np.ndarray,
    observed: np.ndarray,
    fit: SoftmaxFit,
    rate: float,
    *,
    l2: float,
    max_iter: int,
    threads: int,
    init: CsatModel | None,
) -> CsatModel:
    """The ``selection`` fit of :func:`fit_csat`: coefficients and answer rates ``g``
    jointly, from ``fit`` (the respondents' fit, or the warm start) and the overall answer
    rate ``rate``. ``labels`` (n, 5) soft CSAT labels, ``w`` (n,) weights, ``observed``
    (n,) bool: answered rows."""
    n, q = psi.shape
    x_obs = torch.from_numpy(np.ascontiguousarray(psi[observed]))
    wy_obs = torch.from_numpy(labels[observed] * w[observed, None])
    x_mis = torch.from_numpy(np.ascontiguousarray(psi[~observed]))
    w_mis = torch.from_numpy(w[~observed])
    total = float(w.sum())
    pen = torch.ones(q, 1, dtype=torch.float64)
    pen[0] = 0.0
    eta0 = float(np.log(rate / max(1.0 - rate, 1e-12)))
    size = q * 4
    # Same preconditioning as fit_softmax: coef = T beta.
    wn = w / total
    ridge = l2 / total + 1e-6 * max(float((psi**2 * wn[:, None]).sum()) / q, 1e-12)
    precond = preconditioners(psi, wn, [slice(0, n)], ridge)[0]
    t_t = torch.from_numpy(precond)

    def loss_fn(theta: torch.Tensor) -> torch.Tensor:
        coef = t_t @ theta[:size].view(q, 4)
        eta = theta[size:]
        log_g = torch.nn.functional.logsigmoid(eta)
        log_1mg = torch.nn.functional.logsigmoid(-eta)
        z = x_obs @ coef
        lp = torch.log_softmax(torch.cat([torch.zeros_like(z[:, :1]), z], dim=1), dim=1)
        loss = -(wy_obs * (lp + log_g)).sum()
        z = x_mis @ coef
        lpm = torch.log_softmax(torch.cat([torch.zeros_like(z[:, :1]), z], dim=1), dim=1)
        loss = loss - (w_mis * torch.logsumexp(lpm + log_1mg, dim=1)).sum()
        loss = loss + 0.5 * l2 * (pen * coef * coef).sum() + 0.5 * ((eta - eta0) ** 2).sum()
        return loss / total

    eta_init = (
        np.full(5, eta0)
        if init is None or init.method != "selection"
        else np.log(init.response / np.maximum(1.0 - init.response, 1e-12))
    )
    theta0 = np.concatenate([np.linalg.solve(precond, fit.coef[0]).ravel(), eta_init])
    x, converged, iterations = minimize_torch(loss_fn, theta0, max_iter=max_iter, threads=threads)
    coef = (precond @ x[:size].reshape(q, 4))[None]
    g = 1.0 / (1.0 + np.exp(-x[size:]))
    fit = SoftmaxFit(coef=coef, converged=converged, iterations=iterations)
    return CsatModel(fit=fit, response=g, method="selection", iterations=iterations)


def csat_outcome_design(
    x: np.ndarray,
    sentiment: np.ndarray,
    action: np.ndarray,
    outcome: np.ndarray,
    n_actions: int,
) -> np.ndarray:
    """CSAT design with a separate block per terminal outcome, shape (n, 1 + 3 (d + n_actions + 2)).

    Column 0 is the intercept; then, for each terminal outcome ``o`` (resolved,
    escalated, abandoned), ``1{outcome == o} * [1, x, one-hot action, sentiment]``. Every
    outcome thus has its own state, action and sentiment effects on the CSAT
    distribution (outcome x sentiment and outcome x state terms): the score of an
    abandoned conversation moves with sentiment differently from a resolved one's, and
    one shared slope imputes abandoned conversations too high and resolved ones too low.
    ``x`` (n, d) is the encoded state at the last decision, ``sentiment`` (n,) its
    sentiment, ``action`` (n,) the last action, ``outcome`` (n,) outcome codes (rows with
    ``continue`` get zero blocks).
    """
    n = x.shape[0]
    a = np.zeros((n, n_actions))
    a[np.arange(n), action] = 1.0
    block = np.concatenate([np.ones((n, 1)), x, a, sentiment[:, None]], axis=1)
    out = np.zeros((n, 1 + _TERMINAL_OUTCOMES * block.shape[1]))
    out[:, 0] = 1.0
    width = block.shape[1]
    for o in range(1, len(OUTCOMES)):
        rows = outcome == o
        start = 1 + (o - 1) * width
        out[rows, start : start + width] = block[rows]
    return out


@dataclass(frozen=True)
class CsatImputation:
    """Missing terminal CSAT of a set of logs, imputed by the MNAR selection model, refittable.

    Fitted once on the logs (:meth:`from_logs`); :meth:`csat` gives the CSAT of every turn
    with the missing terminal ones filled by the model's posterior mean, and with
    ``counts`` refits the model on a bootstrap resample of the conversations first (warm
    started from the full fit), so that off-policy intervals carry the CSAT model's error.
    """

    psi: np.ndarray
    """Design rows of the terminal turns (:func:`csat_outcome_design`), shape (n_terminal, q)."""
    observed: np.ndarray
    """Logged CSAT of the terminal turns, NaN where missing, shape (n_terminal,)."""
    rows: np.ndarray
    """Turn index of each terminal turn, shape (n_terminal,)."""
    conversation: np.ndarray
    """Conversation index of each terminal turn, shape (n_terminal,)."""
    logged: np.ndarray
    """Logged CSAT of every turn, shape (n_turns,)."""
    model: CsatModel
    """The fit on all the logs."""
    l2: float = 1.0
    refit_iter: int = 30
    """L-BFGS iterations of a warm-started refit."""
    method: str = "selection"
    """How refits treat missing scores (``selection``: MNAR; ``respondents``: MAR)."""
    spec: FeatureSpec | None = None
    """The state encoding of the design (:meth:`from_logs`); None for a simulator's basis."""

    @classmethod
    def from_logs(
        cls,
        logs: object,
        *,
        max_turns: int = 10,
        l2: float = 1.0,
        threads: int = 1,
        levels: Mapping[str, Sequence[str]] | None = None,
    ) -> CsatImputation:
        """Fit on ``logs`` (a ``simulators.logs.LoggedConversations``); ``levels`` fixes the
        categories of the state encoding (``build_feature_spec``) where the logs hold fewer.

        Raises ValueError when terminal turns lack CSAT and no conversation has an answer.
        """
        csat = np.asarray(logs.csat, dtype=np.float64)  # type: ignore[attr-defined]
        outcome = np.asarray(logs.outcome)  # type: ignore[attr-defined]
        terminal = np.flatnonzero(outcome != CONTINUE)
        if np.isnan(csat[terminal]).any() and (~np.isnan(csat[terminal])).sum() == 0:
            raise ValueError(
                "csat: no conversation in the logs has a CSAT answer, so missing CSAT cannot be "
                "imputed; set reward.csat_weight=0 to evaluate without the CSAT term"
            )
        states = logs.states()  # type: ignore[attr-defined]
        actions = logs.actions  # type: ignore[attr-defined]
        spec = build_feature_spec(
            states,
            actions=actions,
            categorical=logs.categorical,  # type: ignore[attr-defined]
            numeric=logs.numeric,  # type: ignore[attr-defined]
            max_turns=max_turns,
            levels=levels,
        )
        x = spec.encode({k: np.asarray(v)[terminal] for k, v in states.items()})
        psi = csat_outcome_design(
            x.astype(np.float64),
            np.asarray(states["sentiment"], dtype=np.float64)[terminal],
            np.asarray(logs.action)[terminal],  # type: ignore[attr-defined]
            outcome[terminal],
            len(actions),
        )
        model = fit_csat(psi, csat[terminal], method="selection", l2=l2, threads=threads)
        return cls(
            psi=psi,
            observed=csat[terminal],
            rows=terminal,
            conversation=np.asarray(logs.conversation_index)[terminal],  # type: ignore[attr-defined]
            logged=csat,
            model=model,
            l2=l2,
            spec=spec,
        )

    @classmethod
    def from_basis(
        cls, logs: LoggedConversations, basis: Basis, *, l2: float = 1.0, threads: int = 1
    ) -> CsatImputation:
        """Fit the MNAR selection model on ``logs`` with a fitted simulator's design
        (:func:`csat_design` on ``basis``), as the simulator fits it with its defaults."""
        model = fit_csat(*_terminal_design(logs, basis), method="selection", l2=l2, threads=threads)
        return cls.from_model(logs, basis, model, l2=l2)

    @classmethod
    def from_model(
        cls, logs: LoggedConversations, basis: Basis, model: CsatModel, *, l2: float = 1.0
    ) -> CsatImputation:
        """Reuse the CSAT model a fitted simulator already has (no second full fit).

        ``basis`` and ``model`` are a ``FittedCustomerModel``'s ``basis`` and ``csat``,
        fitted on the same logs; the design is theirs (:func:`csat_design`: the state,
        action, terminal outcome and outcome x sentiment), and bootstrap refits
        (:meth:`csat`) warm-start from ``model`` with prior precision ``l2`` (the simulator's).
        Raises ValueError as :meth:`from_logs`.
        """
        psi, csat_terminal = _terminal_design(logs, basis)
        csat = np.asarray(logs.csat, dtype=np.float64)
        terminal = np.flatnonzero(np.asarray(logs.outcome) != CONTINUE)
        return cls(
            psi=psi,
            observed=csat[terminal],
            rows=terminal,
            conversation=np.asarray(logs.conversation_index)[terminal],
            logged=csat,
            model=model,
            l2=l2,
            method="respondents" if model.method == "respondents" else "selection",
        )

    @property
    def n_imputed(self) -> int:
        """Terminal turns without a logged CSAT."""
        return int(np.isnan(self.observed).sum())

    def csat(self, counts: np.ndarray | None = None) -> np.ndarray:
        """CSAT of every turn, shape (n_turns,), missing terminal ones imputed.

        ``counts`` (n_conversations,): refit the model with each conversation counted that
        many times (a bootstrap resample) before imputing; ``None``: the full-data fit.
        """
        out = self.logged.copy()
        missing = np.isnan(self.observed)
        if not missing.any():
            return out
        model = self.model
        if counts is not None:
            w = np.asarray(counts, dtype=np.float64)[self.conversation]
            model = fit_csat(
                self.psi,
                self.observed,
                weights=w,
                method=self.method,
                l2=self.l2,
                max_iter=self.refit_iter,
                init=self.model,
            )
        out[self.rows[missing]] = model.imputed(self.psi[missing])
        return out


def _terminal_design(logs: LoggedConversations, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`csat_design` rows, logged CSAT) of the terminal turns; ValueError when
    CSAT is missing and no conversation has an answer."""
    csat = np.asarray(logs.csat, dtype=np.float64)
    outcome = np.asarray(logs.outcome)
    terminal = np.flatnonzero(outcome != CONTINUE)
    if np.isnan(csat[terminal]).any() and (~np.isnan(csat[terminal])).sum() == 0:
        raise ValueError(
            "csat: no conversation in the logs has a CSAT answer, so missing CSAT cannot be "
            "imputed; set reward.csat_weight=0 to evaluate without the CSAT term"
        )
    state = basis.state_from_named(logs.states()).take(terminal)
    psi = csat_design(
        basis.phi(state),
        state.sentiment,
        np.asarray(logs.action)[terminal],
        outcome[terminal],
        len(logs.actions),
    )
    return psi, csat[terminal]


def impute_terminal_csat(
    logs: LoggedConversations, basis: Basis, model: CsatModel
) -> tuple[np.ndarray, int]:
    """Logged CSAT with every missing terminal score imputed by ``model``, and how many.

    A terminal turn (outcome resolved / escalated / abandoned) without a survey answer
    gets the expected CSAT *of a non-respondent* under ``model``,
    ``sum_k k P(k|x)(1-g_k) / sum_k P(k|x)(1-g_k)`` -- never a neutral 3. Observed scores
    are kept; non-terminal turns (and cut-off last turns) stay NaN. The one imputation
    behind :meth:`FittedCustomerModel.csat_imputation` and :func:`impute_csat`.

    Returns:
        csat: shape (n_turns,) float64; n_imputed: number of imputed turns.
    """
    csat = np.array(logs.csat, dtype=np.float64, copy=True)
    rows = np.flatnonzero((logs.outcome != CONTINUE) & np.isnan(csat))
    if len(rows) == 0:
        return csat, 0
    state = basis.state_from_named(logs.states()).take(rows)
    psi = csat_design(
        basis.phi(state), state.sentiment, logs.action[rows], logs.outcome[rows], len(logs.actions)
    )
    csat[rows] = model.imputed(psi)
    return csat, int(len(rows))
