"""`timeos emit`'s logic: read the payload, send the event, print its id.

Shared by the typer command (cli/app.py) and the fast path in cli/entry.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from timeos import paths
from timeos.cli.client import Client
from timeos.errors import PayloadError, UsageError
from timeos.payload import parse_object

# The options of `timeos emit` that take a value; cli.py declares the same (a test checks it).
VALUE_OPTIONS = ("--payload", "--payload-file", "--idempotency-key", "--occurred-at", "--socket")
FLAG_OPTIONS = ("--json",)


def read_payload(payload: str | None, payload_file: Path | None) -> dict[str, Any]:
    """The payload object from --payload JSON, --payload - (stdin) or --payload-file."""
    if payload is not None and payload_file is not None:
        raise UsageError("give either --payload or --payload-file, not both")
    if payload_file is not None:
        source = str(payload_file)
        try:
            text = payload_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PayloadError(f"--payload-file {payload_file}: {exc}") from None
    elif payload == "-":
        source, text = "--payload - (stdin)", sys.stdin.read()
    elif payload is not None:
        source, text = "--payload", payload
    else:
        return {}
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
    """Send the event to timeosd and print its id (or, with as_json, {id, duplicate, jobs})."""
    body: dict[str, Any] = {"type": event_type, "payload": read_payload(payload, payload_file)}
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
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        print(result["id"])  # only the id on stdout: `ID=$(timeos emit ...)` must always work
        if result["duplicate"]:
            sys.stderr.write("duplicate: this idempotency key was seen before; no new jobs\n")
