"""cancel_on and debounce through Service.emit and emit_batch, over a real SQLite store and a
FakeClock: what is cancelled, what is left alone, what a burst of events becomes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import verdict
from stores import Backend

from timeos.clock import FakeClock
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import PayloadError
from timeos.model import ActionResult, JobStatus, Outcome, RuleSet
from timeos.rules.loader import load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
RULES = """\
actions:
  a: {command: [/bin/true]}
rules:
  - name: remind
    on_event: order_created
    offset: 1h
    perform: a
    cancel_on:
      - {event: order_paid, match: payload.order_id}
      - {event: order_refunded, match: "payload.refund_of == origin.order_id"}
  - name: digest
    on_event: user_active
    perform: a
    debounce: {key: payload.user_id, period: 10m, max_wait: 1h}
  - name: plain
    on_event: order_created
    perform: a
"""


def _rules(tmp_path: Path) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return load_rules([path], {})


class Rig:
    def __init__(self, backend: Backend, tmp_path: Path, clock: FakeClock | None = None) -> None:
        self.tmp_path = tmp_path
        self.clock = clock or FakeClock(T0)
        self.store = backend.open(tmp_path / "t.db")
        rules = _rules(tmp_path)
        self.service = Service(
            store=self.store,
            clock=self.clock,
            rules=rules,
            rule_paths=[tmp_path / "rules.yaml"],
            loader=lambda paths: rules,
            limits=Limits(),
        )

    def remind(self, order_id: object) -> str:
        result = self.service.emit("order_created", {"order_id": order_id})
        (job,) = [j for j in result.job_ids if self.store.get_job(j).rule == "remind"]
        return job

    def status(self, job_id: str) -> JobStatus:
        return self.store.get_job(job_id).status


@pytest.fixture
def rig(backend: Backend, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(backend, tmp_path)
    yield r
    r.store.close()


def test_a_path_match_cancels_only_the_matching_job_and_names_the_event(rig: Rig) -> None:
    first, second = rig.remind(1), rig.remind(2)
    paid = rig.service.emit("order_paid", {"order_id": 1})
    assert paid.cancelled == (first,) and paid.job_ids == ()
    job = rig.store.get_job(first)
    assert job.status is JobStatus.CANCELLED
    assert job.cancelled_by == paid.event_id
    assert job.last_error is not None and paid.event_id in job.last_error
    assert rig.status(second) is JobStatus.PENDING


def test_values_compare_as_json_so_a_string_id_is_not_the_number(rig: Rig) -> None:
    job = rig.remind(1)
    assert rig.service.emit("order_paid", {"order_id": "1"}).cancelled == ()
    assert rig.service.emit("order_paid", {"other": 1}).cancelled == ()
    assert rig.status(job) is JobStatus.PENDING


def test_only_the_correlating_rule_is_cancelled(rig: Rig) -> None:
    created = rig.service.emit("order_created", {"order_id": 5})
    paid = rig.service.emit("order_paid", {"order_id": 5})
    rules = {rig.store.get_job(j).rule: rig.status(j) for j in created.job_ids}
    assert rules == {"remind": JobStatus.CANCELLED, "plain": JobStatus.PENDING}
    assert len(paid.cancelled) == 1


def test_a_cel_match_compares_the_new_payload_with_the_origin(rig: Rig) -> None:
    first, second = rig.remind(10), rig.remind(11)
    refunded = rig.service.emit("order_refunded", {"refund_of": 11})
    assert refunded.cancelled == (second,)
    assert rig.store.get_job(second).cancelled_by == refunded.event_id
    assert rig.status(first) is JobStatus.PENDING


def test_a_cel_match_that_errors_leaves_the_job_alone(rig: Rig) -> None:
    job = rig.remind(10)
    # No refund_of in the payload: the expression fails, which means "no match", not a 500.
    assert rig.service.emit("order_refunded", {"other": 1}).cancelled == ()
    assert rig.status(job) is JobStatus.PENDING


def test_a_running_job_is_not_cancelled(rig: Rig) -> None:
    job = rig.remind(1)
    rig.clock.advance(timedelta(hours=1))
    (claimed,) = rig.store.claim_due(rig.clock.now(), 10, blocked=["plain"])
    assert claimed.id == job
    assert rig.service.emit("order_paid", {"order_id": 1}).cancelled == ()
    assert rig.status(job) is JobStatus.RUNNING


def test_a_finished_job_is_not_cancelled_again(rig: Rig) -> None:
    job = rig.remind(1)
    rig.service.emit("order_paid", {"order_id": 1})
    assert rig.service.emit("order_paid", {"order_id": 1}).cancelled == ()
    assert rig.status(job) is JobStatus.CANCELLED


def test_jobs_created_before_a_restart_are_still_cancelled(
    backend: Backend, tmp_path: Path
) -> None:
    before = Rig(backend, tmp_path)
    job = before.remind(42)
    before.store.close()
    after = Rig(backend, tmp_path, FakeClock(T0 + timedelta(minutes=5)))
    try:
        paid = after.service.emit("order_paid", {"order_id": 42})
        assert paid.cancelled == (job,)
        assert after.store.get_job(job).cancelled_by == paid.event_id
    finally:
        after.store.close()


def _digest_jobs(rig: Rig) -> list[str]:
    return [j.id for j in rig.store.list_jobs(rule="digest")]


def test_a_debounced_burst_yields_one_job_pushed_back_by_the_period(rig: Rig) -> None:
    first = rig.service.emit("user_active", {"user_id": "u1", "n": 1})
    (job,) = first.job_ids
    assert rig.store.get_job(job).perform_at == T0 + timedelta(minutes=10)
    rig.clock.advance(timedelta(minutes=4))
    second = rig.service.emit("user_active", {"user_id": "u1", "n": 2})
    assert second.job_ids == () and second.debounced == (job,)
    replaced = rig.store.get_job(job)
    assert replaced.payload == {"user_id": "u1", "n": 2}
    assert replaced.event_id == second.event_id
    assert replaced.perform_at == T0 + timedelta(minutes=14)
    assert _digest_jobs(rig) == [job]


def test_another_key_gets_its_own_job(rig: Rig) -> None:
    one = rig.service.emit("user_active", {"user_id": "u1"})
    two = rig.service.emit("user_active", {"user_id": "u2"})
    assert two.debounced == () and len(two.job_ids) == 1
    assert set(_digest_jobs(rig)) == {*one.job_ids, *two.job_ids}


def test_debounce_never_pushes_past_max_wait_after_the_first_event(rig: Rig) -> None:
    (job,) = rig.service.emit("user_active", {"user_id": "u1"}).job_ids
    for _ in range(14):  # one event every 5 minutes for 70 minutes
        rig.clock.advance(timedelta(minutes=5))
        rig.service.emit("user_active", {"user_id": "u1"})
        assert rig.store.get_job(job).perform_at <= T0 + timedelta(hours=1)
    assert rig.store.get_job(job).perform_at == T0 + timedelta(hours=1)
    assert _digest_jobs(rig) == [job]


def test_a_running_debounced_job_is_not_replaced(rig: Rig) -> None:
    (job,) = rig.service.emit("user_active", {"user_id": "u1"}).job_ids
    rig.clock.advance(timedelta(minutes=10))
    (claimed,) = rig.store.claim_due(rig.clock.now(), 10)
    assert claimed.id == job
    later = rig.service.emit("user_active", {"user_id": "u1"})
    assert later.debounced == () and len(later.job_ids) == 1
    assert rig.store.get_job(job).status is JobStatus.RUNNING


def test_a_debounced_job_survives_a_restart(backend: Backend, tmp_path: Path) -> None:
    before = Rig(backend, tmp_path)
    (job,) = before.service.emit("user_active", {"user_id": "u1"}).job_ids
    before.store.close()
    after = Rig(backend, tmp_path, FakeClock(T0 + timedelta(minutes=3)))
    try:
        again = after.service.emit("user_active", {"user_id": "u1"})
        assert again.debounced == (job,)
        assert after.store.get_job(job).perform_at == T0 + timedelta(minutes=13)
    finally:
        after.store.close()


def test_emit_batch_applies_correlation_event_by_event_in_order(rig: Rig) -> None:
    results = rig.service.emit_batch(
        [
            {"type": "order_created", "payload": {"order_id": 1}},
            {"type": "order_created", "payload": {"order_id": 2}},
            {"type": "order_paid", "payload": {"order_id": 1}},
            {"type": "user_active", "payload": {"user_id": "u"}},
            {"type": "user_active", "payload": {"user_id": "u"}},
        ]
    )
    created_1 = [j for j in results[0].job_ids if rig.store.get_job(j).rule == "remind"]
    created_2 = [j for j in results[1].job_ids if rig.store.get_job(j).rule == "remind"]
    assert results[2].cancelled == tuple(created_1)
    assert rig.status(created_2[0]) is JobStatus.PENDING
    assert results[4].debounced == results[3].job_ids and results[4].job_ids == ()
    assert rig.store.get_job(created_1[0]).cancelled_by == results[2].event_id


def test_emit_batch_without_correlating_rules_keeps_the_fast_path(
    backend: Backend, tmp_path: Path
) -> None:
    store = backend.open(tmp_path / "t.db")
    path = tmp_path / "plain.yaml"
    path.write_text(
        "actions:\n  a: {command: [/bin/true]}\n"
        "rules:\n  - {name: plain, on_event: e, perform: a}\n"
    )
    rules = load_rules([path], {})
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[path],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    calls: list[int] = []
    real = store.emit_batch

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*args, **kw)

    store.emit_batch = counted  # type: ignore[method-assign]
    try:
        results = service.emit_batch([{"type": "e", "payload": {}}] * 3)
        assert calls == [1] and all(len(r.job_ids) == 1 for r in results)
    finally:
        store.close()


def test_a_replayed_events_job_can_be_cancelled(rig: Rig) -> None:
    first = rig.remind(3)
    event_id = rig.store.get_job(first).event_id
    assert event_id is not None
    _, _, jobs = rig.service.replay(event_id, dry_run=False)
    (replayed,) = [j.id for j in jobs if j.rule == "remind"]
    paid = rig.service.emit("order_paid", {"order_id": 3})
    assert sorted(paid.cancelled) == sorted([first, replayed])


def test_a_manual_runs_job_can_be_cancelled(rig: Rig) -> None:
    job = rig.service.run_rule("remind", {"order_id": 4})
    paid = rig.service.emit("order_paid", {"order_id": 4})
    assert paid.cancelled == (job.id,)


def test_a_jobs_keys_go_with_it_when_it_is_deleted(rig: Rig) -> None:
    job = rig.remind(6)
    keys = "SELECT COUNT(*) FROM job_keys WHERE job_id = ?"
    assert rig.store.conn.execute(keys, (job,)).fetchone()[0] == 1
    rig.clock.advance(timedelta(hours=1))
    (claimed,) = rig.store.claim_due(rig.clock.now(), 1, blocked=["plain"])
    dead = verdict(claimed, JobStatus.DEAD)
    rig.store.finish(claimed, ActionResult(Outcome.PERMANENT, "no"), rig.clock.now(), dead)
    rig.store.delete_dead(job)
    assert rig.store.conn.execute(keys, (job,)).fetchone()[0] == 0


def test_watchers_hear_of_a_correlated_cancel(rig: Rig) -> None:
    heard: list[Any] = []
    rig.service.bus.subscribe(heard.append)
    job = rig.remind(12)
    rig.service.emit("order_paid", {"order_id": 12})
    cancels = [e.fields for e in heard if e.kind == "job.cancelled"]
    created_by = rig.store.get_job(job).event_id
    assert cancels == [{"job_id": job, "rule": "remind", "event_id": created_by}]


CHAINED = """\
actions:
  a: {command: [/bin/true]}
  b: {command: [/bin/true]}
rules:
  - name: remind
    on_event: order_created
    offset: 1h
    perform: a
    cancel_on: [{event: order_paid, match: payload.order_id}]
  - name: follow
    on_event: order_created
    after: remind
    perform: b
  - name: digest
    on_event: user_active
    perform: [a, b]
    debounce: {key: payload.user_id, period: 10m}
"""


@pytest.fixture
def chained(backend, tmp_path: Path) -> Iterator[Service]:
    path = tmp_path / "rules.yaml"
    path.write_text(CHAINED)
    rules = load_rules([path], {})
    store = backend.open(tmp_path / "t.db")
    yield Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[path],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    store.close()


def test_cancelling_a_parent_takes_its_blocked_dependant_along(chained: Service) -> None:
    created = chained.emit("order_created", {"order_id": 1})
    jobs = {chained.store.get_job(j).rule: j for j in created.job_ids}
    assert chained.store.get_job(jobs["follow"]).status is JobStatus.BLOCKED
    paid = chained.emit("order_paid", {"order_id": 1})
    assert paid.cancelled == (jobs["remind"],)
    follow = chained.store.get_job(jobs["follow"])
    assert follow.status is JobStatus.CANCELLED and jobs["remind"] in (follow.last_error or "")


def test_a_debounced_perform_list_stays_one_chain(chained: Service) -> None:
    first = chained.emit("user_active", {"user_id": "u"})
    head, step = first.job_ids
    assert chained.store.get_job(step).depends_on == (head,)
    again = chained.emit("user_active", {"user_id": "u"})
    assert again.job_ids == () and again.debounced == (head,)
    assert {j.id for j in chained.store.list_jobs(rule="digest")} == {head, step}


def test_a_debounced_chain_runs_every_step_with_the_newest_event(chained: Service) -> None:
    head, step = chained.emit("user_active", {"user_id": "u", "n": 1}).job_ids
    again = chained.emit("user_active", {"user_id": "u", "n": 2})
    for job_id in (head, step):  # not the head with n=2 and the second action with n=1
        job = chained.store.get_job(job_id)
        assert job.payload == {"user_id": "u", "n": 2} and job.event_id == again.event_id
    other = chained.emit("user_active", {"user_id": "w", "n": 3})
    assert chained.store.get_job(step).payload["n"] == 2 and len(other.job_ids) == 2


def test_a_correlated_batch_keeps_chains_linked(chained: Service) -> None:
    results = chained.emit_batch(
        [
            {"type": "order_created", "payload": {"order_id": 2}},
            {"type": "user_active", "payload": {"user_id": "v"}},
        ]
    )
    remind, follow = results[0].job_ids
    head, step = results[1].job_ids
    assert chained.store.get_job(follow).depends_on == (remind,)
    assert chained.store.get_job(step).depends_on == (head,)


def test_an_integral_float_is_the_same_number_as_the_int(rig: Rig) -> None:
    # JSON has one number type: Python writes 1.0 where JavaScript writes 1 (CEL has 1 == 1.0).
    job, nested = rig.remind(7.0), rig.remind({"shop": 1, "n": [2.0, 2.5]})
    assert rig.service.emit("order_paid", {"order_id": 7}).cancelled == (job,)
    paid = rig.service.emit("order_paid", {"order_id": {"n": [2, 2.5], "shop": 1.0}})
    assert paid.cancelled == (nested,)
    other = rig.remind(8)
    assert rig.service.emit("order_paid", {"order_id": 8.5}).cancelled == ()
    assert rig.service.emit("order_paid", {"order_id": True}).cancelled == ()
    assert rig.status(other) is JobStatus.PENDING


def test_a_debounce_period_past_the_calendar_is_a_payload_error(rig: Rig) -> None:
    # occurred_at near year 9999: the rule's period would overflow; a 400, not a crashed emit.
    late = datetime(9999, 12, 31, 23, 55, tzinfo=UTC)
    with pytest.raises(PayloadError, match="out of range"):
        rig.service.emit("user_active", {"user_id": "u"}, occurred_at=late)
    assert rig.store.list_jobs(rule="digest") == []


def test_a_late_delivered_event_never_pulls_a_debounced_job_forward(rig: Rig) -> None:
    rig.clock.advance(timedelta(minutes=30))
    (job,) = rig.service.emit("user_active", {"user_id": "u1", "n": 1}).job_ids
    # An event that occurred before the window (delivered late) still folds into the job, with
    # its payload, but the job stays due where the newer event put it.
    late = rig.service.emit("user_active", {"user_id": "u1", "n": 0}, occurred_at=T0)
    assert late.debounced == (job,)
    assert rig.store.get_job(job).perform_at == T0 + timedelta(minutes=40)


def test_an_after_rules_job_follows_its_debounced_parent(backend, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  a: {command: [/bin/true]}\n"
        "rules:\n"
        "  - name: digest\n    on_event: user_active\n    perform: a\n"
        "    debounce: {key: payload.user_id, period: 10m}\n"
        "  - name: notify\n    on_event: user_active\n    after: digest\n    perform: a\n"
        "    cancel_on: [{event: user_gone, match: payload.n}]\n"
    )
    rules = load_rules([path], {})
    store = backend.open(tmp_path / "t.db")
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[path],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    try:
        head, notify = service.emit("user_active", {"user_id": "u", "n": 1}).job_ids
        again = service.emit("user_active", {"user_id": "u", "n": 2})
        assert again.debounced == (head,) and again.job_ids == ()
        assert store.get_job(notify).payload["n"] == 2
        # its keys follow its payload: the newest event's n cancels it, the first one's not
        assert service.emit("user_gone", {"n": 1}).cancelled == ()
        assert service.emit("user_gone", {"n": 2}).cancelled == (notify,)
    finally:
        store.close()


def test_watchers_hear_of_a_batchs_correlated_cancels(rig: Rig) -> None:
    heard: list[Any] = []
    rig.service.bus.subscribe(heard.append)
    results = rig.service.emit_batch(
        [
            {"type": "order_created", "payload": {"order_id": 13}},
            {"type": "order_paid", "payload": {"order_id": 13}},
        ]
    )
    cancels = [e.fields["job_id"] for e in heard if e.kind == "job.cancelled"]
    assert cancels == list(results[1].cancelled) and len(cancels) == 1


def test_a_reload_that_adds_cancel_on_indexes_the_jobs_already_waiting(
    backend, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    plain = RULES.replace(
        "    cancel_on:\n      - {event: order_paid, match: payload.order_id}\n"
        '      - {event: order_refunded, match: "payload.refund_of == origin.order_id"}\n',
        "",
    ).replace("    debounce: {key: payload.user_id, period: 10m, max_wait: 1h}\n", "")
    path.write_text(plain)
    store = backend.open(tmp_path / "t.db")
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=load_rules([path], {}),
        rule_paths=[path],
        loader=lambda paths: load_rules(paths, {}),
        limits=Limits(),
    )
    try:
        created = service.emit("order_created", {"order_id": 9})
        (before,) = [j for j in created.job_ids if store.get_job(j).rule == "remind"]
        (digest,) = service.emit("user_active", {"user_id": "u"}).job_ids
        path.write_text(RULES)
        asyncio.run(service.reload())
        assert service.emit("order_paid", {"order_id": 9}).cancelled == (before,)
        assert service.emit("user_active", {"user_id": "u"}).debounced == (digest,)
        asyncio.run(service.reload())  # nothing new: indexed once
        assert store.conn.execute("SELECT COUNT(*) FROM job_keys").fetchone()[0] == 2
    finally:
        store.close()


def test_watchers_hear_of_the_jobs_an_event_made_beside_a_debounce(backend, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "actions:\n  a: {command: [/bin/true]}\n"
        "rules:\n"
        "  - name: digest\n    on_event: user_active\n    perform: a\n"
        "    debounce: {key: payload.user_id, period: 10m}\n"
        "  - {name: audit, on_event: user_active, perform: a}\n"
    )
    rules = load_rules([path], {})
    store = backend.open(tmp_path / "t.db")
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[path],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    try:
        service.emit("user_active", {"user_id": "u"})
        heard: list[Any] = []
        service.bus.subscribe(heard.append)
        again = service.emit("user_active", {"user_id": "u"})
        (audit,) = again.job_ids
        created = [(e.fields["rule"], e.fields["job_id"]) for e in heard if e.kind == "job.created"]
        assert created == [("audit", audit)] and store.get_job(audit).rule == "audit"
    finally:
        store.close()


def test_a_manual_run_is_never_pushed_back_by_a_debounced_event(rig: Rig) -> None:
    manual = rig.service.run_rule("digest", {"user_id": "u1", "n": 0})
    event = rig.service.emit("user_active", {"user_id": "u1", "n": 1})
    assert event.debounced == () and len(event.job_ids) == 1
    kept = rig.store.get_job(manual.id)
    assert kept.perform_at == T0 and kept.payload == {"user_id": "u1", "n": 0}


def test_a_failing_cel_match_logs_once_per_event_not_once_per_job(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [rig.remind(n) for n in range(20)]
    with caplog.at_level(logging.WARNING, logger="timeos.rules.correlation"):
        assert rig.service.emit("order_refunded", {"other": 1}).cancelled == ()
    assert len([r for r in caplog.records if "cancel_on" in r.getMessage()]) == 1
    assert all(rig.status(j) is JobStatus.PENDING for j in jobs)


def test_cancel_on_and_debounce_hold_across_two_daemons_on_one_database(
    backend: Backend, tmp_path: Path
) -> None:
    # Two services on one database (on SQLite: two stores on one file, one after the other):
    # what one daemon created, an event received by the other cancels or debounces.
    a = Rig(backend, tmp_path)
    b = Rig(backend, tmp_path, FakeClock(T0 + timedelta(minutes=1)))
    try:
        job = a.remind(7)
        paid = b.service.emit("order_paid", {"order_id": 7})
        assert paid.cancelled == (job,) and a.status(job) is JobStatus.CANCELLED
        first = a.service.emit("user_active", {"user_id": "u9", "n": 1})
        again = b.service.emit("user_active", {"user_id": "u9", "n": 2})
        assert again.debounced == first.job_ids and again.job_ids == ()
        (digest,) = first.job_ids
        assert a.store.get_job(digest).payload == {"user_id": "u9", "n": 2}
    finally:
        a.store.close()
        b.store.close()
