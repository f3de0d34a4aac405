"""The one JSON nesting check (request bodies, artifact files and the library's files use it)."""

from __future__ import annotations

import pytest
from supportrl.serving.json_limits import json_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("1", 0),
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["[[[[", "{{"]', 1),  # brackets inside strings do not count
        ('["a\\"[[[", "\\\\", [[]]]', 3),  # escaped quote and backslash end strings right
        ("[" * 5000 + "]" * 5000, 5000),  # no recursion
        ('{"é": ["ü"]}', 2),
    ],
)
def test_json_depth_by_hand(text: str, depth: int) -> None:
    assert json_depth(text) == depth
    assert json_depth(text.encode()) == depth  # bytes (a request body) the same as str


def test_every_json_reader_uses_the_one_check() -> None:
    import supportrl.serving.artifact
    import supportrl.serving.http_requests

    import supportrl.files

    readers = (supportrl.files, supportrl.serving.artifact, supportrl.serving.http_requests)
    assert all(m.json_depth is json_depth for m in readers)
