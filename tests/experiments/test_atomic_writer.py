"""The one atomic writer: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from supportrl.agents.bandits import make_bandit
from supportrl.simulators.synthetic import SyntheticWorld

from supportrl.outputs import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "params.npz"
    path.write_bytes(b"old")

    def half(fh) -> None:  # noqa: ANN001
        fh.write(b"new but only half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["params.npz"]
    atomic_write(path, lambda fh: np.savez(fh, a=np.arange(3)))
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))


def test_a_checkpoint_holds_no_temporary_files(tmp_path: Path) -> None:
    world = SyntheticWorld()
    agent = make_bandit("linucb", world.actions, world.feature_spec, seed=0)
    saved = Path(agent.save(tmp_path / "checkpoint"))
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]


def test_a_new_directory_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    from supportrl.outputs import CreatedPaths

    created = CreatedPaths()
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), created.new_directory(target, "pick another") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == [] and not created.paths  # nothing half-written
    with created.new_directory(target, "pick another") as tmp:
        (tmp / "whole.txt").write_text("x")
    assert (target / "whole.txt").read_text() == "x" and created.owns(target)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(ValueError, match="out: already exists; pick another"):
        with created.new_directory(target, "pick another") as tmp:
            (tmp / "again.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["whole.txt"]  # the existing one kept
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
