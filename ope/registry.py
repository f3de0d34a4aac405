"""The estimators by name (as in configs and ``result.json``): :data:`ESTIMATORS` and
:func:`make_estimator`, which configs, the evaluation object and the commands build
estimators through."""

from __future__ import annotations

import dataclasses
from typing import Any

from supportrl.ope.estimators import (
    IPS,
    SNIPS,
    BanditEstimator,
    DirectMethod,
    DoublyRobust,
    DROptimisticShrinkage,
    SelfNormalizedDR,
    SwitchDR,
)
from supportrl.ope.sequential import (
    FQE,
    PDIS,
    WPDIS,
    SequentialDR,
    SequentialEstimator,
    WeightedDR,
)

ESTIMATORS: dict[str, type[BanditEstimator] | type[SequentialEstimator]] = {
    cls.name: cls
    for cls in (
        DirectMethod,
        IPS,
        SNIPS,
        DoublyRobust,
        SelfNormalizedDR,
        SwitchDR,
        DROptimisticShrinkage,
        PDIS,
        WPDIS,
        SequentialDR,
        WeightedDR,
        FQE,
    )
}
"""Estimator name (as in configs and ``result.json``) -> class."""


def make_estimator(name: str, **params: Any) -> BanditEstimator | SequentialEstimator:
    """Build the estimator registered as ``name`` with hyperparameters ``params``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or a
            hyperparameter the estimator does not have (the message lists its fields).
    """
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; valid names: {', '.join(ESTIMATORS)}"
        ) from None
    fields = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"estimator {name!r} has no parameter {', '.join(unknown)}; "
            f"its parameters: {', '.join(fields)}"
        )
    return cls(**params)


__all__ = ["ESTIMATORS", "make_estimator"]
