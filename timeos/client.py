"""Small, fast stdlib client for the daemon's HTTP/JSON API on the Unix socket.

The CLI's `emit` path imports only this (and typer): no Starlette, no SQLite, no CEL.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from timeos.errors import DaemonUnreachable, TimeOSError, from_wire


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


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
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                path = f"{path}?{urlencode(pairs)}"
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn = _UnixConnection(str(self.socket_path), self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
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
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(
                f"timeosd on socket {self.socket_path} did not answer: {exc}"
            ) from None
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            raise TimeOSError(f"timeosd sent a non-JSON answer (HTTP {response.status})") from None
        if response.status >= 400:
            error = (decoded or {}).get("error", {}) if isinstance(decoded, dict) else {}
            problems = error.get("problems")
            message = "\n".join(problems) if problems else error.get("message", raw.decode())
            raise from_wire(error.get("code", "error"), message)
        return decoded


def segment(value: str) -> str:
    """Quote one path segment (ids and rule names go into URLs)."""
    return quote(value, safe="")
