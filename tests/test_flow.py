"""Flow control in-process (issue 8): event batches, cancel by rule, bulk dead letters, match
verdicts, replays, events by time; the engine's explain_event and plan_events, bulk ids."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import verdict
from ulid import ULID

from timeos.clock import FakeClock
from timeos.daemon.service import Service
from timeos.engine import Limits, MatchReason, explain_event, plan_event, plan_events
from timeos.errors import IdempotencyConflict, InvalidState, NotFound, PayloadError, UsageError
from timeos.model import ActionResult, Event, JobStatus, Outcome, RuleSet, new_id, new_ids
from timeos.rules.loader import load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

RULES = """
actions:
  noop:
    command: ["true"]
rules:
  - name: welcome
    on_event: user_signup
    offset: 1h
    perform: noop
    retry: {max_attempts: 1}
  - name: big
    on_event: payment
    when: payload.amount > 10
    perform: noop
  - name: paused
    on_event: user_signup
    perform: noop
    enabled: false
  - name: nightly
    cron: "0 3 * * *"
    perform: noop
"""


def _rules(tmp: Path) -> RuleSet:
    path = tmp / "rules.yaml"
    path.write_text(textwrap.dedent(RULES))
    return load_rules([path], {})


@pytest.fixture
def service(backend, tmp_path: Path) -> Iterator[Service]:
    store = backend.open(tmp_path / "t.db")
    rules = _rules(tmp_path)
    yield Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    store.close()


def _event(event_type: str, payload: dict[str, object], at: datetime = T0) -> Event:
    return Event(str(ULID.from_datetime(at)), event_type, payload, at, at)


# ---- engine -----------------------------------------------------------------------------------


def test_explain_event_gives_every_event_rule_a_reason_and_leaves_out_time_based_ones(tmp_path):
    rules = _rules(tmp_path)
    verdicts = {m.rule: m for m in explain_event(_event("payment", {"amount": 50}), rules)}
    assert set(verdicts) == {"welcome", "big", "paused"}  # nightly is time-based
    assert verdicts["big"].matched and verdicts["big"].reason is MatchReason.MATCHED
    assert verdicts["welcome"].reason is MatchReason.OTHER_TYPE
    assert verdicts["paused"].reason is MatchReason.OTHER_TYPE


@pytest.mark.parametrize(
    ("event_type", "payload", "rule", "reason"),
    [
        ("payment", {"amount": 5}, "big", MatchReason.CONDITION_FALSE),
        ("payment", {"other": 1}, "big", MatchReason.CONDITION_ERROR),
        ("user_signup", {}, "paused", MatchReason.RULE_DISABLED),
        ("user_signup", {}, "welcome", MatchReason.MATCHED),
    ],
    ids=["false", "error", "disabled", "matched"],
)
def test_explain_event_reasons(tmp_path, event_type, payload, rule, reason):
    found = {m.rule: m for m in explain_event(_event(event_type, payload), _rules(tmp_path))}
    assert found[rule].reason is reason
    assert found[rule].matched == (reason is MatchReason.MATCHED)
    if reason is MatchReason.CONDITION_ERROR:
        assert found[rule].detail


def test_plan_events_plans_a_batch_as_plan_event_plans_each(tmp_path):
    rules = _rules(tmp_path)
    events = [
        _event("user_signup", {"n": 1}),
        _event("payment", {"amount": 50}),
        _event("payment", {"amount": 1}),
        _event("nobody_listens", {}),
    ]
    assert plan_events(events, rules) == [j for e in events for j in plan_event(e, rules)]


@pytest.mark.parametrize(
    "now",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        T0,
        datetime(2026, 3, 8, 7, 0, 0, 999_999, tzinfo=UTC),  # truncated, never rounded up
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # the last datetime
    ],
    ids=["epoch", "t0", "sub-millisecond", "last-datetime"],
)
def test_new_id_is_the_ulid_python_ulid_makes_of_the_instant(now):
    made = new_id(now)
    assert made[:10] == str(ULID.from_datetime(now))[:10]
    assert ULID.from_str(made).milliseconds == int(now.timestamp() * 1000)
    assert len({new_id(now) for _ in range(100)}) == 100


def test_new_ids_are_ulids_of_the_instant_increasing_in_order():
    ids = new_ids(T0, 1000)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    assert all(ULID.from_str(i).datetime == T0 for i in ids[:5])


# ---- emit-batch -------------------------------------------------------------------------------


def test_a_batch_stores_every_event_with_its_jobs_in_input_order(service):
    results = service.emit_batch(
        [
            {"type": "user_signup", "payload": {"u": 1}},
            {"type": "payment", "payload": {"amount": 50}, "occurred_at": "2026-03-01T00:00Z"},
            {"type": "payment", "payload": {"amount": 1}},
        ]
    )
    assert [len(r.job_ids) for r in results] == [1, 1, 0]
    assert not any(r.duplicate for r in results)
    job = service.get_job(results[0].job_ids[0])
    assert job.event_id == results[0].event_id and job.perform_at == T0 + timedelta(hours=1)
    assert service.get_event(results[1].event_id).occurred_at == datetime(2026, 3, 1, tzinfo=UTC)
    assert service.count_events(None) == 3


def test_one_bad_event_stores_nothing_and_every_bad_one_is_named(service):
    with pytest.raises(PayloadError) as caught:
        service.emit_batch(
            [
                {"type": "ok"},
                {"type": "bad type"},
                {"type": "ok", "payload": [1]},
                {"type": "ok", "occurred_at": "yesterday"},
                "not an object",
                {"type": "ok", "idempotency_key": "timeos:mine"},
            ]
        )
    message = caught.value.message
    for n in (1, 2, 3, 4, 5):
        assert f"events[{n}]" in message
    assert "events[0]" not in message
    assert service.count_events(None) == 0


def test_duplicate_keys_in_a_batch_and_against_stored_events_follow_single_emit_rules(service):
    stored = service.emit("user_signup", {"u": 1}, idempotency_key="old")
    results = service.emit_batch(
        [
            {"type": "user_signup", "payload": {"u": 1}, "idempotency_key": "old"},
            {"type": "user_signup", "payload": {"u": 2}, "idempotency_key": "new"},
            {"type": "user_signup", "payload": {"u": 2}, "idempotency_key": "new"},
        ]
    )
    assert results[0].event_id == stored.event_id and results[0].duplicate
    assert not results[1].duplicate and len(results[1].job_ids) == 1
    assert results[2].event_id == results[1].event_id and results[2].duplicate
    assert results[2].job_ids == ()
    assert service.count_events(None) == 2


@pytest.mark.parametrize(
    "second",
    [
        {"type": "user_signup", "payload": {"u": 9}, "idempotency_key": "k"},
        {"type": "user_signup", "payload": {"u": 9}, "idempotency_key": "old"},
    ],
    ids=["within-batch", "against-stored"],
)
def test_a_key_reused_with_another_payload_fails_the_whole_batch(service, second):
    service.emit("user_signup", {"u": 1}, idempotency_key="old")
    with pytest.raises(PayloadError, match=r"events\[1\]: idempotency key"):
        service.emit_batch(
            [{"type": "user_signup", "payload": {"u": 1}, "idempotency_key": "k"}, second]
        )
    assert service.count_events(None) == 1


def test_a_key_stored_by_another_writer_meanwhile_conflicts_in_the_store(service):
    event = _event("user_signup", {"u": 2})
    service.store.emit(Event("E1", "user_signup", {"u": 1}, T0, T0, "k"), [], T0)
    racing = Event(event.id, event.type, event.payload, T0, T0, "k")
    with pytest.raises(IdempotencyConflict):
        service.store.emit_batch([racing], [], T0)


def test_a_batch_over_the_cap_is_refused(service, monkeypatch):
    monkeypatch.setattr("timeos.daemon.flow.MAX_BATCH_EVENTS", 2)
    with pytest.raises(UsageError, match="at most 2 events"):
        service.emit_batch([{"type": "a"}] * 3)


# ---- cancel by rule, bulk dead letters --------------------------------------------------------


def test_cancel_matching_cancels_only_the_rules_waiting_jobs(service):
    first = service.emit("user_signup", {"u": 1})
    second = service.emit("user_signup", {"u": 2})
    service.emit("payment", {"amount": 50})
    done = service.cancel_matching(rule="welcome", status=None, event_id=None, kill=False)
    assert done["cancelled"] == 2 and set(done["ids"]) == {*first.job_ids, *second.job_ids}
    assert service.count_jobs(status="pending", rule="big", event_id=None) == 1
    assert (
        service.cancel_matching(rule="welcome", status=None, event_id=None, kill=False)["cancelled"]
        == 0
    )


def test_cancel_matching_narrows_by_event_and_refuses_finished_statuses(service):
    first = service.emit("user_signup", {"u": 1})
    service.emit("user_signup", {"u": 2})
    done = service.cancel_matching(
        rule="welcome", status="pending", event_id=first.event_id, kill=False
    )
    assert done["ids"] == list(first.job_ids)
    with pytest.raises(UsageError):
        service.cancel_matching(rule="welcome", status="succeeded", event_id=None, kill=False)
    with pytest.raises(UsageError, match="--kill"):
        service.cancel_matching(rule="welcome", status="running", event_id=None, kill=False)


def test_kill_asks_the_scheduler_to_stop_the_rules_running_jobs(service):
    asked: list[list[str]] = []

    def kill(ids: object) -> list[str]:
        asked.append(list(ids))  # type: ignore[call-overload]
        return list(ids)  # type: ignore[call-overload]

    service.kill_running = kill
    emitted = service.emit("user_signup", {"u": 1})
    (job,) = service.store.claim_due(T0 + timedelta(hours=2), 1)
    done = service.cancel_matching(rule="welcome", status=None, event_id=None, kill=True)
    assert asked == [[job.id]] and done["killed"] == [job.id] == list(emitted.job_ids)


def _dead(service: Service, n: int) -> list[str]:
    ids = []
    for i in range(n):
        service.emit("user_signup", {"u": i})
        (job,) = service.store.claim_due(T0 + timedelta(hours=2), 1)
        service.store.finish(
            job, ActionResult(Outcome.PERMANENT, "boom"), T0, verdict(job, JobStatus.DEAD)
        )
        ids.append(job.id)
    return ids


def test_dlq_retry_all_sends_every_dead_job_of_the_rule_back(service):
    dead = _dead(service, 3)
    outcomes = service.dlq_retry_many(None, "welcome")
    assert sorted(o.id for o in outcomes) == sorted(dead) and all(o.ok for o in outcomes)
    assert all(service.get_job(i).status is JobStatus.PENDING for i in dead)
    assert service.dlq_retry_many(None, "big") == []


def test_dlq_retry_and_delete_by_ids_report_each_id(service):
    dead = _dead(service, 2)
    outcomes = service.dlq_delete_many([dead[0], "NOPE", dead[0]], None)
    assert [o.ok for o in outcomes] == [True, False, False]
    with pytest.raises(NotFound):
        service.get_job(dead[0])
    retried = service.dlq_retry_many([dead[1], dead[1]], None)
    assert [o.ok for o in retried] == [True, False]


def test_dlq_delete_all_deletes_only_dead_jobs(service):
    dead = _dead(service, 2)
    waiting = service.emit("user_signup", {"u": 9}).job_ids[0]
    assert len(service.dlq_delete_many(None, None)) == 2
    assert service.get_job(waiting).status is JobStatus.PENDING
    assert all(o for o in dead)


# ---- events: time bounds, replay ------------------------------------------------------------


def test_events_list_bounds_received_at_since_inclusive_until_exclusive(service):
    clock = service.clock
    assert isinstance(clock, FakeClock)
    ids = []
    for _ in range(3):
        ids.append(service.emit("other", {}, occurred_at=T0 - timedelta(days=9)).event_id)
        clock.advance(timedelta(minutes=1))
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    assert [e.id for e in service.list_events(None, 10, 0, since=since)] == ids[:0:-1]
    assert [e.id for e in service.list_events(None, 10, 0, until=until)] == ids[1::-1]
    assert service.count_events(None, since=since, until=until) == 1


def test_replay_creates_jobs_linked_to_the_event_and_records_the_replay(service):
    emitted = service.emit("user_signup", {"u": 1})
    event, dry, planned = service.replay(emitted.event_id, dry_run=True)
    assert dry is None and [j.rule for j in planned] == ["welcome"]
    assert service.count_jobs(status=None, rule=None, event_id=event.id) == 1
    assert service.replays(event.id) == []
    _, replay, jobs = service.replay(emitted.event_id, dry_run=False)
    assert replay is not None and replay.number == 1 and replay.jobs == 1
    assert jobs[0].event_id == event.id and jobs[0].perform_at == T0 + timedelta(hours=1)
    _, again, _ = service.replay(emitted.event_id, dry_run=False)
    assert again is not None and again.number == 2
    assert [r.number for r in service.replays(event.id)] == [1, 2]
    assert service.count_jobs(status=None, rule=None, event_id=event.id) == 3


def test_replay_of_an_unknown_event_is_not_found(service):
    with pytest.raises(NotFound):
        service.replay("NOPE", dry_run=False)


def test_a_batch_body_with_a_too_deep_payload_is_refused_naming_the_event():
    from timeos.daemon.api import _parse_batch

    deep = '{"a":' * 70 + "1" + "}" * 70
    body = '{"events":[{"type":"a","payload":{"b":[1]}},{"type":"a","payload":' + deep + "}]}"
    with pytest.raises(PayloadError, match=r"events\[1\]: payload nested 70 levels"):
        _parse_batch(body.encode(), Limits())
    assert len(_parse_batch(b'{"events":[{"type":"a","payload":{"b":[1]}}]}', Limits())) == 1


def test_kill_without_a_scheduler_refuses_only_when_a_job_is_running(service):
    assert service.cancel_matching(rule="welcome", status=None, event_id=None, kill=True) == {
        "cancelled": 0,
        "ids": [],
        "killed": [],
    }
    service.emit("user_signup", {"u": 1})
    service.store.claim_due(T0 + timedelta(hours=2), 1)
    with pytest.raises(InvalidState):
        service.cancel_matching(rule="welcome", status="running", event_id=None, kill=True)


def test_batches_in_threads_and_single_emits_never_share_a_transaction(service):
    # timeosd runs a batch in a worker thread on the connection the event loop writes on: two
    # batches, or a batch and single emits, once interleaved BEGIN/COMMIT ("cannot start a
    # transaction within a transaction", one thread's COMMIT ending the other's transaction).
    import threading

    errors: list[BaseException] = []
    batch = [{"type": "user_signup", "payload": {"u": n}} for n in range(3000)]

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    def singles() -> None:
        for n in range(300):
            service.emit("user_signup", {"single": n})

    threads = [
        threading.Thread(target=run, args=(lambda: service.emit_batch(batch),)) for _ in range(3)
    ]
    threads.append(threading.Thread(target=run, args=(singles,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert service.count_events(None) == 3 * 3000 + 300
