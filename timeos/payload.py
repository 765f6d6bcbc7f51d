"""Parse JSON payload text into an object, with errors that name the source. Stdlib only.

Shared by the CLI (which must stay light to start fast) and the daemon's limit checks.
"""

from __future__ import annotations

import json
import math
import re
import sys

from timeos.errors import PayloadError

TYPE_CHECKING = False  # not `from typing import`: typing is a tenth of `timeos emit`'s start

if TYPE_CHECKING:
    from typing import Any

EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]+")


class _NotPortable(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotPortable(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotPortable(f"number {text[:40]} is out of range")
    return value


# One decoder for every parse: json.loads with hooks builds a new JSONDecoder per call, a
# quarter of the time `timeos emit-batch` spent checking 100,000 small lines.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def parse_json(text: str | bytes) -> Any:
    """json.loads refusing NaN, Infinity and overflowing floats (json.JSONDecodeError, or
    ValueError with the reason); lone surrogates pass: check them where the text is encoded."""
    if isinstance(text, bytes):  # as json.loads reads bytes
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    return _DECODER.decode(text)


def parse_object(text: str, source: str) -> dict[str, Any]:
    """Parse `text` as a JSON object; PayloadError names `source`, line and column.

    Stricter than json.loads where the result must survive storage and re-rendering:
    NaN/Infinity and overflowing floats are rejected (strict JSON writers refuse them), as are
    lone surrogates (not encodable as UTF-8, so not storable).
    """
    try:
        value = _DECODER.decode(text)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise PayloadError(f"{source}: JSON nested too deeply") from None
    except _NotPortable as exc:
        raise PayloadError(f"{source}: {exc}") from None
    except UnicodeError:
        raise PayloadError(f"{source}: contains a lone surrogate (\\ud800-\\udfff)") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            # Python's text suggests sys.set_int_max_str_digits(), no help to whoever sent it.
            limit = sys.get_int_max_str_digits()
            raise PayloadError(f"{source}: number too long (over {limit} digits)") from None
        raise PayloadError(f"{source}: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{source}: must be a JSON object, got {type(value).__name__}")
    return value


# json.dumps with options builds a new encoder per call: a third of the time on small payloads.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def compact_json(value: Any) -> str:
    """`value` as compact JSON text (UTF-8 kept): how payloads are measured and stored."""
    return _COMPACT.encode(value)


def encoded_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON: how payload size limits are measured."""
    return len(_COMPACT.encode(value).encode("utf-8"))


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
