"""Socket activation: timeosd serves on the socket systemd passes as fd 3 and never unlinks it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from harness import _exe

from timeos.cli.client import Client
from timeos.daemon.activation import inherited_socket
from timeos.errors import UsageError

RULES = """\
actions:
  hello: {command: ["true"]}
rules:
  - {name: greet, on_event: signup, offset: 1h, perform: hello}
"""

# What systemd does between fork and exec: the socket at fd 3, LISTEN_PID = the daemon's own
# pid (known only in the child, hence a wrapper that sets it and then execs), LISTEN_FDS=1.
WRAPPER = """\
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


def _listening(path: Path) -> socket.socket:
    """Bind and listen as timeosd.socket does (SocketMode=0660)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)
    sock.listen(16)
    return sock


def _activated(tmp_path: Path, sock: socket.socket, log: Path) -> subprocess.Popen[bytes]:
    """Start timeosd the way systemd would with timeosd.socket: no --socket, an inherited fd."""
    exe = _exe("timeosd")
    if len(exe) != 1:
        pytest.skip("timeosd is not installed as a script")
    env = {k: v for k, v in os.environ.items() if k != "TIMEOS_SOCKET"}
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    args = [exe[0], "--rules", str(rules), "--db", str(tmp_path / "t.db"), "--grace", "2s"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(sock.fileno()), *args],
            pass_fds=(sock.fileno(),),
            env=env,
            stdout=out,
            stderr=out,
            cwd=tmp_path,
        )


def test_timeosd_serves_the_inherited_socket_and_a_restart_loses_no_client(tmp_path):
    path = tmp_path / "run" / "timeos.sock"
    sock = _listening(path)
    client = Client(path, timeout=30)
    log = tmp_path / "timeosd.log"
    # A client connects before timeosd runs (the socket unit is enabled, the daemon is not up):
    # the kernel queues it and timeosd answers it once started.
    early: list[object] = []
    thread = threading.Thread(target=lambda: early.append(client.call("GET", "/v1/status")))
    thread.start()
    first = _activated(tmp_path, sock, log)
    try:
        thread.join(30)
        status = early[0]
        assert isinstance(status, dict)
        assert status["socket"] == str(path)  # named by what the inherited socket is bound to
        assert status["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0, log.read_text()
    # The socket belongs to the service manager: still there after the daemon stopped.
    assert path.is_socket()
    # A client that comes while timeosd is down waits for the next one instead of failing.
    during: list[object] = []
    thread = threading.Thread(target=lambda: during.append(client.call("GET", "/v1/status")))
    thread.start()
    second = _activated(tmp_path, sock, log)
    try:
        thread.join(30)
        assert during and during[0]["pid"] == second.pid  # type: ignore[index]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0, log.read_text()
        sock.close()
    assert log.read_text().count(f"socket={path} socket_from=systemd") == 2


def test_listen_variables_for_another_process_are_ignored_and_removed():
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "timeos", "X": "y"}
    assert inherited_socket(environ, pid=os.getpid()) is None
    assert environ == {"X": "y"}


def test_no_listen_variables_means_bind_it_ourselves():
    assert inherited_socket({}, pid=os.getpid()) is None


def test_more_than_one_inherited_socket_is_refused():
    environ = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid())}
    with pytest.raises(UsageError, match="exactly one socket"):
        inherited_socket(environ, pid=os.getpid())


def test_an_inherited_descriptor_that_is_not_a_listening_unix_stream_socket_is_refused(tmp_path):
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    read, write = os.pipe()
    try:
        with pytest.raises(UsageError, match="not a socket"):
            inherited_socket(dict(environ), pid=os.getpid(), fd=read)
    finally:
        os.close(read)
        os.close(write)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as datagram:
        with pytest.raises(UsageError, match="not a listening Unix stream socket"):
            inherited_socket(dict(environ), pid=os.getpid(), fd=datagram.fileno())
        assert datagram.fileno() >= 0  # left open for whoever passed it
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(1)
        with pytest.raises(UsageError, match="not a listening Unix stream socket"):
            inherited_socket(dict(environ), pid=os.getpid(), fd=tcp.fileno())


def test_an_inherited_listening_unix_socket_is_taken_non_blocking_and_not_inheritable(tmp_path):
    with _listening(tmp_path / "t.sock") as sock:
        fd = os.dup(sock.fileno())
        os.set_inheritable(fd, True)  # as systemd passes it
        found = inherited_socket(
            {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}, pid=os.getpid(), fd=fd
        )
        assert found is not None
        with found:
            assert found.fileno() == fd
            assert found.getblocking() is False
            assert os.get_inheritable(fd) is False  # command actions never hold it open
