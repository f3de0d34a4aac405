"""``supportrl validate data.turns=LOG artifact=DIR``: drift of a log against an artifact's training data.

Not a command of its own: ``validate`` calls :func:`drift_against_artifact` when
``artifact=`` is given and prints the per-feature population stability index, unseen
categories and the action-mix shift (``supportrl.serving.drift``).

PSI on a small log is mostly sampling noise: with ``k`` bins and ``n`` rows two samples of
one distribution already differ by about ``(k - 1) / n`` (the chi-square's mean over
``n``). When that noise floor reaches half of the "moderate" threshold, the readings are
withheld ("too few rows") and the verdict says how many rows a reading needs.
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
    summary = manifest.get("training_data") or {}
    report = drift_report(summary, data.states(), labels)
    n_rows = len(labels)
    bins = max([len(b.get("edges", [])) - 1 for b in (summary.get("numeric") or {}).values()] + [2])
    noise = (bins - 1) / max(n_rows, 1)
    small = noise > MODERATE_PSI / 2
    needed = int(np.ceil(2 * (bins - 1) / MODERATE_PSI))
    print(
        f"\ndrift against {artifact} (training data: {manifest['training_data'].get('n_rows')} rows; "
        f"this log: {n_rows} rows)"
    )
    print(f"{'feature':<24}{'PSI':>8}  reading")
    for name, value in report.psi.items():
        if small:
            reading = f"too few rows (noise alone gives PSI ~{noise:.2f})"
        else:
            reading = (
                "major shift"
                if value > MAJOR_PSI
                else "moderate"
                if value > MODERATE_PSI
                else "stable"
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
    result = report.to_dict()
    if small:
        caveat = (
            f"too few rows to read drift: {n_rows} rows, where PSI from sampling noise alone is "
            f"about {noise:.2f} (moderate drift is {MODERATE_PSI}); give at least {needed} rows"
        )
        print(
            f"caveat: {caveat}"
            + (f"; unseen categories are real: {report.unseen}" if report.unseen else "")
        )
        result["small_sample"] = {"n_rows": n_rows, "noise_psi": noise, "rows_needed": needed}
    else:
        print(report.verdict())
    return result
