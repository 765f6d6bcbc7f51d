"""The HTTP API and Service in-process: a real Store in tmp_path, requests as raw ASGI calls."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from timeos.clock import FakeClock
from timeos.daemon.api import _json_body, build_app
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import StoreError
from timeos.model import RuleSet
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MAX_CANCEL_IDS = 1000  # documented in README and timeos(1)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    clock = FakeClock(T0)
    store = SqliteStore(tmp_path / "t.db", clock=clock)
    rules = RuleSet((), {})
    yield Service(
        store=store,
        clock=clock,
        rules=rules,
        rule_paths=[],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    store.close()


def _sqlite(service: Service) -> SqliteStore:
    """The service's store as the SQLite store it is here (tests reach into its connection)."""
    assert isinstance(service.store, SqliteStore)
    return service.store


def _call(service: Service, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request through the ASGI app, as uvicorn would make it."""
    data = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-length", str(len(data)).encode())],
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(build_app(service)(scope, receive, send))
    status = sent[0]["status"]
    answer = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(answer)


def _request(raw: bytes) -> Request:
    chunks = [raw[i : i + 65536] for i in range(0, len(raw), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {"type": "http", "method": "POST", "path": "/v1/events", "headers": []}
    return Request(scope, receive)


def test_cancel_request_over_the_id_limit_is_refused_naming_the_limit(service: Service) -> None:
    ids = [f"id{i}" for i in range(MAX_CANCEL_IDS + 1)]
    status, answer = _call(service, "POST", "/v1/jobs/cancel", {"ids": ids})
    assert status == 400
    assert answer["error"]["code"] == "usage"
    assert answer["error"]["message"].startswith(
        "at most 1000 job ids per cancel request, got 1001;"
    )


def test_cancel_request_at_the_limit_reports_every_id(service: Service) -> None:
    ids = [f"id{i}" for i in range(MAX_CANCEL_IDS)]
    status, answer = _call(service, "POST", "/v1/jobs/cancel", {"ids": ids})
    assert status == 200
    assert [r["id"] for r in answer["results"]] == ids
    assert answer["results"][0] == {
        "id": "id0",
        "cancelled": False,
        "status": None,
        "error": "no job with id 'id0'",
    }


def _loop_turns_while_parsing(raw: bytes) -> tuple[int, dict[str, Any]]:
    """How often another task ran while the body was parsed, and the parsed body."""

    async def scenario() -> tuple[int, dict[str, Any]]:
        turns, done = 0, False

        async def other_work() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        service = Service.__new__(Service)
        service.limits = Limits()
        body = await _json_body(_request(raw), service)
        done = True
        await other
        return turns, body

    return asyncio.run(scenario())


def test_a_large_body_is_parsed_off_the_event_loop() -> None:
    raw = json.dumps({"type": "x", "payload": {"a": "y" * 900_000}}).encode()
    assert len(raw) > 64 * 1024  # the documented threshold for parsing in a thread
    turns, body = _loop_turns_while_parsing(raw)
    assert turns >= 1  # the loop kept running other tasks while the body was parsed
    assert body["payload"]["a"] == "y" * 900_000


def test_a_small_body_is_parsed_on_the_loop() -> None:
    # Reading the body yields to the loop once per chunk; the parse itself adds no turns.
    raw = json.dumps({"type": "x", "payload": {"a": 1}}).encode()
    turns, body = _loop_turns_while_parsing(raw)
    assert turns == 0 and body == {"type": "x", "payload": {"a": 1}}


def test_the_cli_splits_cancel_lists_at_the_daemons_limit() -> None:
    from timeos.cli.app import CANCEL_BATCH
    from timeos.daemon.service import MAX_CANCEL_IDS as daemon_limit

    assert CANCEL_BATCH == daemon_limit == MAX_CANCEL_IDS


def _emit(service: Service) -> None:
    service.emit("x", {"blob": "z" * 50_000})


def _fill_the_disk(service: Service) -> Any:
    # SQLite's own "disk full": no page may be added beyond those the file has now.
    pages = _sqlite(service).conn.execute("PRAGMA page_count").fetchone()[0]
    _sqlite(service).conn.execute(f"PRAGMA max_page_count={pages}")
    return lambda: _sqlite(service).conn.execute("PRAGMA max_page_count=1073741823")


def _hold_the_write_lock(service: Service) -> Any:
    _sqlite(service).conn.execute("PRAGMA busy_timeout=0")  # fail at once instead of after 5 s
    other = sqlite3.connect(_sqlite(service).path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process (a backup, a sqlite3 shell) writing
    return lambda: other.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("break_writes", "error"),
    [(_fill_the_disk, "database or disk is full"), (_hold_the_write_lock, "database is locked")],
    ids=["disk-full", "write-lock-held-elsewhere"],
)
def test_health_reports_the_last_write_failure_until_a_write_succeeds(
    service: Service, break_writes: Any, error: str
) -> None:
    _emit(service)
    assert service.health()["components"]["database"]["status"] == "healthy"
    repair = break_writes(service)
    with pytest.raises(StoreError, match=error):
        _emit(service)
    failing = service.health()
    database = failing["components"]["database"]
    assert failing["status"] == "unhealthy"
    assert database["status"] == "unhealthy"
    assert database["message"].startswith(f"last write failed at {T0.isoformat()}: ")
    assert error in database["message"]
    assert database["last_write_ok"] is False
    repair()
    _emit(service)
    database = service.health()["components"]["database"]
    assert database["status"] == "healthy" and database["last_write_ok"] is True


def test_health_reports_the_wal_size(service: Service) -> None:
    _emit(service)
    database = service.health()["components"]["database"]
    wal = Path(_sqlite(service).path + "-wal").stat().st_size
    assert database["wal_bytes"] == wal > 0
    assert database["message"].endswith(f"; WAL {wal / 1_048_576:.1f} MiB")
