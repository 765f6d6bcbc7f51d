"""Small, fast stdlib client for the daemon's HTTP/JSON API on the Unix socket.

HTTP/1.1 written by hand on a raw socket: http.client would pull in email and ssl, a quarter of
`timeos emit`'s start-up budget. One request per connection (`Connection: close`) unless the
client is made with `keep_alive=True`, for a process that sends several requests: then one
connection carries them all (connecting and closing cost the daemon more than parsing).
The CLI's `emit` path imports only this (and typer): no Starlette, no SQLite, no CEL.
"""

from __future__ import annotations

import json
import select
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
    """One request per call; raises TimeOSError subclasses rebuilt from the daemon's errors.

    With `keep_alive`, the connection stays open between calls (close() ends it; so does the
    process). A connection the daemon closed meanwhile (idle for its keep-alive timeout) is
    noticed before the request is sent, and a new one is opened: a request is never sent twice.
    """

    def __init__(self, socket_path: Path, timeout: float = 30.0, keep_alive: bool = False) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._conn: _Connection | None = None

    def close(self) -> None:
        """Close the kept-alive connection, if any."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        connection = "keep-alive" if self.keep_alive else "close"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: timeosd\r\nConnection: {connection}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        request = head.encode() + data
        if self.keep_alive:
            status, headers, raw = self._exchange_kept(request)
        else:
            status, headers, raw = self._exchange(request)
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

    def _exchange_kept(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send on the kept connection (a new one if there is none or the daemon closed it)."""
        conn = self._conn
        if conn is not None and not conn.usable():
            conn.close()
            conn = self._conn = None
        if conn is None:
            with _unreachable(self.socket_path, self.timeout):
                conn = _Connection.open(self.socket_path, self.timeout)
            self._conn = conn
        try:
            with _unreachable(self.socket_path, self.timeout, answered=False):
                try:
                    conn.sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    # An oversized body is refused (answered, then closed) while we send.
                    answer = _read_answer(conn.sock)
                    if answer is None:
                        raise
                    return _parse_response(answer, self.socket_path)
                status, headers, body = conn.response(self.socket_path)
        except BaseException:
            self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

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


class _Connection:
    """A kept-alive connection to the daemon and its buffered reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    @classmethod
    def open(cls, where: Path, timeout: float) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(where))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def usable(self) -> bool:
        """Whether the daemon still holds this connection open (nothing unread arrived)."""
        # Readable before we asked anything: the daemon closed it (end of file), or it sent
        # bytes no request of ours is waiting for. Either way the connection is done.
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def response(self, where: Path) -> tuple[int, dict[str, str], bytes]:
        """Read one answer: its head, then a body framed by Content-Length or chunks."""
        status, headers = _read_head(self.reader, where, sent=True)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            pieces: list[bytes] = []
            size = 0
            for piece in _dechunked(self.reader):
                size += len(piece)
                if size > MAX_RESPONSE:
                    raise TimeOSError("timeosd's answer is larger than 64 MiB")
                pieces.append(piece)
            while self.reader.readline(8192) not in (b"\r\n", b"\n", b""):
                pass  # trailers, up to the blank line that ends the answer
            return status, headers, b"".join(pieces)
        length = headers.get("content-length", "")
        if not length.isdigit():  # framed by the end of the connection
            headers["connection"] = "close"
            body = self.reader.read(MAX_RESPONSE + 1)
            if len(body) > MAX_RESPONSE:
                raise TimeOSError("timeosd's answer is larger than 64 MiB")
            return status, headers, body
        if int(length) > MAX_RESPONSE:
            raise TimeOSError("timeosd's answer is larger than 64 MiB")
        body = self.reader.read(int(length))
        if len(body) < int(length):
            raise DaemonUnreachable(
                f"timeosd on socket {where} stopped mid-answer ({len(body)} of {length} bytes);"
                " the request may still have taken effect (check before retrying)"
            )
        return status, headers, body

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _unreachable(where: Path, timeout: float, answered: bool = True) -> _translated:
    """Socket errors as DaemonUnreachable; after the request was sent (`answered` False), the
    message says it may have taken effect."""
    return _translated(where, timeout, sent=not answered)


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

    def __init__(self, where: Path, timeout: float, sent: bool = False) -> None:
        self.where = where
        self.timeout = timeout
        self.sent = sent

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
        maybe = "; the request may still have taken effect (check before retrying)"
        maybe = maybe if self.sent else ""
        if isinstance(exc, TimeoutError):
            raise DaemonUnreachable(
                f"timeosd on socket {where} did not answer within {self.timeout:g}s{maybe}"
            ) from None
        raise DaemonUnreachable(f"timeosd on socket {where} did not answer: {exc}{maybe}") from None


def _read_head(reader: Any, where: Path, sent: bool = False) -> tuple[int, dict[str, str]]:
    """The status and headers (names lower-case) of an answer being read from `reader`
    (`sent`: a request went out on this connection, so closing without an answer may mean it
    took effect)."""
    first = reader.readline(8192)
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        if not first and sent:
            raise DaemonUnreachable(
                f"timeosd on socket {where} closed the connection without answering; the"
                " request may still have taken effect (check before retrying)"
            )
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
