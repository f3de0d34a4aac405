"""Run every ``benchmarks/bench_*.py`` in turn (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> None:
    failed = []
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        module = f"benchmarks.{path.stem}"
        print(f"\n=== {module} ===", flush=True)
        if subprocess.run([sys.executable, "-m", module]).returncode != 0:
            failed.append(module)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
