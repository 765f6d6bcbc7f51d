"""Resource faults under a real timeosd: a full disk, a database locked by another process.

In each, an emit fails with a clear one-line error (the JSON envelope on the API, `Error: ...`
and exit 1 on the CLI, never a traceback), nothing is half-written, and the daemon resumes by
itself once the space or the lock is given back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, wait_until

from timeos.cli.client import Client

RULES = """\
actions:
  act:
    command: ["true"]
rules:
  - name: now
    on_event: ping
    perform: act
  - name: later
    on_event: ping
    offset: 1h
    perform: act
"""


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def _daemon(tmp: Path, daemons: list[Daemon], db: Path | None = None) -> Daemon:
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    d = Daemon(tmp, rules)
    if db is not None:
        d.db = db
    daemons.append(d.start())
    return d


def _counts(db: Path) -> tuple[int, int]:
    """(events, jobs) read from a separate connection: what is really on disk."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return events, jobs
    finally:
        conn.close()


def _raw_emit(d: Daemon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /v1/events and return (HTTP status, decoded body), whatever the status."""
    status, _headers, raw = d.client._exchange(
        (
            "POST /v1/events HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(json.dumps(body).encode())}\r\n\r\n{json.dumps(body)}"
        ).encode()
    )
    return status, json.loads(raw)


def _assert_clean_failure(status: int, body: dict[str, Any], cause: str) -> None:
    assert status >= 400
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "store_error", body
    assert cause in body["error"]["message"], body
    assert "Traceback" not in body["error"]["message"]


def _assert_clean_cli_failure(result: subprocess.CompletedProcess[str], cause: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert cause in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# ---- database locked --------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(db: Path) -> Iterator[None]:
    """Another process's write lock on the database (like a backup or a stray sqlite3 shell)."""
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # EOF: the holder exits, its transaction rolls back, lock released
        holder.wait(10)


def test_emit_while_another_process_holds_the_write_lock_fails_cleanly_then_resumes(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = _daemon(tmp_path, daemons)
    d.cli_json("emit", "ping")
    before = _counts(d.db)
    with _locked(d.db):
        # busy_timeout (5 s) elapses first: the emit waits for the lock, then gives up.
        status, body = _raw_emit(d, {"type": "ping", "idempotency_key": "during-lock"})
        _assert_clean_failure(status, body, "locked")
        assert d.client.request("GET", "/v1/health", accept=(503,)).body  # still answering
        assert _counts(d.db) == before
    assert _counts(d.db) == before  # nothing was half-written, and nothing committed late
    again = d.cli_json("emit", "ping", "--idempotency-key", "during-lock")
    assert again["duplicate"] is False and len(again["jobs"]) == 2
    assert _counts(d.db) == (before[0] + 1, before[1] + 2)
    d.wait_job(again["jobs"][0], "succeeded")
    assert d.client.request("GET", "/v1/health", accept=(503,)).body["status"] == "healthy"


def test_cli_emit_while_the_database_is_locked_prints_one_line_error(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = _daemon(tmp_path, daemons)
    with _locked(d.db):
        result = d.cli("emit", "ping")
    _assert_clean_cli_failure(result, "locked")
    assert _counts(d.db) == (0, 0)


def test_a_result_written_while_the_database_is_locked_is_recorded_once_after(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    gate = tmp_path / "gate"
    rules = tmp_path / "rules.yaml"
    d = _daemon(tmp_path, daemons)
    script = f"while [ ! -e {gate} ]; do sleep 0.01; done"
    rules.write_text(RULES.replace('command: ["true"]', f'command: ["sh", "-c", "{script}"]'))
    d.cli_json("reload")
    job_id = d.cli_json("emit", "ping")["jobs"][0]
    d.wait_job(job_id, "running")
    with _locked(d.db):
        gate.touch()  # the action ends now; its result cannot be written (busy 5 s, then fail)
        wait_until(
            lambda: re.search(
                r"job result not recorded; will retry .*attempt=1", d.log.read_text()
            ),
            timeout=30,
            what="the refused result write",
        )
        # The API still answers while the write keeps failing (it once spun without yielding).
        # Each failed pass still holds the event loop for busy_timeout (5 s): hence 15 s.
        slow = Client(d.socket, timeout=15)
        for _ in range(3):
            assert slow.call("GET", f"/v1/jobs/{job_id}")["status"] == "running"
    d.wait_job(job_id, "succeeded")
    assert [a["outcome"] for a in d.job(job_id)["attempt_history"]] == ["succeeded"]


def test_health_is_not_healthy_while_the_database_is_locked(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = _daemon(tmp_path, daemons)
    with _locked(d.db):
        with contextlib.suppress(Exception):
            _raw_emit(d, {"type": "ping"})  # a write has just failed
        health = d.client.request("GET", "/v1/health", accept=(503,)).body
    assert health["status"] != "healthy", health


# ---- disk full --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted in tmp_path (needs root and CAP_SYS_ADMIN; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("disk-full tests mount a tmpfs: they need root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0750", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return filler
    finally:
        os.close(fd)


def test_emit_on_a_full_disk_fails_cleanly_then_resumes_when_space_is_freed(
    tmp_path: Path, small_disk: Path, daemons: list[Daemon]
) -> None:
    d = _daemon(tmp_path, daemons, db=small_disk / "timeos.db")
    d.cli_json("emit", "ping")
    before = _counts(d.db)
    filler = _fill(small_disk)
    big = {"blob": "x" * 200_000}  # more than any WAL slack: the write must grow a file
    status, body = _raw_emit(d, {"type": "ping", "payload": big, "idempotency_key": "full"})
    _assert_clean_failure(status, body, "full")
    result = d.cli("emit", "ping", "--payload", "-", stdin=json.dumps(big))
    _assert_clean_cli_failure(result, "full")
    assert d.client.request("GET", "/v1/health", accept=(503,)).body  # still answering
    assert _counts(d.db) == before
    filler.unlink()
    done = d.cli(
        "emit",
        "ping",
        "--payload",
        "-",
        "--idempotency-key",
        "full",
        "--json",
        stdin=json.dumps(big),
    )
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert again["duplicate"] is False and len(again["jobs"]) == 2
    d.wait_job(again["jobs"][0], "succeeded")
    assert _counts(d.db) == (before[0] + 1, before[1] + 2)
    assert d.client.request("GET", "/v1/health", accept=(503,)).body["status"] == "healthy"


def test_health_is_not_healthy_while_the_disk_is_full(
    tmp_path: Path, small_disk: Path, daemons: list[Daemon]
) -> None:
    d = _daemon(tmp_path, daemons, db=small_disk / "timeos.db")
    filler = _fill(small_disk)
    try:
        with contextlib.suppress(Exception):
            _raw_emit(d, {"type": "ping", "payload": {"blob": "x" * 200_000}})
        health = d.client.request("GET", "/v1/health", accept=(503,)).body
    finally:
        filler.unlink()
    assert health["status"] != "healthy", health


# ---- the daemon dying mid-answer --------------------------------------------------------------


def test_answer_cut_short_by_a_killed_daemon_is_unreachable_not_success(tmp_path: Path) -> None:
    """Found by bench/torture.py: a 201 whose body never arrived was returned as None."""
    import socket
    import threading

    from timeos.errors import DaemonUnreachable

    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer_half() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 80\r\n\r\n" + b'{"id": "01')
        conn.close()

    thread = threading.Thread(target=answer_half)
    thread.start()
    with pytest.raises(DaemonUnreachable, match="mid-answer"):
        Client(path, timeout=5).call("POST", "/v1/events", {"type": "x"})
    thread.join()
    server.close()
