"""``supportrl <command> [hydra overrides]``: dispatch to ``supportrl.experiments.<command>``."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from supportrl.experiments import COMMANDS

from supportrl import _interrupted_while_importing

USAGE = f"usage: supportrl <command> [hydra overrides]\ncommands: {', '.join(COMMANDS)}"


def main(argv: list[str] | None = None) -> None:
    if signal.getsignal(signal.SIGINT) is _interrupted_while_importing:
        # from here Ctrl-C is KeyboardInterrupt again: the command cleans up what it created
        signal.signal(signal.SIGINT, signal.default_int_handler)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"supportrl-{command}", *rest]
    try:
        module = importlib.import_module(f"supportrl.experiments.{command}")
        module.main()
    except KeyboardInterrupt:  # before or after the command's own handler (see user_errors)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: still exit 130
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
