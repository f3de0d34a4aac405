"""The one Ray start-up: a local Ray on this machine, or the cluster at ``ray.address`` with the
``supportrl`` package shipped to its workers.

RLlib training (:mod:`supportrl.agents.rllib`), logs read in passes on Ray
(:mod:`supportrl.simulators.logs.partitioned`) and the sweep's Tune trials
(:mod:`supportrl.experiments.sweep`) all start Ray here, so a cluster gets the same code
whichever of them joins it first. Ray is imported on first use only.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

RAY_LOGGING_LEVEL = logging.WARNING
"""Level of Ray's own loggers in the driver (its start-up chatter is INFO)."""


def start_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
) -> bool:
    """Start Ray unless it already runs in this process; whether this call started it.

    ``address`` None: a local Ray of ``num_cpus`` CPUs (default: the cores Ray detects) with
    an object store of ``object_store_mb`` MB (default: Ray's). Otherwise join the cluster
    at ``address`` (``"auto"``, ``"ray://host:10001"``, ...) and ship the ``supportrl``
    package to its workers as ``runtime_env={"py_modules": [...]}`` (:func:`shipped_package`),
    so they run this checkout's code. No dashboard, workers' output not echoed here. The
    caller shuts Ray down (``ray.shutdown()``) when this returned True.
    """
    import ray

    if ray.is_initialized():
        return False
    if num_cpus is not None and num_cpus < 1:
        raise ValueError(f"num_cpus: expected >= 1 or None, got {num_cpus}")
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": RAY_LOGGING_LEVEL,
    }
    if address:
        options["runtime_env"] = {"py_modules": shipped_package()}
    else:
        options["num_cpus"] = num_cpus
        if object_store_mb is not None:
            options["object_store_memory"] = int(object_store_mb) * 2**20
    ray.init(address=address or None, **options)
    return True


def shipped_package() -> list[str]:
    """The installed ``supportrl`` package, staged as one folder a cluster's workers import.

    The project's top-level folders install as ``supportrl.envs``, ``supportrl.agents``, ...
    through a package-dir mapping, so no single source folder holds the package; Ray ships
    ``py_modules`` as folders, hence a staged copy: the root package's modules and every
    subpackage (``supportrl.SUBPACKAGES``), without bytecode caches.
    """
    import importlib.util

    import supportrl

    staging = Path(tempfile.mkdtemp(prefix="supportrl-py-module-")) / "supportrl"
    staging.mkdir()
    for module in Path(supportrl.__file__).resolve().parent.glob("*.py"):
        shutil.copy2(module, staging / module.name)
    for name in supportrl.SUBPACKAGES:
        spec = importlib.util.find_spec(f"supportrl.{name}")  # located, not imported
        assert spec is not None and spec.submodule_search_locations
        shutil.copytree(
            Path(spec.submodule_search_locations[0]).resolve(),
            staging / name,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return [str(staging)]
