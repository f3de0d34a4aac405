"""Customer ids never leave the tool in the clear: salted pseudonyms for everything it writes.

Support logs carry personal data. Where supportrl writes an id of a customer (reports,
decision logs, messages), it writes :func:`pseudonymize` of it instead: a keyed hash
(HMAC-SHA256) under a salt taken from the ``SUPPORTRL_ID_SALT`` environment variable or
the configuration, never written anywhere. Without a configured salt a random one is drawn
per process, so pseudonyms cannot be joined across runs (nor reversed by guessing ids).

Standard library and numpy only, so every package may use it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable

import numpy as np

SALT_ENV = "SUPPORTRL_ID_SALT"
"""Environment variable holding the pseudonym salt (takes precedence over the config)."""

PREFIX = "p_"
"""Start of every pseudonym, so one is never mistaken for a raw id."""

_PROCESS_SALT = secrets.token_hex(16)


def id_salt(configured: str | None = None) -> bytes:
    """The salt: ``$SUPPORTRL_ID_SALT``, else ``configured``, else a random per-process salt."""
    salt = os.environ.get(SALT_ENV) or configured or _PROCESS_SALT
    return str(salt).encode("utf-8")


def pseudonymize(ids: Iterable[object] | np.ndarray, salt: bytes | None = None) -> np.ndarray:
    """Pseudonyms of ``ids`` (shape (n,)): ``p_`` + 16 hex digits of HMAC-SHA256(salt, id).

    Equal ids get equal pseudonyms under one salt; distinct ids collide with probability
    about n^2 / 2^65. Each distinct id is hashed once (logs repeat customers).
    """
    key = id_salt() if salt is None else salt
    values = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).astype(str)
    uniques, codes = np.unique(values, return_inverse=True)
    hashed = np.array(
        [
            PREFIX + hmac.new(key, u.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
            for u in uniques.tolist()
        ],
        dtype=object,
    )
    return hashed[codes.reshape(-1)].astype(str)
