"""Bootstrap resample weights keyed by conversation id: the same draw wherever it is made.

The refit bootstrap of :class:`~supportrl.ope.meta.OffPolicyEvaluation` counts conversation
``c`` ``n_kc ~ Poisson(1)`` times in resample ``k`` (the Poisson bootstrap: independent
counts, so a resample needs no global draw). Here ``n_kc`` is a pure function of
``(seed, k, conversation_id)``: a 64-bit hash of the id, mixed with the seed and ``k`` by
SplitMix64 into a uniform, turned into a Poisson(1) count by its inverse CDF. So a
conversation's count is the same in memory, in a streamed batch and in a Ray task, in
whatever order the conversations come, and sums over partitions add up to the sums over
all the data exactly (``docs/scale.md``).
"""

from __future__ import annotations

import math

import numpy as np
from supportrl.simulators.logs.bounded import id_hash, id_uniform

__all__ = ["id_hash", "id_uniform", "poisson_weights"]

_MAX_COUNT = 24  # P(Poisson(1) > 24) < 1e-25: beyond the resolution of a 53-bit uniform

# P(N <= j) for N ~ Poisson(1), j = 0 .. _MAX_COUNT - 1
_CDF = np.cumsum([math.exp(-1.0) / math.factorial(j) for j in range(_MAX_COUNT)])


def poisson_weights(
    conversation_id: np.ndarray, n_resamples: int, seed: int, *, hashes: np.ndarray | None = None
) -> np.ndarray:
    """Poisson(1) resample counts, shape (n_resamples, n) float64: row ``k`` is resample ``k``.

    Count ``[k, i]`` depends on ``(seed, k, conversation_id[i])`` only (see the module
    docstring). ``hashes``: :func:`id_hash` of the ids, when already computed.
    """
    h = id_hash(conversation_id) if hashes is None else np.asarray(hashes, dtype=np.uint64)
    out = np.empty((int(n_resamples), len(h)))
    for k in range(int(n_resamples)):
        # stream 0 is kept for other per-id draws (the nuisance sample)
        out[k] = np.searchsorted(_CDF, id_uniform(h, seed, k + 1), side="right")
    return out
