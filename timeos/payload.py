"""Parse JSON payload text into an object, with errors that name the source. Stdlib only.

Shared by the CLI (which must stay light to start fast) and the daemon's limit checks.
"""

from __future__ import annotations

import json
from typing import Any

from timeos.errors import PayloadError


def parse_object(text: str, source: str) -> dict[str, Any]:
    """Parse `text` as a JSON object; PayloadError names `source`, line and column."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise PayloadError(f"{source}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{source}: must be a JSON object, got {type(value).__name__}")
    return value


def nesting_depth(text: str) -> int:
    """How deeply arrays/objects nest in JSON text, counted without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
