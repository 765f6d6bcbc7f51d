"""Small, fast stdlib client for the daemon's HTTP/JSON API on the Unix socket.

One HTTP/1.1 request per connection (`Connection: close`), written by hand on a raw socket:
http.client would pull in email and ssl, a quarter of `timeos emit`'s start-up budget.
The CLI's `emit` path imports only this (and typer): no Starlette, no SQLite, no CEL.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from timeos.errors import DaemonUnreachable, TimeOSError, from_wire

MAX_RESPONSE = 64 * 1024 * 1024


class Reply:
    """A decoded answer with its headers (names lower-case), for calls that need both."""

    __slots__ = ("body", "headers")

    def __init__(self, body: Any, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = headers

    def total(self) -> int | None:
        """The X-Total-Count of a list page (None from a daemon that does not send it)."""
        raw = self.headers.get("x-total-count", "")
        return int(raw) if raw.isdigit() else None


class Client:
    """One request per call; raises TimeOSError subclasses rebuilt from the daemon's errors."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer."""
        return self.request(method, path, body, query).body

    def call_raw(self, method: str, path: str, body: bytes) -> Any:
        """Send a body already encoded as JSON (a batch of lines joined, not re-encoded)."""
        return self.request(method, path, raw_body=body).body

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        raw_body: bytes | None = None,
    ) -> Reply:
        """Send one request and return the decoded JSON answer with the response headers.

        An error status in `accept` is an answer, not an error (health's 503 carries its body).
        """
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                path = f"{path}?{urlencode(pairs)}"
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else b""
        if raw_body is not None:
            data = raw_body
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: timeosd\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        status, headers, raw = self._exchange(head.encode() + data)
        if status < 200 or 300 <= status < 400:
            # timeosd answers 2xx or an error envelope; anything else (a redirect from a
            # router, say) has no body to go on, and passing None on as success crashes later.
            where = f" to {headers['location']}" if headers.get("location") else ""
            raise TimeOSError(f"timeosd sent an unexpected answer (HTTP {status}{where})")
        try:
            decoded = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise TimeOSError(f"timeosd sent a non-JSON answer (HTTP {status})") from None
        if status >= 400 and status not in accept:
            _raise_error(status, raw, decoded)
        if decoded is None:
            raise TimeOSError(f"timeosd sent an empty answer (HTTP {status})")
        return Reply(decoded, headers)

    def stream(self, path: str, query: dict[str, Any] | None = None) -> Iterator[tuple[str, str]]:
        """GET `path` and yield its server-sent events as (event, data) while they come.

        Ends when the daemon ends the stream (it is shutting down); DaemonUnreachable when the
        connection breaks mid-stream. Only connecting and the answer's head are timed out:
        between events the stream may be quiet for as long as nothing happens.
        """
        pairs = {k: v for k, v in (query or {}).items() if v is not None}
        if pairs:
            path = f"{path}?{urlencode(pairs)}"
        head = (
            f"GET {path} HTTP/1.1\r\nHost: timeosd\r\nConnection: close\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with _translated(self.socket_path, self.timeout):
                sock.connect(str(self.socket_path))
                sock.sendall(head.encode())
                reader = sock.makefile("rb")
                status, headers = _read_head(reader, self.socket_path)
                if status >= 400:
                    length = headers.get("content-length", "")
                    raw = reader.read(int(length)) if length.isdigit() else reader.read()
                    _raise_error(status, raw)
                sock.settimeout(None)
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            body = _dechunked(reader) if chunked else iter(lambda: reader.read1(65536), b"")
            try:
                yield from _events(body)
            except OSError as exc:
                raise DaemonUnreachable(
                    f"timeosd on socket {self.socket_path} broke off the stream: {exc}"
                ) from None
        finally:
            sock.close()

    def _exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                # timeosd refuses an oversized body as soon as it sees it, answers, and closes
                # while we are still sending: its answer is what the user needs to see.
                answer = _read_answer(sock)
                if answer is None:
                    raise
                return _parse_response(answer, self.socket_path)
            chunks: list[bytes] = []
            size = 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE:
                    raise TimeOSError("timeosd's answer is larger than 64 MiB")
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnreachable(
                f"timeosd is not running on socket {self.socket_path} ({exc.strerror}). Start it"
                f" with: timeosd --rules rules.yaml --socket {self.socket_path}"
            ) from None
        except PermissionError:
            raise DaemonUnreachable(
                f"permission denied on socket {self.socket_path}: join the daemon's group"
                " or run as its user"
            ) from None
        except TimeoutError:
            raise DaemonUnreachable(
                f"timeosd on socket {self.socket_path} did not answer within {self.timeout:g}s;"
                " the request may still have taken effect (check before retrying)"
            ) from None
        except OSError as exc:
            raise DaemonUnreachable(
                f"timeosd on socket {self.socket_path} did not answer: {exc}"
            ) from None
        finally:
            sock.close()
        return _parse_response(b"".join(chunks), self.socket_path)


def _read_answer(sock: socket.socket) -> bytes | None:
    """Whatever the daemon sent before closing, if it looks like an HTTP answer."""
    chunks: list[bytes] = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_RESPONSE:
                return None
    except OSError:
        pass  # a reset after the answer: keep what arrived
    raw = b"".join(chunks)
    return raw if raw.startswith(b"HTTP/") else None


def _parse_response(raw: bytes, where: Path) -> tuple[int, dict[str, str], bytes]:
    if not raw:
        # A daemon that crashed or was killed mid-request: it is timeosd, and it may have acted.
        raise DaemonUnreachable(
            f"timeosd on socket {where} closed the connection without answering; the request"
            " may still have taken effect (check before retrying)"
        )
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise DaemonUnreachable(f"{where} did not answer with HTTP; is it timeosd's socket?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    elif headers.get("content-length", "").isdigit():
        length = int(headers["content-length"])
        if len(body) < length:
            # The daemon died mid-answer (kill -9): the request may or may not have taken
            # effect, exactly as when no answer came at all.
            raise DaemonUnreachable(
                f"timeosd on socket {where} stopped mid-answer ({len(body)} of {length} bytes);"
                " the request may still have taken effect (check before retrying)"
            )
        body = body[:length]
    return int(parts[1]), headers, body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def segment(value: str) -> str:
    """Quote one path segment (ids and rule names go into URLs)."""
    return quote(value, safe="")


def _raise_error(status: int, raw: bytes, decoded: Any = None) -> None:
    """Rebuild the daemon's error envelope as the TimeOSError it stands for."""
    if decoded is None:
        try:
            decoded = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise TimeOSError(f"timeosd sent a non-JSON answer (HTTP {status})") from None
    error = decoded.get("error", {}) if isinstance(decoded, dict) else {}
    problems = error.get("problems")
    message = "\n".join(problems) if problems else error.get("message", raw.decode())
    raise from_wire(error.get("code", "error"), message)


class _translated:
    """Turn socket errors while connecting and reading an answer's head into DaemonUnreachable."""

    def __init__(self, where: Path, timeout: float) -> None:
        self.where = where
        self.timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        where = self.where
        if kind is None or not issubclass(kind, OSError):
            return
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            raise DaemonUnreachable(
                f"timeosd is not running on socket {where} ({exc.strerror}). Start it"
                f" with: timeosd --rules rules.yaml --socket {where}"
            ) from None
        if isinstance(exc, PermissionError):
            raise DaemonUnreachable(
                f"permission denied on socket {where}: join the daemon's group or run as its user"
            ) from None
        if isinstance(exc, TimeoutError):
            raise DaemonUnreachable(
                f"timeosd on socket {where} did not answer within {self.timeout:g}s"
            ) from None
        raise DaemonUnreachable(f"timeosd on socket {where} did not answer: {exc}") from None


def _read_head(reader: Any, where: Path) -> tuple[int, dict[str, str]]:
    """The status and headers (names lower-case) of an answer being read from `reader`."""
    first = reader.readline(8192)
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        if not first:
            raise DaemonUnreachable(f"timeosd on socket {where} closed the connection")
        raise DaemonUnreachable(f"{where} did not answer with HTTP; is it timeosd's socket?")
    headers: dict[str, str] = {}
    while (line := reader.readline(8192)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(parts[1]), headers


def _dechunked(reader: Any) -> Iterator[bytes]:
    """The pieces of a chunked body as they arrive; ends at the last chunk."""
    while True:
        size_line = reader.readline(1024)
        if not size_line:
            raise ConnectionResetError("the stream ended without its last chunk")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = reader.read(size + 2)  # the chunk and its CRLF
        if len(data) < size + 2:
            raise ConnectionResetError("the stream ended mid-chunk")
        yield data[:size]


def _events(pieces: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """Server-sent events (event name, data) parsed from body pieces; comments skipped."""
    buffer = b""
    event, data = "message", list[str]()
    for piece in pieces:
        buffer += piece
        while (end := buffer.find(b"\n")) >= 0:
            line = buffer[:end].rstrip(b"\r").decode("utf-8", errors="replace")
            buffer = buffer[end + 1 :]
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", list[str]()
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
