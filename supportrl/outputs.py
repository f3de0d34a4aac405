"""Writing files supportrl makes: atomic writes, the completion marker of a directory
(:func:`write_complete` / :func:`check_complete`), and :data:`CREATED`, the record of every
path this process created, so that clean-up after a failure removes only those (a
directory only when it is empty)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from supportrl.files import FileFormatError, brief, field_of, read_json

MARKER = "COMPLETE.json"
"""Completion marker of a saved directory: written last, lists the SHA-256 of every file."""


MARKER_FORMAT = "supportrl.complete"


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """The one atomic writer: ``write(fh)`` fills a unique temporary file beside ``path``,
    which is then renamed over it, so a reader sees the old file or the whole new one, never
    a half-written one (the temporary file is removed if ``write`` fails). The serving
    package, which installs without this one, keeps its own copy."""
    path = Path(path)
    new = not os.path.lexists(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if new and CREATED.owns(path):
        CREATED.record_file(path)  # ours to remove if the run fails; a replaced file is not
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: Path, chunk: int = 2**20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _listed_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != MARKER and not p.name.endswith(".tmp")
    )


def write_complete(directory: str | os.PathLike[str], kind: str) -> Path:
    """Write the completion marker of ``directory`` (call it last, after every file).

    The marker names ``kind`` (``simulator``, ``bandit``, ``dqn``, ...) and the SHA-256
    of every file under the directory.
    """
    directory = Path(directory)
    files = {str(p.relative_to(directory)): sha256_file(p) for p in _listed_files(directory)}
    payload = {"format": MARKER_FORMAT, "kind": kind, "files": files}
    marker = atomic_write_text(directory / MARKER, json.dumps(payload, indent=2) + "\n")
    CREATED.seal(directory)  # written: files added to it from now on are not this run's
    return marker


def check_complete(
    directory: str | os.PathLike[str], kind: str, required: Iterable[str] = ()
) -> None:
    """Refuse a directory without a valid completion marker, or whose files changed.

    Raises :class:`FileFormatError`: no marker (the writer was interrupted or failed),
    another ``kind``, a listed file missing or with another checksum, or a ``required``
    file (relative name) not listed.
    """
    directory = Path(directory)
    marker = directory / MARKER
    if not marker.is_file():
        raise FileFormatError(
            f"{directory}: incomplete {kind} directory (no {MARKER}: the run that wrote it "
            f"was interrupted or failed); write it again"
        )
    meta = read_json(marker)
    if field_of(meta, "format", str, where=marker) != MARKER_FORMAT:
        raise FileFormatError(f"{marker}: field 'format' must be {MARKER_FORMAT!r}")
    found = field_of(meta, "kind", str, where=marker)
    if found != kind:
        raise FileFormatError(f"{directory}: a {brief(found)} directory, expected a {kind}")
    files = field_of(meta, "files", dict, where=marker)
    for name in required:
        if name not in files:
            raise FileFormatError(
                f"{directory}: incomplete {kind} directory ({name} is not listed in {MARKER})"
            )
    for name, digest in files.items():
        target = (directory / str(name)).resolve()
        if directory.resolve() not in target.parents:
            raise FileFormatError(f"{marker}: file {brief(name)} lies outside {directory}")
        if not target.is_file():
            raise FileFormatError(f"{directory}: {brief(name)} is missing (listed in {MARKER})")
        if sha256_file(target) != digest:
            raise FileFormatError(
                f"{directory}: {brief(name)} changed since it was written (checksum differs)"
            )


@dataclass
class CreatedPaths:
    """Paths this process created, recorded as it creates them (for clean-up on failure).

    Clean-up tracks files, not folders. A path is *claimed* before it exists
    (:meth:`claim`); a claimed directory stays *open* while its writer fills it, and the
    writer *seals* it when done (:meth:`seal`: :func:`write_complete` does so), which
    records the identity (device, inode) of every file then in it. :meth:`remove` deletes:

    - recorded files that are still the same file (a file a user replaced is kept);
    - the files of a directory still open (its writer failed half-way: they are its);
    - temporary directories made by :meth:`make_temp_dir` (uniquely named, ours alone);
    - then claimed directories and their subdirectories, only when empty (``rmdir``).

    A file a user adds to a sealed directory, or anywhere else, is never removed, and a
    path that existed before it was claimed is never recorded; directories that keep
    such files are listed in :attr:`kept`.
    """

    paths: list[Path] = field(default_factory=list)
    """Claimed paths (files or directories), oldest first."""
    files: dict[Path, tuple[int, ...]] = field(default_factory=dict)
    """Files this process wrote -> their identity when recorded (device, inode, mtime, size)."""
    open_dirs: set[Path] = field(default_factory=set)
    """Claimed directories whose writer has not sealed them yet."""
    temp_dirs: set[Path] = field(default_factory=set)
    """Directories made by :meth:`make_temp_dir` (unique names): wholly ours."""
    kept: list[Path] = field(default_factory=list)
    """Claimed directories the last :meth:`remove` left in place (they hold others' files)."""

    def claim(self, path: str | os.PathLike[str]) -> Path:
        """Record ``path`` as ours if it does not exist yet; return it.

        Raises ``FileExistsError`` when it exists and is not already ours, so a writer
        never mixes its files into someone else's.
        """
        path = Path(path).absolute()
        if path in self.paths:
            return path
        if os.path.lexists(path):
            raise FileExistsError(f"{path}: already exists and was not written by this run")
        self.paths.append(path)
        self.open_dirs.add(path)  # a file path too: harmless, it holds no files
        return path

    def record(self, path: str | os.PathLike[str]) -> Path:
        """Record ``path``, which this process has just created itself (e.g. by a rename).

        A directory's files are all recorded (it is sealed).
        """
        path = Path(path).absolute()
        if path not in self.paths:
            self.paths.append(path)
        if path.is_dir() and not path.is_symlink():
            self.seal(path)
        else:
            self.record_file(path)
        return path

    def record_file(self, path: str | os.PathLike[str]) -> None:
        """Record one file this process has just written (by its identity, not its name)."""
        path = Path(path).absolute()
        try:
            info = os.lstat(path)
        except OSError:
            return
        self.files[path] = _identity(info)

    def owns(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is a claimed path or lies inside one."""
        path = Path(path).absolute()
        return any(p == path or p in path.parents for p in self.paths)

    def seal(self, directory: str | os.PathLike[str]) -> None:
        """The writer of claimed ``directory`` is done: record its files as ours, close it.

        Files added to it later are someone else's and survive :meth:`remove`. A directory
        that is not claimed (or inside a claimed one) is left unrecorded.
        """
        directory = Path(directory).absolute()
        if not self.owns(directory):
            return
        for file in _files_below(directory):
            self.record_file(file)
        self.open_dirs.discard(directory)

    def make_temp_dir(self, parent: str | os.PathLike[str], prefix: str) -> Path:
        """A new uniquely named directory in ``parent`` (``tempfile.mkdtemp``), recorded."""
        Path(parent).mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent)).absolute()
        self.paths.append(path)
        self.temp_dirs.add(path)
        return path

    @contextlib.contextmanager
    def new_directory(self, directory: str | os.PathLike[str], hint: str) -> Iterator[Path]:
        """Write a new ``directory`` whole or not at all: the block writes into a temporary
        directory beside it (yielded), renamed to ``directory`` when the block ends and
        recorded as created; if the block fails, the temporary directory goes and nothing
        that existed is touched. ``directory`` made meanwhile: ValueError ending in ``hint``."""
        directory = Path(directory)
        tmp = self.make_temp_dir(directory.parent, prefix=f".{directory.name}.")
        try:
            yield tmp
            try:
                tmp.rename(directory)  # refuses a non-empty directory made meanwhile
            except OSError:
                raise ValueError(f"{directory}: already exists; {hint}") from None
        except BaseException:
            # the temporary directory is ours alone (made above): nothing half-written stays
            shutil.rmtree(tmp, ignore_errors=True)
            self.forget([tmp])
            raise
        self.record(directory)
        self.forget([tmp])

    def forget(self, paths: Sequence[Path]) -> None:
        """Stop tracking ``paths`` and the files below them (e.g. the run keeps them)."""
        drop = {Path(p).absolute() for p in paths}

        def dropped(p: Path) -> bool:
            return p in drop or any(d in p.parents for d in drop)

        self.paths = [p for p in self.paths if p not in drop]
        self.files = {p: ident for p, ident in self.files.items() if not dropped(p)}
        self.open_dirs -= drop
        self.temp_dirs -= drop

    def remove(self, within: str | os.PathLike[str] | None = None) -> list[Path]:
        """Delete what this process created (under ``within`` when given); see the class.

        Returns the paths removed; :attr:`kept` lists claimed directories left in place
        because they hold files this process did not write.
        """
        root = None if within is None else Path(within).absolute()

        def inside(path: Path) -> bool:
            return root is None or root == path or root in path.parents

        removed: list[Path] = []
        for path in [p for p in self.temp_dirs if inside(p)]:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        for path in [p for p in self.open_dirs if inside(p)]:
            if path.is_dir() and not path.is_symlink():
                for file in _files_below(path):
                    self.record_file(file)  # its writer failed half-way: they are its files
        for path, ident in list(self.files.items()):
            if not inside(path):
                continue
            try:
                info = os.lstat(path)
            except OSError:
                removed.append(path)
                continue
            if _identity(info) == ident and not os.path.isdir(path):
                path.unlink(missing_ok=True)
                removed.append(path)
        self.kept = []
        for path in reversed(self.paths):
            if not inside(path) or path in self.temp_dirs:
                continue
            if path.is_dir() and not path.is_symlink():
                _remove_empty_dirs(path)
                if path.exists():
                    self.kept.append(path)
                    continue
            elif os.path.lexists(path) and path not in self.files:
                # a claimed file path: it did not exist when claimed, so this run wrote it
                path.unlink(missing_ok=True)
            removed.append(path)
        self.forget([p for p in self.paths if inside(p)])
        self.files = {p: i for p, i in self.files.items() if not inside(p)}
        return removed


def _identity(info: os.stat_result) -> tuple[int, ...]:
    """Which file this is: an inode number alone may be reused by a file made later."""
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def _files_below(directory: Path) -> list[Path]:
    """Every non-directory entry below ``directory`` (symlinks not followed)."""
    found: list[Path] = []
    for base, dirs, names in os.walk(directory, followlinks=False):
        found.extend(Path(base) / n for n in names)
        found.extend(Path(base) / d for d in dirs if os.path.islink(Path(base) / d))
    return found


def _remove_empty_dirs(directory: Path) -> None:
    """``rmdir`` ``directory`` and its subdirectories that are empty, deepest first."""
    for base, _, _ in sorted(os.walk(directory, followlinks=False), key=lambda w: -len(w[0])):
        try:
            os.rmdir(base)
        except OSError:
            pass


CREATED = CreatedPaths()
"""This process's record of created paths."""
