"""``supportrl <command> [hydra overrides]``: dispatch to ``supportrl.experiments.<command>``."""

from __future__ import annotations

import importlib
import sys

from supportrl.experiments import COMMANDS

USAGE = f"usage: supportrl <command> [hydra overrides]\ncommands: {', '.join(COMMANDS)}"


def main(argv: list[str] | None = None) -> None:
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
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
