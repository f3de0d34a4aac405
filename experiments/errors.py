"""What counts as the user's mistake (exit 2, one ``error: ...`` line, no traceback) and how
an environment error (disk full, permissions) is told."""

from __future__ import annotations

import errno
from pathlib import Path

from omegaconf.errors import MissingMandatoryValue


class UserError(ValueError):
    """A mistake in the user's command or config (not in the data)."""


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, MissingMandatoryValue)
"""Exceptions that mean a mistake in the user's data, files, rules or config."""


_OS_HINTS = {
    errno.ENOSPC: "no space left on the device; free space and run again",
    errno.EDQUOT: "disk quota exceeded; free space and run again",
    errno.EROFS: "read-only file system; choose a writable paths.output_dir",
    errno.EACCES: "permission denied",
}


def describe_os_error(exc: OSError, out: Path) -> str:
    """One line naming the file (else the run directory ``out``) and the cause."""
    cause = _OS_HINTS.get(exc.errno or -1) or exc.strerror or str(exc)[:200] or "I/O error"
    where = exc.filename if exc.filename is not None else f"writing into {out}"
    return f"{where}: {cause} (the files this run wrote were removed)"
