"""Health of daemons sharing a database: degraded, naming the daemon, when one runs other rules
or stopped heart-beating; a cleanly stopped daemon leaves, and SQLite's health is as before."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stores import Backend, backend_fixture

from timeos.clock import FakeClock
from timeos.daemon.fleet import daemons_health
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.model import (
    Action,
    ActionKind,
    CommandSpec,
    CronTrigger,
    EventTrigger,
    Rule,
    RuleSet,
)
from timeos.rules.fingerprint import fingerprint
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
ACT = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))
RULES = RuleSet(
    (
        Rule("welcome", EventTrigger("user_signup"), "act"),
        Rule("nightly", CronTrigger("30 2 * * *"), "act"),
    ),
    {"act": ACT},
)
OTHER = RuleSet((Rule("welcome", EventTrigger("user_signup"), "act"),), {"act": ACT})


@pytest.fixture
def pg(request):
    """A PostgreSQL backend (skips without a server, fails without one under CI)."""
    request.param = "postgres"
    yield from backend_fixture(request)


def _service(store: SqliteStore, rules: RuleSet, *reloads: RuleSet) -> Service:
    pending = list(reloads)

    def load(paths: Sequence[Path]) -> RuleSet:
        return pending.pop(0)

    return Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[Path("rules.yaml")],
        loader=load,
        limits=Limits(),
    )


def _row(id: str, alive: bool = True, fp: str | None = "f" * 64) -> dict[str, Any]:
    at = "2026-03-02T09:00:00+00:00"
    return {"id": id, "host": "h1", "pid": 7, "heartbeat_at": at, "alive": alive, "fingerprint": fp}


@pytest.mark.parametrize(
    ("rows", "status", "stopped", "different"),
    [
        ([_row("a"), _row("b")], "healthy", [], []),
        ([_row("a"), _row("b", fp="e" * 64)], "degraded", [], ["b"]),
        ([_row("a"), _row("b", fp=None)], "degraded", [], ["b"]),
        ([_row("a"), _row("b", alive=False)], "degraded", ["b"], []),
        # A dead daemon is reported as stopped, whatever rules it last ran.
        ([_row("a"), _row("b", alive=False, fp="e" * 64)], "degraded", ["b"], []),
        ([_row("a", alive=False)], "degraded", ["a"], []),  # our own beat is late
    ],
    ids=["same-rules", "other-rules", "no-fingerprint", "stopped", "stopped-other", "own-late"],
)
def test_daemons_health_names_each_daemon_that_is_out_of_line(rows, status, stopped, different):
    component = daemons_health(rows, "f" * 64)
    assert (component["status"], component["stopped"]) == (status, stopped)
    assert component["different_rules"] == different
    for name in stopped + different:
        assert f"daemon {name} on h1" in component["message"]
    if status == "healthy":
        assert component["message"] == "2 daemon(s) alive, all on rules ffffffffffff"


def test_health_on_sqlite_has_no_daemons_component(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    try:
        health = _service(store, RULES).health()
        assert set(health["components"]) == {"database", "lateness", "rules"}
        assert set(health["components"]["database"]) == {
            "status",
            "message",
            "wal_bytes",
            "last_write_ok",
            "last_write_at",
        }
        assert health["status"] == "healthy"
    finally:
        store.close()


def test_daemons_on_other_rules_degrade_health_until_a_reload_brings_them_in_line(
    pg: Backend, tmp_path
):
    path = tmp_path / "shared"
    a = _service(pg.open(path, daemon_id="a"), RULES)
    b = _service(pg.open(path, daemon_id="b"), RULES, OTHER, RULES)
    health = a.health()
    assert health["status"] == "healthy"
    assert health["components"]["daemons"]["status"] == "healthy"
    listed = health["components"]["database"]["daemons"]
    assert [(d["id"], d["fingerprint"]) for d in listed] == [
        ("a", fingerprint(RULES)),
        ("b", fingerprint(RULES)),
    ]

    asyncio.run(b.reload())  # b now runs OTHER: each daemon sees the other as different
    for service, other in ((a, "b"), (b, "a")):
        health = service.health()
        assert health["status"] == "degraded"
        daemons = health["components"]["daemons"]
        assert daemons["different_rules"] == [other]
        assert (
            f"daemon {other} " in daemons["message"]
            and "runs different rules" in daemons["message"]
        )

    asyncio.run(b.reload())  # back on RULES
    assert a.health()["status"] == "healthy"


def test_a_daemon_that_stops_beating_degrades_health_and_one_that_stops_cleanly_does_not(
    pg: Backend, tmp_path
):
    path = tmp_path / "shared"
    a = _service(pg.open(path, daemon_id="a"), RULES)
    b_store = pg.open(path, daemon_id="b")
    _service(b_store, RULES)
    # b's last beat is older than the lease (server time; what a kill -9 leaves behind).
    b_store.conn.execute(
        "UPDATE daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = 'b'"
    )
    health = a.health()
    assert health["status"] == "degraded"
    assert health["components"]["daemons"]["stopped"] == ["b"]
    assert "daemon b on " in health["components"]["daemons"]["message"]
    assert "stopped heart-beating" in health["components"]["daemons"]["message"]
    b_store._beat()  # type: ignore[attr-defined]  # what its heartbeat thread does every 2 s
    assert a.health()["status"] == "healthy"
    b_store.close()  # a clean stop deletes its row: nothing to report
    health = a.health()
    assert health["status"] == "healthy"
    assert [d["id"] for d in health["components"]["database"]["daemons"]] == ["a"]


def test_the_heartbeat_rewrites_a_fingerprint_the_announcement_could_not_write(
    pg: Backend, tmp_path
):
    store = pg.open(tmp_path / "shared", daemon_id="a")
    service = _service(store, RULES)
    store.conn.execute("UPDATE daemons SET fingerprint = NULL")  # as if announce_rules failed
    assert service.health()["components"]["daemons"]["different_rules"] == ["a"]
    store._beat()  # type: ignore[attr-defined]
    assert service.health()["status"] == "healthy"
