"""Hydra entry points: build objects from config, call library code, write outputs.

Only this package knows Hydra. Each command is a module with a ``main()``:
``supportrl <command> [overrides]`` is ``python -m supportrl.experiments.<command> [overrides]``.
"""

COMMANDS: tuple[str, ...] = (
    "validate",
    "generate",
    "fit",
    "train",
    "evaluate",
    "sweep",
    "report",
    "export",
    "serve",
    "deploy",
    "pipeline",
    "abtest",
    "loop",
)
