"""How deep a JSON text nests, found without parsing it: the one check every JSON reader of
supportrl runs before ``json.loads`` (request bodies, artifact files, the library's files).

A leaf module (the standard library and numpy only, no other supportrl module), so that
``supportrl.files``, below every package, can use it too; it ships with the serving
install, which is the one part of supportrl that installs alone.
"""

from __future__ import annotations

import re

import numpy as np

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int64)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(text: bytes | str) -> int:
    """Deepest bracket nesting of JSON ``text`` (brackets inside strings ignored), without
    recursion: ``json.loads`` of a text nested deeper than the interpreter's recursion
    limit fails or, in C extensions, may crash. ``str`` is read as UTF-8."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    codes = np.frombuffer(_JSON_STRING.sub(b'""', raw), dtype=np.uint8)
    return int(np.cumsum(_OPEN[codes]).max(initial=0))
