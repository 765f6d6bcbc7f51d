"""Store behaviour on real databases: SQLite files in tmp_path and PostgreSQL schemas (each test
that is not about SQLite itself runs on both, see stores.py)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from harness import verdict

from timeos.clock import FakeClock
from timeos.engine import renewal
from timeos.errors import IdempotencyConflict, InvalidState, NotFound, StoreError
from timeos.model import (
    ActionResult,
    Event,
    Finished,
    Job,
    JobStatus,
    NewJob,
    Outcome,
    RetryPolicy,
    new_id,
)
from timeos.store.sqlite import schema
from timeos.store.sqlite.connection import checkpoint_again, truncate_wanted
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _event(now: datetime, key: str | None = None, payload: dict | None = None) -> Event:
    return Event(new_id(now), "user_signup", payload or {"user_id": "1"}, now, now, key)


def _job(event: Event, *, at: datetime, priority: int = 0, rule: str = "r") -> NewJob:
    return NewJob(rule, "act", at, priority, 3, event.payload, event.id)


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


def test_emit_stores_event_and_jobs_together(store):
    ev = _event(T0)
    result = store.emit(ev, [_job(ev, at=T0), _job(ev, at=T0 + timedelta(hours=1))], T0)
    assert not result.duplicate
    assert len(result.job_ids) == 2
    assert store.get_event(ev.id).payload == {"user_id": "1"}
    jobs = store.list_jobs(event_id=ev.id)
    assert [j.status for j in jobs] == [JobStatus.PENDING, JobStatus.PENDING]
    assert jobs[1].perform_at == T0 + timedelta(hours=1)


def test_same_idempotency_key_and_payload_returns_original_without_jobs(store):
    ev = _event(T0, "k1")
    first = store.emit(ev, [_job(ev, at=T0)], T0)
    again = _event(T0 + timedelta(seconds=1), "k1")
    second = store.emit(again, [_job(again, at=T0)], T0)
    assert second.duplicate and second.event_id == first.event_id and second.job_ids == ()
    assert len(store.list_jobs()) == 1


def test_same_idempotency_key_with_other_payload_is_rejected_and_changes_nothing(store):
    ev = _event(T0, "k1")
    store.emit(ev, [_job(ev, at=T0)], T0)
    other = _event(T0, "k1", {"user_id": "2"})
    with pytest.raises(IdempotencyConflict, match="k1"):
        store.emit(other, [_job(other, at=T0)], T0)
    assert len(store.list_events()) == 1
    assert len(store.list_jobs()) == 1


def test_claim_takes_highest_priority_then_earliest_and_only_due(store):
    ev = _event(T0)
    store.emit(
        ev,
        [
            _job(ev, at=T0 - timedelta(minutes=5), priority=0, rule="old-low"),
            _job(ev, at=T0 - timedelta(minutes=1), priority=10, rule="new-high"),
            _job(ev, at=T0 - timedelta(minutes=2), priority=10, rule="old-high"),
            _job(ev, at=T0 + timedelta(minutes=1), priority=99, rule="future"),
        ],
        T0,
    )
    claimed = store.claim_due(T0, 10)
    assert [j.rule for j in claimed] == ["old-high", "new-high", "old-low"]
    assert all(j.status is JobStatus.RUNNING and j.attempts == 1 for j in claimed)
    assert store.claim_due(T0, 10) == []
    assert store.next_due_at() == T0 + timedelta(minutes=1)


def test_claim_respects_limit(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0) for _ in range(5)], T0)
    assert len(store.claim_due(T0, 2)) == 2
    assert len(store.claim_due(T0, 10)) == 3


def test_finish_records_attempt_and_moves_status(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0)], T0)
    (job,) = store.claim_due(T0, 1)
    later = T0 + timedelta(seconds=3)
    retry_at = T0 + timedelta(seconds=30)
    done = store.finish(
        job, ActionResult(Outcome.FAILED, "boom"), later, verdict(job, JobStatus.RETRYING, retry_at)
    )
    assert done.status is JobStatus.RETRYING
    assert done.perform_at == retry_at
    assert done.last_error == "boom"
    (attempt,) = store.attempts(job.id)
    assert attempt.outcome is Outcome.FAILED and attempt.ended_at == later


def test_record_and_claim_writes_ends_then_claims_in_one_transaction(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0, priority=p) for p in (3, 2, 1, 0)], T0)
    first, second = store.claim_due(T0, 2)
    ended = T0 + timedelta(milliseconds=7)  # when the runs ended, not when it is written
    now = T0 + timedelta(seconds=1)
    ok = ActionResult(Outcome.SUCCEEDED, None, "out")
    claim = store.record_and_claim(
        [
            Finished(first, ok, ended, verdict(first, JobStatus.SUCCEEDED)),
            Finished(
                second,
                ActionResult(Outcome.PERMANENT, "404"),
                ended,
                verdict(second, JobStatus.DEAD),
            ),
        ],
        now,
        1,
    )
    assert claim.written == [True, True]
    assert [j.priority for j in claim.jobs] == [1]  # priority order, as claim_due
    assert claim.event_types == {ev.id: "user_signup"}
    assert store.get_job(first.id).status is JobStatus.SUCCEEDED
    assert store.get_job(second.id).status is JobStatus.DEAD
    (attempt,) = store.attempts(first.id)
    assert (attempt.outcome, attempt.ended_at, attempt.output) == (Outcome.SUCCEEDED, ended, "out")
    assert store.attempts(claim.jobs[0].id)[0].started_at == now


def test_record_and_claim_skips_a_stale_end_and_writes_the_rest(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0), _job(ev, at=T0)], T0)
    a, b = store.claim_due(T0, 2)
    stale = replace(a, attempts=a.attempts + 1)  # a later attempt than the one running
    ok = ActionResult(Outcome.SUCCEEDED)
    claim = store.record_and_claim(
        [
            Finished(stale, ok, T0, verdict(stale, JobStatus.SUCCEEDED)),
            Finished(b, ok, T0, verdict(b, JobStatus.SUCCEEDED)),
        ],
        T0,
        0,
    )
    assert claim.written == [False, True]
    assert store.get_job(a.id).status is JobStatus.RUNNING  # the running attempt is untouched
    assert store.attempts(a.id)[0].ended_at is None
    assert store.get_job(b.id).status is JobStatus.SUCCEEDED
    assert claim.jobs == []


class _ClaimFails(SqliteStore):
    def claim_due(self, *args, **kwargs):
        super().claim_due(*args, **kwargs)  # it claims, then the transaction fails
        raise StoreError("disk I/O error")


def test_record_and_claim_writes_nothing_when_the_claim_fails(tmp_path):
    store = _ClaimFails(tmp_path / "t.db")
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0), _job(ev, at=T0)], T0)
    (job,) = SqliteStore.claim_due(store, T0, 1)
    with pytest.raises(StoreError):
        store.record_and_claim(
            [Finished(job, ActionResult(Outcome.SUCCEEDED), T0, verdict(job, JobStatus.SUCCEEDED))],
            T0,
            1,
        )
    # The end and the claim went together: the end is still to be written, the other job waits.
    assert store.get_job(job.id).status is JobStatus.RUNNING
    assert store.attempts(job.id)[0].ended_at is None
    assert len(store.list_jobs(status=JobStatus.PENDING)) == 1
    store.close()


def test_cancel_only_waiting_jobs(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0), _job(ev, at=T0 + timedelta(days=1))], T0)
    (running,) = store.claim_due(T0, 1)
    with pytest.raises(InvalidState, match="running"):
        store.cancel(running.id, T0)
    waiting = store.list_jobs(status=JobStatus.PENDING)[0]
    assert store.cancel(waiting.id, T0).status is JobStatus.CANCELLED
    with pytest.raises(NotFound):
        store.cancel("nope", T0)


def test_cancel_many_cancels_the_waiting_ones_and_reports_each_id_in_order(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0), *(_job(ev, at=T0 + timedelta(days=1)) for _ in range(3))], T0)
    (running,) = store.claim_due(T0, 1)
    a, b, c = (j.id for j in store.list_jobs(status=JobStatus.PENDING))
    later = T0 + timedelta(minutes=5)
    results = store.cancel_many([a, running.id, "nope", b, a, c], later)
    assert results == [
        (a, True, "cancelled", None),
        (running.id, False, "running", f"job {running.id} is running; only waiting jobs can be"
         " cancelled"),
        ("nope", False, None, "no job with id 'nope'"),
        (b, True, "cancelled", None),
        (a, False, "cancelled", f"job {a} is cancelled; only waiting jobs can be cancelled"),
        (c, True, "cancelled", None),
    ]  # fmt: skip
    assert store.get_job(c).status is JobStatus.CANCELLED and store.get_job(c).updated_at == later
    assert store.get_job(running.id).status is JobStatus.RUNNING


def test_dead_job_requeue_renews_budget_and_delete_removes_it(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0), _job(ev, at=T0)], T0)
    a, b = store.claim_due(T0, 2)
    store.finish(a, ActionResult(Outcome.PERMANENT, "404"), T0, verdict(a, JobStatus.DEAD))
    store.finish(b, ActionResult(Outcome.PERMANENT, "404"), T0, verdict(b, JobStatus.DEAD))
    again = _requeue(store, a.id, T0 + timedelta(hours=1))
    assert again.status is JobStatus.PENDING and again.max_attempts == 4
    assert again.perform_at == T0 + timedelta(hours=1)
    with pytest.raises(InvalidState):
        _requeue(store, a.id, T0)
    store.delete_dead(b.id)
    with pytest.raises(NotFound):
        store.get_job(b.id)


def test_occurrence_key_makes_duplicate_jobs_impossible(store):
    job = NewJob("cron-rule", "act", T0, 0, 3, {}, None, "cron-rule@1", T0)
    first = store.insert_jobs([job], T0)
    second = store.insert_jobs([job], T0)
    assert first[0] is not None and second == [None]
    assert len(store.list_jobs(rule="cron-rule")) == 1


def test_data_survives_reopen_and_schema_is_versioned(backend, tmp_path):
    path = tmp_path / "t.db"
    s = backend.open(path)
    assert s.schema_found == 0
    ev = _event(T0)
    s.emit(ev, [_job(ev, at=T0)], T0)
    s.close()
    s2 = backend.open(path)
    assert s2.get_event(ev.id).id == ev.id
    assert s2.schema_found == _schema_of(backend).SCHEMA_VERSION
    s2.close()


def test_sqlite_runs_in_wal_mode(tmp_path):
    s = SqliteStore(tmp_path / "t.db")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def _schema_of(backend):
    if backend.name == "sqlite":
        return schema
    from timeos.store.postgres import schema as pg_schema

    return pg_schema


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)


def test_unknown_synchronous_mode_is_refused(tmp_path):
    with pytest.raises(StoreError, match="synchronous"):
        SqliteStore(tmp_path / "t.db", synchronous="SOMETIMES")


def test_counts_cover_every_status(store):
    ev = _event(T0)
    store.emit(ev, [_job(ev, at=T0)], T0)
    counts = store.counts_by_status()
    assert counts["pending"] == 1
    assert set(counts) == {s.value for s in JobStatus}


def test_an_exclusive_rules_backlog_does_not_crowd_out_other_due_jobs(store):
    ev = _event(T0)
    backlog = [_job(ev, at=T0 - timedelta(minutes=10 - i), rule="cron") for i in range(6)]
    other = _job(ev, at=T0 - timedelta(seconds=1), rule="event-rule")
    store.emit(ev, [*backlog, other], T0)
    claimed = store.claim_due(T0, 4, exclusive={"cron"})
    assert sorted(j.rule for j in claimed) == ["cron", "event-rule"]


def test_an_older_database_is_migrated_in_place(tmp_path):
    import sqlite_utils

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    schema.MIGRATIONS[0](sqlite_utils.Database(conn))  # a version-1 database, with a job in it
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO jobs (id, rule, action, status, priority, perform_at, attempts,"
        " max_attempts, payload, created_at, updated_at) VALUES"
        " ('J1', 'r', 'a', 'dead', 0, 0, 3, 3, '{}', 0, 0)"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert store.schema_found == 1
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    job = store.get_job("J1")
    assert job.backoff_base == 0 and job.attempts == 3
    assert _requeue(store, "J1", T0).backoff_base == 3  # backoff restarts after dlq retry
    store.close()


def _requeue(store: SqliteStore, job_id: str, now: datetime) -> Job:
    job = store.get_job(job_id)
    return store.requeue_dead(job, now, renewal(job, RetryPolicy(max_attempts=3), now))


def test_wal_is_truncated_once_the_writer_has_been_idle(tmp_path):
    clock = FakeClock(T0)
    store = SqliteStore(tmp_path / "t.db", clock=clock)
    try:
        for i in range(300):
            ev = _event(T0 + timedelta(microseconds=i), payload={"blob": "z" * 20_000})
            store.emit(ev, [_job(ev, at=T0)], T0)
        busy = store.wal_bytes()
        assert busy > 4_000_000
        assert store.checkpoint() == "PASSIVE"  # the writer was busy a moment ago
        assert store.wal_bytes() == busy  # a passive checkpoint never shrinks the file
        clock.advance(timedelta(seconds=2))
        assert store.checkpoint() == "TRUNCATE"
        assert store.wal_bytes() == 0
        assert store.checkpoint() == "PASSIVE"  # nothing left to truncate
    finally:
        store.close()


def test_checkpointer_sleeps_until_a_write_once_the_wal_is_truncated(tmp_path):
    clock = FakeClock(T0)
    store = SqliteStore(tmp_path / "t.db", clock=clock)
    store.start_checkpointer(interval=0.001)
    try:
        ev = _event(T0)
        store.emit(ev, [_job(ev, at=T0)], T0)
        clock.advance(timedelta(seconds=2))  # the writer idle long enough to truncate
        _wait_for(lambda: store.wal_bytes() == 0, "the WAL truncated")
        passes = store.checkpoint_passes
        time.sleep(0.05)  # the old loop would make ~50 passes here
        # At most the pass that was finishing as the WAL emptied (a busy TRUNCATE asks for one
        # more on a loaded machine); then it parks until a write.
        assert store.checkpoint_passes <= passes + 1
        ev2 = _event(T0 + timedelta(seconds=1))
        store.emit(ev2, [_job(ev2, at=T0)], T0)  # a commit wakes it again
        _wait_for(lambda: store.checkpoint_passes > passes, "a pass after the write")
    finally:
        store.close()


def test_checkpointer_truncates_what_a_migration_left_in_one_pass_at_start(tmp_path):
    store = SqliteStore(tmp_path / "t.db", clock=FakeClock(T0))  # a fresh file: migrated
    assert store.wal_bytes() > 0
    store.start_checkpointer(interval=0.001)
    try:
        _wait_for(lambda: store.wal_bytes() == 0, "the WAL truncated")
        assert store.checkpoint_passes == 1  # no PASSIVE passes waiting for the writer's idle
    finally:
        store.close()


def _wait_for(predicate, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    ("mode", "wal_bytes", "again"),
    [
        ("TRUNCATE", 0, False),
        ("PASSIVE", 0, False),
        ("PASSIVE", 4096, True),
        (None, 4096, True),
        (None, 0, True),
    ],
    ids=["truncated", "nothing-left", "frames-left", "busy", "busy-empty"],
)
def test_checkpointer_comes_back_only_while_the_wal_holds_frames(mode, wal_bytes, again):
    assert checkpoint_again(mode, wal_bytes) is again


def test_wal_size_is_limited_when_sqlite_restarts_it(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    limit = store.conn.execute("PRAGMA journal_size_limit").fetchone()[0]
    assert limit == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("idle", "wal", "caught_up", "wanted"),
    [
        (0.0, 0, True, False),
        (60.0, 0, True, False),
        (1.9, 10_000_000, True, False),
        (2.0, 10_000_000, False, True),
        (0.0, 65 * 1024 * 1024, True, True),
        (0.0, 65 * 1024 * 1024, False, False),
    ],
    ids=["empty-wal", "idle-but-empty", "busy-small-wal", "idle", "busy-big-caught-up",
         "busy-big-behind"],
)  # fmt: skip
def test_truncate_wanted_when_idle_or_big_and_caught_up(idle, wal, caught_up, wanted):
    assert truncate_wanted(idle, wal, caught_up) is wanted


def test_a_group_of_emits_is_one_transaction_where_a_bad_one_is_undone_alone(
    store, backend, tmp_path
):
    first, clash, third = _event(T0, "k1"), _event(T0, "k1", {"user_id": "2"}), _event(T0)
    again = _event(T0 + timedelta(seconds=1), "k1")  # same key and payload as `first`
    results = store.emit_group(
        [(e, [_job(e, at=T0)], T0, None) for e in (first, clash, third, again)]
    )
    ok1, conflict, ok3, duplicate = results
    assert isinstance(conflict, IdempotencyConflict) and "k1" in conflict.message
    assert not isinstance(ok1, Exception) and not isinstance(ok3, Exception)
    assert not isinstance(duplicate, Exception)
    assert (ok1.event_id, ok3.event_id) == (first.id, third.id) and len(ok3.job_ids) == 1
    # The key stored earlier in the same transaction counts: a duplicate, no second job.
    assert duplicate.duplicate and duplicate.event_id == first.id and duplicate.job_ids == ()
    # Committed (another connection sees it): the two good events and their jobs, no trace
    # of the one that failed.
    other = backend.open(tmp_path / "t.db")
    try:
        assert {e.id for e in other.list_events()} == {first.id, third.id}
        assert len(other.list_jobs()) == 2
    finally:
        other.close()


def test_a_group_of_one_that_fails_returns_its_error(store):
    ev = _event(T0, "k1")
    store.emit(ev, [_job(ev, at=T0)], T0)
    other = _event(T0, "k1", {"user_id": "2"})
    (result,) = store.emit_group([(other, [_job(other, at=T0)], T0, None)])
    assert isinstance(result, IdempotencyConflict)
    assert len(store.list_events()) == 1


def test_vacuum_runs_and_the_size_counts_the_data(store):
    ev = _event(T0, payload={"blob": "z" * 10_000})
    store.emit(ev, [_job(ev, at=T0)], T0)
    store.vacuum()
    assert store.get_event(ev.id).payload == ev.payload
    assert store.file_bytes() > 10_000


@pytest.mark.parametrize("many", [False, True], ids=["find_idempotent", "find_idempotent_many"])
def test_an_idempotency_key_is_never_answered_from_another_threads_open_transaction(tmp_path, many):
    """A batch holds a transaction open in a worker thread; an emit on another thread that
    finds its key must not acknowledge an event that the batch may still roll back."""
    import threading

    store = SqliteStore(tmp_path / "t.db")
    ev = _event(T0, "k1")
    inserted, release = threading.Event(), threading.Event()
    answers: list[object] = []

    def batch() -> None:
        try:
            with store._tx() as conn:
                store._store_event(conn, ev, [_job(ev, at=T0)], T0, None)
                inserted.set()
                release.wait(10)
                raise RuntimeError("the batch fails: rolled back")
        except RuntimeError:
            pass

    def lookup() -> None:
        if many:
            answers.append(store.find_idempotent_many(["k1"]).get("k1"))
        else:
            answers.append(store.find_idempotent("k1", ev.type, ev.payload))

    writer = threading.Thread(target=batch)
    writer.start()
    assert inserted.wait(10)
    reader = threading.Thread(target=lookup)
    reader.start()
    reader.join(0.5)  # unfixed, it answered from the open transaction by now
    release.set()
    writer.join(10)
    reader.join(10)
    assert answers == [None]  # it waited for the batch's end: nothing was stored under k1
    assert store.list_events() == []
    store.close()
