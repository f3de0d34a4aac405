"""supportrl: reinforcement learning for customer-support chatbots, from logs to a shipped policy.

The project's top-level folders install under this one namespace: ``supportrl.simulators``,
``supportrl.envs``, ``supportrl.agents``, ``supportrl.ope``, ``supportrl.serving`` and
``supportrl.experiments`` (the Hydra commands). Importing ``supportrl`` registers the
environment ids (``gymnasium.make("supportrl/SupportEnv-v1")``; the v0 ids
``supportrl/SupportEnv-v0`` and ``SupportEnv-v0`` stay, with the v0 behaviour) when Gymnasium is installed, and nothing heavier: the subpackages load on
first use, so ``from supportrl.serving import Predictor`` never pulls torch, Ray or Hydra.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_importing(signum: int, frame: object) -> None:
    sys.stderr.write("interrupted\n")
    os._exit(130)  # nothing is written yet: only imports have run


def _quiet_interrupts_in_the_command_line() -> None:
    """For the ``supportrl`` command only (the console script, or ``python -m
    supportrl.experiments.cli``): Ctrl-C while the imports below run (Gymnasium, numpy)
    exits 130 with one ``interrupted`` line, no traceback. ``experiments.cli.main`` gives
    SIGINT back to Python before the command starts (it then handles KeyboardInterrupt)."""
    argv = getattr(sys, "orig_argv", sys.argv)
    script = os.path.basename(sys.argv[0]) in ("supportrl", "supportrl.exe")
    module = "supportrl.experiments.cli" in argv[1:3] and "-m" in argv[1:3]
    if (script or module) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupted_while_importing)


_quiet_interrupts_in_the_command_line()

import importlib  # noqa: E402
from typing import Any  # noqa: E402

__version__ = "0.1.0"

ENV_ID = "supportrl/SupportEnv-v1"
"""The env id: SupportEnv over the ground-truth world (a model's scalar sim when it has one)."""
ENV_ID_V0 = "supportrl/SupportEnv-v0"
LEGACY_ENV_ID = "SupportEnv-v0"
"""The v0 ids, kept with their behaviour: the single env steps the batched model
(``scalar=False``), so a seeded v0 run gives the numbers it gave before the scalar path."""
SUBPACKAGES = ("simulators", "envs", "agents", "ope", "serving", "experiments")


def _register_env_ids() -> None:
    """Register the env ids by entry-point strings, so nothing is imported until ``make``."""
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # a serving-only install has no Gymnasium, and needs no env ids
        return
    versions = ((ENV_ID, {}), (ENV_ID_V0, {"scalar": False}), (LEGACY_ENV_ID, {"scalar": False}))
    for env_id, kwargs in versions:
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="supportrl.simulators.synthetic:make_env",
                vector_entry_point="supportrl.simulators.synthetic:make_vector_env",
                kwargs=kwargs,
            )


_register_env_ids()


def __getattr__(name: str) -> Any:
    if name in SUBPACKAGES:
        return importlib.import_module(f"supportrl.{name}")
    raise AttributeError(f"module 'supportrl' has no attribute {name!r}")


__all__ = ["ENV_ID", "ENV_ID_V0", "LEGACY_ENV_ID", "SUBPACKAGES", "__version__", *SUBPACKAGES]
