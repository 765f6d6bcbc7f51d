"""The optional TCP listener (`timeosd --http HOST:PORT`): its address, its token and its gate.

The Unix socket is guarded by file permissions; a TCP port is reachable by every local user (or
the network), so here a bearer token guards every state-changing request, and every request at
all once a token file is configured.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from timeos.errors import Unauthorized, UsageError

READ_METHODS = frozenset({"GET", "HEAD"})
# What a TCP listener without a token file serves to anyone: liveness and monitoring, no data.
# Jobs, events, errors and the watch stream may hold what an action's server echoed back (a
# hostile review read a header secret that way), so they need the token like writes do.
OPEN_PATHS = frozenset({"/v1/health", "/metrics", "/openapi.json"})


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """An IP literal and a port (0: the kernel picks one, logged at start)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


def parse_listen(text: str) -> ListenAddress:
    """Parse `HOST:PORT` or `[V6]:PORT`; HOST is an IP address or `localhost`. ValueError if not."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError("use HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8080")
    if host == "localhost":
        host = "127.0.0.1"  # never resolved: a hosts file could point it anywhere
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (or localhost)") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ValueError("IPv6 scope ids (%eth0) are not supported")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"port {port!r} must be a number from 0 to 65535")
    return ListenAddress(str(address), int(port))


def read_token(path: Path) -> bytes:
    """Read the bearer token from `path`, refusing a file other users may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as exc:
        raise UsageError(f"--http-token-file {path}: cannot open it: {exc.strerror}") from None
    try:
        found = os.fstat(fd)  # the file we read, not whatever the name points to a moment later
        if not stat.S_ISREG(found.st_mode):
            raise UsageError(f"--http-token-file {path}: not a regular file")
        if found.st_mode & (stat.S_IROTH | stat.S_IWOTH):
            mode = stat.S_IMODE(found.st_mode)
            raise UsageError(
                f"--http-token-file {path}: mode {mode:04o} lets every user read or change the "
                f"token; run: chmod o-rw {path}"
            )
        with os.fdopen(os.dup(fd), "rb") as file:
            token = file.read(4097).strip()
    finally:
        os.close(fd)
    if not token:
        raise UsageError(f"--http-token-file {path}: the file is empty")
    if len(token) > 4096 or any(b <= 0x20 or b == 0x7F for b in token):
        raise UsageError(
            f"--http-token-file {path}: the token must be one line of at most 4096 visible "
            "characters (no spaces)"
        )
    return token


def listener(address: ListenAddress, token_file: Path | None) -> bytes | None:
    """Check the TCP listener's settings; return its token (None: reads open, writes refused)."""
    token = read_token(token_file) if token_file is not None else None
    if token is None and not address.loopback:
        raise UsageError(
            f"--http {address}: a non-loopback address needs --http-token-file (a file readable "
            "only by timeosd holding the bearer token clients must send)"
        )
    return token


def bind_tcp(address: ListenAddress, backlog: int) -> socket.socket:
    """Bind and listen on `address`; a failure is a UsageError naming it."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        # Under the shipped hardened unit (RestrictAddressFamilies=AF_UNIX) this fails.
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(
            f"--http {address}: cannot create a TCP socket: {exc.strerror or exc}"
            " (under systemd, the unit's network restrictions need a drop-in: see timeosd(8))"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--http {address}: cannot listen: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class TokenGate:
    """ASGI wrapper for the TCP listener: the bearer token, compared in constant time."""

    def __init__(self, app: ASGIApp, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope["method"], _authorization(scope), scope.get("path", ""))
            if refusal is not None:
                response = JSONResponse(
                    Unauthorized(refusal).to_wire(),
                    status_code=Unauthorized.http_status,
                    headers={"WWW-Authenticate": 'Bearer realm="timeosd"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, authorization: bytes | None, path: str = "") -> str | None:
        """Why this request may not pass (None: it may)."""
        if self.token is None:
            if method in READ_METHODS and path in OPEN_PATHS:
                return None
            return (
                f"{method} {path} over TCP needs a bearer token: start timeosd with"
                " --http-token-file, or use the Unix socket (without a token, TCP serves only"
                f" {', '.join(sorted(OPEN_PATHS))})"
            )
        if authorization is None:
            return "this listener needs an 'Authorization: Bearer <token>' header"
        scheme, _, given = authorization.partition(b" ")
        # compare_digest takes as long for a wrong token as for a right one of the same length.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return "wrong bearer token"
        return None


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value)
    return None
