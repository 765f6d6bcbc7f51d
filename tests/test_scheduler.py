"""The scheduler loop on a fake clock and a real store: claims, failures, shutdown."""

from __future__ import annotations

import asyncio
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

    def finish(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise StoreError("database is locked")
        return super().finish(*args, **kwargs)


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
