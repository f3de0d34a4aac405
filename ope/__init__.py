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
from supportrl.ope.meta import OffPolicyEvaluation
from supportrl.ope.partitioned import LogSource, PartitionedEvaluation, evaluate_partitioned
from supportrl.ope.registry import ESTIMATORS, make_estimator
from supportrl.ope.resample import poisson_weights
from supportrl.ope.results import Estimate, PolicyEvaluation, format_results
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
    "Estimate",
    "OffPolicyEvaluation",
    "PolicyEvaluation",
    "format_results",
    "LogSource",
    "PartitionedEvaluation",
    "evaluate_partitioned",
    "poisson_weights",
]
