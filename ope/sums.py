"""Additive statistics of partitions of the logs (:class:`PartitionSums`): their keys, how they
combine across partitions, and the diagnostics sums (weights, ESS, clipping, the weight
histogram) behind the whole logs' figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from supportrl.ope.data import SequentialFeedback
from supportrl.ope.nuisance import NuisanceFits
from supportrl.ope.sequential import cumulative_weights
from supportrl.ope.support import (
    unsupported_mass,
)

REFIT_PREFIX, FIXED_PREFIX = "refit:", "fixed:"
"""Key prefixes of the refit subset's statistics under every fit and under the point fit."""


RANGE_KEY = "_return_range"
"""Key of (lowest return, -highest return), shape (1, 2): combined by minimum, not summed."""


MIN_SUFFIX = "/min"
"""Keys ending so are combined by minimum (a maximum is kept as its negative)."""


DIAG_FIELDS = (
    "n_turns",
    "weight_sum",
    "weight_sq",
    "n_conversations",
    "conversation_weight_sum",
    "conversation_weight_sq",
    "clipped",
    "unsupported_mass",
    "zero_weights",
)
"""The sums behind each policy's diagnostics, in the order of its ``_diag`` array
(per-turn weights ``w``, conversation weights, clipped conversations, unsupported mass)."""


WEIGHT_BIN_RATIO = 1.005
"""Bins of the decision-weight histogram: geometric, this ratio wide (0.5% resolution)."""


WEIGHT_BIN_RANGE = (1e-6, 1e9)
"""Positive weights below / above are counted in the first / last bin."""


N_WEIGHT_BINS = int(
    np.ceil(np.log(WEIGHT_BIN_RANGE[1] / WEIGHT_BIN_RANGE[0]) / np.log(WEIGHT_BIN_RATIO))
)


@dataclass
class PartitionSums:
    """Additive statistics of some partitions: ``arrays[key]`` has shape (1 + n_resamples, ...)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, key: str, k: int, value: np.ndarray | float, n_fits: int) -> None:
        value = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if key not in self.arrays:
            self.arrays[key] = np.zeros((n_fits, *value.shape))
        self.arrays[key][k] += value


def add_sums(parts: Sequence[PartitionSums]) -> PartitionSums:
    """Sum of partition statistics (the reduce step; ``RANGE_KEY`` and keys ending in
    :data:`MIN_SUFFIX` by minimum)."""
    out = PartitionSums()
    for part in parts:
        for key, value in part.arrays.items():
            if key in out.arrays and (key == RANGE_KEY or key.endswith(MIN_SUFFIX)):
                out.arrays[key] = np.minimum(out.arrays[key], value)
            elif key in out.arrays:
                out.arrays[key] = out.arrays[key] + value
            else:
                out.arrays[key] = value.copy()
    return out


def _weight_bins(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positive weights in the geometric bins: count, smallest and minus the largest
    weight of every bin (inf where empty), each (N_WEIGHT_BINS,)."""
    positive = w[w > 0]
    step = np.log(WEIGHT_BIN_RATIO)
    index = np.floor((np.log(positive) - np.log(WEIGHT_BIN_RANGE[0])) / step)
    index = np.clip(index, 0, N_WEIGHT_BINS - 1).astype(np.int64)
    low, neg_high = np.full(N_WEIGHT_BINS, np.inf), np.full(N_WEIGHT_BINS, np.inf)
    np.minimum.at(low, index, positive)
    np.minimum.at(neg_high, index, -positive)
    return np.bincount(index, minlength=N_WEIGHT_BINS).astype(np.float64), low, neg_high


def _add_diagnostics(
    sums: PartitionSums, fits: NuisanceFits, seq: SequentialFeedback, probs: np.ndarray,
    supported: np.ndarray, p: int,
) -> None:  # fmt: skip
    """Sums behind the ESS, clipped share, unsupported mass, weight statistics and support
    warnings of the whole logs."""
    w = probs[np.arange(seq.n_turns), seq.action] / seq.propensity
    last = seq.offsets[1:] - 1
    conv_w = cumulative_weights(seq, probs)[last]
    clipped = 0.0
    if fits.max_weight is not None:
        clipped = float(
            (
                cumulative_weights(seq, probs, max_weight=fits.max_weight)[last] >= fits.max_weight
            ).sum()
        )
    values = {
        "n_turns": len(w), "weight_sum": w.sum(), "weight_sq": w @ w,
        "n_conversations": len(conv_w), "conversation_weight_sum": conv_w.sum(),
        "conversation_weight_sq": conv_w @ conv_w, "clipped": clipped,
        "unsupported_mass": unsupported_mass(probs, supported).sum(), "zero_weights": (w == 0).sum(),
    }  # fmt: skip
    sums.add(f"{p}/_diag", 0, np.array([values[k] for k in DIAG_FIELDS]), 1)
    sums.add(f"{p}/_target_mass", 0, probs.sum(axis=0), 1)
    if len(w):
        sums.add(f"{p}/_weight_max{MIN_SUFFIX}", 0, -w.max(), 1)
    counts, low, neg_high = _weight_bins(w)
    sums.add(f"{p}/_weight_bins", 0, counts, 1)
    sums.add(f"{p}/_weight_bins_low{MIN_SUFFIX}", 0, low, 1)
    sums.add(f"{p}/_weight_bins_high{MIN_SUFFIX}", 0, neg_high, 1)


__all__ = ["PartitionSums", "add_sums"]
