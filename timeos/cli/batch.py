"""`timeos emit-batch`'s logic: read JSON lines, check every one (naming its line), send them in
as few requests as the daemon's per-request cap allows, and confirm before destructive bulk work.

Each request is one transaction in timeosd; a file over the cap (100,000 events, or 64 times the
payload limit in bytes) goes in several requests, each atomic on its own.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from timeos.cli.client import Client
from timeos.cli.emit import os_problem, payload_cap
from timeos.errors import PayloadError, TimeOSError, UsageError
from timeos.payload import EVENT_TYPE, encoded_size, parse_json
from timeos.timefmt import parse_instant

MAX_BATCH_EVENTS = 100_000  # timeosd's daemon.flow.MAX_BATCH_EVENTS (a test keeps them equal)
BATCH_BODY_FACTOR = 64  # and its BATCH_BODY_FACTOR
FIELDS = {"type", "payload", "idempotency_key", "occurred_at"}
MAX_KEY = 256
MAX_TYPE = 200
RESERVED_KEY_PREFIX = "timeos:"


def read_lines(source: str) -> Iterator[tuple[int, bytes]]:
    """(line number, text) of every non-blank line of FILE, or of stdin for `-`."""
    stream: BinaryIO
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")
    except OSError as exc:
        raise UsageError(f"{source}: {os_problem(exc)}") from None
    try:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if line:
                yield number, line
    except OSError as exc:
        raise TimeOSError(f"{source}: {os_problem(exc)}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def check_line(raw: bytes, cap: int, types: set[str] | None = None) -> dict[str, Any]:
    """One line as an event object, checked as timeosd will check it (PayloadError if not)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"not UTF-8 (byte {exc.start})") from None
    try:
        item = parse_json(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError(str(exc)) from None
    if not isinstance(item, dict):
        raise PayloadError(f"must be a JSON object, got {type(item).__name__}")
    unknown = set(item) - FIELDS
    if unknown:
        raise PayloadError(f"unknown field(s): {', '.join(sorted(unknown))}")
    event_type = item.get("type")
    if not isinstance(event_type, str):
        raise PayloadError("needs a string field 'type'")
    if types is None or event_type not in types:
        if not 1 <= len(event_type) <= MAX_TYPE or not EVENT_TYPE.fullmatch(event_type):
            raise PayloadError(
                f"event type {event_type!r} must be 1..{MAX_TYPE} letters, digits and _ - . :"
            )
        if types is not None:
            types.add(event_type)
    payload = item.get("payload", {})
    if not isinstance(payload, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(payload).__name__}")
    if len(raw) > cap and (size := encoded_size(payload)) > cap:
        raise PayloadError(f"payload: {size} bytes is over the limit of {cap} bytes")
    key = item.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY:
            raise PayloadError(f"idempotency_key must be a string of 1..{MAX_KEY} characters")
        if key.startswith(RESERVED_KEY_PREFIX):
            raise PayloadError(
                f"idempotency keys starting with {RESERVED_KEY_PREFIX!r} are reserved"
            )
    occurred = item.get("occurred_at")
    if occurred is not None:
        if not isinstance(occurred, str):
            raise PayloadError("occurred_at must be an ISO 8601 string")
        parse_instant(occurred, "occurred_at", PayloadError)
    return item


def emit_batch(source: str, client: Client, environ: Mapping[str, str] = os.environ) -> list[Any]:
    """Check every line, then send them; the daemon's results, in input order."""
    cap = payload_cap(environ)
    lines: list[int] = []
    bodies: list[bytes] = []
    problems: list[str] = []
    keys: dict[str, tuple[int, str]] = {}
    types: set[str] = set()
    for number, raw in read_lines(source):
        try:
            item = check_line(raw, cap, types)
        except TimeOSError as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        key = item.get("idempotency_key")
        if key is not None:
            same = json.dumps([item["type"], item.get("payload", {})], sort_keys=True)
            first = keys.setdefault(key, (number, same))
            if first[1] != same:
                problems.append(
                    f"line {number}: idempotency key {key!r} was already used on line"
                    f" {first[0]} with a different type or payload"
                )
                continue
        lines.append(number)
        bodies.append(raw)
    if problems:
        raise PayloadError(f"{len(problems)} bad line(s), nothing stored:\n" + "\n".join(problems))
    if not bodies:
        raise UsageError(f"{'stdin' if source == '-' else source}: no events to emit")
    results: list[Any] = []
    limit = cap * BATCH_BODY_FACTOR - 64
    for start, end in _chunks(bodies, limit):
        body = b'{"events":[' + b",".join(bodies[start:end]) + b"]}"
        try:
            answer = client.call_raw("POST", "/v1/events/batch", body)
        except TimeOSError as exc:
            exc.message = _to_lines(exc.message, lines[start:end])
            exc.args = (exc.message,)
            if results:  # earlier requests were stored (each request is its own transaction)
                exc.message += f"\n(the first {len(results)} events were stored)"
            raise
        results += answer["results"]
    return results


def _chunks(bodies: list[bytes], limit: int) -> Iterator[tuple[int, int]]:
    start, size = 0, 0
    for n, body in enumerate(bodies):
        if n > start and (n - start >= MAX_BATCH_EVENTS or size + len(body) + 1 > limit):
            yield start, n
            start, size = n, 0
        size += len(body) + 1
    yield start, len(bodies)


def _to_lines(message: str, lines: list[int]) -> str:
    """The daemon names events by index in its request (`events[3]`); say which line that was."""

    def line(match: re.Match[str]) -> str:
        index = int(match[1])
        return f"line {lines[index]}" if index < len(lines) else match[0]

    return re.sub(r"events\[(\d+)\]", line, message)


def confirm(what: str, yes: bool) -> None:
    """Go on if `yes`, or if a person at the terminal says so; refuse (exit 2) otherwise.

    `what` is the deed in the infinitive: `cancel every waiting job of rule 'x'`.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without confirmation (not a terminal); pass --yes")
    sys.stderr.write(f"{what[0].upper()}{what[1:]}? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        sys.stderr.write("Aborted; nothing changed.\n")
        raise SystemExit(1)


def read_source_name(source: Path | str | None) -> str:
    """FILE as given, `-` for stdin (also when omitted)."""
    return "-" if source is None else str(source)
