"""The CLI's socket client against a tiny in-test HTTP server on a Unix socket we control."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from timeos.cli.client import Client, segment
from timeos.errors import (
    DaemonUnreachable,
    IdempotencyConflict,
    NotFound,
    RulesError,
    TimeOSError,
    UsageError,
)

Answer = Callable[[bytes], bytes | None]  # the raw request -> raw bytes to send (None: nothing)


def http(status: int, body: bytes, *headers: str) -> bytes:
    """A raw HTTP/1.1 response; Content-Length is added unless a header says otherwise."""
    lines = [f"HTTP/1.1 {status} X", *headers]
    if not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply(status: int, value: object) -> Answer:
    return lambda request: http(status, json.dumps(value).encode())


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers every connection with `answer(request)`; keeps the raw requests it read."""

    daemon_threads = True

    def __init__(self, path: Path, answer: Answer, per_connection: int = 1) -> None:
        self.answer = answer
        self.per_connection = per_connection  # requests answered on one connection
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = threading.Event()  # set once the server has closed a connection
        super().__init__(str(path), Handler)

    def shutdown_request(self, request: object) -> None:
        super().shutdown_request(request)  # type: ignore[arg-type]
        self.closed.set()


class Handler(socketserver.BaseRequestHandler):
    server: Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        self.server.connections += 1
        raw = b""
        for _ in range(self.server.per_connection):
            while b"\r\n\r\n" not in raw:
                if not (more := sock.recv(65536)):
                    return
                raw += more
            length = 0
            for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(raw.partition(b"\r\n\r\n")[2]) < length:
                raw += sock.recv(65536)
            head, _, rest = raw.partition(b"\r\n\r\n")
            self.server.requests.append(head + b"\r\n\r\n" + rest[:length])
            raw = rest[length:]
            answer = self.server.answer(self.server.requests[-1])
            if answer is None:
                return
            sock.sendall(answer)


@pytest.fixture
def serve(tmp_path) -> Iterator[Callable[[Answer], tuple[Client, Server]]]:
    """Start a server answering with `answer`; return a Client for it and the server."""
    started: list[Server] = []

    def start(
        answer: Answer, per_connection: int = 1, keep_alive: bool = False
    ) -> tuple[Client, Server]:
        path = tmp_path / "timeos.sock"
        server = Server(path, answer, per_connection)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        started.append(server)
        return Client(path, timeout=5, keep_alive=keep_alive), server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def test_a_json_answer_is_returned_decoded(serve):
    client, _ = serve(reply(200, {"jobs": [{"id": "j1"}], "ü": None}))
    assert client.call("GET", "/v1/jobs") == {"jobs": [{"id": "j1"}], "ü": None}


def test_the_request_carries_method_path_query_and_a_json_body(serve):
    client, server = serve(reply(201, {"id": "e1"}))
    client.call(
        "POST", "/v1/events", {"type": "e", "payload": {"name": "Zoë"}}, {"a": 1, "b": None}
    )
    (raw,) = server.requests
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/events?a=1 HTTP/1.1"  # None-valued query pairs are dropped
    assert "Connection: close" in lines and "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"type": "e", "payload": {"name": "Zoë"}}


def test_a_request_without_body_sends_content_length_zero(serve):
    client, server = serve(reply(200, {}))
    client.call("GET", "/v1/status", query={"x": None})
    head = server.requests[0].decode()
    assert head.startswith("GET /v1/status HTTP/1.1\r\n") and "Content-Length: 0\r\n" in head


def test_a_chunked_answer_is_reassembled(serve):
    body = b'{"rules": [1, 2, 3]}'
    chunked = b"5\r\n" + body[:5] + b"\r\n" + b"f;x=1\r\n" + body[5:] + b"\r\n0\r\n\r\n"
    client, _ = serve(lambda request: http(200, chunked, "Transfer-Encoding: chunked"))
    assert client.call("GET", "/v1/rules") == {"rules": [1, 2, 3]}


def test_an_answer_larger_than_one_read_arrives_whole(serve):
    big = {"blob": "x" * 300_000}
    client, _ = serve(reply(200, big))
    assert client.call("GET", "/v1/jobs") == big


@pytest.mark.parametrize(
    ("code", "status", "cls", "exit_code"),
    [
        ("usage", 400, UsageError, 2),
        ("not_found", 404, NotFound, 1),
        ("idempotency_conflict", 409, IdempotencyConflict, 1),
        ("daemon_unreachable", 503, DaemonUnreachable, 3),
        ("something_new", 418, TimeOSError, 1),
    ],
    ids=["usage", "not-found", "conflict", "unreachable", "unknown-code"],
)
def test_an_error_envelope_is_raised_as_its_error_class(serve, code, status, cls, exit_code):
    client, _ = serve(reply(status, {"error": {"code": code, "message": "it said so"}}))
    with pytest.raises(TimeOSError) as caught:
        client.call("GET", "/v1/jobs/x")
    assert type(caught.value) is cls
    assert caught.value.message == "it said so" and caught.value.exit_code == exit_code


def test_a_rules_error_keeps_each_problem(serve):
    problems = ["rules.yaml:3:5: unknown action 'x'", "rules.yaml:9:1: duplicate rule 'r'"]
    body = {"error": {"code": "rules_invalid", "message": "joined", "problems": problems}}
    client, _ = serve(reply(422, body))
    with pytest.raises(RulesError) as caught:
        client.call("POST", "/v1/reload")
    assert [str(p) for p in caught.value.problems] == problems


def test_an_error_status_without_an_envelope_is_a_plain_error(serve):
    client, _ = serve(reply(500, {"detail": "?"}))
    with pytest.raises(TimeOSError) as caught:
        client.call("GET", "/v1/status")
    assert type(caught.value) is TimeOSError and caught.value.exit_code == 1


def test_a_non_json_answer_is_an_error_naming_the_status(serve):
    client, _ = serve(lambda request: http(502, b"<html>bad gateway</html>"))
    with pytest.raises(TimeOSError, match=r"non-JSON answer \(HTTP 502\)"):
        client.call("GET", "/v1/status")


def test_no_daemon_at_the_path_is_unreachable_with_exit_3_and_a_hint(tmp_path):
    path = tmp_path / "run" / "timeos.sock"
    with pytest.raises(DaemonUnreachable) as caught:
        Client(path).call("GET", "/v1/status")
    assert caught.value.exit_code == 3
    assert str(path) in caught.value.message and "timeosd --rules" in caught.value.message


def test_a_stale_socket_file_with_nobody_listening_is_unreachable(tmp_path):
    path = tmp_path / "timeos.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a killed daemon leaves behind
    try:
        with pytest.raises(DaemonUnreachable, match="is not running"):
            Client(path).call("GET", "/v1/status")
    finally:
        stale.close()


def test_a_daemon_that_closes_without_answering_is_a_clear_error(serve):
    client, _ = serve(lambda request: None)
    with pytest.raises(DaemonUnreachable) as caught:
        client.call("POST", "/v1/events", {"type": "e"})
    message = caught.value.message
    assert "closed the connection without answering" in message
    assert "may still have taken effect" in message  # an emit must not be blindly re-sent


def test_something_that_does_not_speak_http_is_named_as_such(serve):
    client, _ = serve(lambda request: b"SSH-2.0-OpenSSH_9.6\r\n")
    with pytest.raises(DaemonUnreachable, match="did not answer with HTTP"):
        client.call("GET", "/v1/status")


def test_a_daemon_that_never_answers_times_out_as_unreachable(serve, tmp_path):
    hold = threading.Event()

    def stall(request: bytes) -> None:
        hold.wait(5)  # released when the test ends

    client, _ = serve(stall)
    slow = Client(client.socket_path, timeout=0.05)
    try:
        with pytest.raises(DaemonUnreachable, match="did not answer within 0.05s"):
            slow.call("GET", "/v1/status")
    finally:
        hold.set()


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("01J9ZK3Q", "01J9ZK3Q"),
        ("weekly-report_v2.1~", "weekly-report_v2.1~"),
        ("a/b", "a%2Fb"),
        ("with space", "with%20space"),
        ("q?x=1#f", "q%3Fx%3D1%23f"),
        ("50%", "50%25"),
        ("Zoë", "Zo%C3%AB"),
    ],
    ids=["ulid", "unreserved", "slash", "space", "query-and-fragment", "percent", "non-ascii"],
)
def test_segment_quotes_everything_that_would_change_the_path(value, quoted):
    assert segment(value) == quoted


def test_a_quoted_segment_reaches_the_server_as_one_path_segment(serve):
    client, server = serve(reply(200, {}))
    client.call("GET", f"/v1/rules/{segment('a/b c?')}/next")
    assert server.requests[0].startswith(b"GET /v1/rules/a%2Fb%20c%3F/next HTTP/1.1\r\n")


@pytest.mark.parametrize("status", [301, 307, 308, 304, 101], ids=str)
def test_an_answer_that_is_not_2xx_or_an_error_is_an_unexpected_answer(serve, status):
    client, _ = serve(lambda request: http(status, b"", "Location: http://timeosd/v1/jobs"))
    with pytest.raises(TimeOSError, match=rf"unexpected answer \(HTTP {status}") as caught:
        client.call("GET", "/v1/jobs/")
    assert caught.value.exit_code == 1


def test_a_2xx_answer_without_a_body_is_an_error_not_none(serve):
    client, _ = serve(lambda request: http(200, b""))
    with pytest.raises(TimeOSError, match=r"empty answer \(HTTP 200\)"):
        client.call("GET", "/v1/jobs/x")


# ---- keep-alive -------------------------------------------------------------------------------


def test_a_keep_alive_client_sends_its_requests_on_one_connection(serve):
    client, server = serve(reply(201, {"id": "e1"}), per_connection=3, keep_alive=True)
    for _ in range(3):
        assert client.call("POST", "/v1/events", {"type": "e"}) == {"id": "e1"}
    assert server.connections == 1 and len(server.requests) == 3
    assert all(b"\r\nConnection: keep-alive\r\n" in r for r in server.requests)


def test_a_connection_the_daemon_closed_while_idle_is_replaced_and_nothing_is_sent_twice(serve):
    # One answer per connection, then the server closes it: as timeosd does after its
    # keep-alive timeout. The next call must notice before sending, not re-send after.
    client, server = serve(reply(201, {"id": "e1"}), per_connection=1, keep_alive=True)
    client.call("POST", "/v1/events", {"type": "e", "payload": {"n": 1}})
    assert server.closed.wait(5)
    client.call("POST", "/v1/events", {"type": "e", "payload": {"n": 2}})
    assert server.connections == 2
    assert [json.loads(r.partition(b"\r\n\r\n")[2])["payload"]["n"] for r in server.requests] == [
        1,
        2,
    ]


def test_a_kept_connection_closed_after_the_request_may_have_taken_effect(serve):
    answers = iter([http(201, b'{"id": "e1"}'), None])
    client, server = serve(lambda request: next(answers), per_connection=2, keep_alive=True)
    client.call("POST", "/v1/events", {"type": "e"})
    with pytest.raises(DaemonUnreachable) as caught:
        client.call("POST", "/v1/events", {"type": "e"})
    assert "closed the connection without answering" in caught.value.message
    assert "may still have taken effect" in caught.value.message
    assert len(server.requests) == 2  # the second emit was sent once, never again


def test_a_chunked_answer_on_a_kept_connection_leaves_it_ready_for_the_next(serve):
    body = b'{"rules": [1, 2, 3]}'
    chunked = b"5\r\n" + body[:5] + b"\r\n" + b"f;x=1\r\n" + body[5:] + b"\r\n0\r\n\r\n"
    answer = http(200, chunked, "Transfer-Encoding: chunked")
    client, server = serve(lambda request: answer, per_connection=2, keep_alive=True)
    assert client.call("GET", "/v1/rules") == {"rules": [1, 2, 3]}
    assert client.call("GET", "/v1/rules") == {"rules": [1, 2, 3]}
    assert server.connections == 1


def test_an_answer_saying_connection_close_ends_the_kept_connection(serve):
    answer = http(200, b"{}", "Connection: close")
    client, server = serve(lambda request: answer, per_connection=2, keep_alive=True)
    client.call("GET", "/v1/status")
    client.call("GET", "/v1/status")
    assert server.connections == 2


def test_an_error_answer_keeps_the_connection_for_the_next_request(serve):
    answers = iter([http(404, b'{"error": {"code": "not_found", "message": "no"}}'), None])
    client, server = serve(
        lambda request: next(answers, http(200, b"{}")), per_connection=3, keep_alive=True
    )
    with pytest.raises(NotFound):
        client.call("GET", "/v1/jobs/x")
    with pytest.raises(DaemonUnreachable):
        client.call("GET", "/v1/jobs/y")  # the server closed without answering
    assert client.call("GET", "/v1/status") == {}  # a fresh connection after a broken one
    assert server.connections == 2
