"""Attacks on rate limits and concurrency (issue 8 part 1) beyond the feature tests: bad values in
rule files and overrides, and the scheduler driven pass by pass at the instants it asks for."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon import scheduler as scheduler_module
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import RulesError, TimeOSError
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
from timeos.rules.loader import load_rules

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HEAD = "actions:\n  mail: {command: [/bin/true]}\nrules:\n"


def _load(tmp_path: Path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(HEAD + text)
    return load_rules([path], {}, import_python=False)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("rate_limit: 0/minute", "rate_limit"),
        ("rate_limit: -1", "rate_limit"),
        ("rate_limit: '-1/minute'", "rate_limit"),
        ("rate_limit: 1e9/second", "rate_limit"),
        ("rate_limit: 1e9", "rate_limit"),
        ("rate_limit: 10000000000/second", "rate_limit"),
        ("rate_limit: 10/minute, burst: 0", "burst"),
        ("rate_limit: 10/minute, burst: -3", "burst"),
        ("rate_limit: 10/minute, burst: 1.5", "burst"),
        ("rate_limit: 10/minute, burst: true", "burst"),
        ("rate_limit: 10/minute, burst: 10000000000000000000000", "burst"),
        ("concurrency: 0", "concurrency"),
        ("concurrency: -1", "concurrency"),
        ("concurrency: 100000000000000000000", "concurrency"),
        ("concurrency: .inf", "concurrency"),
        ("concurrency: '2'", "concurrency"),
        ("concurrency: true", "concurrency"),
        ("rate_limit: [10, minute]", "rate_limit"),
        ("rate_limit: {count: 10}", "rate_limit"),
        ("rate_limit: '10/minute/x'", "rate_limit"),
        ("rate_limit: '١٠/minute'", "rate_limit"),
        ("after: a", "itself"),
        ("after: [b]", "after"),
        ("after: 5", "after"),
        ("after: ''", "after"),
    ],
)
def test_bad_limit_and_after_values_are_clear_load_errors(tmp_path, extra, needle) -> None:
    with pytest.raises(RulesError) as caught:
        _load(
            tmp_path,
            f"  - {{name: a, on_event: x, perform: mail, {extra}}}\n"
            "  - {name: b, on_event: x, perform: mail}\n",
        )
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'rules.yaml'}:4:"), message
    assert needle in message, message


def test_the_largest_accepted_rate_loads_and_claims_without_overflow(backend, tmp_path) -> None:

    rules = _load(
        tmp_path, "  - {name: a, on_event: x, perform: mail, rate_limit: 999999999/second}\n"
    )
    store = backend.open(tmp_path / "t.db")
    event = Event("01E", "x", {}, T0, T0)
    store.emit(event, [NewJob("a", "mail", T0, 0, 1, {}, event.id)] * 5, T0)
    assert len(store.claim_due(T0, 10, limits=limits_in_force(rules))) == 5
    store.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_limit": "0/minute"},
        {"rate_limit": "-1/minute"},
        {"rate_limit": "1e9/second"},
        {"rate_limit": ""},
        {"concurrency": 0},
        {"concurrency": -5},
        {"concurrency": 10**12},
        {"priority": 10**30},
    ],
)
def test_bad_overrides_are_usage_errors_not_crashes(backend, tmp_path, kwargs) -> None:

    rules = _load(tmp_path, "  - {name: a, on_event: x, perform: mail}\n")
    store = backend.open(tmp_path / "t.db")
    service = Service(
        store=store,
        clock=FakeClock(T0),
        rules=rules,
        rule_paths=[tmp_path / "rules.yaml"],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    with pytest.raises(TimeOSError):
        service.set_rule("a", **kwargs)
    assert service.rule("a").rate_limit is None and service.rule("a").concurrency is None
    store.close()


# ---- the scheduler under limits, driven pass by pass -------------------------------------------


class Runs:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.log: list[tuple[str, str, datetime]] = []
        self.running = 0
        self.most = 0

    def action(self, name: str, **limits) -> Action:
        async def run(payload, ctx) -> None:
            self.log.append((ctx.rule, ctx.job_id, self.clock.now()))
            self.running += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0)
            self.running -= 1

        return Action(name, ActionKind.PYTHON, PythonSpec("t:run", run), **limits)


def _put(store, rule, count, *, action="act", priority=0, at=T0, attempts=1) -> None:
    event = Event(new_id(at), "e", {}, at, at)
    store.emit(event, [NewJob(rule, action, at, priority, attempts, {}, event.id)] * count, at)


def _drive(store, clock: FakeClock, rules: RuleSet, until: datetime, workers: int = 4) -> int:
    """Run the scheduler's passes at exactly the instants it asks for, up to `until`, and again
    at once after jobs ended (as their end wakes the real loop); assert it never asks for an
    instant not after the pass (a spin). Returns how many of its wake-ups started nothing."""
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(
        store=store, clock=clock, runner=runner, rules=lambda: rules, workers=workers
    )
    idle = 0

    async def go() -> None:
        nonlocal idle
        woken = False
        while clock.now() <= until:
            deadline = scheduler._tick(clock.now())
            if scheduler.running:
                await asyncio.gather(*scheduler.running.values())
                woken = False
                continue  # a finished job wakes the loop: look again at this instant
            idle += woken
            if deadline is None:
                return
            assert deadline is not scheduler_module._AGAIN
            assert deadline > clock.now(), (deadline, clock.now())
            clock.set(deadline)
            woken = True

    asyncio.run(go())
    return idle


def test_an_uneven_rate_gives_exactly_its_count_in_every_window_with_no_wasted_pass(store):
    clock = FakeClock(T0)
    runs = Runs(clock)
    rules = RuleSet(
        (Rule("mail", EventTrigger("e"), "act", rate_limit=RateLimit(7, "minute", 7)),),
        {"act": runs.action("act")},
    )
    _put(store, "mail", 7 + 70 + 5)
    idle = _drive(store, clock, rules, T0 + timedelta(minutes=10, seconds=-1))
    windows = [0] * 10
    for _, _, at in runs.log:
        windows[(at - T0) // timedelta(minutes=1)] += 1
    assert windows == [7 + 6] + [7] * 9
    for n, (_, _, at) in enumerate(runs.log[7:], start=1):  # the nth token, to the microsecond
        ideal = T0 + timedelta(microseconds=n * 60_000_000 / 7)
        assert abs(at - ideal) <= timedelta(microseconds=1), (n, at, ideal)
    assert idle == 0  # every wake-up was a token's instant: none early, none wasted


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


def test_an_unlimited_rule_runs_on_time_beside_a_saturated_rule_sharing_nothing(store):
    clock = FakeClock(T0)
    runs = Runs(clock)
    rules = RuleSet(
        (
            Rule(
                "slow", EventTrigger("e"), "act", priority=9, rate_limit=RateLimit(1, "minute", 1)
            ),
            Rule("busy", EventTrigger("e"), "other"),
        ),
        {"act": runs.action("act"), "other": runs.action("other")},
    )
    _put(store, "slow", 100, priority=9)
    for k in range(30):
        _put(store, "busy", 1, action="other", at=T0 + timedelta(seconds=7 * k + 3))
    assert _drive(store, clock, rules, T0 + timedelta(minutes=5)) == 0
    busy = [at for rule, _, at in runs.log if rule == "busy"]
    assert busy == [T0 + timedelta(seconds=7 * k + 3) for k in range(30)]
    slow = [at for rule, _, at in runs.log if rule == "slow"]
    assert slow == [T0 + timedelta(minutes=m) for m in range(6)]


def test_priority_decides_who_gets_a_freed_token_even_if_due_later(store):
    clock = FakeClock(T0)
    runs = Runs(clock)
    rules = RuleSet(
        (
            Rule("low", EventTrigger("e"), "act", rate_limit=RateLimit(1, "minute", 1)),
            Rule("high", EventTrigger("e"), "act", priority=5),
        ),
        {"act": runs.action("act", rate_limit=RateLimit(1, "minute", 1))},
    )
    _put(store, "low", 3)
    _put(store, "high", 2, priority=5, at=T0 + timedelta(seconds=10))
    _drive(store, clock, rules, T0 + timedelta(minutes=4, seconds=30))
    assert [r for r, _, _ in runs.log] == ["low", "high", "high", "low", "low"]


def test_a_changed_limit_reinterprets_the_bucket_without_a_fresh_full_one(store):
    clock = FakeClock(T0)
    runs = Runs(clock)
    hourly = RuleSet(
        (Rule("r", EventTrigger("e"), "act", rate_limit=RateLimit(1, "hour", 1)),),
        {"act": runs.action("act")},
    )
    _put(store, "r", 50)
    _drive(store, clock, hourly, T0 + timedelta(minutes=1))
    assert len(runs.log) == 1
    faster = RuleSet(
        (Rule("r", EventTrigger("e"), "act", rate_limit=RateLimit(10, "minute", 10)),),
        hourly.actions,
    )
    clock.set(T0 + timedelta(minutes=1))
    _drive(store, clock, faster, T0 + timedelta(minutes=2))
    # Empty at 09:00; a minute at 10/minute refills 10 (capped at burst 10), then one per 6 s.
    assert len(runs.log) == 1 + 10 + 10


@pytest.mark.parametrize(
    ("count", "unit", "seen"), [(1, "minute", 59), (7, "minute", 8), (3, "second", 0.25)]
)
def test_the_next_token_is_the_first_microsecond_a_token_is_there(count, unit, seen):
    from timeos.rules.limits import Bucket, has_token, next_token_at, refilled

    rate = RateLimit(count, unit, 1)
    bucket = refilled(Bucket(0.0, T0), rate, T0 + timedelta(seconds=seen))
    at = next_token_at(bucket, rate)
    assert has_token(refilled(bucket, rate, at))
    assert not has_token(refilled(bucket, rate, at - timedelta(microseconds=1)))


async def _until(predicate, what: str) -> None:
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_timed_out_python_thread_still_holds_its_concurrency_slot(store):
    """A plain function's thread cannot be killed: after its attempt timed out it still runs,
    and a singleton must not start the retry beside it; it starts when the thread ends."""
    import threading

    from timeos.model import JobStatus, RetryPolicy

    clock = FakeClock(T0)
    lock, release = threading.Lock(), threading.Event()
    seen = {"running": 0, "most": 0, "calls": 0}

    def work(payload, ctx) -> None:
        with lock:
            seen["calls"] += 1
            seen["running"] += 1
            seen["most"] = max(seen["most"], seen["running"])
        release.wait(10)
        with lock:
            seen["running"] -= 1

    act = Action(
        "act",
        ActionKind.PYTHON,
        PythonSpec("t:work", work),
        timeout=timedelta(seconds=0.05),
        retry=RetryPolicy(max_attempts=3, backoff=timedelta(seconds=1), jitter=0),
    )
    rules = RuleSet((Rule("one", EventTrigger("e"), "act", concurrency=1),), {"act": act})
    _put(store, "one", 1, attempts=3)
    (job,) = store.list_jobs()
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(store=store, clock=clock, runner=runner, rules=lambda: rules)

    async def go() -> None:
        task = asyncio.create_task(scheduler.run())
        await _until(lambda: store.get_job(job.id).status is JobStatus.RETRYING, "a timeout")
        clock.advance(timedelta(seconds=5))  # the retry is due; the first thread still runs
        await _until(lambda: scheduler.last_tick == clock.now(), "a pass")
        assert seen["calls"] == 1
        release.set()  # the thread ends: its slot frees and the retry runs
        await _until(lambda: store.get_job(job.id).status is JobStatus.SUCCEEDED, "the retry")
        scheduler.stop()
        await task

    asyncio.run(go())
    assert (seen["calls"], seen["most"]) == (2, 1)


def test_a_chain_under_limits_keeps_both_its_order_and_the_limits(store):
    """A perform list whose second step's action is rate-limited, and an `after:` rule with a
    limit of its own: no child starts before its parent succeeded, and no limit is exceeded."""
    clock = FakeClock(T0)
    runs = Runs(clock)
    minute = RateLimit(1, "minute", 1)
    rules = RuleSet(
        (
            Rule("pay", EventTrigger("paid"), "charge", then=("receipt",)),
            Rule("thank", EventTrigger("paid"), "mail", after="pay", rate_limit=minute),
        ),
        {
            "charge": runs.action("charge"),
            "receipt": runs.action("receipt", rate_limit=RateLimit(2, "minute", 2)),
            "mail": runs.action("mail"),
        },
    )
    service = Service(
        store=store,
        clock=clock,
        rules=rules,
        rule_paths=[Path("rules.yaml")],
        loader=lambda paths: rules,
        limits=Limits(),
    )
    chains = [service.emit("paid", {}).job_ids for _ in range(4)]
    _drive(store, clock, rules, T0 + timedelta(minutes=10))
    started = {job_id: at for _, job_id, at in runs.log}
    assert len(started) == 12  # every job of every chain ran
    for charge, receipt, thank in chains:
        assert started[charge] <= started[receipt] <= started[thank]
        assert store.get_job(receipt).depends_on == (charge,)
    receipts = sorted(started[r] for _, r, _ in chains)
    thanks = sorted(started[t] for _, _, t in chains)
    assert receipts == [T0, T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=60)]
    assert thanks == [T0 + timedelta(minutes=m) for m in range(4)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_arrivals_start_exactly_when_an_ideal_token_bucket_allows(store, seed):
    """Jobs of a limited rule arriving at random: each starts at the later of its due time and
    the instant an ideal bucket (refilled continuously, capped at burst) next holds a token, in
    due order; an unlimited rule's jobs start exactly when due."""
    import random

    rng = random.Random(seed)
    clock = FakeClock(T0)
    runs = Runs(clock)
    rate = RateLimit(rng.choice([1, 3, 7]), "minute", rng.choice([1, 2, 5]))
    rules = RuleSet(
        (
            Rule("lim", EventTrigger("e"), "act", rate_limit=rate),
            Rule("free", EventTrigger("e"), "other"),
        ),
        {"act": runs.action("act"), "other": runs.action("other")},
    )
    due = sorted(T0 + timedelta(seconds=rng.randrange(0, 600)) for _ in range(25))
    for at in due:
        _put(store, "lim", 1, at=at)
    free = sorted(T0 + timedelta(seconds=rng.randrange(0, 600)) for _ in range(10))
    for at in free:
        _put(store, "free", 1, action="other", at=at)
    _drive(store, clock, rules, T0 + timedelta(hours=2), workers=8)
    started = [at for rule, _, at in runs.log if rule == "lim"]
    # The ideal bucket, in exact microseconds: a token every `period`, at most `burst` saved.
    period = timedelta(seconds=60) / rate.count
    expected: list[datetime] = []
    tokens, at = float(rate.burst), T0
    for when in due:
        when = max(when, at)
        tokens = min(rate.burst, tokens + (when - at) / period)
        if tokens < 1:
            when += (1 - tokens) * period
            tokens = 1.0
        expected.append(when)
        tokens, at = tokens - 1, when
    assert len(started) == len(expected)
    for got, want in zip(started, expected, strict=True):
        assert abs(got - want) <= timedelta(microseconds=1), (got, want)
    assert [at for rule, _, at in runs.log if rule == "free"] == free
