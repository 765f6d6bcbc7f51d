"""Rate limits and concurrency through the scheduler loop and the service, on a FakeClock and a
real store: 10/minute runs 10 then 10 a minute, a singleton, an action's limit shared by its
rules, an override enforced, and a saturated limited rule beside a busy unlimited one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.model import (
    Action,
    ActionKind,
    Event,
    EventTrigger,
    NewJob,
    PythonSpec,
    RateLimit,
    Rule,
    RuleSet,
    new_id,
)
from timeos.rules.limits import limits_in_force
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


class Recorder:
    """A python action that records (rule, when) of every run; `gate` holds runs open."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.runs: list[tuple[str, datetime]] = []
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.most = 0

    def action(self, name: str = "act", **limits) -> Action:
        """A python action calling this recorder (a coroutine function, so it runs on the loop)."""

        async def run(payload, ctx) -> None:
            await self.run(payload, ctx)

        return Action(name, ActionKind.PYTHON, PythonSpec("t:run", run), **limits)

    async def run(self, payload, ctx) -> None:
        self.runs.append((ctx.rule, self.clock.now()))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.running -= 1

    def count(self, rule: str | None = None) -> int:
        return sum(1 for r, _ in self.runs if rule is None or r == rule)


def _rules(recorder: Recorder, *rules: Rule, action: Action | None = None) -> RuleSet:
    act = action or recorder.action()
    return RuleSet(tuple(rules), {act.name: act})


def _jobs(
    store: SqliteStore, rule: str, count: int, action: str = "act", priority: int = 0
) -> None:
    event = Event(new_id(T0), "e", {}, T0, T0)
    store.emit(event, [NewJob(rule, action, T0, priority, 3, {}, event.id)] * count, T0)


def _scheduler(store, clock, rules: Callable[[], RuleSet], workers: int = 4) -> Scheduler:
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    return Scheduler(store=store, clock=clock, runner=runner, rules=rules, workers=workers)


async def _until(predicate, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def _settled(scheduler: Scheduler, clock: FakeClock, recorder: Recorder, runs: int) -> None:
    """Wait until `runs` ran and the loop passed at the clock's instant with nothing running."""
    await _until(
        lambda: (
            recorder.count() >= runs
            and scheduler.last_tick == clock.now()
            and not scheduler.running
        ),
        f"{runs} runs at {clock.now()}",
    )
    assert recorder.count() == runs


def test_ten_a_minute_runs_ten_at_once_then_ten_in_every_minute(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(
        recorder, Rule("mail", EventTrigger("e"), "act", rate_limit=RateLimit(10, "minute", 10))
    )
    _jobs(store, "mail", 150)

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: rules)
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 10)
        for step in range(1, 101):  # ten windows of a minute, in 6 s steps
            clock.advance(6 * SECOND)
            await _settled(scheduler, clock, recorder, 10 + step)
        scheduler.stop()
        await task

    asyncio.run(go())
    windows = [0] * 10
    for _, at in recorder.runs[10:]:
        windows[(at - T0 - SECOND) // MINUTE] += 1
    assert windows == [10] * 10


def test_the_loop_sleeps_until_the_next_token_neither_spinning_nor_past_it(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(
        recorder, Rule("slow", EventTrigger("e"), "act", rate_limit=RateLimit(1, "minute", 1))
    )
    _jobs(store, "slow", 3)

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: rules)
        assert scheduler._tick(T0) == T0 + MINUTE  # one claimed; the rest wait for a token
        await asyncio.gather(*scheduler.running.values())
        assert scheduler._tick(T0 + 30 * SECOND) == T0 + MINUTE
        assert recorder.count() == 1

    asyncio.run(go())


def test_concurrency_one_makes_a_rule_a_singleton(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(recorder, Rule("single", EventTrigger("e"), "act", concurrency=1))
    _jobs(store, "single", 3)

    async def go() -> None:
        recorder.gate = asyncio.Event()
        scheduler = _scheduler(store, clock, lambda: rules)
        task = asyncio.create_task(scheduler.run())
        await _until(lambda: recorder.count() == 1, "the first run")
        clock.advance(SECOND)
        await _until(lambda: scheduler.last_tick == clock.now(), "a pass")
        assert recorder.count() == 1 and len(scheduler.running) == 1
        recorder.gate.set()  # each run ends at once now: the next starts when a slot frees
        await _until(lambda: recorder.count() == 3 and not scheduler.running, "all three")
        scheduler.stop()
        await task

    asyncio.run(go())
    assert recorder.most == 1


def test_an_action_limit_is_shared_by_the_rules_that_perform_it(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    mail = recorder.action("mail", rate_limit=RateLimit(2, "minute", 2))
    rules = _rules(
        recorder,
        Rule("a", EventTrigger("e"), "mail"),
        Rule("b", EventTrigger("e"), "mail"),
        action=mail,
    )
    _jobs(store, "a", 3, "mail")
    _jobs(store, "b", 3, "mail")

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: rules)
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 2)
        for runs in (3, 4, 5, 6):  # one token every 30 s, whichever rule's job is first
            clock.advance(30 * SECOND)
            await _settled(scheduler, clock, recorder, runs)
        scheduler.stop()
        await task

    asyncio.run(go())
    assert (recorder.count("a"), recorder.count("b")) == (3, 3)


def test_a_saturated_limited_rule_never_blocks_a_busy_unlimited_rule(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(
        recorder,
        Rule("slow", EventTrigger("e"), "act", priority=10, rate_limit=RateLimit(1, "minute", 1)),
        Rule("busy", EventTrigger("e"), "act"),
    )
    _jobs(store, "slow", 200, priority=10)  # higher priority and first in line
    _jobs(store, "busy", 100)

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: rules)
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 101)
        scheduler.stop()
        await task

    asyncio.run(go())
    assert (recorder.count("slow"), recorder.count("busy")) == (1, 100)


def test_a_rules_set_override_is_enforced_and_reset_lifts_it(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(recorder, Rule("hook", EventTrigger("signup"), "act"))

    async def go() -> None:
        service = Service(
            store=store,
            clock=clock,
            rules=rules,
            rule_paths=[Path("rules.yaml")],
            loader=lambda paths: rules,
            limits=Limits(),
        )
        service.set_rule("hook", rate_limit="1/minute")
        scheduler = _scheduler(store, clock, lambda: service.rules)
        service.on_change = scheduler.poke
        for _ in range(3):
            service.emit("signup", {})
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 1)
        assert service.rule("hook").rate_limit == RateLimit(1, "minute", 1)
        service.reset_rule("hook")
        await _settled(scheduler, clock, recorder, 3)
        scheduler.stop()
        await task

    asyncio.run(go())


def test_a_delayed_run_says_so_in_its_attempt_history(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    rules = _rules(
        recorder, Rule("slow", EventTrigger("e"), "act", rate_limit=RateLimit(1, "minute", 1))
    )
    _jobs(store, "slow", 2)

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: rules)
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 1)
        clock.advance(MINUTE)
        await _settled(scheduler, clock, recorder, 2)
        scheduler.stop()
        await task

    asyncio.run(go())
    delays = sorted(
        a.delayed_ms or 0 for j in store.list_jobs(rule="slow") for a in store.attempts(j.id)
    )
    assert delays == [0, 60_000]


def test_reloaded_rules_keep_the_bucket(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    limited = Rule("slow", EventTrigger("e"), "act", rate_limit=RateLimit(2, "minute", 2))
    current = {"rules": _rules(recorder, limited)}
    _jobs(store, "slow", 5)

    async def go() -> None:
        scheduler = _scheduler(store, clock, lambda: current["rules"])
        task = asyncio.create_task(scheduler.run())
        await _settled(scheduler, clock, recorder, 2)
        # A reload with the same limit (new RuleSet object): no fresh full bucket.
        current["rules"] = _rules(recorder, replace(limited, priority=1))
        scheduler.poke()
        clock.advance(SECOND)
        await _settled(scheduler, clock, recorder, 2)
        scheduler.stop()
        await task

    asyncio.run(go())


def test_health_lateness_leaves_out_jobs_a_limit_holds_back(store):
    clock = FakeClock(T0)
    recorder = Recorder(clock)
    slow = Rule("slow", EventTrigger("e"), "act", rate_limit=RateLimit(1, "hour", 1))
    rules = _rules(recorder, slow, Rule("busy", EventTrigger("e"), "act"))
    service = Service(
        store=store,
        clock=clock,
        rules=rules,
        rule_paths=[Path("rules.yaml")],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    _jobs(store, "slow", 5)
    store.claim_due(T0, 10, limits={"rule:slow": limits_in_force(rules)["rule:slow"]})
    clock.advance(10 * MINUTE)
    lateness = service.health()["components"]["lateness"]
    assert lateness["status"] == "healthy" and lateness["seconds"] == 0.0
    _jobs(store, "busy", 1)  # due at 09:00, not held back by anything: 10 minutes late
    lateness = service.health()["components"]["lateness"]
    assert (lateness["status"], lateness["seconds"]) == ("degraded", 600.0)
