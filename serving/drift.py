"""Drift between the data a policy was trained on and the states it now serves (numpy only).

The artifact's manifest keeps a summary of the training data (``training_data``: category
shares, numeric quantile bins, the logged action mix). :func:`drift_report` compares a new
batch of states (e.g. a decision log) with it:

* per feature, the population stability index ``PSI = sum_b (q_b - p_b) ln(q_b / p_b)``
  over the summary's bins (numeric) or levels (categorical), with shares floored at
  ``1e-4``; the usual reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift;
* categories the policy has never seen (they are invalid states for the Predictor);
* the action mix of the new log against the training logs' (a new policy is expected to
  act differently; a large shift with stable features says the policy changed, not the
  customers). ``previous_action`` follows the policy too, so it is reported but not
  counted as customer drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODERATE_PSI = 0.1
MAJOR_PSI = 0.25
_FLOOR = 1e-4


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins (floored at 1e-4)."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), _FLOOR)
    q = np.maximum(np.asarray(current, dtype=np.float64), _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class DriftReport:
    """Drift of a batch of states against an artifact's training-data summary."""

    n_rows: int
    psi: dict[str, float]
    """Feature -> PSI."""
    unseen: dict[str, dict[str, int]]
    """Categorical feature -> {unseen category: rows}."""
    action_psi: float | None
    """PSI of the action mix (None when either side has no actions)."""
    action_shares: dict[str, float] = field(default_factory=dict)

    policy_driven: tuple[str, ...] = ("previous_action",)
    """Variables the serving policy itself shapes: reported, not counted as customer drift."""

    @property
    def drifted(self) -> list[str]:
        """Customer features with PSI above :data:`MAJOR_PSI` or with unseen categories."""
        shifted = {k for k, v in self.psi.items() if v > MAJOR_PSI} | set(self.unseen)
        return sorted(shifted - set(self.policy_driven))

    def verdict(self) -> str:
        """One plain sentence."""
        if self.drifted:
            worst = ", ".join(
                f"{k} (PSI {self.psi.get(k, float('nan')):.2f}"
                + (
                    f", {sum(self.unseen[k].values())} rows of unseen categories"
                    if k in self.unseen
                    else ""
                )
                + ")"
                for k in self.drifted
            )
            return (
                "drift: the policy is serving customers unlike those it was trained and "
                f"evaluated on: {worst}"
            )
        moderate = [
            k for k, v in self.psi.items() if v > MODERATE_PSI and k not in self.policy_driven
        ]
        if moderate:
            return f"moderate drift (PSI 0.1-0.25) in {', '.join(moderate)}; no major shift"
        return "no drift: every feature's PSI is below 0.1 and no category is new"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "psi": self.psi,
            "unseen_categories": self.unseen,
            "action_psi": self.action_psi,
            "action_shares": self.action_shares,
            "policy_driven": list(self.policy_driven),
            "drifted": self.drifted,
            "verdict": self.verdict(),
        }


def drift_report(
    summary: Mapping[str, Any],
    states: Mapping[str, Sequence[Any]],
    actions: Sequence[str] | None = None,
) -> DriftReport:
    """Compare ``states`` (columns, each (n,)) and the chosen ``actions`` (labels, (n,)) with
    a manifest's ``training_data`` summary.

    Raises:
        ValueError: the summary is empty (the artifact was exported without training data).
    """
    if not summary or "categorical" not in summary:
        raise ValueError("the artifact's manifest has no training-data summary to compare with")
    n = len(next(iter(states.values())))
    scores: dict[str, float] = {}
    unseen: dict[str, dict[str, int]] = {}
    for name, shares in summary["categorical"].items():
        if name not in states:
            continue
        values = np.asarray(states[name]).astype(str)
        levels = list(shares)
        current = np.array([np.mean(values == lv) for lv in levels])
        scores[name] = psi(np.array(list(shares.values())), current)
        new, counts = np.unique(values[~np.isin(values, levels)], return_counts=True)
        if len(new):
            unseen[name] = dict(zip(new.tolist(), counts.tolist(), strict=True))
    for name, bins in summary["numeric"].items():
        if name not in states:
            continue
        values = np.asarray(states[name], dtype=np.float64)
        inner = np.asarray(bins["edges"][1:-1])
        counts = np.bincount(
            np.searchsorted(inner, values, side="right"), minlength=len(bins["shares"])
        )
        scores[name] = psi(np.asarray(bins["shares"]), counts / max(n, 1))
    action_psi, action_shares = None, {}
    if actions is not None and summary.get("actions"):
        labels = np.asarray(actions).astype(str)
        ref = summary["actions"]
        action_shares = {a: float(np.mean(labels == a)) for a in ref}
        action_psi = psi(np.array(list(ref.values())), np.array(list(action_shares.values())))
    return DriftReport(
        n_rows=n, psi=scores, unseen=unseen, action_psi=action_psi, action_shares=action_shares
    )
