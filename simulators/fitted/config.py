"""Settings of a fitted customer model: :class:`FitConfig` (shared) and :class:`GLMParams`.

The ensemble family's parameters are :class:`~supportrl.simulators.fitted.ensemble.EnsembleParams`;
:func:`fit_settings` validates a mix of both as :func:`~supportrl.simulators.fitted.fit_customer_model`
takes them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from supportrl.envs.rewards import DEFAULT_MAX_TURNS
from supportrl.simulators.fitted.csat import CSAT_METHODS
from supportrl.simulators.fitted.ensemble import EnsembleParams

FAMILIES: tuple[str, ...] = ("glm", "ensemble")
WEIGHTINGS: tuple[str, ...] = ("none", "propensity", "sequential")


class FitWarning(UserWarning):
    """Something the logs did not allow the customer model to learn."""


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
    max_turns: int = DEFAULT_MAX_TURNS
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


def fit_settings(family: str = "glm", **settings: Any) -> tuple[FitConfig, FamilyParams]:
    """Validate fit settings without fitting: the common :class:`FitConfig` and the family's
    parameters (:class:`GLMParams` or :class:`~simulators.fitted.ensemble.EnsembleParams`).

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
