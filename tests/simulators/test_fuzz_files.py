"""Fuzzing the loaders: any content ends in the loaded object or a user error, never a crash.

Hypothesis rewrites fields of real checkpoint JSON (bandit, DQN policy and learner,
simulator), swaps arrays of their ``.npz`` files for arrays of other shapes and dtypes,
and writes rule files from the pieces of the rule language. The completion marker is
rewritten each time, so the loaders' own checks are what is tested. Allowed outcomes:
success, or ``ValueError`` / ``TypeError`` (what the commands report as ``error:``, exit 2).
A segfault would end the test run, so it fails too.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from supportrl.agents.bandits import LinUCB, load_bandit
from supportrl.agents.dqn import DQNConfig, DQNLearner
from supportrl.agents.rules import load_rule_policy
from supportrl.envs import SupportVectorEnv
from supportrl.envs.features import build_feature_spec
from supportrl.simulators.fitted import fit_customer_model, load_customer_model
from supportrl.simulators.synthetic import SyntheticWorld, generate_logs

from supportrl.outputs import MARKER, write_complete

ACTIONS = SyntheticWorld().actions
USER_ERRORS = (ValueError, TypeError)
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One valid directory per loader: bandit, dqn learner, simulator."""
    root = tmp_path_factory.mktemp("fuzz")
    world = SyntheticWorld()
    states = world.observe(world.initial_state(200, np.random.default_rng(0)))
    spec = build_feature_spec(states, actions=ACTIONS, categorical=["tier"])
    bandit = LinUCB(ACTIONS, spec).save(root / "bandit")
    config = DQNConfig(
        total_steps=320,
        num_envs=8,
        hidden_sizes=(8,),
        batch_size=16,
        buffer_size=400,
        learning_starts=160,
        target_update_interval=100,
        log_interval=160,
    )
    learner = DQNLearner(config=config, env=SupportVectorEnv(8, model=SyntheticWorld()), seed=0)
    learner.train(progress=False)
    dqn = learner.save(root / "dqn", include_replay=True)
    with pytest.warns(UserWarning):
        model = fit_customer_model(generate_logs(200, seed=3).logs, "glm", seed=0)
    return {"bandit": bandit, "dqn": dqn, "simulator": model.save(root / "simulator")}


LOADERS: dict[str, tuple[Callable[[Path], Any], tuple[str, ...], tuple[str, ...]]] = {
    "bandit": (load_bandit, ("bandit.json",), ("params.npz",)),
    "dqn": (
        lambda p: DQNLearner.load(p, SupportVectorEnv(8, model=SyntheticWorld())),
        ("policy.json", "learner.json"),
        ("policy.npz", "learner.npz", "replay.npz"),
    ),
    "simulator": (load_customer_model, ("simulator.json",), ("params.npz",)),
}


def _attempt(kind: str, source: Path, mutate: Callable[[Path], None]) -> None:
    load = LOADERS[kind][0]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / kind
        shutil.copytree(source, directory)
        mutate(directory)
        write_complete(directory, kind)
        try:
            load(directory)
        except USER_ERRORS:
            pass


def _set_path(meta: Any, path: list[Any], value: Any) -> Any:
    """``meta`` with the entry at ``path`` (keys / indices, followed while they exist) replaced."""
    if not path or not isinstance(meta, dict | list) or not meta:
        return value
    if isinstance(meta, dict):
        keys = sorted(meta)
        key = keys[path[0] % len(keys)] if isinstance(path[0], int) else path[0]
        return {**meta, key: _set_path(meta.get(key), path[1:], value)}
    index = path[0] % len(meta) if isinstance(path[0], int) else 0
    return [*meta[:index], _set_path(meta[index], path[1:], value), *meta[index + 1 :]]


@pytest.mark.parametrize("kind", sorted(LOADERS))
@SETTINGS
@given(
    data=st.data(),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4),
    value=json_values,
    delete=st.booleans(),
)
def test_fuzzed_metadata_loads_or_is_a_user_error(
    saved: dict[str, Path], kind: str, data: Any, path: list[int], value: Any, delete: bool
) -> None:
    name = data.draw(st.sampled_from(LOADERS[kind][1]))

    def mutate(directory: Path) -> None:
        meta = json.loads((directory / name).read_text())
        if delete and isinstance(meta, dict):
            meta.pop(sorted(meta)[path[0] % len(meta)])
            new = meta
        else:
            new = _set_path(meta, path, value)
        (directory / name).write_text(json.dumps(new))

    _attempt(kind, saved[kind], mutate)


@pytest.mark.parametrize("kind", sorted(LOADERS))
@SETTINGS
@given(data=st.data(), raw=st.binary(max_size=200))
def test_fuzzed_bytes_load_or_are_a_user_error(
    saved: dict[str, Path], kind: str, data: Any, raw: bytes
) -> None:
    names = LOADERS[kind][1] + LOADERS[kind][2]
    name = data.draw(st.sampled_from(names))
    _attempt(kind, saved[kind], lambda d: (d / name).write_bytes(raw))


@pytest.mark.parametrize("kind", sorted(LOADERS))
@SETTINGS
@given(
    data=st.data(),
    shape=st.lists(st.integers(min_value=0, max_value=40), max_size=3),
    dtype=st.sampled_from(["float32", "float64", "int64", "int8", "bool", "uint8", "<U3"]),
    fill=st.sampled_from([0.0, 1.0, -1.0, 1e30, np.nan]),
)
def test_fuzzed_arrays_load_or_are_a_user_error(
    saved: dict[str, Path], kind: str, data: Any, shape: list[int], dtype: str, fill: float
) -> None:
    npz_name = data.draw(st.sampled_from(LOADERS[kind][2]))

    def mutate(directory: Path) -> None:
        with np.load(directory / npz_name, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        target = data.draw(st.sampled_from(sorted(arrays)))
        with np.errstate(invalid="ignore", over="ignore"):
            if dtype == "<U3":
                arrays[target] = np.full(shape, "abc")
            else:
                arrays[target] = np.full(shape, fill).astype(dtype)
        np.savez(directory / npz_name, **arrays)

    _attempt(kind, saved[kind], mutate)


RULE_PIECES = [
    "turn", "sentiment", "intent", "tier", " ", "(", ")", "[", "]", ",", "not", "and", "or",
    "in", "<", "<=", "==", "!=", ">", "3", "-0.5", "1e999", "9" * 60, '"billing"', "'x'",
    "true", "__class__", ".", "x(", "&&", "\\", '"',
]  # fmt: skip

rule_expressions = st.lists(st.sampled_from(RULE_PIECES), max_size=30).map(" ".join)
yaml_pieces = st.sampled_from(
    ["&a [1, 2]", "*a", "[*a, *a]", "{}", "- x", "!!python/object:os.system", "'", ": :", "\t"]
)


@SETTINGS
@given(
    when=rule_expressions,
    action=st.sampled_from([*ACTIONS, "nope", "[1, 2]", "{a: 1}", "123", "null"]),
    default=st.one_of(st.sampled_from(ACTIONS), yaml_pieces),
    epsilon=st.sampled_from(["0.1", "abc", "-1", "1e999", "[1]", "0"]),
    junk=st.lists(yaml_pieces, max_size=3).map(" ".join),
)
def test_fuzzed_rule_files_load_or_are_a_user_error(
    when: str, action: str, default: str, epsilon: str, junk: str
) -> None:
    text = (
        f"rules:\n  - when: {json.dumps(when)}\n    action: {action}\n"
        f"default: {default}\nepsilon: {epsilon}\n{junk}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules_fuzz.yaml"
        path.write_text(text)
        try:
            load_rule_policy(path, ACTIONS)
        except USER_ERRORS:
            pass


def test_the_marker_is_rewritten_so_loaders_see_the_mutation(saved: dict[str, Path]) -> None:
    """The fuzz would be empty if the marker check caught every mutation first."""
    for kind, (_, json_names, _) in LOADERS.items():
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / kind
            shutil.copytree(saved[kind], directory)
            (directory / json_names[0]).write_text("[]")
            write_complete(directory, kind)
            assert json.loads((directory / MARKER).read_text())["kind"] == kind
            with pytest.raises(ValueError, match=json_names[0]):
                LOADERS[kind][0](directory)
