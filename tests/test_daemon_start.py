"""The timeosd composition root in-process: start-up errors, the database lock, the socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from timeos.cli.client import Client
from timeos.clock import FakeClock
from timeos.daemon.connections import connection_limit
from timeos.daemon.main import Daemon, app, lock_database
from timeos.engine import Limits
from timeos.errors import UsageError

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running(tmp: Path, **options: float) -> AsyncIterator[Daemon]:
    """A whole timeosd on this event loop, on a temporary socket and database."""
    rules = tmp / "rules.yaml"
    rules.write_text(
        "actions:\n  note: {emit: noted}\nrules:\n  - {name: r, on_event: e, perform: note}\n"
    )
    daemon = Daemon(
        rule_paths=[rules],
        db_path=tmp / "t.db",
        socket_path=tmp / "run" / "t.sock",
        workers=1,
        grace=1.0,
        synchronous="NORMAL",
        clock=FakeClock(T0),
        environ={},
        limits=Limits(),
        **options,  # type: ignore[arg-type]
    )
    task = asyncio.create_task(daemon.run())
    await until(lambda: daemon.server is not None and daemon.server.started, "the server")
    try:
        yield daemon
    finally:
        daemon.stop()
        await task


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` on the loop (which keeps serving meanwhile); fail after `timeout`."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def ask(daemon: Daemon) -> dict:
    """One real request from the CLI's client, in a thread: the loop must answer it."""
    client = Client(daemon.socket_path, timeout=10)
    return await asyncio.to_thread(client.call, "GET", "/v1/status")


def connect(path: Path, send: bytes = b"") -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    if send:
        sock.sendall(send)
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_module_that_exits_at_import_stops_start_up_with_a_message_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "timeos_test_cli_at_import.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "actions:\n  hook: {python: 'timeos_test_cli_at_import:run'}\n"
        "rules:\n  - {name: r, on_event: e, perform: hook}\n"
    )
    args = ["--rules", str(rules), "--db", str(tmp_path / "t.db")]
    result = CliRunner().invoke(app, [*args, "--socket", str(tmp_path / "run" / "t.sock")])
    assert result.exit_code == 1, result.output
    assert (
        f"timeosd: error: {rules}:2:18: action 'hook': python 'timeos_test_cli_at_import:run': "
        "cannot import 'timeos_test_cli_at_import': SystemExit: 2"
    ) in result.stderr
    assert not (tmp_path / "t.db").exists()  # rules are checked before the database is touched


def test_a_daemon_live_on_the_socket_is_refused_before_a_database_is_created(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "actions:\n  note: {emit: noted}\nrules:\n  - {name: r, on_event: e, perform: note}\n"
    )
    path = tmp_path / "run" / "t.sock"
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        args = ["--rules", str(rules), "--db", str(tmp_path / "t.db"), "--socket", str(path)]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"another timeosd is already listening on {path}" in result.stderr
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_another_name_for_the_same_database_meets_the_same_lock(tmp_path: Path, link: str) -> None:
    db = tmp_path / "timeos.db"
    fd = lock_database(db)
    other = tmp_path / "elsewhere" / "other.db"
    other.parent.mkdir()
    if link == "hard":
        os.link(db, other)
    else:
        other.symlink_to(db)
    with pytest.raises(UsageError, match="another timeosd is already using the database"):
        lock_database(other)
    os.close(fd)
    os.close(lock_database(other))  # free again once the first holder is gone


def test_database_lock_creates_a_missing_database_private_to_its_group(tmp_path: Path) -> None:
    db = tmp_path / "state" / "timeos.db"
    os.close(lock_database(db))
    assert not stat.S_IMODE(db.stat().st_mode) & 0o007


@pytest.mark.parametrize("replaced_by", ["nothing", "regular-file", "another-socket"])
def test_shutdown_removes_the_socket_only_while_it_is_still_ours(
    tmp_path: Path, replaced_by: str
) -> None:
    path = tmp_path / "run" / "t.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def go() -> None:
        async with running(tmp_path):
            if replaced_by == "regular-file":
                path.unlink()
                path.write_text("keep me")
            elif replaced_by == "another-socket":
                path.unlink()
                other.bind(str(path))

    asyncio.run(go())
    other.close()
    if replaced_by == "nothing":
        assert not path.exists()
    elif replaced_by == "regular-file":
        assert path.read_text() == "keep me"
    else:
        assert stat.S_ISSOCK(path.lstat().st_mode)


def test_idle_and_half_sent_connections_are_closed_after_the_request_timeout(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        async with running(tmp_path, request_timeout=0.3) as daemon:
            path = daemon.socket_path
            stalled = [
                connect(path),
                connect(path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"),
                connect(
                    path, b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"
                ),
            ]
            await until(lambda: all(closed_by_peer(s) for s in stalled), "the stalled to close")
            assert daemon.connections.timed_out == 3
            assert (await ask(daemon))["up"] is True
            for s in stalled:
                s.close()

    asyncio.run(go())


def test_a_flood_of_idle_connections_cannot_lock_a_client_out(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(tmp_path, max_connections=8, request_timeout=60) as daemon:
            idle = [connect(daemon.socket_path) for _ in range(50)]
            assert (await ask(daemon))["up"] is True
            await until(lambda: sum(not closed_by_peer(s) for s in idle) <= 8, "room to be made")
            assert daemon.connections.evicted >= 50 - 8
            for s in idle:
                s.close()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("nofile", "workers", "expected"),
    [(1024, 4, 640), (65536, 4, 65152), (1024, 32, 192), (200, 4, 8)],
    ids=["default-soft-limit", "systemd-unit", "many-workers", "tiny-limit-floor"],
)
def test_connection_cap_leaves_room_for_actions_sqlite_and_an_accept_burst(
    nofile: int, workers: int, expected: int
) -> None:
    assert connection_limit(nofile, workers) == expected


def test_at_rest_the_daemon_has_no_timer_on_its_loop(tmp_path: Path) -> None:
    # uvicorn's own main loop slept 100 ms at a time (ten wake-ups a second with nothing due);
    # with a FakeClock nothing else has a reason to wake either.
    async def go() -> None:
        async with running(tmp_path) as daemon:
            assert (await ask(daemon))["up"] is True
            loop = asyncio.get_running_loop()
            await until(lambda: not daemon.connections.open, "the client's connection to close")
            timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            assert timers == []
            # Nothing is due and there is no watchdog to feed: asleep until poked, no deadline.
            await until(lambda: daemon.scheduler.asleep, "the scheduler to sleep")
            assert daemon.scheduler.asleep_until is None

    asyncio.run(go())


def test_responses_carry_a_current_date_header_without_a_server_tick(tmp_path: Path) -> None:
    async def go() -> None:
        async with running(tmp_path) as daemon:
            before = datetime.now(UTC).replace(microsecond=0)
            sock = connect(daemon.socket_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setblocking(True)
            head = (await asyncio.to_thread(sock.recv, 65536)).split(b"\r\n\r\n")[0]
            after = datetime.now(UTC)
            sock.close()
            headers = [line.split(b": ", 1) for line in head.split(b"\r\n")[1:]]
            dates = [v.decode() for k, v in headers if k == b"date"]
            assert len(dates) == 1
            assert before <= parsedate_to_datetime(dates[0]) <= after
            assert [b"server", b"uvicorn"] in headers  # as before: uvicorn's default headers

    asyncio.run(go())


_IMPORTS_PROBE = """
import asyncio, json, sys
from pathlib import Path
from timeos.clock import SystemClock
from timeos.daemon.main import Daemon
from timeos.engine import Limits

tmp = Path(sys.argv[1])
async def go():
    daemon = Daemon(rule_paths=[tmp / "rules.yaml"], db_path=tmp / "t.db",
                    socket_path=tmp / "run" / "t.sock", workers=1, grace=1.0,
                    synchronous="NORMAL", clock=SystemClock(), environ={}, limits=Limits())
    task = asyncio.create_task(daemon.run())
    while daemon.server is None or not daemon.server.started:
        await asyncio.sleep(0.01)
    daemon.stop()
    await task
asyncio.run(go())
print(json.dumps(sorted(sys.modules)))
"""

_ONLY_WHEN_NEEDED = (
    "typer", "rich", "prompt_toolkit", "pygments", "cel", "cel.cel", "cel.cli", "httpx2",
    "jinja2", "timeos.web", "prometheus_client", "croniter", "ulid", "sqlite_utils",
)  # fmt: skip


def _loaded_by_a_daemon(tmp: Path, rules: str) -> set[str]:
    (tmp / "rules.yaml").write_text(rules)
    for _ in range(2):  # the second start finds the schema current: nothing to migrate
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORTS_PROBE, str(tmp)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout)) & set(_ONLY_WHEN_NEEDED)


def test_a_daemon_imports_nothing_its_rules_do_not_need(tmp_path: Path) -> None:
    rules = "actions:\n  a: {emit: e2}\nrules:\n  - {name: r, on_event: e, perform: a}\n"
    assert _loaded_by_a_daemon(tmp_path, rules) == set()


def test_cel_and_croniter_come_with_the_rules_that_use_them_and_cel_without_its_shell(
    tmp_path: Path,
) -> None:
    rules = (
        "actions:\n  a: {emit: e2}\n  h: {http: {url: 'http://127.0.0.1:9/x'}}\n"
        "rules:\n  - {name: r, on_event: e, when: 'payload.n > 1', perform: h}\n"
        "  - {name: c, cron: '0 3 * * *', perform: a}\n"
    )
    assert _loaded_by_a_daemon(tmp_path, rules) == {"cel.cel", "croniter"}  # not `cel`
