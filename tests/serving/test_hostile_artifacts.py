"""Hostile or careless files: each reproduction from issue 13 is refused as a user error.

A checkpoint, simulator or rule file may come from anywhere. Loading one must end in the
object or in a ``ValueError`` that names the file (and the field) -- never a crash in native
code, a gigabyte allocation, a ``RecursionError`` or an unbounded error message.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.bandits import LinUCB, load_bandit
from supportrl.agents.dqn import DQNConfig, DQNLearner, load_q_policy
from supportrl.agents.rules import RuleSyntaxError, load_rule_policy, parse_expression
from supportrl.envs import SupportVectorEnv
from supportrl.envs.features import build_feature_spec
from supportrl.simulators.fitted import fit_customer_model, load_customer_model
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

from supportrl.files import (
    MAX_DEPTH,
    ArraySpec,
    FileFormatError,
    brief,
    read_json,
    read_npz,
    read_yaml,
)
from supportrl.outputs import write_complete

ACTIONS = SyntheticWorld().actions


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def learner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DQN learner checkpoint with Adam state (trained past learning_starts)."""
    config = DQNConfig(
        total_steps=640,
        num_envs=8,
        hidden_sizes=(16, 16),
        batch_size=16,
        buffer_size=800,
        learning_starts=160,
        target_update_interval=100,
        log_interval=320,
    )
    learner = DQNLearner(config=config, env=SupportVectorEnv(8, model=SyntheticWorld()), seed=0)
    learner.train(progress=False)
    return learner.save(tmp_path_factory.mktemp("dqn") / "ckpt")


@pytest.fixture(scope="module")
def simulator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = generate_logs(300, seed=1).logs
    with pytest.warns(UserWarning):
        model = fit_customer_model(logs, "glm", seed=0)
    return model.save(tmp_path_factory.mktemp("sim") / "simulator")


@pytest.fixture()
def bandit_dir(tmp_path: Path) -> Path:
    world = SyntheticWorld()
    states = world.observe(world.initial_state(200, np.random.default_rng(0)))
    spec = build_feature_spec(states, actions=ACTIONS, categorical=["tier"])
    return LinUCB(ACTIONS, spec).save(tmp_path / "bandit")


def _copy(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / directory.name
    target.mkdir()
    for p in directory.iterdir():
        (target / p.name).write_bytes(p.read_bytes())
    return target


def _edit_json(path: Path, **changes: object) -> None:
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    write_complete(path.parent, json.loads((path.parent / "COMPLETE.json").read_text())["kind"])


def _rewrite_npz(path: Path, **changes: np.ndarray) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    write_complete(path.parent, json.loads((path.parent / "COMPLETE.json").read_text())["kind"])


# --------------------------------------------------------------------------- checkpoints


def test_adam_state_of_the_wrong_shape_is_refused_before_torch(
    learner_dir: Path, tmp_path: Path
) -> None:
    """Reproduction: ``adam.*.exp_avg`` of 3x3 segfaulted in torch's Adam (3 of 3 runs)."""
    ckpt = _copy(learner_dir, tmp_path)
    _rewrite_npz(ckpt / "learner.npz", **{"adam.0.exp_avg": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"learner\.npz: array 'adam\.0\.exp_avg' has shape"):
        DQNLearner.load(ckpt, SupportVectorEnv(8, model=SyntheticWorld()))
    _rewrite_npz(ckpt / "learner.npz", **{"adam.0.exp_avg": np.zeros((16, 22), np.float64)})
    with pytest.raises(ValueError, match=r"'adam\.0\.exp_avg' has dtype <f8; expected float32"):
        DQNLearner.load(ckpt, SupportVectorEnv(8, model=SyntheticWorld()))


def test_the_intact_learner_checkpoint_loads(learner_dir: Path) -> None:
    learner = DQNLearner.load(learner_dir, SupportVectorEnv(8, model=SyntheticWorld()))
    assert learner.env_steps == 640 and learner.optimizer.state


def test_declared_network_size_is_bounded_before_allocating(
    learner_dir: Path, tmp_path: Path
) -> None:
    """Reproduction: ``hidden_sizes: [30000, 30000]`` allocated 3.9 GB."""
    ckpt = _copy(learner_dir, tmp_path)
    meta = json.loads((ckpt / "policy.json").read_text())
    _edit_json(ckpt / "policy.json", network={**meta["network"], "hidden_sizes": [30000, 30000]})
    with pytest.raises(ValueError, match=r"policy\.json: network: declares \d+ parameters"):
        load_q_policy(ckpt)
    _edit_json(ckpt / "policy.json", network={**meta["network"], "hidden_sizes": [-5]})
    with pytest.raises(ValueError, match=r"policy\.json: network: field 'hidden_sizes' must be"):
        load_q_policy(ckpt)


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        ("policy.json", {"epsilon": "abc"}, r"policy\.json: field 'epsilon' must be int or float"),
        ("learner.json", {"seed": None}, r"learner\.json: field 'seed' must be int, got null"),
        ("learner.json", {"env_steps": -3}, r"learner\.json: field 'env_steps' must be in"),
        ("learner.json", {"rng_state": [1]}, r"learner\.json: field 'rng_state' must be a PCG64"),
    ],
)
def test_malformed_learner_fields_name_file_and_field(
    learner_dir: Path, tmp_path: Path, file: str, change: dict, message: str
) -> None:
    ckpt = _copy(learner_dir, tmp_path)
    _edit_json(ckpt / file, **change)
    with pytest.raises(ValueError, match=message):
        DQNLearner.load(ckpt, SupportVectorEnv(8, model=SyntheticWorld()))


def test_missing_seed_names_the_field(learner_dir: Path, tmp_path: Path) -> None:
    ckpt = _copy(learner_dir, tmp_path)
    meta = json.loads((ckpt / "learner.json").read_text())
    del meta["seed"]
    (ckpt / "learner.json").write_text(json.dumps(meta))
    write_complete(ckpt, "dqn")
    with pytest.raises(ValueError, match=r"learner\.json: field 'seed' is missing"):
        DQNLearner.load(ckpt, SupportVectorEnv(8, model=SyntheticWorld()))


def test_bandit_json_of_the_wrong_shape(bandit_dir: Path) -> None:
    """Reproduction: ``bandit.json = [1, 2]`` raised AttributeError."""
    (bandit_dir / "bandit.json").write_text("[1, 2]")
    write_complete(bandit_dir, "bandit")
    with pytest.raises(ValueError, match=r"bandit\.json"):
        load_bandit(bandit_dir)


def test_non_utf8_json_names_the_file(bandit_dir: Path) -> None:
    (bandit_dir / "bandit.json").write_bytes(b'{"format": "\xff\xfe"}')
    write_complete(bandit_dir, "bandit")
    with pytest.raises(ValueError, match=r"bandit\.json: not UTF-8 text"):
        load_bandit(bandit_dir)


def _npz_member_header_only(path: Path, name: str, shape: tuple[int, ...]) -> None:
    """Append a member whose header declares ``shape`` float64 but holds no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{name}.npy", header.getvalue())  # magic + header, no data


def test_an_extra_huge_npz_member_is_never_read(bandit_dir: Path) -> None:
    """Reproduction: an npz with an extra 4 GB array was read whole."""
    _npz_member_header_only(bandit_dir / "params.npz", "huge", (2**29,))
    write_complete(bandit_dir, "bandit")
    assert load_bandit(bandit_dir).kind == "linucb"  # only the expected members are read


def test_a_declared_huge_npz_member_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, small=np.zeros(3))
    _npz_member_header_only(path, "big", (2**40,))
    with pytest.raises(FileFormatError, match="array 'big' has 1099511627776 elements"):
        read_npz(path, {"big": ArraySpec()})


@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinite"), (1e300, r"values beyond \+-1e\+09")],
)
def test_simulator_with_nan_or_huge_coefficients_is_refused(
    simulator_dir: Path, tmp_path: Path, value: float, message: str
) -> None:
    """Reproduction: a simulator with NaN or 1e300 coefficients trained and reported a return."""
    sim = _copy(simulator_dir, tmp_path)
    with np.load(sim / "params.npz") as npz:
        coef = npz["glm/outcome_coef"].copy()
    coef[0, 0, 0] = value
    _rewrite_npz(sim / "params.npz", **{"glm/outcome_coef": coef})
    with pytest.raises(ValueError, match=rf"params\.npz: array 'glm/outcome_coef' has {message}"):
        load_customer_model(sim)


def test_simulator_declaring_three_actions_is_refused_on_load(
    simulator_dir: Path, tmp_path: Path
) -> None:
    """Reproduction: ``matmul ... size 58 is different from 55`` in the middle of a run."""
    sim = _copy(simulator_dir, tmp_path)
    meta = json.loads((sim / "simulator.json").read_text())
    _edit_json(sim / "simulator.json", actions=meta["actions"][:3])
    with pytest.raises(ValueError, match=r"params\.npz: arrays inconsistent with simulator\.json"):
        load_customer_model(sim)


@pytest.mark.parametrize("name", ["bandit.json", "policy.json", "simulator.json"])
def test_json_nested_100000_deep_is_a_user_error(tmp_path: Path, name: str) -> None:
    """Reproduction: RecursionError with a 3,000-line traceback."""
    path = tmp_path / name
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FileFormatError, match=f"{name}: nested 100000 levels deep; at most"):
        read_json(path)


# --------------------------------------------------------------------------- rule files


BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
rules: []
default: *h
"""


def test_yaml_alias_bomb_in_a_rule_file_is_refused(tmp_path: Path) -> None:
    """Reproduction: the error message itself expanded ``default`` (4.2 GB in 120 s)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    with pytest.raises(ValueError, match=r"bomb\.yaml: more than \d+ YAML nodes after expanding"):
        load_rule_policy(path, ACTIONS)


def test_recursive_yaml_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("default: &a [*a]\nrules: []\n")
    with pytest.raises(FileFormatError, match="loop.yaml"):
        read_yaml(path)


def test_unbounded_user_values_never_enter_messages(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(f"rules: []\ndefault: {'x' * 1_000_000}\n")
    with pytest.raises(ValueError) as info:
        load_rule_policy(path, ACTIONS)
    assert "unknown action" in str(info.value) and len(str(info.value)) < 500
    assert len(brief(list(range(10**6)))) < 40


@pytest.mark.parametrize(
    "expression",
    ["(" * 250 + "turn > 1" + ")" * 250, "not " * 1000 + "turn > 1"],
)
def test_deep_rule_expressions_are_syntax_errors(expression: str) -> None:
    """Reproduction: RecursionError for 250 parentheses and 1,000 ``not``s."""
    with pytest.raises(RuleSyntaxError, match="nested too deeply") as info:
        parse_expression(expression)
    assert len(str(info.value)) < 600


def test_a_5000_digit_literal_is_a_syntax_error() -> None:
    with pytest.raises(RuleSyntaxError, match="number literal too long"):
        parse_expression("turn > " + "9" * 5000)
    with pytest.raises(RuleSyntaxError, match="number out of range"):
        parse_expression("turn > 1e400")


def test_depth_limit_allows_ordinary_nesting() -> None:
    depth = MAX_DEPTH  # well under the expression limit
    assert parse_expression("(" * depth + "turn > 1" + ")" * depth) is not None
