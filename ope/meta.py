"""One object that runs off-policy estimators on logged conversations: :class:`OffPolicyEvaluation`.

Shape after Open Bandit Pipeline's ``OffPolicyEvaluation(bandit_feedback, ope_estimators,
regression_model)``: the prepared logs (feedback), the estimators by name, and the
nuisance models they need (reward model, fitted Q evaluation per policy, balancing
weights, CSAT imputation), to typed results (:class:`PolicyEvaluation`, frozen). The
``evaluate`` command, the pipeline and offline bandit training all call it::

    ope = OffPolicyEvaluation(prepared=prepare_conversations(logs, reward, ...))
    results = ope.evaluate({"rules": probs_a, "linucb": probs_b})   # name -> (n_turns, K)
    results["rules"].selection.ci_low

**What the intervals cover.** Every interval comes from a bootstrap over conversations
that *refits every nuisance model in each resample* (the CSAT model, estimated propensities,
the balancing weights, the reward model of the per-decision estimators, and fitted Q
evaluation of every policy, which feeds ``fqe``, ``seq_dr`` and ``wdr``): it covers sampling noise and
the estimation error of those models (logs above ``refit_turns`` turns refit them on a
random subset of conversations of that size: :meth:`OffPolicyEvaluation.evaluate`). It
does not cover bias that no resample reveals: confounding through variables the logs do not record (FQE's main error), a CSAT
selection model that is wrong, or actions the logs never take. For those: the
FQE-vs-importance-sampling disagreement widens the *selection* interval, and where the
target policy puts material mass on unsupported actions, partial-identification bounds
(:mod:`ope.support`) widen it to what the reward range allows.

Interval form: ``interval="normal"`` (default) is ``estimate +- z * se_multiplier * SE``
with ``SE`` the standard deviation of the refitted replicates; ``"percentile"`` takes their
quantiles. The default ``se_multiplier`` was calibrated on fresh samples of the synthetic
world (``benchmarks/bench_ope_calibration.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from scipy.stats import norm
from supportrl.ope.data import BanditFeedback, SequentialFeedback
from supportrl.ope.diagnostics import effective_sample_size, support_warning, weight_statistics
from supportrl.ope.estimators import BanditEstimator, check_target_probs
from supportrl.ope.evaluate import (
    CONVERSATION_ESTIMATORS,
    DECISION_ESTIMATORS,
    PreparedConversations,
)
from supportrl.ope.finish import finish
from supportrl.ope.models import RidgeSystem, balancing_weights, cross_fit_reward, fitted_q_many
from supportrl.ope.nuisance import fit_nuisance
from supportrl.ope.registry import make_estimator
from supportrl.ope.resample import poisson_weights
from supportrl.ope.results import (
    Bounds,
    Estimate,
    PolicyDiagnostics,
    PolicyEvaluation,
    PolicyStatistics,
    SupportReport,
    _with_warning,
)
from supportrl.ope.sequential import SequentialEstimator, cumulative_weights
from supportrl.ope.streaming import memory_sums, refit_subset, select_prepared
from supportrl.ope.support import (
    deficit_bounds,
    support_bounds,
    support_mask,
    unsupported_mass,
    unsupported_statistic,
)

__all__ = ["IMPORTANCE_WEIGHTED", "OffPolicyEvaluation"]

IMPORTANCE_WEIGHTED: frozenset[str] = frozenset(
    {"pdis", "wpdis", "seq_dr", "wdr", "ips", "snips", "dr", "sndr", "switch_dr", "dr_os"}
)
"""Estimators whose precision rests on the importance weights (flagged on low ESS)."""

_SEQUENTIAL_CLIPPED = ("pdis", "wpdis", "seq_dr", "wdr")

MIN_REFIT_CONVERSATIONS = 50
"""Fewest conversations a refit subset may expect to hold (its noise would dominate)."""


@dataclass(frozen=True, kw_only=True)
class OffPolicyEvaluation:
    """Run estimators with refitted nuisance models on prepared logs; see the module docstring."""

    prepared: PreparedConversations
    conversation_estimators: Sequence[str] = CONVERSATION_ESTIMATORS
    decision_estimators: Sequence[str] = DECISION_ESTIMATORS
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    """Hyperparameters by estimator name (e.g. ``{"switch_dr": {"tau": 50}}``)."""
    select: str = "seq_dr"
    """Conversation-level estimator whose widened interval picks the winner."""
    selection_interval: Literal["auto", "widened", "bounds"] = "widened"
    """``"widened"``: the selection estimator's interval widened to at least its
    FQE-vs-IS disagreement, and to the partial-identification bounds of the unsupported
    part (:func:`ope.support.support_bounds`) where support is materially missing;
    ``"auto"``: also to the model-free bounds (:func:`ope.support.deficit_bounds`) where
    the sample misses more than ``max_deficit`` of the target's probability mass (heavy
    tails); ``"bounds"``: the model-free bounds always."""
    max_deficit: float = 0.05
    """Missing target mass above which ``"auto"`` uses the model-free bounds (and every
    mode warns that the data cannot pin the value down)."""
    max_weight: float | Literal["auto"] | None = "auto"
    """Clip of the cumulative weights of ``pdis wpdis seq_dr wdr`` (unless
    ``params`` sets one); ``"auto"``: ``weight_share`` times the number of
    conversations (:attr:`clip`); ``None``: no clipping. A fixed clip leaves a share of
    each policy's probability mass unrepresented that does not shrink with the sample,
    and seq_dr fills that share in with a Q-model that confounding biases: at 100k
    conversations of the synthetic world, a clip of 200 left 19-27% of the rule policies'
    mass unrepresented and biased seq_dr by +0.07..+0.15 while its SE fell to 0.02; a
    clip that grows with the sample keeps that bias shrinking with it
    (``benchmarks/README.md``)."""
    weight_share: float = 0.05
    """With ``max_weight="auto"``: the clip is this share of the number of conversations,
    i.e. no conversation carries more weight than ``weight_share`` of the sample's
    (250 at 5k conversations, 1,000 at 20k, 5,000 at 100k)."""
    n_refit: int = 50
    """Resamples; every one refits all nuisance models (the normal interval needs only
    their standard deviation, which 50 pin down to about 10%)."""
    alpha: float = 0.05
    interval: Literal["normal", "percentile"] = "normal"
    se_multiplier: float = 2.5
    """Scales the normal interval's half-width. 2.5 was calibrated on fresh samples of the
    project's own synthetic world (``benchmarks/bench_ope_calibration.py --own-world``):
    the refitted bootstrap SE misses the bias of clipped, model-assisted estimators on
    heavy-tailed conversations (1.0 covered 41% of the own world's policies, 2.5: 91%)."""
    min_support: float = 0.005
    """An action with a modelled logging probability below this in a state is unsupported there."""
    material_support: float = 0.10
    """Unsupported probability per conversation above which the partial-identification
    bounds enter the selection interval (0.01-0.05 gave the same coverage in the
    calibration table, with a winner's regret of 0.08-0.09 instead of 0.00-0.03)."""
    min_ess: float = 100.0
    """Conversation (or decision) ESS below which importance-weighted estimates are flagged."""
    min_ess_share: float = 0.01
    """... or below this share of the conversations (decisions), whichever is larger."""
    refit_turns: int | None = 20_000
    """Logs of more turns than this: every resample's nuisance models are refitted on a
    random subset of whole conversations (drawn by id hash) of about this many turns, the
    other conversations' resamples keep the point fit's models, and the subset's
    refitted-minus-point-fit difference, scaled by ``sqrt(share)``, carries the models'
    variation (:meth:`evaluate`); ``None``, or logs of at most this many turns: every
    resample refits on all the logs (the same intervals as :meth:`evaluate_reference`, to
    rounding)."""
    seed: int = 0
    progress: bool = True
    """Report long loops on stderr (:mod:`ope.progress`); False: ``logger.progress=false``."""
    workers: int | Literal["auto"] = 0
    """Processes for the resamples' refits and statistics (:mod:`supportrl.workers`): same numbers."""

    def __post_init__(self) -> None:
        unknown = [
            n
            for n in (*self.conversation_estimators, self.select)
            if n not in CONVERSATION_ESTIMATORS
        ]
        unknown += [n for n in self.decision_estimators if n not in DECISION_ESTIMATORS]
        if unknown:
            raise ValueError(
                f"unknown estimator(s) {unknown}: conversation-level {list(CONVERSATION_ESTIMATORS)}, "
                f"per-decision {list(DECISION_ESTIMATORS)}"
            )
        if isinstance(self.n_refit, bool) or int(self.n_refit) < 2:
            raise ValueError(f"n_refit must be an int >= 2, got {self.n_refit!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.selection_interval not in ("auto", "widened", "bounds"):
            raise ValueError(
                "selection_interval must be 'auto', 'widened' or 'bounds', "
                f"got {self.selection_interval!r}"
            )
        if self.interval not in ("normal", "percentile"):
            raise ValueError(f"interval must be 'normal' or 'percentile', got {self.interval!r}")
        if not self.se_multiplier > 0:
            raise ValueError(f"se_multiplier must be > 0, got {self.se_multiplier}")
        if self.max_weight != "auto" and self.max_weight is not None:
            if isinstance(self.max_weight, str) or not self.max_weight > 0:
                raise ValueError(f"max_weight must be > 0, 'auto' or None, got {self.max_weight!r}")
        if not 0.0 < self.weight_share <= 1.0:
            raise ValueError(f"weight_share must be in (0, 1], got {self.weight_share}")
        if self.refit_turns is not None and (
            isinstance(self.refit_turns, bool) or int(self.refit_turns) < 1
        ):
            raise ValueError(f"refit_turns must be an int >= 1 or None, got {self.refit_turns!r}")

    @property
    def clip(self) -> float | None:
        """The clip of the cumulative weights in use: ``max_weight``, or with ``"auto"``
        ``weight_share * n_conversations`` (at least 1)."""
        if self.max_weight == "auto":
            return max(self.weight_share * self.prepared.logs.n_conversations, 1.0)
        return self.max_weight

    # ------------------------------------------------------------------ estimators

    def _conversation_estimators(self) -> dict[str, SequentialEstimator]:
        names = dict.fromkeys([*self.conversation_estimators, self.select, "fqe"])
        names.update(dict.fromkeys(n for n in ("seq_dr",) if n not in names))
        out = {}
        for name in names:
            params = dict(self.params.get(name, {}))
            if name in _SEQUENTIAL_CLIPPED:
                params.setdefault("max_weight", self.clip)
            est = make_estimator(name, **params)
            assert isinstance(est, SequentialEstimator)
            out[name] = est
        return out

    def _decision_estimators(self) -> dict[str, BanditEstimator]:
        out = {}
        for name in self.decision_estimators:
            est = make_estimator(name, **dict(self.params.get(name, {})))
            assert isinstance(est, BanditEstimator)
            out[name] = est
        return out

    # ------------------------------------------------------------------ one fit

    def _fit(
        self, probs: np.ndarray, supported: np.ndarray, counts: np.ndarray | None
    ) -> list[PolicyStatistics]:
        """Fit every nuisance model on a resample and evaluate every statistic.

        ``probs`` (m, n_turns, K), ``supported`` (n_turns, K) bool; ``counts``
        (n_conversations,) resample counts, ``None`` for the data as they are.
        """
        prep = self.prepared
        logs = prep.logs
        n_actions = len(logs.actions)
        conv_counts = np.ones(logs.n_conversations) if counts is None else counts
        turn_counts = conv_counts[logs.conversation_index]
        reward = prep.reward_for(counts)
        propensity = prep.propensity_for(counts)
        balance = balancing_weights(propensity, logs.action, n_actions, counts=turn_counts)
        system = RidgeSystem.build(
            prep.x, logs.action, n_actions, sample_weight=turn_counts * balance
        )
        sub = np.where(supported[None], probs, 0.0)
        q_all = fitted_q_many(system, reward, logs.offsets, np.concatenate([probs, sub]))
        m = probs.shape[0]
        seq = SequentialFeedback(
            action=logs.action,
            reward=reward,
            propensity=propensity,
            offsets=logs.offsets,
            n_actions=n_actions,
        )
        conversation = self._conversation_estimators()
        decision = self._decision_estimators()
        reward_hat = None
        if decision:
            reward_hat = cross_fit_reward(
                prep.x,
                logs.action,
                reward,
                n_actions,
                groups=logs.conversation_index,
                seed=prep.seed,
                sample_weight=turn_counts * balance,
            )
            bandit = BanditFeedback(
                action=logs.action, reward=reward, propensity=propensity, n_actions=n_actions
            )
        values: list[PolicyStatistics] = []
        for p in range(m):
            estimates: dict[str, float] = {}
            for name, est in conversation.items():
                stat = est._validated_statistic(seq, probs[p], q_all[p])
                estimates[name] = stat.resampled_value(conv_counts)
            for name, est in decision.items():
                stat = est._validated_statistic(bandit, probs[p], reward_hat)
                estimates[name] = stat.resampled_value(turn_counts)
            bounds = deficit_bounds(seq, probs[p], prep.return_range, max_weight=self.clip)
            lower, upper = bounds.value(conv_counts)
            s_low, s_high = support_bounds(
                seq,
                probs[p],
                supported,
                q_all[m + p],
                prep.return_range,
                max_weight=self.clip,
            )
            mass = unsupported_statistic(seq, probs[p], supported, max_weight=self.clip)
            values.append(
                PolicyStatistics(
                    estimates=estimates,
                    deficit_lower=lower,
                    deficit_upper=upper,
                    deficit=bounds.deficit(conv_counts),
                    support_lower=s_low.resampled_value(conv_counts),
                    support_upper=s_high.resampled_value(conv_counts),
                    unsupported=mass.resampled_value(conv_counts),
                )
            )
        return values

    # ------------------------------------------------------------------ public

    def refit_share(self) -> float:
        """Share of the conversations whose resamples refit the nuisance models (1: all;
        see :attr:`refit_turns`). ValueError when the subset would hold fewer than
        :data:`MIN_REFIT_CONVERSATIONS` conversations."""
        logs = self.prepared.logs
        if self.refit_turns is None or logs.n_turns <= self.refit_turns:
            return 1.0
        share = self.refit_turns / logs.n_turns
        if share * logs.n_conversations < MIN_REFIT_CONVERSATIONS:
            need = int(np.ceil(MIN_REFIT_CONVERSATIONS * logs.n_turns / logs.n_conversations))
            raise ValueError(
                f"ope.refit_turns={self.refit_turns}: the refit subset would hold about "
                f"{share * logs.n_conversations:.0f} conversations, too few to measure the "
                f"refitted models' variation; raise it to at least {need}"
            )
        return share

    def evaluate(self, policies: Mapping[str, np.ndarray]) -> dict[str, PolicyEvaluation]:
        """Evaluate every policy: ``name -> target_probs`` of shape (n_turns, n_actions).

        ``target_probs`` follow the logs' turn order (all turns of the logs as given, or
        the ones kept after the cut at ``max_turns``). Deterministic given ``seed``.

        One pass of the partitioned engine's machinery (:mod:`ope.streaming`) over logs
        held in memory: the point fit evaluates every estimator once and weighs it by all
        resamples' counts in one matrix product; the resamples' refitted models are fitted
        and evaluated on the refit subset (:attr:`refit_turns`; all the logs when they are
        small, and then every number equals :meth:`evaluate_reference` to rounding).
        Resample ``k`` is then (all logs, point fit, counts ``k``) + ``sqrt(share)`` x
        ((subset, refit ``k``) - (subset, its point fit)), both on counts ``k``.
        """
        if not policies:
            raise ValueError("policies: nothing to evaluate")
        csat_model = self.prepared.csat_model
        if csat_model is not None and not hasattr(csat_model, "psi"):
            return self.evaluate_reference(policies)  # a CSAT imputer of another kind
        names = list(policies)
        probs = self._target_probs(policies)
        share = self.refit_share()
        fits = fit_nuisance(self, probs, names, resamples=share >= 1.0)
        supported = support_mask(
            fits.behaviour.predict(self.prepared.x),
            self.prepared.logs.action,
            min_probability=self.min_support,
        )
        subset = None
        if share < 1.0:
            logs = self.prepared.logs
            keep = refit_subset(logs.conversation_id, self.seed, share)
            sub_prep = select_prepared(self.prepared, keep)
            # the subset's statistics use the whole logs' clip: the value it measures
            # differences of is the whole logs' estimate
            sub_ope = dataclasses.replace(self, prepared=sub_prep, max_weight=self.clip)
            turns = keep[logs.conversation_index]
            sub_fits = fit_nuisance(
                sub_ope, probs[:, turns], names, refit_point=True, behaviour=fits.behaviour
            )
            sub_fits = dataclasses.replace(sub_fits, return_range=fits.return_range)
            subset = (sub_fits, sub_prep, turns)
            fits = dataclasses.replace(fits, refit_share=share, refit_scale=float(np.sqrt(share)))
        sums = memory_sums(fits, self.prepared, probs, supported, subset, workers=self.workers)
        return finish(self, fits, probs, sums, whole_logs=True)

    def _target_probs(self, policies: Mapping[str, np.ndarray]) -> np.ndarray:
        """Every policy's validated target probabilities, (m, n_turns, n_actions)."""
        prep = self.prepared
        n_actions = len(prep.logs.actions)
        return np.stack(
            [
                check_target_probs(
                    prep.target_rows(np.asarray(policies[k])),
                    prep.logs.n_turns,
                    n_actions,
                    name=f"target_probs of {k!r}",
                )
                for k in policies
            ]
        )

    def evaluate_reference(self, policies: Mapping[str, np.ndarray]) -> dict[str, PolicyEvaluation]:
        """:meth:`evaluate` written plainly, the reference the tests hold it equal to:
        every resample refits every nuisance model on all the logs and evaluates every
        estimator again (``refit_turns`` is not used)."""
        if not policies:
            raise ValueError("policies: nothing to evaluate")
        prep = self.prepared
        logs = prep.logs
        names = list(policies)
        probs = self._target_probs(policies)
        supported = support_mask(prep.behaviour, logs.action, min_probability=self.min_support)
        point = self._fit(probs, supported, None)
        # counts keyed by conversation id: streamed and Ray evaluation draw the same ones
        counts = poisson_weights(logs.conversation_id, int(self.n_refit), self.seed)
        replicates = [self._fit(probs, supported, c) for c in counts]
        return {
            name: self.finish_policy(probs[p], supported, point[p], [r[p] for r in replicates])
            for p, name in enumerate(names)
        }

    def _interval(self, estimate: float, reps: np.ndarray) -> tuple[float, float, float]:
        reps = reps[np.isfinite(reps)]
        se = float(reps.std(ddof=1)) if len(reps) > 1 else float("nan")
        if self.interval == "percentile":
            low, high = np.quantile(reps, [self.alpha / 2, 1 - self.alpha / 2])
            return float(low), float(high), se
        half = float(norm.ppf(1 - self.alpha / 2)) * self.se_multiplier * se
        return estimate - half, estimate + half, se

    def finish_policy(
        self,
        probs: np.ndarray,
        supported: np.ndarray,
        point: PolicyStatistics,
        resamples: Sequence[PolicyStatistics],
        *,
        diagnostics: PolicyDiagnostics | None = None,
    ) -> PolicyEvaluation:
        """One policy's estimates, intervals, support report and diagnostics from its
        statistics under the point fit and under every resample; ``probs`` (n_turns, K)
        its target probabilities on the logs (or the sample), ``supported`` (n_turns, K).
        ``diagnostics``: the policy's diagnostics when they come from elsewhere (the whole
        logs' sums, when these logs are a sample); default :meth:`policy_diagnostics`."""
        prep = self.prepared
        diag = (
            self.policy_diagnostics(probs, supported, point) if diagnostics is None else diagnostics
        )
        rr = prep.return_range
        ranges = {
            "conversation": (rr.value_low, rr.value_high),
            # one decision earns a step reward, plus the terminal terms on a last turn
            "decision": (rr.step_low + min(0.0, rr.end_low), rr.step_high + max(0.0, rr.end_high)),
        }
        mass = point.unsupported
        unsupported = mass > self.material_support
        deficit = point.deficit

        def reps(name: str) -> np.ndarray:
            if name in point.estimates:
                return np.array([r.estimates[name] for r in resamples])
            return np.array([getattr(r, name) for r in resamples])

        def estimate(name: str, scope: str) -> Estimate:
            value = point.estimates[name]
            low, high, se = self._interval(value, reps(name))
            flags = []
            ess = diag.ess_conversation if scope == "conversation" else diag.ess_decision
            n = diag.n_conversations if scope == "conversation" else diag.n_turns
            if name in IMPORTANCE_WEIGHTED and ess < max(self.min_ess, self.min_ess_share * n):
                flags.append("low ESS")
            lo_range, hi_range = ranges[scope]
            if not lo_range <= value <= hi_range:  # NaN and +-inf included
                flags.append("outside reward range")
            if scope == "conversation" and unsupported:
                flags.append("unsupported")
            return Estimate(value, low, high, se, tuple(flags))

        conversation = {n: estimate(n, "conversation") for n in self.conversation_estimators}
        decision = {n: estimate(n, "decision") for n in self.decision_estimators}
        sel = self.select
        base = conversation.get(sel) or estimate(sel, "conversation")
        bounds = self._bounds(point, reps, "support", ranges["conversation"])
        deficit_bounds = self._bounds(point, reps, "deficit", ranges["conversation"])
        gap = abs(diag.disagreement)
        low = min(base.ci_low, base.estimate - gap)
        high = max(base.ci_high, base.estimate + gap)
        if unsupported:
            low, high = min(low, bounds.ci_low), max(high, bounds.ci_high)
        if self.selection_interval == "auto" and deficit > self.max_deficit:
            low, high = min(low, deficit_bounds.ci_low), max(high, deficit_bounds.ci_high)
        if self.selection_interval == "bounds":
            low, high = deficit_bounds.ci_low, deficit_bounds.ci_high
        selection = Estimate(base.estimate, low, high, base.std_err, base.flags)
        support = SupportReport(
            unsupported_decision=float(unsupported_mass(probs, supported).mean()),
            unsupported_conversation=float(mass),
            deficit=float(deficit),
            material=bool(unsupported),
            bounds=bounds,
            deficit_bounds=deficit_bounds,
        )
        return PolicyEvaluation(
            conversation=MappingProxyType(conversation),
            decision=MappingProxyType(decision),
            selection=selection,
            select=sel,
            support=support,
            diagnostics=self._support_warnings(diag, support),
        )

    def _bounds(
        self,
        point: PolicyStatistics,
        reps: Callable[[str], np.ndarray],
        kind: Literal["support", "deficit"],
        value_range: tuple[float, float],
    ) -> Bounds:
        """The ``support`` (partial identification) or ``deficit`` (model-free) bounds of
        ``point`` with their interval over the resamples' ``reps(name)``, the interval cut
        to ``value_range``: a value cannot leave the range reward v1 allows, whatever the
        resampling says."""
        lower, upper = getattr(point, f"{kind}_lower"), getattr(point, f"{kind}_upper")
        low, _, _ = self._interval(lower, reps(f"{kind}_lower"))
        _, high, _ = self._interval(upper, reps(f"{kind}_upper"))
        return Bounds(lower, upper, max(low, value_range[0]), min(high, value_range[1]))

    def _support_warnings(
        self, diag: PolicyDiagnostics, support: SupportReport
    ) -> PolicyDiagnostics:
        """``diag`` with the warnings of a material unsupported mass and of a large deficit."""
        bounds, mass, deficit = support.bounds, support.unsupported_conversation, support.deficit
        if support.material:
            diag = _with_warning(
                diag,
                f"{mass:.1%} of conversations under this policy reach an action the logs "
                f"(almost) never take in that state; its value is only partially identified: "
                f"[{bounds.lower:+.3f}, {bounds.upper:+.3f}] (worst / best return for that part), "
                f"interval [{bounds.ci_low:+.3f}, {bounds.ci_high:+.3f}]",
            )
        if deficit > self.max_deficit:
            low_d, high_d = support.deficit_bounds.ci_low, support.deficit_bounds.ci_high
            diag = _with_warning(
                diag,
                f"the logs represent only {1 - deficit:.0%} of this policy's probability mass "
                f"(the rest lies in trajectories too rare to be sampled, or clipped): the data "
                f"cannot pin its value down; model-free bounds [{low_d:+.3f}, {high_d:+.3f}]",
            )
        return diag

    def policy_diagnostics(
        self, probs: np.ndarray, supported: np.ndarray, point: PolicyStatistics
    ) -> PolicyDiagnostics:
        prep = self.prepared
        logs = prep.logs
        n_actions = len(logs.actions)
        seq = SequentialFeedback(
            action=logs.action,
            reward=prep.reward,
            propensity=prep.propensity,
            offsets=logs.offsets,
            n_actions=n_actions,
        )
        w = probs[np.arange(logs.n_turns), logs.action] / prep.propensity
        last = logs.offsets[1:] - 1
        conv_w = cumulative_weights(seq, probs)[last]
        clipped = (
            0.0
            if self.clip is None
            else float(
                np.mean(cumulative_weights(seq, probs, max_weight=self.clip)[last] >= self.clip)
            )
        )
        ess_conversation = effective_sample_size(conv_w)
        reference = self.select if self.select != "fqe" else "seq_dr"
        disagreement = point.estimates["fqe"] - point.estimates[reference]
        warnings = support_warning(
            probs, np.bincount(logs.action, minlength=n_actions), action_names=logs.actions
        )
        warnings += self.weight_warnings(
            ess_conversation, logs.n_conversations, clipped, float(disagreement)
        )
        return PolicyDiagnostics(
            n_turns=logs.n_turns,
            n_conversations=logs.n_conversations,
            ess_decision=effective_sample_size(w),
            ess_conversation=ess_conversation,
            weights=weight_statistics(w),
            clipped_share=clipped,
            disagreement=float(disagreement),
            warnings=tuple(warnings),
            max_weight=self.clip,
        )

    def weight_warnings(
        self, ess_conversation: float, n_conversations: int, clipped: float, disagreement: float
    ) -> list[str]:
        """Warnings on the conversation weights' ESS, the clipped share and the fqe gap."""
        reference = self.select if self.select != "fqe" else "seq_dr"
        warnings = []
        if ess_conversation < max(self.min_ess, self.min_ess_share * n_conversations):
            warnings.append(
                f"effective sample size of the conversation weights is {ess_conversation:.0f} of "
                f"{n_conversations}: importance-weighted conversation estimates rest on few "
                "conversations; their intervals are flagged 'low ESS'"
            )
        if clipped > 0.01:
            warnings.append(
                f"{clipped:.1%} of conversations have a cumulative weight clipped at "
                f"{self.clip:g} (less variance, some bias toward the logging policy)"
            )
        if abs(disagreement) > 0.05:
            warnings.append(
                f"fqe and {reference} differ by {disagreement:+.3f}: model bias (confounding "
                "or extrapolation) that the bootstrap cannot see; the selection interval is "
                "widened by it"
            )
        return warnings
