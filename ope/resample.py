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
import pandas as pd

__all__ = ["id_hash", "id_uniform", "poisson_weights"]

_HASH_KEY = "supportrl-resamp"  # 16 bytes: pandas' SipHash key, fixed so hashes never change
_MAX_COUNT = 24  # P(Poisson(1) > 24) < 1e-25: beyond the resolution of a 53-bit uniform

# P(N <= j) for N ~ Poisson(1), j = 0 .. _MAX_COUNT - 1
_CDF = np.cumsum([math.exp(-1.0) / math.factorial(j) for j in range(_MAX_COUNT)])


def id_hash(conversation_id: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of every id (SipHash of its string form), shape (n,) uint64."""
    ids = pd.Series(np.asarray(conversation_id)).astype(str)
    return pd.util.hash_pandas_object(ids, index=False, hash_key=_HASH_KEY).to_numpy(np.uint64)


def _splitmix(z: np.ndarray) -> np.ndarray:
    # SplitMix64's finaliser (Steele et al. 2014): a bijection of uint64 that passes BigCrush
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def id_uniform(hashes: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """A uniform in [0, 1) per id hash for ``(seed, stream)``, shape (n,) float64."""
    key = _splitmix(np.asarray([seed & (2**64 - 1)], dtype=np.uint64))
    key = _splitmix(key ^ np.uint64(stream & (2**64 - 1)))
    z = _splitmix(np.asarray(hashes, dtype=np.uint64) ^ key)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


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
