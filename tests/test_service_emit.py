"""Service.emit and the emit action's own key namespace (issue 7, finding 10)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.clock import FakeClock
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import PayloadError
from timeos.model import RuleSet
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def service(backend, tmp_path: Path) -> Iterator[Service]:
    store = backend.open(tmp_path / "t.db")
    empty = RuleSet((), {})
    yield Service(
        store=store,
        clock=FakeClock(T0),
        rules=empty,
        rule_paths=[],
        loader=lambda paths: empty,
        limits=Limits(),
    )
    store.close()


def test_a_client_key_shaped_like_a_jobs_key_does_not_block_its_emit(service: Service) -> None:
    client = service.emit("unrelated", {"x": 1}, idempotency_key="job:J1")
    emitted = service.emit_for_job("second_step", {"k": "v"}, "J1")
    assert not emitted.duplicate and emitted.event_id != client.event_id
    assert service.get_event(emitted.event_id).type == "second_step"


def test_a_jobs_emit_stores_one_event_however_often_it_runs(service: Service) -> None:
    first = service.emit_for_job("second_step", {"k": "v"}, "J1")
    again = service.emit_for_job("second_step", {"k": "v"}, "J1")
    assert again.duplicate and again.event_id == first.event_id


def test_an_event_stored_under_the_old_job_key_still_counts_as_emitted(service: Service) -> None:
    # What an attempt before the upgrade stored: same type and payload under `job:ID`.
    before = service.emit("second_step", {"k": "v"}, idempotency_key="job:J1")
    retried = service.emit_for_job("second_step", {"k": "v"}, "J1")
    assert retried.duplicate and retried.event_id == before.event_id


@pytest.mark.parametrize("key", ["timeos:job:J1", "timeos:anything"], ids=["job", "other"])
def test_clients_may_not_use_the_reserved_timeos_key_prefix(service: Service, key: str) -> None:
    with pytest.raises(PayloadError, match="reserved"):
        service.emit("second_step", {"k": "v"}, idempotency_key=key)


def test_the_jobs_key_is_not_bound_by_the_client_key_length_limit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "short.db")
    empty = RuleSet((), {})
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=empty,
        rule_paths=[],
        loader=lambda paths: empty,
        limits=Limits(max_idempotency_key=8),
    )
    try:
        assert not service.emit_for_job("second_step", {}, "01J0000000000000000000000").duplicate
    finally:
        store.close()


def test_an_emit_wakes_the_scheduler_with_its_earliest_new_job_and_a_duplicate_not_at_all(
    tmp_path: Path,
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        "actions:\n  a: {command: [/bin/true]}\nrules:\n"
        "  - {name: later, on_event: e, offset: 2h, perform: a}\n"
        "  - {name: sooner, on_event: e, offset: 30m, perform: a}\n"
        "  - {name: debounced, on_event: d, perform: a,"
        " debounce: {key: payload.k, period: 10m}}\n"
    )
    rules = load_rules([rules_file], {})
    store = SqliteStore(tmp_path / "t.db")
    woken: list[datetime | None] = []
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[rules_file],
        loader=lambda paths: rules,
        limits=Limits(),
        on_change=lambda: woken.append(None),
        wake_at=woken.append,
    )
    try:
        service.emit("e", {}, idempotency_key="k1")
        assert woken == [T0 + timedelta(minutes=30)]  # the sooner of its two jobs
        service.emit("e", {}, idempotency_key="k1")  # a duplicate: no new job, no wake
        service.emit("other", {})  # no rule: no job, no wake
        assert woken == [T0 + timedelta(minutes=30)]
        service.emit("d", {"k": 1})
        service.emit("d", {"k": 1})  # folded into the waiting job, which moved: look again
        assert woken == [T0 + timedelta(minutes=30), T0 + timedelta(minutes=10), None]
    finally:
        store.close()
