"""`timeos emit`'s logic, and the console entry point that runs it without building typer's app.

typer takes 30-60 ms to import and build; a well-formed `timeos emit` does not need it. Anything
else (help, other commands, any argument argparse does not accept cleanly) goes to cli.py, so
typer stays the one source of usage text and usage errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from timeos import paths
from timeos.client import Client
from timeos.errors import PayloadError, TimeOSError, UsageError
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


def _fast_emit(argv: list[str]) -> bool:
    """Run a well-formed `timeos emit ...` and return True; False means "let typer do it"."""
    if not argv or argv[0] != "emit" or any(a in ("-h", "--help") for a in argv):
        return False
    import argparse

    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False, allow_abbrev=False)
    # Optional here so a missing TYPE falls through to typer's usage error (argparse would
    # print its own usage first: exit_on_error does not cover missing arguments in 3.11).
    parser.add_argument("event_type", nargs="?")
    for option in VALUE_OPTIONS:
        parser.add_argument(option)
    for flag in FLAG_OPTIONS:
        parser.add_argument(flag, action="store_true")
    try:
        args, rest = parser.parse_known_args(argv[1:])
    except (argparse.ArgumentError, SystemExit):
        return False
    if rest or args.event_type is None or args.event_type.startswith("-"):
        return False
    if any(getattr(args, o[2:].replace("-", "_")) == "" for o in VALUE_OPTIONS):
        return False  # an empty value: let typer judge it, as it would without this path
    try:
        emit_event(
            args.event_type,
            payload=args.payload,
            payload_file=Path(args.payload_file) if args.payload_file else None,
            idempotency_key=args.idempotency_key,
            occurred_at=args.occurred_at,
            as_json=args.json,
            socket_path=Path(args.socket) if args.socket else None,
        )
    except TimeOSError as err:
        sys.stderr.write(f"Error: {err.message}\n")
        sys.exit(err.exit_code)
    return True


def main() -> None:
    """Console-script entry point of `timeos`."""
    if _fast_emit(sys.argv[1:]):
        sys.exit(0)
    from timeos.cli import main as typer_main

    typer_main()
