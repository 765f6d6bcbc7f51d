"""What every action kind receives (ActionContext, Emitter) and the small helpers they share.

Kept apart from `__init__` so the per-kind modules can import it without an import cycle.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from timeos.timefmt import format_duration


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Who is running: the job, its rule and action, the triggering event and the attempt."""

    job_id: str
    rule: str
    action: str
    event_id: str | None
    event_type: str | None
    attempt: int
    scheduled_for: datetime  # aware UTC
    payload: Mapping[str, Any]


# (event_type, payload, ctx) -> id of the new event
Emitter = Callable[[str, Mapping[str, Any], ActionContext], Awaitable[str]]


def payload_json(payload: Mapping[str, Any]) -> bytes:
    """Encode a payload as compact UTF-8 JSON (nested read-only Mappings included)."""
    return json.dumps(
        dict(payload), default=_mapping_as_dict, ensure_ascii=False, separators=(",", ":")
    ).encode()


def _mapping_as_dict(value: object) -> dict[str, Any]:
    # Payloads may arrive as MappingProxyType or other read-only Mappings, which json rejects.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def describe(exc: BaseException) -> str:
    """Render an exception as `Type: message` (just `Type` when it has no message)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def timeout_message(timeout: timedelta) -> str:
    """Render the error of a run that hit its deadline: `timed out after 30s`."""
    return f"timed out after {format_duration(timeout)}"


def decode(data: bytes) -> str:
    """Decode captured bytes as UTF-8, replacing what does not decode."""
    return data.decode("utf-8", errors="replace")
