"""Parse and render durations (`1h30m`) and instants (ISO 8601 with an explicit UTC offset).

Bad text raises `error` (UsageError unless the caller says otherwise) with a message that starts
with `source`, the flag or field it came from: callers never re-wrap.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from timeos.errors import TimeOSError, UsageError

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_DURATION_MS = (
    100 * 366 * 86400 * 1000
)  # durations are bounded so date arithmetic never overflows
_DURATION = re.compile(r"(\d+)(w|d|h|ms|m|s)")


def parse_duration(
    text: str, source: str | None = None, error: type[TimeOSError] = UsageError
) -> timedelta:
    """Parse `30s`, `15m`, `2h`, `2d`, `1w`, `1h30m` (largest unit first) into a timedelta."""

    def bad(problem: str) -> TimeOSError:
        return error(f"{source}: {problem}" if source else problem)

    raw = text.strip()
    if not raw:
        raise bad("empty duration")
    pos = 0
    total_ms = 0
    seen: list[str] = []
    for match in _DURATION.finditer(raw):
        if match.start() != pos:
            break
        number, unit = int(match.group(1)), match.group(2)
        if unit in seen:
            raise bad(f"duration {text!r} repeats unit {unit!r}")
        seen.append(unit)
        total_ms += number if unit == "ms" else number * _UNITS[unit] * 1000
        pos = match.end()
    if pos != len(raw):
        raise bad(f"bad duration {text!r}: use a number and unit, e.g. 30s, 15m, 2h, 2d, 1w, 1h30m")
    order = ["w", "d", "h", "m", "s", "ms"]
    if seen != sorted(seen, key=order.index):
        raise bad(f"duration {text!r}: units must go from largest to smallest")
    if total_ms > MAX_DURATION_MS:
        raise bad(f"duration {text!r} is longer than 100 years")
    return timedelta(milliseconds=total_ms)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way parse_duration reads it (`1h30m`, `-5s`, `0s`)."""
    ms = round(delta.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    parts: list[str] = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit] * 1000
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        parts.append(f"{ms}ms")
    return sign + "".join(parts)


def parse_instant(
    text: str, source: str | None = None, error: type[TimeOSError] = UsageError
) -> datetime:
    """Parse an ISO 8601 instant that carries a UTC offset or `Z`; return it in UTC."""
    prefix = f"{source}: " if source else ""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise error(f"{prefix}{text!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise error(f"{prefix}{text!r} has no UTC offset (add Z or +HH:MM)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise error(f"{prefix}{text!r} is out of range") from None


def iso(value: datetime | None) -> str | None:
    """Render an aware datetime as ISO 8601 with its offset (UTC: +00:00)."""
    if value is None:
        return None
    return value.isoformat()


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch: how instants are stored."""
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """Inverse of to_micros, in UTC."""
    return _EPOCH + timedelta(microseconds=value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
