"""The `timeos` console entry point: runs a well-formed `timeos emit` without building typer's app.

typer takes 30-60 ms to import and build; a well-formed `timeos emit` does not need it. A plain
one goes by cli/quick.py (stdlib socket and json only), the rest of them by argparse here.
Anything else (help, other commands, any argument argparse does not accept cleanly) goes to
cli/app.py, so typer stays the one source of usage text and usage errors.
"""

from __future__ import annotations

import json
import os
import sys

from timeos.errors import TimeOSError, UsageError

TYPE_CHECKING = False  # not `from typing import`: typing is a tenth of `timeos emit`'s start

if TYPE_CHECKING:
    from typing import NoReturn


def fail(err: TimeOSError, as_json: bool, exit_code: int | None = None) -> NoReturn:
    """Print `err` to stderr (`Error: ...`, or with --json the API's error object) and exit."""
    if as_json:
        sys.stderr.write(json.dumps(err.to_wire(), ensure_ascii=False) + "\n")
    else:
        message = err.message
        if sys.stderr.isatty():
            from timeos.cli.table import visible

            message = visible(message, keep_newlines=True)  # it may quote stored values
        sys.stderr.write(f"Error: {message}\n")
    sys.exit(err.exit_code if exit_code is None else exit_code)


def _fast_emit(argv: list[str]) -> bool:
    """Run a well-formed `timeos emit ...` and return True; False means "let typer do it"."""
    if not argv or argv[0] != "emit" or any(a in ("-h", "--help") for a in argv):
        return False
    import argparse
    from pathlib import Path

    from timeos.cli.emit import FLAG_OPTIONS, VALUE_OPTIONS, emit_event

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
        fail(err, "--json" in argv)  # --json anywhere, as for every other command
    return True


# Options whose value is a file or socket path: any bytes the file system allows, UTF-8 or not.
PATH_OPTIONS = ("--payload-file", "--socket", "--rules")


def undecodable_argument(argv: list[str]) -> str | None:
    """Describe the first argument that is not valid UTF-8 (None if all are), path values aside.

    Python hands such bytes over as lone surrogates (surrogateescape); sent to the daemon or
    printed they would end in a UnicodeEncodeError traceback.
    """
    # Their positional arguments are all file paths.
    offline_paths = argv[:2] == ["rules", "check"] or argv[:1] == ["emit-batch"]
    after_path_option = False
    for number, arg in enumerate(argv, 1):
        is_path = after_path_option or (offline_paths and not arg.startswith("-"))
        after_path_option = arg in PATH_OPTIONS
        if arg.startswith("--") and arg.partition("=")[0] in PATH_OPTIONS:
            is_path = True
        if is_path:
            continue
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = repr(arg.encode("utf-8", "surrogateescape"))[2:-1]
            return f"argument {number} '{shown}' is not valid UTF-8"
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of `timeos`."""
    args = sys.argv[1:] if argv is None else argv
    problem = undecodable_argument(args)
    if problem is not None:
        usage = UsageError(f"{problem}; arguments must be UTF-8 text (paths aside)")
        fail(usage, "--json" in args, 2)
    if argv is not None:
        sys.argv[1:] = argv  # typer reads sys.argv
    if args[:1] in (["emit"], ["next"]):
        from timeos.cli import quick

        run = quick.emit if args[0] == "emit" else quick.next_fires
        code = run(args, os.environ)
        if code is not None:
            sys.exit(code)
    if _fast_emit(args):
        sys.exit(0)
    from timeos.cli.app import main as typer_main

    typer_main()
