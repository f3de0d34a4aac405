"""Where the repository's shipped files are: the Hydra configs (``configs/``) and the
files a command may name relative to the repository (``configs/rules/...``)."""

from __future__ import annotations

from pathlib import Path

CONFIG_PATH = str(Path(__file__).resolve().parent.parent / "configs")
"""The Hydra config directory (``configs/`` at the repository root)."""


REPO_ROOT = Path(CONFIG_PATH).parent


def resolve_shipped(path: str | Path) -> Path:
    """A path as given, or relative to the repository when it names a shipped file (configs/...)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    shipped = REPO_ROOT / path
    return shipped if shipped.exists() else path
