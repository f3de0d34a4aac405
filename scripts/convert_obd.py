"""Convert an Open Bandit Dataset CSV into supportrl's generic logged bandit feedback.

Usage::

    python scripts/convert_obd.py open_bandit_dataset/random/all/all.csv obd.csv

The Open Bandit Dataset (ZOZOTOWN; Saito et al. 2021) logs one row per impression with
``item_id``, ``position``, ``click``, ``propensity_score`` and user features, usually with a
saved pandas index as its first column. This keeps the decision columns under supportrl's
default names (``action``, ``reward``, ``propensity``), drops the saved index and the
timestamp, and prints the command that validates the result. Rows are never dropped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

RENAMES = {"item_id": "action", "click": "reward", "propensity_score": "propensity"}
DROPPED = ("timestamp",)


def convert(frame: pd.DataFrame) -> pd.DataFrame:
    """The OBD frame with supportrl's column names; raises ValueError naming missing columns."""
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed:")]]
    missing = sorted(set(RENAMES) - set(frame.columns))
    if missing:
        raise ValueError(f"not an Open Bandit Dataset file: missing columns {missing}")
    frame = frame.drop(columns=[c for c in DROPPED if c in frame.columns])
    frame = frame.rename(columns=RENAMES)
    frame["action"] = "item_" + frame["action"].astype(str)
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="OBD CSV (e.g. random/all/all.csv)")
    parser.add_argument("target", type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    try:
        converted = convert(pd.read_csv(args.source))
    except (OSError, ValueError) as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 2
    converted.to_csv(args.target, index=False)
    context = [c for c in converted.columns if c not in ("action", "reward", "propensity")]
    print(f"wrote {len(converted)} rows to {args.target}")
    print(
        f"supportrl validate data=bandit data.path={args.target} "
        f"data.categorical=[{','.join(c for c in context if converted[c].dtype == object)}]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
