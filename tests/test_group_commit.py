"""Group commit: concurrent emits share one transaction, each answered after it commits, each
failing alone. Real SQLite in tmp_path, a FakeClock, the service's own queue."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from timeos.clock import FakeClock
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import IdempotencyConflict, PayloadError, StoreError
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = """\
actions:
  a: {command: [/bin/true]}
rules:
  - {name: later, on_event: e, offset: 1h, perform: a}
"""


class FailingCommitStore(SqliteStore):
    """A real store whose group transactions fail, as a full disk makes COMMIT fail."""

    def emit_group(self, items: Any) -> Any:
        raise StoreError("database or disk is full")


def _service(tmp_path: Path, store: SqliteStore) -> Service:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    rules = load_rules([path], {})
    return Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[path],
        loader=lambda paths: rules,
        limits=Limits(),
    )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    store = SqliteStore(tmp_path / "t.db")
    yield _service(tmp_path, store)
    store.close()


def _stored(tmp_path: Path) -> int:
    """Events another connection sees: only what was committed."""
    other = sqlite3.connect(tmp_path / "t.db")
    try:
        return int(other.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        other.close()


def test_emits_arriving_together_are_committed_in_one_transaction(service: Service, tmp_path):
    async def go() -> None:
        results = await asyncio.gather(*(service.emit_soon("e", {"n": n}) for n in range(5)))
        assert service._group.groups == 1
        assert [len(r.job_ids) for r in results] == [1] * 5
        assert len({r.event_id for r in results}) == 5

    asyncio.run(go())
    assert _stored(tmp_path) == 5


def test_an_emit_is_answered_only_after_its_transaction_committed(service: Service, tmp_path):
    async def go() -> None:
        pending = asyncio.ensure_future(service.emit_soon("e", {}))
        await asyncio.sleep(0)  # the request has been checked, planned and queued
        assert not pending.done() and _stored(tmp_path) == 0
        result = await pending
        assert _stored(tmp_path) == 1 and service.get_event(result.event_id).type == "e"

    asyncio.run(go())


def test_one_bad_emit_in_a_group_fails_alone(service: Service, tmp_path):
    service.emit("e", {"v": 1}, idempotency_key="k")

    async def go() -> Any:
        return await asyncio.gather(
            service.emit_soon("e", {"n": 1}),
            service.emit_soon("e", {"v": 2}, idempotency_key="k"),  # conflicts with the stored
            service.emit_soon("bad type!", {}),  # refused before it is queued
            service.emit_soon("e", {"n": 2}),
            return_exceptions=True,
        )

    ok1, conflict, bad, ok2 = asyncio.run(go())
    assert isinstance(conflict, IdempotencyConflict) and isinstance(bad, PayloadError)
    assert not isinstance(ok1, Exception) and not isinstance(ok2, Exception)
    assert _stored(tmp_path) == 3


def test_a_key_used_twice_in_one_group_is_a_duplicate_or_a_conflict(service: Service, tmp_path):
    async def go() -> Any:
        return await asyncio.gather(
            service.emit_soon("e", {"v": 1}, idempotency_key="k"),
            service.emit_soon("e", {"v": 1}, idempotency_key="k"),
            service.emit_soon("e", {"v": 2}, idempotency_key="k"),
            return_exceptions=True,
        )

    first, same, other = asyncio.run(go())
    assert not isinstance(first, Exception) and not isinstance(same, Exception)
    assert same.duplicate and same.event_id == first.event_id and same.job_ids == ()
    assert isinstance(other, IdempotencyConflict)
    assert service._group.groups == 1 and _stored(tmp_path) == 1


def test_when_the_commit_fails_every_emit_of_the_group_fails(tmp_path):
    store = FailingCommitStore(tmp_path / "t.db")
    service = _service(tmp_path, store)

    async def go() -> Any:
        return await asyncio.gather(
            *(service.emit_soon("e", {"n": n}) for n in range(3)), return_exceptions=True
        )

    try:
        results = asyncio.run(go())
        assert all(isinstance(r, StoreError) for r in results)
        assert _stored(tmp_path) == 0
    finally:
        store.close()


# ---- over HTTP: the API's hot route --------------------------------------------------------


def _post_all(app: Any, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    import httpx2

    async def go() -> list[Any]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://timeos") as client:
            return list(await asyncio.gather(*(client.post(path, **kw) for path, kw in requests)))

    return asyncio.run(go())


def test_concurrent_emit_requests_each_get_their_own_answer(service: Service, tmp_path):
    from timeos.daemon.api import build_app

    service.emit("e", {"v": 1}, idempotency_key="k")
    answers = _post_all(
        build_app(service),
        [
            ("/v1/events", {"json": {"type": "e", "payload": {"n": 1}}}),
            ("/v1/events", {"json": {"type": "e", "payload": {"v": 2}, "idempotency_key": "k"}}),
            ("/v1/events", {"json": {"type": "e", "payload": {"v": 1}, "idempotency_key": "k"}}),
            ("/v1/events", {"content": b"{not json"}),
            ("/v1/events", {"json": {"type": "e", "payload": {"n": 2}}}),
        ],
    )
    assert [a.status_code for a in answers] == [201, 409, 200, 400, 201]
    assert answers[1].json()["error"]["code"] == "idempotency_conflict"
    assert answers[3].json()["error"]["code"] == "invalid_payload"
    assert _stored(tmp_path) == 3


BODIES = [
    {"json": {"type": "e", "payload": {"n": 1}}},
    {"json": {"type": "e", "payload": {"n": 1}, "idempotency_key": "same"}},
    {"json": {"payload": {}}},
    {"json": {"type": 5}},
    {"json": {"type": "e", "payload": [1]}},
    {"json": {"type": "e", "idempotency_key": 7}},
    {"json": {"type": "e", "occurred_at": "yesterday"}},
    {"json": {"type": "e", "occurred_at": "2026-03-02T09:00:00"}},
    {"json": {"type": "no spaces allowed"}},
    {"json": {"type": "e", "idempotency_key": "timeos:job:x"}},
    {"content": b"{not json"},
    {"content": b"[1, 2]"},
    {"content": b'{"type": "e", "payload": {"x": NaN}}'},
    {"content": b"[" * 70 + b"]" * 70},
    {"content": b""},
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_hot_route_answers_exactly_as_the_routed_one(tmp_path, body):
    from timeos.daemon.api import build_app

    answers = {}
    for way, path in (("hot", "/v1/events"), ("routed", "/v1/%65vents")):
        store = SqliteStore(tmp_path / f"{way}.db")
        try:
            (answer,) = _post_all(build_app(_service(tmp_path, store)), [(path, body)])
        finally:
            store.close()
        payload = answer.json()
        if "id" in payload:  # ids differ by nature; everything else must not
            payload["id"] = "ID"
            payload["jobs"] = ["JOB"] * len(payload["jobs"])
        answers[way] = (answer.status_code, answer.headers["content-type"], payload)
    assert answers["hot"] == answers["routed"]


def test_an_emit_handled_a_turn_after_another_still_joins_its_group(service: Service, tmp_path):
    async def go() -> None:
        first = asyncio.ensure_future(service.emit_soon("e", {"n": 1}))
        await asyncio.sleep(0)  # the first is queued; the next request's bytes arrive now
        await asyncio.sleep(0)  # and its handler runs a turn later
        second = asyncio.ensure_future(service.emit_soon("e", {"n": 2}))
        await asyncio.gather(first, second)
        assert service._group.groups == 1

    asyncio.run(go())
    assert _stored(tmp_path) == 2
