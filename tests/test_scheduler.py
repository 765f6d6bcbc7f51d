"""The scheduler loop on a fake clock and a real store: claims, failures, shutdown."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.errors import StoreError
from timeos.model import (
    Action,
    ActionKind,
    Event,
    EventTrigger,
    IntervalTrigger,
    JobStatus,
    NewJob,
    PythonSpec,
    RetryPolicy,
    Rule,
    RuleSet,
    new_id,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class FlakyStore(SqliteStore):
    """A real store whose first `failures` claims fail, like a database locked by a backup."""

    failures = 1

    def claim_due(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise StoreError("database is locked")
        return super().claim_due(*args, **kwargs)


def _rules(calls: list[str]) -> RuleSet:
    def record(payload, ctx):
        calls.append(ctx.job_id)

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:record", record))
    return RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})


def _add_job(store: SqliteStore, at: datetime) -> str:
    event = Event(new_id(T0), "e", {}, T0, T0)
    result = store.emit(event, [NewJob("r", "act", at, 0, 3, {}, event.id)], T0)
    return result.job_ids[0]


def _start(store: SqliteStore, clock: FakeClock, rules) -> tuple[Scheduler, asyncio.Task]:
    """A scheduler running on the current event loop, with a real action runner."""
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(store=store, clock=clock, runner=runner, rules=rules)
    return scheduler, asyncio.create_task(scheduler.run())


async def _until(predicate, what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_loop_survives_a_failed_pass_and_reports_it(tmp_path):
    store = FlakyStore(tmp_path / "t.db")
    calls: list[str] = []
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: scheduler.errors == 1, "the failed pass")
        assert scheduler.last_error == "StoreError: database is locked"
        assert scheduler.loop_alive
        clock.advance(timedelta(seconds=1))  # the pause after a failure
        await _until(lambda: calls == [job_id], "the job to run")
        await _until(lambda: store.get_job(job_id).status is JobStatus.SUCCEEDED, "success")
        assert scheduler.last_error is None
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_jobs_run_when_due_on_the_fake_clock_and_not_before(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")
    calls: list[str] = []
    later = _add_job(store, T0 + timedelta(minutes=5))
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: scheduler.last_tick is not None, "the first pass")
        clock.advance(timedelta(minutes=4, seconds=59))
        # The signal: a whole pass ran at 09:04:59 (a pass sets last_tick, then claims, with no
        # await in between), and it claimed nothing.
        await _until(lambda: scheduler.last_tick == clock.now(), "a pass at 09:04:59")
        assert calls == [] and scheduler.running == {}
        assert store.get_job(later).status is JobStatus.PENDING
        clock.advance(timedelta(seconds=1))
        await _until(lambda: calls == [later], "the job at 09:05")
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_a_job_inserted_earlier_than_the_planned_wake_wakes_the_loop(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")
    calls: list[str] = []
    _add_job(store, T0 + timedelta(hours=1))
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: scheduler.last_tick is not None, "the first pass")
        now_job = _add_job(store, T0)
        scheduler.poke()  # what Service.emit does after storing jobs
        await _until(lambda: calls == [now_job], "the new job")
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_an_action_cancelled_by_its_own_code_is_an_ordinary_failure(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")

    async def cancelled(payload, ctx):
        raise asyncio.CancelledError  # e.g. it awaited a task someone else cancelled

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:cancelled", cancelled))
    rules = RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: rules)
        await _until(lambda: store.get_job(job_id).status is JobStatus.RETRYING, "a retry")
        job = store.get_job(job_id)
        assert job.attempts == 1 and job.max_attempts == 3  # charged, like any failure
        assert job.perform_at > T0  # with backoff
        assert scheduler.running == {}
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


class LockedFinishStore(SqliteStore):
    """A real store whose first `failures` result writes fail, like a backup holding the lock."""

    failures = 2

    def record_and_claim(self, finished, *args, **kwargs):
        if self.failures and finished:
            self.failures -= 1
            raise StoreError("database is locked")
        return super().record_and_claim(finished, *args, **kwargs)


def test_a_result_the_store_refused_is_written_on_a_later_pass(tmp_path):
    store = LockedFinishStore(tmp_path / "t.db")
    calls: list[str] = []
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: calls == [job_id] and scheduler.unrecorded, "a refused write")
        assert store.get_job(job_id).status is JobStatus.RUNNING
        assert scheduler.running == {}  # the worker slot is free meanwhile
        clock.advance(timedelta(seconds=1))  # next pass: still refused, kept
        await _until(lambda: store.failures == 0, "the second refusal")
        clock.advance(timedelta(seconds=1))
        await _until(lambda: store.get_job(job_id).status is JobStatus.SUCCEEDED, "the write")
        assert scheduler.unrecorded == []
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_backoff_counts_from_the_stored_base_not_todays_policy(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")

    def fail(payload, ctx):
        raise RuntimeError("down")

    def rules_with(attempts: int) -> RuleSet:
        act = Action(
            "act",
            ActionKind.PYTHON,
            PythonSpec("t:fail", fail),
            retry=RetryPolicy(attempts, timedelta(seconds=10), timedelta(hours=1), jitter=0.0),
        )
        return RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})

    current = {"rules": rules_with(5)}
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: current["rules"])
        await _until(lambda: store.get_job(job_id).attempts == 1, "attempt 1")
        await _until(lambda: store.get_job(job_id).status is JobStatus.RETRYING, "retry 1")
        assert store.get_job(job_id).perform_at == T0 + timedelta(seconds=10)
        current["rules"] = rules_with(10)  # a reload raises the budget mid-flight
        clock.advance(timedelta(seconds=10))
        await _until(lambda: store.get_job(job_id).attempts == 2, "attempt 2")
        await _until(lambda: store.get_job(job_id).status is JobStatus.RETRYING, "retry 2")
        job = store.get_job(job_id)
        assert job.perform_at - clock.now() == timedelta(seconds=20)  # 10s doubled once
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


class CountingStore(SqliteStore):
    """A real store that counts the transactions the scheduler opens, and refuses a get_event
    (the claim brings the event type) and a finish (ends go with the next claim)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[int, int]] = []  # (ends written, jobs claimed) per transaction

    def record_and_claim(self, finished, *args, **kwargs):
        claim = super().record_and_claim(finished, *args, **kwargs)
        self.writes.append((len(finished), len(claim.jobs)))
        return claim

    def get_event(self, event_id):
        raise AssertionError("a get_event per run")

    def finish(self, *args, **kwargs):
        raise AssertionError("a transaction per end")


def test_ends_are_written_in_the_next_claims_transaction_and_the_context_has_the_event_type(
    tmp_path,
):
    store = CountingStore(tmp_path / "t.db")
    seen: list[tuple[str, str | None]] = []

    def record(payload, ctx):
        seen.append((ctx.job_id, ctx.event_type))

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:record", record))
    rules = RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})
    jobs = [_add_job(store, T0) for _ in range(12)]
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: rules)
        await _until(
            lambda: all(store.get_job(j).status is JobStatus.SUCCEEDED for j in jobs), "all 12"
        )
        scheduler.stop()
        await task

    asyncio.run(go())
    assert sorted(seen) == sorted((j, "e") for j in jobs)
    assert sum(ends for ends, _ in store.writes) == 12  # each end written once
    assert sum(claimed for _, claimed in store.writes) == 12
    # Every end went in with a claim (or the last, claim-free passes): never a transaction of
    # its own per job, as a finish() per run was.
    assert len(store.writes) < 12 + 12
    assert all(a.ended_at is not None for j in jobs for a in store.attempts(j))
    store.close()


def test_ends_kept_at_shutdown_are_written_before_the_loop_returns(tmp_path):
    store = LockedFinishStore(tmp_path / "t.db")
    store.failures = 1
    calls: list[str] = []
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: store.failures == 0, "the refused write")
        assert store.get_job(job_id).status is JobStatus.RUNNING
        scheduler.stop()  # the fake clock never reaches the pause's end: only stop() writes it
        await task

    asyncio.run(go())
    assert store.get_job(job_id).status is JobStatus.SUCCEEDED
    assert calls == [job_id]
    store.close()


def test_a_run_whose_end_was_never_written_runs_again_after_a_crash(tmp_path):
    """At-least-once: the end of a run is kept in memory until the next pass writes it; a
    daemon that dies first leaves the job running, and the next start runs it again."""
    store = LockedFinishStore(tmp_path / "t.db")
    store.failures = 1_000_000  # every write of an end fails, even at shutdown: a crash
    calls: list[str] = []
    job_id = _add_job(store, T0)
    clock = FakeClock(T0)

    async def crash() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: calls == [job_id] and scheduler.unrecorded, "the unwritten end")
        scheduler.stop()
        await task

    asyncio.run(crash())
    store.close()
    assert calls == [job_id]

    again = SqliteStore(tmp_path / "t.db")
    assert again.get_job(job_id).status is JobStatus.RUNNING

    async def restart() -> None:
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(store=again, clock=clock, runner=runner, rules=lambda: _rules(calls))
        assert scheduler.recover() == 1  # interrupted, retried
        clock.advance(timedelta(hours=1))  # past the retry's backoff
        task = asyncio.create_task(scheduler.run())
        await _until(lambda: again.get_job(job_id).status is JobStatus.SUCCEEDED, "the rerun")
        scheduler.stop()
        await task

    asyncio.run(restart())
    assert calls == [job_id, job_id]
    outcomes = [a.outcome for a in again.attempts(job_id)]
    assert [str(o) for o in outcomes] == ["interrupted", "succeeded"]
    again.close()


class RunningSeen:
    """A planner that records, at each pass, the jobs the store has running and those the
    scheduler runs: the occurrence planner reads the first for a rule's overlap."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.scheduler: Scheduler | None = None
        self.stale: list[str] = []

    def plan(self, now: datetime) -> datetime | None:
        assert self.scheduler is not None
        stored = {j.id for j in self.store.running_jobs()}
        self.stale += sorted(stored - set(self.scheduler.running))
        return None


def test_the_planner_sees_a_time_based_rules_run_ended_once_its_run_has(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    calls: list[str] = []

    def record(payload, ctx):
        calls.append(ctx.job_id)

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:record", record))
    timed = Rule("timed", IntervalTrigger(timedelta(hours=1)), "act")
    rules = RuleSet((timed,), {"act": act})
    event = Event(new_id(T0), "e", {}, T0, T0)
    jobs = store.emit(event, [NewJob("timed", "act", T0, 0, 3, {}) for _ in range(3)], T0).job_ids
    clock = FakeClock(T0)
    planner = RunningSeen(store)

    async def go() -> None:
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(
            store=store, clock=clock, runner=runner, rules=lambda: rules, planner=planner
        )
        planner.scheduler = scheduler
        task = asyncio.create_task(scheduler.run())
        await _until(lambda: len(calls) == 3 and not scheduler.unrecorded, "three runs")
        scheduler.poke()
        await _until(lambda: scheduler.last_tick is not None and not scheduler.running, "idle")
        scheduler.stop()
        await task

    asyncio.run(go())
    assert sorted(calls) == sorted(jobs)
    assert planner.stale == []  # never a run already ended that the store still had running
    store.close()


def test_a_success_is_logged_at_debug_and_a_failure_at_info(tmp_path, caplog):
    store = SqliteStore(tmp_path / "t.db")

    def fail(payload, ctx):
        if payload.get("fail"):
            raise RuntimeError("down")

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:fail", fail))
    rules = RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})
    event = Event(new_id(T0), "e", {}, T0, T0)
    ok, bad = store.emit(
        event,
        [NewJob("r", "act", T0, 0, 3, {}, event.id), NewJob("r", "act", T0, 0, 3, {"fail": 1})],
        T0,
    ).job_ids
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: rules)
        await _until(lambda: store.get_job(bad).status is JobStatus.RETRYING, "the failure")
        await _until(lambda: store.get_job(ok).status is JobStatus.SUCCEEDED, "the success")
        scheduler.stop()
        await task

    with caplog.at_level(logging.DEBUG, logger="timeos.scheduler"):
        asyncio.run(go())
    finished = {r.fields["job_id"]: r for r in caplog.records if r.getMessage() == "job finished"}
    assert finished[ok].levelno == logging.DEBUG
    assert finished[ok].fields["status"] == "succeeded"
    assert finished[bad].levelno == logging.INFO
    assert finished[bad].fields["error"] == "RuntimeError: down"
    assert finished[bad].fields["retry_at"] == store.get_job(bad).perform_at.isoformat()
    store.close()


def test_a_poke_for_a_job_due_after_the_loops_deadline_lets_it_sleep(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    calls: list[str] = []
    _add_job(store, T0 + timedelta(hours=1))
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: scheduler.asleep_until == T0 + timedelta(hours=1), "the sleep")
        _add_job(store, T0 + timedelta(hours=2))
        scheduler.poke(T0 + timedelta(hours=2))  # what an emit of a later job does
        assert not scheduler.wake.is_set()  # no claim pass for a job that is not due sooner
        scheduler.poke(T0 + timedelta(hours=1))  # due at the deadline: the wake covers it
        assert not scheduler.wake.is_set()
        soon = _add_job(store, T0 + timedelta(minutes=10))
        scheduler.poke(T0 + timedelta(minutes=10))
        assert scheduler.wake.is_set()
        await _until(lambda: scheduler.asleep_until == T0 + timedelta(minutes=10), "new deadline")
        clock.advance(timedelta(minutes=10))
        await _until(lambda: calls == [soon], "the sooner job")
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


def test_a_poke_from_a_worker_thread_wakes_the_loop(tmp_path):
    store = SqliteStore(tmp_path / "t.db")
    calls: list[str] = []
    clock = FakeClock(T0)

    async def go() -> None:
        scheduler, task = _start(store, clock, lambda: _rules(calls))
        await _until(lambda: scheduler.asleep_until is None, "the sleep with nothing due")
        now_job = _add_job(store, T0)
        await asyncio.to_thread(scheduler.poke, T0)  # as emit-batch's worker thread does
        await _until(lambda: calls == [now_job], "the new job")
        scheduler.stop()
        await task

    asyncio.run(go())
    store.close()


class CascadeGlitchStore(SqliteStore):
    """A real store whose read of a dead job's cascade fails once (e.g. database locked)."""

    glitches = 1

    def cascaded(self, parent):
        if self.glitches:
            self.glitches -= 1
            raise StoreError("database is locked")
        return super().cascaded(parent)


def test_a_failed_announcement_never_strands_the_jobs_claimed_in_the_same_pass(tmp_path):
    store = CascadeGlitchStore(tmp_path / "t.db")
    calls: list[tuple[str, str]] = []

    def boom(payload, ctx):
        calls.append(("boom", ctx.job_id))
        raise RuntimeError("nope")

    def ok(payload, ctx):
        calls.append(("ok", ctx.job_id))

    actions = {
        "boom": Action("boom", ActionKind.PYTHON, PythonSpec("t:boom", boom)),
        "ok": Action("ok", ActionKind.PYTHON, PythonSpec("t:ok", ok)),
    }
    rules = RuleSet(
        (
            Rule("a", EventTrigger("e"), "boom", retry=RetryPolicy(max_attempts=1)),
            Rule("b", EventTrigger("e"), "ok"),
        ),
        actions,
    )
    ev = Event(new_id(T0), "e", {}, T0, T0)
    # `a` (higher priority) dies first; `b` is claimed in the pass that writes a's end, whose
    # announcement reads the store and fails.
    a, b = store.emit(
        ev, [NewJob("a", "boom", T0, 5, 1, {}, ev.id), NewJob("b", "ok", T0, 0, 3, {}, ev.id)], T0
    ).job_ids
    clock = FakeClock(T0)

    async def go() -> None:
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(
            store=store, clock=clock, runner=runner, rules=lambda: rules, workers=1
        )
        task = asyncio.create_task(scheduler.run())
        await _until(lambda: store.get_job(b).status is JobStatus.SUCCEEDED, "b ran")
        scheduler.stop()
        await task

    asyncio.run(go())
    assert store.glitches == 0  # the glitch happened
    assert [c[0] for c in calls] == ["boom", "ok"]
    assert store.get_job(a).status is JobStatus.DEAD
    store.close()
