"""Response models of a fitted customer model: what follows a (state, action) pair.

:class:`GLMDynamics` (multinomial logit + linear-Gaussian regressions, fitted by
:func:`fit_glm`) and :class:`EnsembleDynamics` (the torch ensemble of
:mod:`supportrl.simulators.fitted.ensemble`) both answer ``predict(phi, action) ->``
:class:`Prediction`, and convert to and from the plain arrays the simulator files hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.envs.rewards import OUTCOMES
from supportrl.simulators.fitted.config import GLMParams
from supportrl.simulators.fitted.ensemble import EnsembleNet
from supportrl.simulators.fitted.glm import GaussianFit, SoftmaxFit, fit_gaussian, fit_softmax


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
    """K wide-and-deep members (:class:`~simulators.fitted.ensemble.EnsembleNet`)."""

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


def fit_glm(
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
