"""The optional TCP listener: its address, its token file, its bearer-token gate, its limits."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_daemon_start import closed_by_peer, running, until
from typer.testing import CliRunner

from timeos.daemon.http import ListenAddress, listener, parse_listen, read_token
from timeos.daemon.main import Daemon, app
from timeos.errors import UsageError

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, True),
        ("[::1]:0", "::1", 0, True),
        ("localhost:9000", "127.0.0.1", 9000, True),
        ("0.0.0.0:80", "0.0.0.0", 80, False),
        ("[::]:65535", "::", 65535, False),
        ("127.1.2.3:1", "127.1.2.3", 1, True),
    ],
    ids=["v4-loopback", "v6-loopback-port-0", "localhost", "v4-any", "v6-any-top-port", "127/8"],
)
def test_listen_addresses_parse_with_their_loopback_flag(
    text: str, host: str, port: int, loopback: bool
) -> None:
    address = parse_listen(text)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("8080", "use HOST:PORT"),
        (":8080", "use HOST:PORT"),
        ("::1:8080", "in brackets"),
        ("example.com:80", "not an IP address"),
        ("127.0.0.1:65536", "from 0 to 65535"),
        ("127.0.0.1:http", "from 0 to 65535"),
        ("[fe80::1%eth0]:80", "scope ids"),
    ],
    ids=["no-host", "empty-host", "bare-v6", "hostname", "port-too-big", "named-port", "scope"],
)
def test_bad_listen_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_listen(text)


def _token_file(tmp: Path, mode: int = 0o600, text: str = TOKEN + "\n") -> Path:
    path = tmp / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("mode", "text", "message"),
    [
        (0o644, TOKEN, "mode 0644 lets every user read or change the token"),
        (0o602, TOKEN, "mode 0602 lets every user read or change the token"),
        (0o600, "\n", "the file is empty"),
        (0o600, "two words", "one line of at most 4096 visible characters"),
    ],
    ids=["world-readable", "world-writable", "empty", "spaces"],
)
def test_a_token_file_others_can_read_or_an_unusable_token_is_refused(
    tmp_path: Path, mode: int, text: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        read_token(_token_file(tmp_path, mode, text))


def test_a_private_token_file_gives_its_token_without_the_newline(tmp_path: Path) -> None:
    assert read_token(_token_file(tmp_path, 0o640)) == TOKEN.encode()


def test_a_non_loopback_listener_needs_a_token_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="non-loopback address needs --http-token-file"):
        listener(ListenAddress("0.0.0.0", 8080), None)
    assert listener(ListenAddress("0.0.0.0", 8080), _token_file(tmp_path)) == TOKEN.encode()
    assert listener(ListenAddress("127.0.0.1", 0), None) is None


def test_timeosd_refuses_to_start_on_a_public_address_without_a_token(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: []\n")
    db = tmp_path / "t.db"
    args = ["--rules", str(rules), "--db", str(db), "--socket", str(tmp_path / "t.sock")]
    result = CliRunner().invoke(app, [*args, "--http", "0.0.0.0:0"], env={"TIMEOS_CONFIG": ""})
    assert result.exit_code == 2, result.output
    assert "timeosd: error: --http 0.0.0.0:0: a non-loopback address needs" in result.stderr
    assert not db.exists()


def _call(daemon: Daemon, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    assert daemon.http is not None
    conn = http.client.HTTPConnection(daemon.http.host, daemon.http.port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = b"{}" if method == "POST" else None
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


async def _both(daemon: Daemon, *calls: tuple[str, str, str | None]) -> list[tuple[int, Any]]:
    return [await asyncio.to_thread(_call, daemon, *c) for c in calls]


def test_loopback_without_a_token_serves_health_only_and_refuses_data_and_writes(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with running(tmp_path, http=ListenAddress("127.0.0.1", 0)) as daemon:  # type: ignore[arg-type]
            assert daemon.http is not None and daemon.http.port != 0  # port 0: one was picked
            (status, body), (data, _), (refused, error), (reload, _) = await _both(
                daemon,
                ("GET", "/v1/health", None),
                ("GET", "/v1/jobs", None),  # job errors may quote what a server echoed back
                ("POST", "/v1/reload", None),
                ("POST", "/v1/reload", "anything"),
            )
            assert status in (200, 503) and "components" in body
            assert data == 401
            assert refused == 401 and error["error"]["code"] == "unauthorized"
            assert "--http-token-file" in error["error"]["message"]
            assert reload == 401  # no token configured: no token can be right

    asyncio.run(go())


def test_with_a_token_file_every_tcp_request_needs_the_bearer_token(tmp_path: Path) -> None:
    from timeos.cli.client import Client

    async def go() -> None:
        async with running(
            tmp_path,
            http=ListenAddress("::1", 0),  # type: ignore[arg-type]
            http_token=TOKEN.encode(),  # type: ignore[arg-type]
        ) as daemon:
            answers = await _both(
                daemon,
                ("GET", "/v1/status", None),
                ("GET", "/v1/status", "wrong-token-0123456789"),
                ("GET", "/v1/status", TOKEN),
                ("POST", "/v1/reload", TOKEN),
                ("GET", "/nowhere", None),
            )
            assert [status for status, _ in answers] == [401, 401, 200, 200, 401]
            assert answers[1][1]["error"] == {
                "code": "unauthorized",
                "message": "wrong bearer token",
            }
            assert answers[3][1]["reloaded"] is True
            # The Unix socket keeps its file-permission model: no token there.
            client = Client(daemon.socket_path, timeout=10)
            reloaded = await asyncio.to_thread(client.call, "POST", "/v1/reload")
            assert reloaded["reloaded"] is True

    asyncio.run(go())


def test_tcp_connections_get_the_same_request_deadline_and_share_the_cap(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(
            tmp_path,
            request_timeout=0.3,
            max_connections=8,
            http=ListenAddress("127.0.0.1", 0),  # type: ignore[arg-type]
        ) as daemon:
            assert daemon.http is not None
            stalled = socket.create_connection((daemon.http.host, daemon.http.port))
            stalled.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            stalled.setblocking(False)
            await until(lambda: closed_by_peer(stalled), "the stalled TCP connection to close")
            assert daemon.connections.timed_out == 1
            stalled.close()
            daemon.connections.request_timeout = 60  # from here on, only the cap closes them
            idle = []
            for _ in range(6):
                unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                unix.connect(str(daemon.socket_path))
                idle.append(unix)
            tcp = [socket.create_connection((daemon.http.host, daemon.http.port)) for _ in range(6)]
            # 12 connections, 6 per listener, under one cap of 8: the oldest idle make way.
            await until(lambda: daemon.connections.evicted >= 4, "the cap over both listeners")
            assert len(daemon.connections.open) <= 8
            for s in idle + tcp:
                s.close()

    asyncio.run(go())


def test_the_daemon_parses_http_with_httptools_under_the_connection_guard():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from timeos.daemon.connections import ConnectionGuard

    guarded = ConnectionGuard(max_connections=8, request_timeout=1.0).protocol()
    assert issubclass(guarded, HttpToolsProtocol)  # h11 was 8-14% of an emit's CPU


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _cycle(method: str = "POST") -> Any:
    return SimpleNamespace(
        response_started=False,
        chunked_encoding=None,
        expected_content_length=0,
        scope={"method": method},
    )


def _start(cycle: Any, wrapped: Any, length: int | None) -> None:
    """What uvicorn's send does for http.response.start: decide the framing, write the head."""
    cycle.response_started = True
    cycle.chunked_encoding = length is None
    cycle.expected_content_length = length or 0
    wrapped.write(b"HEAD")


def test_a_fixed_length_answer_leaves_in_one_write_with_its_head():
    from timeos.daemon.connections import HeadWithBody

    transport, cycle = _Transport(), _cycle()
    wrapped = HeadWithBody(transport, cycle)
    wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the answer: at once
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    _start(cycle, wrapped, 4)
    assert len(transport.writes) == 1  # the head waits for its body
    wrapped.write(b"BODY")
    assert transport.writes[1:] == [b"HEADBODY"]
    assert wrapped.is_closing() is False  # everything else is the transport's


@pytest.mark.parametrize(
    ("method", "length"), [("GET", None), ("GET", 0), ("HEAD", 4)], ids=["chunked", "empty", "head"]
)
def test_a_streamed_empty_or_head_answer_sends_its_head_at_once(method, length):
    from timeos.daemon.connections import HeadWithBody

    transport, cycle = _Transport(), _cycle(method)
    wrapped = HeadWithBody(transport, cycle)
    _start(cycle, wrapped, length)
    assert transport.writes == [b"HEAD"]  # `timeos watch` must see the head before any event


def test_closing_sends_a_head_still_held_first():
    from timeos.daemon.connections import HeadWithBody

    transport, cycle = _Transport(), _cycle()
    wrapped = HeadWithBody(transport, cycle)
    _start(cycle, wrapped, 4)
    wrapped.close()  # the app failed after starting its answer: uvicorn closes
    assert transport.writes == [b"HEAD"] and transport.closed
