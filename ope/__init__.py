"""Off-policy evaluation of support-bot policies on logged data.

Array-level API: build a :class:`BanditFeedback` (one row per decision) or a
:class:`SequentialFeedback` (conversations), get the candidate policy's action
probabilities for the logged states, and call an estimator::

    from supportrl.ope import make_estimator
    dr = make_estimator("dr")
    dr.estimate(feedback, target_probs, reward_hat)
    dr.interval(feedback, target_probs, reward_hat, n_bootstrap=1000, seed=0)

Estimator names (docs/cli.md): ``dm ips snips dr sndr switch_dr dr_os`` per
decision, ``pdis wpdis seq_dr wdr fqe`` per conversation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from supportrl.ope.data import BanditFeedback, SequentialFeedback
from supportrl.ope.diagnostics import (
    WeightStatistics,
    effective_sample_size,
    support_warning,
    weight_statistics,
)
from supportrl.ope.estimators import (
    IPS,
    SNIPS,
    BanditEstimator,
    DirectMethod,
    DoublyRobust,
    DROptimisticShrinkage,
    SelfNormalizedDR,
    SwitchDR,
    check_action_values,
    check_target_probs,
    importance_weights,
)
from supportrl.ope.intervals import (
    Interval,
    RatioStatistic,
    bootstrap_interval,
    bootstrap_replicates,
)
from supportrl.ope.sequential import (
    FQE,
    PDIS,
    WPDIS,
    SequentialDR,
    SequentialEstimator,
    WeightedDR,
    cumulative_weights,
)

__all__ = [
    "ESTIMATORS",
    "FQE",
    "IPS",
    "PDIS",
    "SNIPS",
    "WPDIS",
    "BanditEstimator",
    "BanditFeedback",
    "DROptimisticShrinkage",
    "DirectMethod",
    "DoublyRobust",
    "Interval",
    "RatioStatistic",
    "SelfNormalizedDR",
    "SequentialDR",
    "SequentialEstimator",
    "SequentialFeedback",
    "SwitchDR",
    "WeightStatistics",
    "WeightedDR",
    "bootstrap_interval",
    "bootstrap_replicates",
    "check_action_values",
    "check_target_probs",
    "cumulative_weights",
    "effective_sample_size",
    "importance_weights",
    "make_estimator",
    "support_warning",
    "weight_statistics",
]

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


# After make_estimator: the orchestration object builds estimators through it.
from supportrl.ope.meta import (  # noqa: E402
    Estimate,
    OffPolicyEvaluation,
    PolicyEvaluation,
    format_results,
)

__all__ += ["Estimate", "OffPolicyEvaluation", "PolicyEvaluation", "format_results"]

# Logs larger than memory: resamples keyed by conversation id, evaluation in partitions or
# on Ray with the in-memory numbers (docs/scale.md).
from supportrl.ope.partitioned import (  # noqa: E402
    LogSource,
    PartitionedEvaluation,
    evaluate_partitioned,
)
from supportrl.ope.resample import poisson_weights  # noqa: E402

__all__ += ["LogSource", "PartitionedEvaluation", "evaluate_partitioned", "poisson_weights"]
