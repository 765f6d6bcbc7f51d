"""Wall-clock steps forward and back while jobs wait: nothing fires twice, nothing is lost.

In-process (Scheduler + FakeClock + a real store) for event jobs, and end to end (a real timeosd
on its fake clock, moved by /v1/_test/clock) for time-based rules and their on_missed policy.
"""

from __future__ import annotations

import asyncio
import collections
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import Daemon, wait_until

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.model import (
    Action,
    ActionKind,
    Event,
    EventTrigger,
    JobStatus,
    NewJob,
    PythonSpec,
    Rule,
    RuleSet,
    new_id,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
assert T0.weekday() == 0


def _rules(calls: list[str]) -> RuleSet:
    def record(payload: dict[str, Any], ctx: Any) -> None:
        calls.append(ctx.job_id)

    act = Action("act", ActionKind.PYTHON, PythonSpec("t:record", record))
    return RuleSet((Rule("r", EventTrigger("e"), "act"),), {"act": act})


def _jobs(store: SqliteStore, *offsets: timedelta) -> list[str]:
    event = Event(new_id(T0), "e", {}, T0, T0)
    news = [NewJob("r", "act", T0 + o, 0, 3, {}, event.id) for o in offsets]
    return list(store.emit(event, news, T0).job_ids)


async def _until(predicate: Any, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _settled(scheduler: Scheduler, clock: FakeClock) -> None:
    """Wait until the loop has made a pass at the clock's current time with nothing running."""
    now = clock.now()
    await _until(
        lambda: scheduler.last_tick == now and not scheduler.running,
        f"a quiet pass at {now.isoformat()}",
    )


def _run(store: SqliteStore, clock: FakeClock, rules: RuleSet, body: Any) -> None:
    async def go() -> None:
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(store=store, clock=clock, runner=runner, rules=lambda: rules)
        task = asyncio.create_task(scheduler.run())
        try:
            await body(scheduler)
        finally:
            scheduler.stop()
            await task

    asyncio.run(go())


def test_backward_step_neither_reruns_done_jobs_nor_runs_waiting_ones_early(
    backend,
    tmp_path: Path,
) -> None:
    store = backend.open(tmp_path / "t.db")
    calls: list[str] = []
    first, second = _jobs(store, timedelta(minutes=10), timedelta(minutes=20))
    clock = FakeClock(T0)

    async def body(scheduler: Scheduler) -> None:
        await _settled(scheduler, clock)
        clock.advance(timedelta(minutes=15))
        await _until(lambda: store.get_job(first).status is JobStatus.SUCCEEDED, "first job")
        clock.set(T0 - timedelta(hours=1))  # e.g. NTP corrects a clock that ran fast
        await _settled(scheduler, clock)
        assert calls == [first]
        assert store.get_job(second).status is JobStatus.PENDING
        clock.set(T0 + timedelta(minutes=19, seconds=59))
        await _settled(scheduler, clock)
        assert calls == [first]
        clock.set(T0 + timedelta(minutes=20))
        await _until(lambda: store.get_job(second).status is JobStatus.SUCCEEDED, "second job")
        await _settled(scheduler, clock)

    _run(store, clock, _rules(calls), body)
    assert calls == [first, second]
    assert [a.number for a in store.attempts(first)] == [1]
    store.close()


def test_forward_step_past_many_waiting_jobs_runs_each_exactly_once(
    backend, tmp_path: Path
) -> None:
    store = backend.open(tmp_path / "t.db")
    calls: list[str] = []
    ids = _jobs(store, *(timedelta(minutes=m) for m in range(1, 13)))
    clock = FakeClock(T0)

    async def body(scheduler: Scheduler) -> None:
        await _settled(scheduler, clock)
        clock.set(T0 + timedelta(days=1))  # suspend/resume or a big forward correction
        await _until(
            lambda: all(store.get_job(i).status is JobStatus.SUCCEEDED for i in ids), "all"
        )
        clock.set(T0 + timedelta(minutes=5))  # and back again: nothing runs a second time
        await _settled(scheduler, clock)
        clock.set(T0 + timedelta(days=2))
        await _settled(scheduler, clock)

    _run(store, clock, _rules(calls), body)
    assert sorted(calls) == sorted(ids)
    assert collections.Counter(calls).most_common(1)[0][1] == 1
    store.close()


# ---- time-based rules, end to end -------------------------------------------------------------


@pytest.fixture
def daemons() -> Any:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def _cron_rules(tmp: Path, policy: str) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            actions:
              act:
                command: ["true"]
            rules:
              - name: hourly
                cron: "0 * * * *"
                perform: act
                on_missed: {policy}
                overlap: allow
            """
        )
    )
    return path


def _history(d: Daemon) -> list[dict[str, Any]]:
    return list(d.cli_json("rules", "history", "hourly"))


def _jobs_of(d: Daemon) -> list[dict[str, Any]]:
    return list(d.cli_json("jobs", "list", "--rule", "hourly", "--limit", "1000"))


@pytest.mark.parametrize(
    ("policy", "fired", "missed"),
    [("once", 1, 4), ("all", 5, 0), ("skip", 0, 5)],
    ids=["once", "all", "skip"],
)
def test_live_forward_step_follows_on_missed_and_backward_step_refires_nothing(
    tmp_path: Path, daemons: list[Daemon], policy: str, fired: int, missed: int
) -> None:
    d = Daemon(tmp_path, _cron_rules(tmp_path, policy), fake_clock="2026-03-02T09:30:00Z")
    daemons.append(d.start())
    d.set_clock("2026-03-02T14:30:00Z")  # 10:00..14:00 found 30+ minutes late: missed
    wait_until(lambda: len(_history(d)) == 5, what="5 recorded occurrences")
    history = _history(d)
    assert sum(h["outcome"] == "fired" for h in history) == fired
    assert sum(h["outcome"] == "missed" for h in history) == missed
    wait_until(
        lambda: (
            (j := _jobs_of(d)) is not None
            and len(j) == fired
            and all(x["status"] == "succeeded" for x in j)
        ),
        what=f"{fired} succeeded job(s)",
    )
    # Back three hours: 12:00, 13:00, 14:00 come round again but must not fire again.
    d.set_clock("2026-03-02T11:30:00Z")
    (rule,) = d.cli_json("rules", "list")
    assert rule["next_fire"] == "2026-03-02T15:00:00+00:00"
    d.set_clock("2026-03-02T14:59:59Z")
    assert len(_history(d)) == 5 and len(_jobs_of(d)) == fired
    # And forward through 15:00 on time: exactly one new on-time run, whatever the policy.
    d.set_clock("2026-03-02T15:00:00Z")
    wait_until(lambda: len(_history(d)) == 6, what="the 15:00 occurrence")
    latest = _history(d)[0]
    assert latest["scheduled_for"] == "2026-03-02T15:00:00+00:00"
    assert latest["outcome"] == "fired" and latest["reason"] is None
    keys = collections.Counter(j["scheduled_for"] for j in _jobs_of(d))
    assert len(keys) == fired + 1 and max(keys.values()) == 1


def test_event_job_waits_through_a_backward_step_and_runs_once_end_to_end(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "actions:\n  act:\n    command: ['true']\n"
        "rules:\n  - name: later\n    on_event: go\n    offset: 1h\n    perform: act\n"
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z")
    daemons.append(d.start())
    (job_id,) = d.cli_json("emit", "go")["jobs"]
    d.set_clock("2026-03-02T07:00:00Z")
    d.set_clock("2026-03-02T09:59:59Z")
    assert d.job(job_id)["status"] == "pending"
    d.set_clock("2026-03-02T10:00:00Z")
    d.wait_job(job_id, "succeeded")
    d.set_clock("2026-03-02T08:00:00Z")
    d.set_clock("2026-03-02T12:00:00Z")
    assert [a["number"] for a in d.job(job_id)["attempt_history"]] == [1]
