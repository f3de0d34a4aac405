"""Old home of the commands' shared helpers, kept so that older imports work: the names now
live in modules named by what they hold. Import from those:

- :mod:`supportrl.experiments.repo_files`: ``CONFIG_PATH``, ``REPO_ROOT``, ``resolve_shipped``
- :mod:`supportrl.experiments.errors`: ``UserError``, ``USER_ERRORS``, ``describe_os_error``
- :mod:`supportrl.experiments.run_dirs`: ``run_dir``, ``LOCK_FILE``, ``output``,
  ``user_errors``, ``RESUMABLE_COMMANDS``, ``RunDirGuard``, ``lock_run_dir``, ``HYDRA_FILES``,
  ``remove_run_outputs``
- :mod:`supportrl.experiments.from_config`: ``check_settings``, ``to_plain``,
  ``reward_from_cfg``, ``world_from_cfg``, ``load_data``, ``log_limits``
- :mod:`supportrl.experiments.results`: ``write_json``, ``strict_json``, ``finish``,
  ``plot_or_warn``
"""

from __future__ import annotations

from supportrl.experiments.errors import USER_ERRORS, UserError, describe_os_error
from supportrl.experiments.from_config import (
    check_settings,
    load_data,
    log_limits,
    reward_from_cfg,
    to_plain,
    world_from_cfg,
)
from supportrl.experiments.repo_files import CONFIG_PATH, REPO_ROOT, resolve_shipped
from supportrl.experiments.results import finish, plot_or_warn, strict_json, write_json
from supportrl.experiments.run_dirs import (
    HYDRA_FILES,
    LOCK_FILE,
    RESUMABLE_COMMANDS,
    RunDirGuard,
    lock_run_dir,
    output,
    remove_run_outputs,
    run_dir,
    user_errors,
)

__all__ = [
    "CONFIG_PATH",
    "HYDRA_FILES",
    "LOCK_FILE",
    "REPO_ROOT",
    "RESUMABLE_COMMANDS",
    "RunDirGuard",
    "USER_ERRORS",
    "UserError",
    "check_settings",
    "describe_os_error",
    "finish",
    "load_data",
    "lock_run_dir",
    "log_limits",
    "output",
    "plot_or_warn",
    "remove_run_outputs",
    "resolve_shipped",
    "reward_from_cfg",
    "run_dir",
    "strict_json",
    "to_plain",
    "user_errors",
    "world_from_cfg",
    "write_json",
]
