"""`timeos emit TYPE [--payload JSON] [--idempotency-key K] [--socket PATH] [--json]` on the
shortest road: os, sys, json and socket, nothing else, for the scripts that call it per event;
and `timeos next --cron EXPR [--tz Z] [--after T] [--count N] [--json]` into a pipe (or as
JSON) without typer, the HTTP client or asyncio.

Anything this path does not take plainly (other options, help, a payload it would not send, a
daemon it cannot connect to) is handed on before a byte is sent, to the argparse path in
cli/entry.py or to typer, so usage text and errors have one source. After sending, the answer
is judged by the same code as every other command's (cli/client.py); tests/test_cli_quick.py
runs both paths and compares their output and exit codes.
"""

from __future__ import annotations

import json
import socket
import sys

TYPE_CHECKING = False  # not `from typing import`: typing is a tenth of `timeos emit`'s start

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import NoReturn

    from timeos.errors import TimeOSError

# The options taken here; each needs a value, which must be non-empty and not look like an
# option (typer judges those).
_VALUES = ("--payload", "--idempotency-key", "--socket")
_TIMEOUT = 30.0  # seconds, as the CLI's Client
_MAX_RESPONSE = 64 * 1024 * 1024


def emit(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """Run a plain `timeos emit` and return its exit code; None: take the usual road."""
    given = _parse(argv)
    if given is None:
        return None
    as_json = "--json" in given
    body = _body(given, environ)
    if body is None:
        return None
    path = given.get("--socket") or environ.get("TIMEOS_SOCKET")
    if not path:
        from timeos import paths

        path = str(paths.default_socket(environ))
    data = json.dumps(body, ensure_ascii=False).encode()
    request = (
        "POST /v1/events HTTP/1.1\r\nHost: timeosd\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None  # nothing sent: the usual road connects again and says what is wrong
    try:
        raw = _exchange(sock, request, path, as_json)
    finally:
        sock.close()
    result = _success(raw)
    if result is None:
        result = _judged(raw, path, as_json)  # an error answer, or one to look at closely
    print_result(result, as_json)
    return 0


def print_result(result: dict[str, object], as_json: bool) -> None:
    """Print the daemon's answer to an emit: the event id (notes on stderr), or all as JSON."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        return
    print(result["id"])  # only the id on stdout: `ID=$(timeos emit ...)` must always work
    if result["duplicate"]:
        sys.stderr.write("duplicate: this idempotency key was seen before; no new jobs\n")
    # Correlation's effects go to stderr too, so stdout stays the id alone.
    if result.get("cancelled"):
        sys.stderr.write(f"cancelled (cancel_on): {' '.join(result['cancelled'])}\n")  # type: ignore[arg-type]
    if result.get("debounced"):
        sys.stderr.write(f"debounced into: {' '.join(result['debounced'])}\n")  # type: ignore[arg-type]


def _parse(argv: list[str]) -> dict[str, str] | None:
    if len(argv) < 2 or argv[0] != "emit":
        return None
    given = _options(argv[1:], _VALUES, positional="TYPE")
    return given if given is not None and "TYPE" in given else None


def _options(
    args: list[str], values: Collection[str], positional: str | None = None
) -> dict[str, str] | None:
    """`--json`, each option of `values` once (`--x v` or `--x=v`) and at most one positional
    (under the key `positional`); None for anything else (help, another option, a repeat, a
    second positional, a value that looks like an option): typer's call."""
    given: dict[str, str] = {}
    rest = iter(args)
    for arg in rest:
        name, eq, value = arg.partition("=")
        if arg == "--json" and arg not in given:
            given[arg] = ""
        elif name in values and name not in given:
            value = value if eq else next(rest, "")
            if not value or value.startswith("-"):
                return None
            given[name] = value
        elif positional and not arg.startswith("-") and positional not in given:
            given[positional] = arg
        else:
            return None
    return given


def _body(given: dict[str, str], environ: Mapping[str, str]) -> dict[str, object] | None:
    """The request body, or None where the usual road must read or judge the payload."""
    payload: dict[str, object] = {}
    text = given.get("--payload")
    if text is not None:
        if text == "-" or "TIMEOS_MAX_PAYLOAD_BYTES" in environ:
            return None
        from timeos.payload import parse_object

        raw = text.encode("utf-8", "surrogatepass")
        if len(raw) > 1024 * 1024:  # cli/emit.py's DEFAULT_MAX_PAYLOAD_BYTES
            return None
        try:
            payload = parse_object(raw.decode("utf-8"), "--payload")
        except Exception:  # PayloadError, UnicodeDecodeError: said by the usual road
            return None
    body: dict[str, object] = {"type": given["TYPE"], "payload": payload}
    if "--idempotency-key" in given:
        body["idempotency_key"] = given["--idempotency-key"]
    return body


def _exchange(sock: socket.socket, request: bytes, path: str, as_json: bool) -> bytes:
    """Send the request and read the whole answer, as Client._exchange does after connecting."""
    try:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            from timeos.cli.client import _read_answer

            answer = _read_answer(sock)  # timeosd refused the body early and answered
            if answer is None:
                raise
            return answer
        chunks: list[bytes] = []
        size = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_RESPONSE:
                from timeos.errors import TimeOSError

                _fail(TimeOSError("timeosd's answer is larger than 64 MiB"), as_json)
        return b"".join(chunks)
    except TimeoutError:
        _unreachable(
            f"timeosd on socket {_shown(path)} did not answer within {_TIMEOUT:g}s;"
            " the request may still have taken effect (check before retrying)",
            as_json,
        )
    except OSError as exc:
        _unreachable(f"timeosd on socket {_shown(path)} did not answer: {exc}", as_json)


def _success(raw: bytes) -> dict[str, object] | None:
    """The answer of a plain 2xx with a JSON object and a whole body; None for anything else."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not sep or len(parts) < 2 or parts[0] != b"HTTP/1.1" or parts[1][:1] != b"2":
        return None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = value.strip()
        elif name == b"transfer-encoding":
            return None
    if length is None or not length.isdigit() or len(body) != int(length):
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict) and "id" in decoded else None


def _judged(raw: bytes, path: str, as_json: bool) -> dict[str, object]:
    """Any other answer, judged by the CLI's client exactly as for every other command."""
    from pathlib import Path

    from timeos.cli.client import Client, _parse_response
    from timeos.errors import TimeOSError

    class Answered(Client):
        def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
            return _parse_response(raw, self.socket_path)

    try:
        result: dict[str, object] = Answered(Path(path)).call("POST", "/v1/events", {})
    except TimeOSError as err:
        _fail(err, as_json)
    return result


def _shown(path: str) -> str:
    from pathlib import Path

    return str(Path(path))  # as the client names it


def _unreachable(message: str, as_json: bool) -> NoReturn:
    from timeos.errors import DaemonUnreachable

    _fail(DaemonUnreachable(message), as_json)


def _fail(err: TimeOSError, as_json: bool) -> NoReturn:
    from timeos.cli.entry import fail

    fail(err, as_json)


_NEXT_VALUES = ("--cron", "--tz", "--after", "--count")


def next_fires(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """Run an offline `timeos next --cron` for a pipe or --json; None: take the usual road.

    A terminal gets typer's road: its table is drawn by rich, which this path would load anyway.
    """
    if len(argv) < 3 or argv[0] != "next":
        return None
    given = _options(argv[1:], _NEXT_VALUES)  # a RULE, --rules, global options: typer's
    if given is None:
        return None
    count = given.get("--count", "5")
    if "--cron" not in given or not (count.isascii() and count.isdigit()):
        return None
    if not 1 <= int(count) <= 1000 or ("--json" not in given and sys.stdout.isatty()):
        return None
    from timeos.cli.preview import cli_zone
    from timeos.clock import SystemClock
    from timeos.errors import TimeOSError
    from timeos.time.preview import cron_fires
    from timeos.timefmt import parse_instant

    try:
        # As cli/preview.py's preview() for --cron: offline, from this machine's clock.
        now = SystemClock().now()
        after = given.get("--after")
        start = parse_instant(after, "--after") if after else now
        fires = cron_fires(
            given["--cron"], cli_zone(given.get("--tz", "UTC"), environ), start, int(count)
        )
    except TimeOSError as err:
        _fail(err, "--json" in argv)
    if "--json" in given:
        sys.stdout.write(
            json.dumps([f["at_local"] for f in fires], indent=2, ensure_ascii=False) + "\n"
        )
        return 0
    from timeos.cli.output import make_view, print_sheet, view_label
    from timeos.cli.render import fires_sheet

    view = make_view(utc=False, wide=False, headers=True, environ=environ)
    print_sheet(fires_sheet(fires, now, view_label(view), view.zone), view)
    return 0
