"""Safe reading and writing of the files supportrl makes and reads back.

The bottom layer of the package: it imports only the standard library, numpy, yaml and
the leaf :mod:`supportrl.serving.json_limits` (the one JSON nesting check), so every other
package (``envs``, ``simulators``, ``agents``, ``ope``, ``serving``, ``experiments``) may
use it without import cycles.

What it guards against, for files that may come from anywhere (a colleague, a download,
an interrupted run):

- **Size before allocation.** JSON and YAML are read only below a byte limit, with a
  bounded nesting depth and (YAML) a bounded number of nodes after alias expansion, so a
  "billion laughs" file costs kilobytes, not gigabytes. An ``.npz`` is read member by
  member: only the expected names, each checked against its ``.npy`` header (shape,
  dtype, element count) before a byte of data is read.
- **Half-written directories.** A checkpoint or simulator directory is valid only with
  its completion marker (:data:`~supportrl.outputs.MARKER`, written last, with the SHA-256
  of every file); loaders call :func:`~supportrl.outputs.check_complete`.
- **Messages that explode.** :func:`brief` is the only way user values get into error
  messages: bounded length, never a recursive ``repr`` of a user structure.
- **Clean-up that deletes user files.** :data:`~supportrl.outputs.CREATED` (in
  :mod:`supportrl.outputs`, with the atomic writers) records each file as this process creates it (by identity: device, inode, time and size); a failed command removes only
  those, and a directory only when it is empty.

Every problem with a file's content raises :class:`FileFormatError` (a ``ValueError``)
whose message starts with the file's path and names the field.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from supportrl.serving.json_limits import json_depth

F = TypeVar("F", bound=Callable[..., Any])

MAX_JSON_BYTES = 64 * 2**20
"""Largest JSON metadata file read (bytes); checkpoints keep arrays in ``.npz``, not JSON."""

MAX_DEPTH = 64
"""Deepest nesting of lists / mappings accepted in JSON and YAML files."""

MAX_YAML_BYTES = 4 * 2**20
"""Largest YAML file read (bytes)."""

MAX_YAML_NODES = 200_000
"""Most YAML nodes after alias expansion (a rule file has hundreds)."""

MAX_ARRAY_ELEMENTS = 200_000_000
"""Most elements of any one array read from an ``.npz`` (1.6 GB of float64)."""


class FileFormatError(ValueError):
    """A file's content is malformed, too large, too deep or incomplete (a user error)."""


def brief(value: Any, limit: int = 60) -> str:
    """A bounded description of a user value for error messages (never a full ``repr``).

    Scalars are shown (cut at ``limit`` characters); containers by type and length, so a
    huge or self-referencing structure costs nothing to describe.
    """
    if isinstance(value, bool | float):
        text = repr(value)
    elif isinstance(value, int):
        # int -> str is quadratic (and refused past 4300 digits): count bits instead
        text = repr(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    elif isinstance(value, str):
        text = repr(value[:limit]) + ("..." if len(value) > limit else "")
    elif value is None:
        text = "null"
    elif isinstance(value, Mapping):
        text = f"a mapping of {len(value)} key(s)"
    elif isinstance(value, list | tuple):
        text = f"a list of {len(value)} item(s)"
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit + 5 else text[:limit] + "..."


# --- JSON -----------------------------------------------------------------------------------


def read_json(
    path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse a JSON file: at most ``max_bytes``, UTF-8, nested at most ``max_depth``.

    Raises :class:`FileFormatError` (``PATH: ...``) for every malformed file, and
    ``FileNotFoundError`` when it is missing.
    """
    path = Path(path)
    raw = _read_bounded(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    depth = json_depth(raw)
    if depth > max_depth:
        raise FileFormatError(f"{path}: nested {depth} levels deep; at most {max_depth} allowed")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # huge integer literals, NaN constants
        raise FileFormatError(f"{path}: not valid JSON ({str(exc)[:120]})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_bounded(path: Path, max_bytes: int) -> bytes:
    if not path.is_file():
        if path.exists():
            raise FileFormatError(f"{path}: not a file")
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size > max_bytes:
        raise FileFormatError(f"{path}: {size} bytes; at most {max_bytes} allowed")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot read ({exc.strerror})") from None


# --- YAML -----------------------------------------------------------------------------------


def read_yaml(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_YAML_BYTES,
    max_nodes: int = MAX_YAML_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse a YAML file safely (``yaml.SafeLoader``), bounded in bytes, nodes and depth.

    Node counts include alias expansion (an alias counts as a copy of what it names), so
    a file of nested aliases is refused before anything is built from it.
    """
    path = Path(path)
    raw = _read_bounded(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_yaml(text, where=str(path), max_nodes=max_nodes, max_depth=max_depth)


def parse_yaml(
    text: str, *, where: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse YAML ``text`` (from ``where``, for messages) with the bounds of :func:`read_yaml`."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_graph(node, where, max_nodes, max_depth)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise FileFormatError(f"{where}: not valid YAML ({str(problem)[:120]}{at})") from None
    except RecursionError:
        raise FileFormatError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def _check_yaml_graph(root: yaml.Node, where: str, max_nodes: int, max_depth: int) -> None:
    """Expanded node count and depth of a composed YAML graph, without recursion.

    Sizes are memoized per node, so shared (aliased) subtrees cost their size at every
    use without being walked again; a cycle (a recursive alias) is refused.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _yaml_children(node)
        if done:
            on_stack.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > max_nodes:
                raise FileFormatError(
                    f"{where}: more than {max_nodes} YAML nodes after expanding aliases"
                )
            if depth[key] > max_depth:
                raise FileFormatError(f"{where}: nested more than {max_depth} levels deep")
            continue
        if key in size:
            continue
        if key in on_stack:
            raise FileFormatError(f"{where}: a YAML alias refers to itself")
        on_stack.add(key)
        stack.append((node, True))
        if len(on_stack) > max_depth:
            raise FileFormatError(f"{where}: nested more than {max_depth} levels deep")
        stack.extend((c, False) for c in children if id(c) not in size)


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


# --- npz ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """What one ``.npz`` member must be: ``shape`` (``None`` for any length on that axis,
    or ``None`` for any shape), dtype kinds (``"f"`` float, ``"i"`` signed int, ``"u"``,
    ``"b"`` bool), and whether every value must be finite."""

    shape: tuple[int | None, ...] | None = None
    kinds: str = "fiub"
    finite: bool = True
    max_abs: float | None = None
    """Largest absolute value allowed (``None``: no bound beyond finiteness)."""
    dtype: str | None = None
    """Exact dtype required (e.g. ``"float32"``), beyond the kind."""
    min: float | None = None
    """Smallest value allowed."""


def npz_headers(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every member of an ``.npz``, from the ``.npy`` headers only."""
    path = Path(path)
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with _open_zip(path) as archive:
        for info in archive.infolist()[:10_000]:
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as fh:
                headers[info.filename[:-4]] = _npy_header(fh, path, info.filename)
    return headers


def read_npz(
    path: str | os.PathLike[str],
    expected: Mapping[str, ArraySpec],
    *,
    optional: Iterable[str] = (),
    max_elements: int = MAX_ARRAY_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Read only the ``expected`` members of an ``.npz``, each checked before loading.

    The ``.npy`` header gives shape and dtype; both are checked against the
    :class:`ArraySpec` and ``max_elements`` before the data is read, and the loaded
    values are checked finite. Members not named are never read. Names in ``optional``
    may be missing. No pickles (object arrays are refused).
    """
    path = Path(path)
    optional = set(optional)
    out: dict[str, np.ndarray] = {}
    with _open_zip(path) as archive:
        names = set(archive.namelist())
        for name, spec in expected.items():
            member = f"{name}.npy"
            if member not in names:
                if name in optional:
                    continue
                raise FileFormatError(f"{path}: array {name!r} is missing")
            with archive.open(member) as fh:
                shape, dtype = _npy_header(fh, path, member)
            _check_spec(path, name, shape, dtype, spec, max_elements)
            with archive.open(member) as fh:
                try:
                    array = np.lib.format.read_array(fh, allow_pickle=False)
                except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                    raise FileFormatError(f"{path}: array {name!r} unreadable ({exc})") from None
            if spec.finite and array.dtype.kind == "f" and not np.isfinite(array).all():
                raise FileFormatError(f"{path}: array {name!r} has NaN or infinite values")
            if spec.min is not None and array.size and array.min() < spec.min:
                raise FileFormatError(f"{path}: array {name!r} has values below {spec.min:g}")
            if spec.max_abs is not None and array.size and np.abs(array).max() > spec.max_abs:
                raise FileFormatError(
                    f"{path}: array {name!r} has values beyond +-{spec.max_abs:g} "
                    f"(largest {float(np.abs(array).max()):.3g})"
                )
            out[name] = array
    return out


def read_declared_npz(
    path: str | os.PathLike[str],
    declared: Any,
    *,
    where: str | os.PathLike[str],
    max_abs: Mapping[str, float] | None = None,
    max_elements: int = MAX_ARRAY_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Read the arrays a metadata file declares (``{name: {"shape": [..], ...}}``).

    Each declared shape must be a list of non-negative ints and must match the stored
    array's header; only declared members are read. ``max_abs`` maps a name prefix to the
    largest absolute value allowed (the longest matching prefix applies).
    """
    if not isinstance(declared, Mapping):
        raise FileFormatError(f"{where}: field 'arrays' must be a mapping, got {brief(declared)}")
    specs: dict[str, ArraySpec] = {}
    bounds = sorted((max_abs or {}).items(), key=lambda kv: -len(kv[0]))
    for name, desc in declared.items():
        shape = int_list(desc, "shape", where=f"{where}: arrays.{brief(name)}", high=max_elements)
        bound = next((v for k, v in bounds if str(name).startswith(k)), None)
        specs[str(name)] = ArraySpec(shape=tuple(shape), max_abs=bound)
    return read_npz(path, specs, max_elements=max_elements)


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileFormatError(f"{path}: not a valid .npz archive ({exc})") from None


def _npy_header(fh: Any, path: Path, member: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{path}: member {member!r} is not a valid array ({exc})") from None
    return tuple(int(n) for n in shape), dtype


def _check_spec(
    path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype, spec: ArraySpec, limit: int
) -> None:
    if (
        dtype.kind not in spec.kinds
        or dtype.hasobject
        or (spec.dtype is not None and dtype != np.dtype(spec.dtype))
    ):
        want = spec.dtype or f"kind(s) {spec.kinds!r}"
        raise FileFormatError(f"{path}: array {name!r} has dtype {dtype.str}; expected {want}")
    n = 1
    for d in shape:
        n *= d
    if n > limit:
        raise FileFormatError(f"{path}: array {name!r} has {n} elements; at most {limit}")
    if spec.shape is not None and (
        len(shape) != len(spec.shape)
        or any(e is not None and e != d for e, d in zip(spec.shape, shape, strict=True))
    ):
        want = tuple("*" if e is None else e for e in spec.shape)
        raise FileFormatError(f"{path}: array {name!r} has shape {shape}; expected {want}")


# --- loaders ----------------------------------------------------------------------------------

_MALFORMED = (
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    TypeError,
    ZeroDivisionError,
    RecursionError,
    ValueError,
)


MALFORMED_ERRORS = _MALFORMED
"""Exceptions that building objects from malformed file content raises (for callers that
skip a bad file with a warning instead of failing)."""


def reports_malformed(where: Callable[..., Any]) -> Callable[[F], F]:
    """Decorate a loader so malformed content is a :class:`FileFormatError` naming the file.

    ``where(*args, **kwargs)`` gives the path to name (from the loader's arguments). A
    ``ValueError`` whose message already names that directory passes unchanged; any other
    ``KeyError``, ``TypeError``, ``IndexError``, ``OverflowError``, ... raised while
    building objects from the file becomes ``PATH: malformed content (...)``.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except FileFormatError:
                raise
            except _MALFORMED as exc:
                path = Path(where(*args, **kwargs))
                message = str(exc)
                if isinstance(exc, ValueError) and str(path.parent) in message:
                    raise
                raise FileFormatError(
                    f"{path}: malformed content ({type(exc).__name__}: {brief(message, 160)})"
                ) from None

        return wrapper  # type: ignore[return-value]

    return decorate


# --- fields of parsed metadata --------------------------------------------------------------


def field_of(
    meta: Any,
    key: str,
    kind: type | tuple[type, ...],
    *,
    where: str | os.PathLike[str],
    low: float | None = None,
    high: float | None = None,
) -> Any:
    """``meta[key]`` checked to be a ``kind`` (``bool`` is never an ``int``) within [low, high].

    Raises :class:`FileFormatError` naming ``where`` and the field.
    """
    if not isinstance(meta, Mapping):
        raise FileFormatError(f"{where}: expected a JSON object, got {brief(meta)}")
    if key not in meta:
        raise FileFormatError(f"{where}: field {key!r} is missing")
    value = meta[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if int in kinds and float not in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)
    is_bool = isinstance(value, bool) and bool not in kinds
    if is_bool or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise FileFormatError(f"{where}: field {key!r} must be {names}, got {brief(value)}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not np.isfinite(value):
            raise FileFormatError(f"{where}: field {key!r} must be finite, got {brief(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise FileFormatError(
                f"{where}: field {key!r} must be in [{low}, {high}], got {brief(value)}"
            )
    return value


def int_list(
    meta: Any,
    key: str,
    *,
    where: str | os.PathLike[str],
    low: int = 0,
    high: int = 2**31,
    max_len: int = 64,
) -> list[int]:
    """``meta[key]`` as a list of at most ``max_len`` ints in [low, high]."""
    values = field_of(meta, key, list, where=where)
    if len(values) > max_len:
        raise FileFormatError(f"{where}: field {key!r} has {len(values)} items; at most {max_len}")
    return [field_of({key: v}, key, int, where=where, low=low, high=high) for v in values]


def str_list(
    meta: Any, key: str, *, where: str | os.PathLike[str], max_len: int = 10_000
) -> list[str]:
    """``meta[key]`` as a list of at most ``max_len`` strings."""
    values = field_of(meta, key, list, where=where)
    if len(values) > max_len:
        raise FileFormatError(f"{where}: field {key!r} has {len(values)} items; at most {max_len}")
    for v in values:
        if not isinstance(v, str):
            raise FileFormatError(f"{where}: field {key!r} must hold strings, got {brief(v)}")
    return list(values)


# --- atomic writes and the completion marker ------------------------------------------------


# --- paths this process created -------------------------------------------------------------
