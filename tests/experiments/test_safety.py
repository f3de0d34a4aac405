"""Production-grade safety (issue 22): each test is a reproduction that failed on main.

Data loss (a run removes only files it created), artifact integrity (every byte of the
folder checked, meaning checked on a probe batch), crashes on hostile files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.bandits import make_bandit
from supportrl.agents.dqn import QPolicy, build_q_network
from supportrl.agents.rules import load_rule_policy
from supportrl.experiments.export import export_policy
from supportrl.experiments.repo_files import REPO_ROOT
from supportrl.experiments.run_dirs import lock_run_dir, remove_run_outputs
from supportrl.experiments.sweep import Trial, set_aside_failed_attempt
from supportrl.serving import ArtifactError, Predictor
from supportrl.serving.artifact import redact_paths
from supportrl.simulators.synthetic import SyntheticWorld

from supportrl.outputs import CREATED, write_complete
from tests.helpers import truth_imputer

WORLD = SyntheticWorld()


def dqn_policy() -> QPolicy:
    network = build_q_network(WORLD.feature_spec.dim, len(WORLD.actions), (8,), True, seed=5)
    return QPolicy(actions=WORLD.actions, feature_spec=WORLD.feature_spec, network=network)


def export(policy: object, directory: Path, **kw: object) -> Path:
    return export_policy(policy, directory, feature_spec=WORLD.feature_spec, **kw)


def rehash(artifact: Path, **changes: object) -> None:
    """Rewrite ``manifest.json`` with ``changes`` and re-sign it (an attacker who can
    write the folder can do this): what remains is the loader's own checks."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(changes)
    for name in manifest["files"]:
        if (artifact / name).is_file() and not (artifact / name).is_symlink():
            manifest["files"][name] = hashlib.sha256((artifact / name).read_bytes()).hexdigest()
    text = json.dumps(manifest, indent=2) + "\n"
    (artifact / "manifest.json").write_text(text)
    (artifact / "manifest.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")


# --------------------------------------------------------------------------- 1-3 data loss


def test_export_keeps_an_existing_artifact_tmp_folder(tmp_path: Path) -> None:
    """Issue 22 item 1: export removed ``<run>/artifact.tmp/`` even when it succeeded."""
    mine = tmp_path / "artifact.tmp"
    mine.mkdir()
    (mine / "notes.md").write_text("the user's")
    artifact = export(dqn_policy(), tmp_path / "artifact")
    assert (mine / "notes.md").read_text() == "the user's"
    assert Predictor.load(artifact).kind == "dqn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "artifact.tmp"]


def test_sweep_resume_keeps_a_failed_trials_user_files(tmp_path: Path) -> None:
    """Issue 22 item 2: resuming a sweep deleted a failed trial's folder with user files."""
    trial = Trial(("agent=linucb",), "agent=linucb", tmp_path / "trials" / "agent=linucb")
    (trial.directory / "my_plots").mkdir(parents=True)
    (trial.directory / "notes.md").write_text("why it failed")
    (trial.directory / "my_plots" / "a.png").write_bytes(b"png")
    kept = set_aside_failed_attempt(trial)
    assert kept is not None and not trial.directory.exists()
    assert (kept / "notes.md").read_text() == "why it failed"
    assert (kept / "my_plots" / "a.png").read_bytes() == b"png"
    (trial.directory).mkdir()
    (trial.result).write_text("{}")
    assert set_aside_failed_attempt(trial) is None  # a finished trial is left alone


def test_failed_run_keeps_a_user_file_inside_a_written_output_folder(tmp_path: Path) -> None:
    """Issue 22 item 3: a failed run removed ``<run>/simulator/`` with a file the user
    had put into it during the run. Now only the files the writer wrote go."""
    outputs = tmp_path / "outputs"
    run = outputs / "run"
    run.mkdir(parents=True)
    lock = lock_run_dir(run)
    simulator = CREATED.claim(run / "simulator")
    simulator.mkdir()
    (simulator / "params.npz").write_bytes(b"ours")
    write_complete(simulator, "simulator")  # the writer is done: its files are recorded
    (simulator / "my_notes.txt").write_text("added by the user during the run")
    half = CREATED.claim(run / "checkpoint")  # a writer that fails half-way
    half.mkdir()
    (half / "policy.npz").write_bytes(b"half")
    remove_run_outputs(run, lock, outputs)
    assert (simulator / "my_notes.txt").read_text() == "added by the user during the run"
    assert sorted(p.name for p in simulator.iterdir()) == ["my_notes.txt"]
    assert not half.exists()
    assert CREATED.kept == [simulator]


def test_clean_up_never_removes_a_file_the_user_replaced(tmp_path: Path) -> None:
    out = CREATED.claim(tmp_path / "result.csv")
    out.write_text("ours")
    CREATED.record_file(out)
    out.unlink()
    out.write_text("the user's own file, same name")  # another file (inode) now
    CREATED.remove(within=tmp_path)
    assert out.read_text() == "the user's own file, same name"


# --------------------------------------------------------------------------- 6 artifact folder


def test_an_unlisted_file_in_the_artifact_is_refused(tmp_path: Path) -> None:
    """Issue 22 item 6: an unlisted, rewritten ``theta.npy`` (or ONNX external data) was used."""
    artifact = export(dqn_policy(), tmp_path / "artifact")
    (artifact / "policy.onnx.data").write_bytes(b"external weights")
    with pytest.raises(ArtifactError, match=r"policy.onnx.data: not listed in manifest.json"):
        Predictor.load(artifact)


def test_policy_file_outside_the_artifact_is_refused(tmp_path: Path) -> None:
    """Issue 22 item 6: with ``files={}`` and ``policy.file='../x.onnx'`` a model outside ran."""
    artifact = export(dqn_policy(), tmp_path / "artifact")
    (tmp_path / "x.onnx").write_bytes((artifact / "policy.onnx").read_bytes())
    (artifact / "policy.onnx").unlink()
    manifest = json.loads((artifact / "manifest.json").read_text())
    rehash(artifact, files={}, policy={**manifest["policy"], "file": "../x.onnx"})
    with pytest.raises(ArtifactError, match="not listed in 'files'"):
        Predictor.load(artifact)


def test_a_listed_symlink_is_refused(tmp_path: Path) -> None:
    artifact = export(dqn_policy(), tmp_path / "artifact")
    outside = tmp_path / "elsewhere.onnx"
    os.replace(artifact / "policy.onnx", outside)
    os.symlink(outside, artifact / "policy.onnx")
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"]["policy.onnx"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    rehash(artifact, files=manifest["files"])
    with pytest.raises(ArtifactError, match="not a regular file"):
        Predictor.load(artifact)


def test_duplicate_actions_are_refused(tmp_path: Path) -> None:
    artifact = export(dqn_policy(), tmp_path / "artifact")
    actions = list(WORLD.actions)
    rehash(artifact, actions=[actions[0], *actions[:-1]])
    with pytest.raises(ArtifactError, match="unique"):
        Predictor.load(artifact)


def _onnx_with_output(path: Path, dim: int, n_actions: int, value: float) -> None:
    """A well-formed policy.onnx whose ``probs`` are ``value`` everywhere (not a distribution)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [dim, n_actions], [0.0] * (dim * n_actions))
    b = helper.make_tensor("b", TensorProto.FLOAT, [n_actions], [value] * n_actions)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], ["probs"]),
        ],
        "bad",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["n", dim]),
            helper.make_tensor_value_info("epsilon", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", n_actions])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))


@pytest.mark.parametrize("value", [-0.5, float("nan")])
def test_a_model_giving_no_distribution_is_refused_at_load(value: float, tmp_path: Path) -> None:
    """Issue 22 items 6 and 15: a bad model's negative or NaN probabilities were served."""
    artifact = export(dqn_policy(), tmp_path / "artifact")
    _onnx_with_output(artifact / "policy.onnx", WORLD.feature_spec.dim, len(WORLD.actions), value)
    rehash(artifact)
    with pytest.raises(ArtifactError, match="not a distribution.*probe batch"):
        Predictor.load(artifact)


# --------------------------------------------------------------------------- 7 crashes at load


def rules_artifact(tmp_path: Path) -> Path:
    policy = load_rule_policy(REPO_ROOT / "configs/rules/rules_production.yaml", WORLD.actions)
    return export(policy, tmp_path / "artifact")


def _edit_rules(artifact: Path, when: object) -> None:
    rules = json.loads((artifact / "rules.json").read_text())
    rules["rules"][0]["when"] = when
    (artifact / "rules.json").write_text(json.dumps(rules))
    rehash(artifact)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"cmp": "===", "left": {"var": "turn"}, "right": {"const": 1}}, "unknown comparison"),
        ({"cmp": "in", "left": {"var": "tier"}, "right": {"const": "vip"}}, "needs a list"),
        ({"cmp": "<", "left": {"var": "turn"}, "right": {"list": [1]}}, "with a list"),
        ({"and": []}, "non-empty list"),
        ({"cmp": "==", "left": {"var": "tier"}, "right": {"const": None}}, "constant must be"),
        ("turn > 1", "JSON object"),
    ],
)
def test_rules_json_with_bad_operators_is_refused_at_load(
    when: object, message: str, tmp_path: Path
) -> None:
    """Issue 22 item 7: ``===`` or ``in`` on a scalar loaded, then 500ed on every decision."""
    artifact = rules_artifact(tmp_path)
    _edit_rules(artifact, when)
    with pytest.raises(ArtifactError, match=rf"rules.json: rules\[0\].when: .*{message}"):
        Predictor.load(artifact)


def test_rules_nested_3000_deep_are_refused_at_load(tmp_path: Path) -> None:
    artifact = rules_artifact(tmp_path)
    leaf = '{"cmp":">","left":{"var":"turn"},"right":{"const":1}}'
    when = '{"not":' * 2997 + leaf + "}" * 2997
    (artifact / "rules.json").write_text('{"rules":[{"when":' + when + "}]}")
    rehash(artifact)
    with pytest.raises(ArtifactError, match="rules.json: nested 300[0-9] levels deep"):
        Predictor.load(artifact)


def test_manifest_nested_3000_deep_is_refused(tmp_path: Path) -> None:
    artifact = export(dqn_policy(), tmp_path / "artifact")
    manifest = (artifact / "manifest.json").read_text()
    deep = manifest.replace('"training": {', '"training": {"x": ' + "[" * 3000 + "]" * 3000 + ",")
    (artifact / "manifest.json").write_text(deep)
    digest = hashlib.sha256(deep.encode()).hexdigest()
    (artifact / "manifest.sha256").write_text(digest + "\n")
    with pytest.raises(ArtifactError, match="manifest.json: nested 300[0-9] levels deep"):
        Predictor.load(artifact)


def test_npy_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path: Path) -> None:
    """Issue 22 item 7: a ``.npy`` header declaring 224 GiB allocated before the shape check."""
    agent = make_bandit("linucb", WORLD.actions, WORLD.feature_spec, seed=0)
    artifact = export(agent, tmp_path / "artifact")
    header = {"descr": "<f8", "fortran_order": False, "shape": (173_000, 173_000)}
    with open(artifact / "theta.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)  # no data follows
    rehash(artifact)
    with pytest.raises(ArtifactError, match=r"theta.npy: expected float64 of shape"):
        Predictor.load(artifact)


# --------------------------------------------------------------------------- 12 /manifest paths


def test_exported_manifest_holds_no_absolute_path(tmp_path: Path) -> None:
    """Issue 22 item 12: ``GET /manifest`` served absolute paths of data, run, checkpoint."""
    artifact = export(
        dqn_policy(),
        tmp_path / "artifact",
        source=str(tmp_path / "runs" / "train" / "checkpoint"),
        training={"run": str(tmp_path / "runs" / "train"), "config": {"data": "/srv/d.csv"}},
    )
    text = (artifact / "manifest.json").read_text()
    assert str(tmp_path) not in text and "/srv/" not in text
    manifest = json.loads(text)
    assert manifest["source"] == "checkpoint" and manifest["training"]["run"] == "train"
    assert redact_paths({"a": ["C:\\\\data\\\\x.csv", "~/y.csv", "rel/z.csv"]}) == {
        "a": ["x.csv", "y.csv", "rel/z.csv"]
    }


# --------------------------------------------------------------------------- 8, 9, 14, 15 outputs


def test_matplotlib_math_text_in_a_policy_name_is_drawn_as_text(tmp_path: Path) -> None:
    """Issue 22 item 8: a policy file named ``$\\frac{a}{$.yaml`` crashed the forest plot."""
    from supportrl.experiments.plots import forest_plot

    row = {"estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2}
    path = forest_plot(tmp_path / "forest.png", [{"label": "$\\frac{a}{$ · snips", **row}])
    assert path.stat().st_size > 0


def _evaluate_result(policies: list[str]) -> dict[str, object]:
    row = {"snips": {"estimate": -0.25, "ci_low": -0.5, "ci_high": 0.0}}
    return {"policies": {p: row for p in policies}, "diagnostics": {}}


def test_report_skips_malformed_huge_and_special_result_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22 item 9: one bad result.json stopped the report, or hung it (FIFO, /dev/zero)."""
    from supportrl.experiments.report import MAX_RESULT_BYTES, collect

    root = tmp_path / "runs"
    bad = {
        "deep": "[" * 5000 + "]" * 5000,
        "types": json.dumps({"agents": 1, "policies": 2}),
        "keys": json.dumps({"policies": {"p": {"snips": {"estimate": 1}}}, "diagnostics": {}}),
        "list": "[1, 2]",
        "huge": " " * (MAX_RESULT_BYTES + 1),
    }
    for name, text in bad.items():
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(text)
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "result.json")
    (root / "zero").mkdir()
    os.symlink("/dev/zero", root / "zero" / "result.json")
    (root / "good").mkdir()
    (root / "good" / "result.json").write_text(json.dumps(_evaluate_result(["rules_a"])))
    records = collect(root, "snips")
    assert [r.agent for r in records] == ["rules_a"]
    err = capsys.readouterr().err
    for name in [*bad, "fifo", "zero"]:
        assert f"warning: skipped {root / name / 'result.json'}" in err, (name, err)


def test_report_csv_and_markdown_escape_user_text(tmp_path: Path) -> None:
    """Issue 22 item 14: ``=HYPERLINK(..)`` was a live formula, ``<script>`` raw in report.md."""
    from supportrl.experiments.report import collect, write_report

    names = ['=HYPERLINK("http://evil","x")', "<img src=x onerror=alert(1)>", "+1", "@SUM(A1)"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps(_evaluate_result(names)))
    out = tmp_path / "report"
    out.mkdir()
    write_report(out, collect(tmp_path, "snips"), select="snips", title="<script>t</script>")
    import csv

    with open(out / "report.csv", newline="") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@")], cells
    assert "'=HYPERLINK" in " ".join(cells)
    md = (out / "report.md").read_text()
    assert "<img" not in md and "<script>" not in md and "&lt;img" in md


def test_result_json_is_strict_json(tmp_path: Path) -> None:
    """Issue 22 item 15: an overflowing estimate wrote non-standard ``Infinity``."""
    from supportrl.experiments.results import write_json

    path = write_json(
        tmp_path / "result.json",
        {"estimate": float("inf"), "ci": [np.float64("nan"), -np.inf], "n": np.int64(3)},
    )

    def refuse(name: str) -> None:
        raise ValueError(name)

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "estimate": None,
        "ci": [None, None],
        "n": 3,
    }


# --------------------------------------------------------------------------- 13, 15 logs


def _logs_with(tmp_path: Path, **columns: list[object]) -> Path:
    from tests.simulators.test_logs import base_frame

    frame = base_frame()
    for name, values in columns.items():
        frame[name] = values
    path = tmp_path / "turns.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("notes", ["ok", "ok", "write to jane.doe@example.com", "ok", "fine"], "e-mail"),
        ("agent", ["Jane Doe", "Jane Doe", "Omar Haddad", "Li Wei", "Li Wei"], "names"),
        ("summary", ["customer was upset about the bill"] * 4 + ["ok"], "free text"),
    ],
)
def test_free_text_feature_columns_are_refused_unless_declared(
    column: str, values: list[object], reason: str, tmp_path: Path
) -> None:
    """Issue 22 item 13: free text (e-mail in notes, agents' names) became categories."""
    from supportrl.simulators.logs import LogValidationError, load_conversations

    path = _logs_with(tmp_path, **{column: values})
    with pytest.raises(LogValidationError, match=rf"turns.csv, column '{column}': .*{reason}"):
        load_conversations(path)
    declared = load_conversations(
        path, categorical=["channel", column], numeric=["prior_contacts_30d"]
    )
    assert column in declared.categorical


def test_a_huge_handle_time_fails_validation_by_row(tmp_path: Path) -> None:
    """Issue 22 item 15: ``handle_time_s=1e300`` passed validate, then swamped every estimate."""
    from supportrl.simulators.logs import LogValidationError, load_conversations

    from tests.simulators.test_logs import base_frame

    frame = base_frame()
    frame.loc[3, "handle_time_s"] = 1e300
    frame.to_csv(tmp_path / "turns.csv", index=False)
    with pytest.raises(
        LogValidationError, match=r"turns.csv, column .handle_time_s., row\(s\) 3: .*1e\+300"
    ):
        load_conversations(tmp_path / "turns.csv")


def test_per_decision_estimates_outside_the_reward_range_are_flagged() -> None:
    """Issue 22 item 15: a propensity of 1e-15 gave ips -1.35e11, flagged only 'low ESS'."""
    import dataclasses

    from supportrl.agents.base import ConstantPolicy
    from supportrl.envs.rewards import RewardSpec
    from supportrl.ope.evaluate import prepare_conversations
    from supportrl.ope.meta import OffPolicyEvaluation
    from supportrl.simulators.synthetic import generate_logs

    gen = generate_logs(200, seed=2)
    logs = gen.logs
    action = logs.actions[int(logs.action[0])]
    propensity = logs.propensity.copy()
    propensity[logs.action == logs.action[0]] = 1e-15
    logs = dataclasses.replace(logs, propensity=propensity)
    prepared = prepare_conversations(
        logs, RewardSpec(), csat_imputer=truth_imputer(gen.true_csat), seed=0
    )
    probs = ConstantPolicy(logs.actions, action).action_probs(logs.states())
    res = OffPolicyEvaluation(
        prepared=prepared, n_refit=4, conversation_estimators=("pdis",)
    ).evaluate({"p": probs})["p"]
    assert abs(res.decision["ips"].estimate) > 1e6
    assert "outside reward range" in res.decision["ips"].flags
    assert "outside reward range" not in res.decision["dm"].flags


# --------------------------------------------------------------------------- 10 disk full, Parquet


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    """A real 1 MiB file system (tmpfs; needs root): writes beyond it fail with ENOSPC."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_a_clean_error_and_leaves_no_partial_folder(tiny_disk: Path) -> None:
    """Issue 22 item 10: ``generate`` on a full disk gave an OSError traceback and left a
    partial hidden data folder behind."""
    from tests.helpers import supportrl

    run = tiny_disk / "run"
    proc = supportrl(
        tiny_disk, "generate", "generate.n_conversations=20000", f"hydra.run.dir={run}"
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "no space left" in proc.stderr
    assert str(run) in proc.stderr
    leftovers = [p for p in tiny_disk.rglob("*") if p.name.startswith(".data")]
    assert not leftovers and not run.exists()


def test_a_parquet_metadata_blob_is_refused_from_the_footer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 10: a 300 MB schema-metadata blob gave a thrift traceback. The cap is
    lowered here so that a 2 MB blob stands in for the 300 MB one."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from supportrl.simulators import logs as logs_module
    from supportrl.simulators.logs import reading

    from tests.simulators.test_logs import base_frame

    table = pa.Table.from_pandas(base_frame(), preserve_index=False)
    table = table.replace_schema_metadata({"blob": "x" * (2 * 2**20)})
    pq.write_table(table, tmp_path / "turns.parquet")
    monkeypatch.setattr(reading, "MAX_PARQUET_FOOTER_BYTES", 2**20)
    with pytest.raises(logs_module.LogValidationError, match=r"turns.parquet: Parquet metadata"):
        logs_module.load_conversations(tmp_path / "turns.parquet")


# --------------------------------------------------------------------------- 11 serving memory


def test_one_long_category_value_does_not_widen_the_whole_batch(tmp_path: Path) -> None:
    """Issue 22 item 11: one 60,000-character value made a fixed-width numpy string array
    of the whole batch (0.17 -> 2.5 GB). Strings stay Python objects now."""
    import tracemalloc

    predictor = Predictor.load(export(dqn_policy(), tmp_path / "artifact"), on_invalid="error")
    state = {
        "turn": 1,
        "previous_action": "clarify",
        "intent": "billing",
        "sentiment": -0.3,
        "tier": "free",
        "channel": "chat",
        "tenure_months": 12,
        "prior_contacts_30d": 1,
    }
    n = 400
    columns = {k: [v] * n for k, v in state.items()}
    columns["tier"] = ["free"] * (n - 1) + ["x" * 60_000]
    encoded = predictor.encoder.encode_columns(columns, n)  # warm-up, and the check
    assert encoded.invalid.tolist() == [False] * (n - 1) + [True]
    assert encoded.columns["tier"].dtype == object
    tracemalloc.start()
    predictor.encoder.encode_columns(columns, n)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # fixed width: 400 rows x 240 kB = 96 MB


# --------------------------------------------------------------------------- 9, 16 export inputs


def _train_run(tmp_path: Path, result: object) -> Path:
    run = tmp_path / "train"
    (run / ".hydra").mkdir(parents=True)
    checkpoint = make_bandit("linucb", WORLD.actions, WORLD.feature_spec, seed=0).save(
        run / "checkpoint"
    )
    if isinstance(result, dict):
        result = {**result, "checkpoint": str(checkpoint)}
    (run / "result.json").write_text(json.dumps(result))
    return run


def test_export_reads_the_runs_hydra_config_bounded(tmp_path: Path) -> None:
    """Issue 22 item 9: a YAML alias bomb in .hydra/config.yaml ran for minutes (9**6 nodes here)."""
    from supportrl.experiments.export import resolve_source

    from supportrl.files import FileFormatError

    run = _train_run(tmp_path, {"agent": "linucb"})
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
              for p, c in zip("abcde", "bcdef", strict=True)]  # fmt: skip
    (run / ".hydra" / "config.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError, match=r"config.yaml: more than \d+ YAML nodes"):
        resolve_source(run)


def test_export_of_a_run_whose_result_is_a_list_names_the_file(tmp_path: Path) -> None:
    """Issue 22 item 16: ``export run=DIR`` with a list ``result.json`` gave a traceback."""
    from supportrl.experiments.errors import UserError
    from supportrl.experiments.export import resolve_source

    run = _train_run(tmp_path, [1, 2, 3])
    with pytest.raises(UserError, match=r"train/result.json: expected a JSON object"):
        resolve_source(run)


def test_a_failed_run_leaves_no_folder_from_figures_reports_or_empty_subfolders(
    tmp_path: Path,
) -> None:
    """Issue 22 item 16: Ctrl-C late in the pipeline left a run folder behind: figures and
    the report were never recorded, and intermediate folders (``agents/dqn/``) stayed."""
    from supportrl.experiments.plots import forest_plot
    from supportrl.experiments.report import collect, write_report
    from supportrl.experiments.results import plot_or_warn

    outputs = tmp_path / "outputs"
    run = outputs / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
    lock = lock_run_dir(run)
    (run / "agents" / "dqn").mkdir(parents=True)  # a stage's folder, its files not yet written
    row = {"label": "p", "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2}
    assert plot_or_warn(forest_plot, run / "forest.png", [row])
    (tmp_path / "e" / "run").mkdir(parents=True)
    (tmp_path / "e" / "run" / "result.json").write_text(json.dumps(_evaluate_result(["a"])))
    write_report(run, collect(tmp_path / "e", "snips"), select="snips", title="t")
    remove_run_outputs(run, lock, outputs)
    assert not run.exists(), sorted(p.name for p in run.rglob("*"))
