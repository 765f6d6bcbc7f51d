"""`timeos emit`'s logic: read the payload, send the event, print its id.

Shared by the typer command (cli/app.py) and the fast path in cli/entry.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from timeos import paths
from timeos.cli.client import Client
from timeos.cli.quick import print_result
from timeos.errors import PayloadError, UsageError
from timeos.payload import parse_object

# The options of `timeos emit` that take a value; cli.py declares the same (a test checks it).
VALUE_OPTIONS = ("--payload", "--payload-file", "--idempotency-key", "--occurred-at", "--socket")
FLAG_OPTIONS = ("--json",)


# timeosd's default --max-payload-bytes (engine.MAX_PAYLOAD_BYTES, not imported: the fast emit
# path must not load the engine). A daemon started with a bigger limit needs the same number in
# TIMEOS_MAX_PAYLOAD_BYTES here; the daemon still judges every payload itself.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def payload_cap(environ: Mapping[str, str]) -> int:
    """How many payload bytes the CLI reads at most: TIMEOS_MAX_PAYLOAD_BYTES or 1 MiB."""
    raw = environ.get("TIMEOS_MAX_PAYLOAD_BYTES")
    if raw is None:
        return DEFAULT_MAX_PAYLOAD_BYTES
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise UsageError(f"TIMEOS_MAX_PAYLOAD_BYTES={raw!r} must be a whole number >= 1")
    return int(raw)


def os_problem(exc: OSError) -> str:
    """`no such file`, `permission denied`: what went wrong, without Python's `[Errno 2]`."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def read_payload(
    payload: str | None, payload_file: Path | None, limit: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> dict[str, Any]:
    """The payload object from --payload JSON, --payload - (stdin) or --payload-file.

    Reads at most `limit` + 1 bytes: `--payload-file /dev/zero` must fail, not fill memory.
    """
    if payload is not None and payload_file is not None:
        raise UsageError("give either --payload or --payload-file, not both")
    if payload_file is not None:
        source = f"--payload-file {payload_file}"
        try:
            with payload_file.open("rb") as f:
                raw = f.read(limit + 1)
        except OSError as exc:
            raise PayloadError(f"{source}: {os_problem(exc)}") from None
    elif payload == "-":
        source, raw = "--payload - (stdin)", sys.stdin.buffer.read(limit + 1)
    elif payload is not None:
        source, raw = "--payload", payload.encode("utf-8", "surrogatepass")
    else:
        return {}
    if len(raw) > limit:
        raise PayloadError(
            f"{source}: more than {limit} bytes, over the payload limit"
            " (set TIMEOS_MAX_PAYLOAD_BYTES if timeosd runs with a bigger --max-payload-bytes)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{source}: not UTF-8 (byte {exc.start})") from None
    return parse_object(text, source)


def emit_event(
    event_type: str,
    *,
    payload: str | None,
    payload_file: Path | None,
    idempotency_key: str | None,
    occurred_at: str | None,
    as_json: bool,
    socket_path: Path | None,
) -> None:
    """Send the event to timeosd and print its id (or, with as_json, the daemon's answer)."""
    limit = payload_cap(os.environ)
    body: dict[str, Any] = {
        "type": event_type,
        "payload": read_payload(payload, payload_file, limit),
    }
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if occurred_at is not None:
        from datetime import datetime

        try:
            parsed = datetime.fromisoformat(occurred_at)
        except ValueError:
            raise PayloadError(f"--occurred-at {occurred_at!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise PayloadError(f"--occurred-at {occurred_at!r} needs a UTC offset or Z")
        body["occurred_at"] = occurred_at
    client = Client(socket_path or paths.default_socket(os.environ))
    result = client.call("POST", "/v1/events", body)
    print_result(result, as_json)
