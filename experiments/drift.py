"""``supportrl validate data.turns=LOG artifact=DIR``: drift of a log against an artifact's training data.

Not a command of its own: ``validate`` calls :func:`drift_against_artifact` when
``artifact=`` is given and prints the per-feature population stability index, unseen
categories and the action-mix shift (``supportrl.serving.drift``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from supportrl.simulators.logs import LoggedConversations, LoggedDecisions


def drift_against_artifact(
    data: LoggedConversations | LoggedDecisions, artifact: str | Path
) -> dict[str, Any]:
    """Compare ``data`` with the training-data summary in ``artifact``'s (verified) manifest,
    print a table, and return the report as a dict (``DriftReport.to_dict``)."""
    from supportrl.serving import read_manifest
    from supportrl.serving.drift import MAJOR_PSI, MODERATE_PSI, drift_report

    manifest = read_manifest(Path(str(artifact)))
    labels = np.asarray(data.actions)[data.action]
    report = drift_report(manifest.get("training_data") or {}, data.states(), labels)
    print(
        f"\ndrift against {artifact} (training data: {manifest['training_data'].get('n_rows')} rows)"
    )
    print(f"{'feature':<24}{'PSI':>8}  reading")
    for name, value in report.psi.items():
        reading = (
            "major shift" if value > MAJOR_PSI else "moderate" if value > MODERATE_PSI else "stable"
        )
        extra = f"; unseen {report.unseen[name]}" if name in report.unseen else ""
        if name in report.policy_driven:
            extra += " (shaped by the serving policy's own actions)"
        print(f"{name:<24}{value:>8.3f}  {reading}{extra}")
    if report.action_psi is not None:
        print(
            f"{'action mix':<24}{report.action_psi:>8.3f}  (a new policy acts differently from "
            "the one that logged the training data; read this beside the features)"
        )
    print(report.verdict())
    return report.to_dict()
