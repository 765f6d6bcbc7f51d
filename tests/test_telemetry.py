"""The lifecycle bus and the metrics fed from it: what the service, scheduler and planner publish,
filters, drops, and the Prometheus exposition after real emits and finished jobs (FakeClock)."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.metrics import Metrics
from timeos.daemon.planner import OccurrencePlanner
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.daemon.telemetry import EventBus, Lifecycle
from timeos.engine import Limits
from timeos.errors import UsageError
from timeos.model import Action, ActionKind, EventTrigger, PythonSpec, RetryPolicy, Rule, RuleSet
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def _run(coro):
    return asyncio.run(coro)


# ---- the bus ----------------------------------------------------------------------------------


def test_publish_stamps_the_injected_clock_and_reaches_every_sink():
    clock = FakeClock(T0)
    bus = EventBus(clock)
    seen: list[Lifecycle] = []
    bus.subscribe(seen.append)
    clock.advance(timedelta(seconds=90))
    bus.publish("job.dead", job_id="J", rule="r", attempt=3, error="boom")
    (event,) = seen
    assert event.to_json() == {
        "kind": "job.dead",
        "at": "2026-03-02T09:01:30+00:00",
        "event_id": None,
        "job_id": "J",
        "rule": "r",
        "attempt": 3,
        "error": "boom",
    }


def test_a_failing_sink_never_raises_into_the_publisher_and_the_others_still_get_the_event():
    bus = EventBus(FakeClock(T0))
    seen: list[str] = []

    def broken(event: Lifecycle) -> None:
        raise RuntimeError("sink bug")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.kind))
    bus.publish("event.emitted", event_id="E")
    bus.publish("event.emitted", event_id="F")
    assert seen == ["event.emitted", "event.emitted"]
    assert bus.sink_errors == 2


def test_a_watcher_gets_only_its_rule_and_its_kind_or_kind_prefix():
    async def go() -> None:
        bus = EventBus(FakeClock(T0))
        dead = bus.watch(kind="job.dead")
        jobs_of_a = bus.watch(rule="a", kind="job.")
        everything = bus.watch()
        for kind, rule in [("job.started", "a"), ("job.dead", "b"), ("occurrence.fired", "a")]:
            bus.publish(kind, rule=rule)
        bus.close()
        assert [(e.kind, e.rule) for e in await _drain(dead)] == [("job.dead", "b")]
        assert [e.kind for e in await _drain(jobs_of_a)] == ["job.started"]
        assert len(await _drain(everything)) == 3

    async def _drain(watcher):
        got = []
        watcher.closed = False  # read what was queued before the close
        while watcher._items:
            got.append(await watcher.next())
        return got

    _run(go())


@pytest.mark.parametrize("bad", ["job", "job.deadd", "jobs.", "x"], ids=str)
def test_a_type_filter_that_names_no_kind_is_a_usage_error_listing_them(bad):
    async def go() -> None:
        with pytest.raises(UsageError, match="job.dead"):
            EventBus(FakeClock(T0)).watch(kind=bad)

    _run(go())


def test_a_full_watcher_drops_and_counts_exactly_where_events_went_missing():
    async def go() -> None:
        clock = FakeClock(T0)
        bus = EventBus(clock)
        watcher = bus.watch(capacity=2)
        for n in range(5):  # 0 and 1 fit; 2, 3, 4 are dropped
            bus.publish("job.started", job_id=str(n))
        first = await watcher.next()
        assert first is not None and first.fields["job_id"] == "0"
        bus.publish("job.started", job_id="5")  # room again: queued after the drop marker
        bus.publish("job.started", job_id="6")  # full again: a second marker after 5
        got = [await watcher.next() for _ in range(4)]
        assert [(e.kind, e.fields) for e in got if e is not None] == [
            ("job.started", {"job_id": "1"}),
            ("watch.dropped", {"count": 3}),
            ("job.started", {"job_id": "5"}),
            ("watch.dropped", {"count": 1}),
        ]
        assert watcher.dropped == 4

    _run(go())


def test_closing_the_bus_ends_every_watch_and_a_new_watch_ends_at_once():
    async def go() -> None:
        bus = EventBus(FakeClock(T0))
        watcher = bus.watch()
        waiting = asyncio.ensure_future(watcher.next())
        await asyncio.sleep(0)
        bus.close()
        assert await waiting is None
        assert bus.watchers == set()
        assert await bus.watch().next() is None

    _run(go())


# ---- what the service, scheduler and planner publish ------------------------------------------

RULES = """
actions:
  noop:
    command: ["true"]
rules:
  - name: welcome
    on_event: signup
    offset: 1h
    perform: noop
  - name: vip
    on_event: signup
    when: payload.vip == true
    perform: noop
"""


def _service(tmp: Path, clock: FakeClock, bus: EventBus) -> Service:
    rules = tmp / "rules.yaml"
    rules.write_text(textwrap.dedent(RULES))
    return Service(
        store=SqliteStore(tmp / "t.db"),
        clock=clock,
        rules=load_rules([rules], {}),
        rule_paths=[rules],
        loader=lambda paths: load_rules(paths, {}),
        limits=Limits(),
        bus=bus,
    )


def test_emit_publishes_the_event_each_rule_matched_and_each_job_and_cancel_its_job(tmp_path):
    clock = FakeClock(T0)
    bus = EventBus(clock)
    seen: list[dict] = []
    bus.subscribe(lambda e: seen.append(e.to_json()))
    service = _service(tmp_path, clock, bus)
    result = service.emit("signup", {"vip": False}, idempotency_key="k")
    (job_id,) = result.job_ids
    service.emit("signup", {"vip": False}, idempotency_key="k")  # a duplicate: nothing new
    service.cancel([job_id, "NOPE"])
    assert [(e["kind"], e["event_id"], e["job_id"], e["rule"]) for e in seen] == [
        ("event.emitted", result.event_id, None, None),
        ("rule.matched", result.event_id, job_id, "welcome"),
        ("job.created", result.event_id, job_id, "welcome"),
        ("job.cancelled", result.event_id, job_id, "welcome"),
    ]
    assert seen[0]["type"] == "signup" and seen[0]["jobs"] == 1
    assert seen[2]["perform_at"] == "2026-03-02T10:00:00+00:00"
    assert all(e["at"] == "2026-03-02T09:00:00+00:00" for e in seen)
    service.store.close()


def _flaky_rules(calls: list[str], fail_times: int) -> RuleSet:
    def act(payload, ctx):
        calls.append(ctx.job_id)
        if len(calls) <= fail_times:
            raise RuntimeError(f"attempt {len(calls)} failed")

    action = Action("act", ActionKind.PYTHON, PythonSpec("t:act", act))
    rule = Rule("r", EventTrigger("e"), "act", retry=RetryPolicy(max_attempts=2, jitter=0))
    return RuleSet((rule,), {"act": action})


async def _until(predicate, what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _scheduled(tmp: Path, clock: FakeClock, bus: EventBus, rules: RuleSet):
    store = SqliteStore(tmp / "t.db")
    metrics = Metrics(job_counts=store.counts_by_status, next_fires=dict)
    service = Service(
        store=store,
        clock=clock,
        rules=rules,
        rule_paths=[],
        loader=lambda paths: rules,
        limits=Limits(),
        bus=bus,
        metrics=metrics,
    )
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(
        store=store, clock=clock, runner=runner, rules=lambda: rules, publish=bus.publish
    )
    service.on_change = scheduler.poke
    return store, service, scheduler


def test_the_scheduler_publishes_each_attempt_its_failure_the_retry_and_the_dead_letter(tmp_path):
    clock = FakeClock(T0)
    bus = EventBus(clock)
    seen: list[dict] = []
    bus.subscribe(lambda e: seen.append(e.to_json()))
    calls: list[str] = []
    store, service, scheduler = _scheduled(tmp_path, clock, bus, _flaky_rules(calls, 5))

    async def go() -> None:
        task = asyncio.create_task(scheduler.run())
        (job_id,) = service.emit("e", {}).job_ids
        await _until(lambda: any(e["kind"] == "job.retrying" for e in seen), "the retry")
        clock.advance(timedelta(minutes=5))  # past the backoff
        await _until(lambda: any(e["kind"] == "job.dead" for e in seen), "the dead letter")
        scheduler.stop()
        await task
        jobs = [e for e in seen if e["kind"].startswith("job.") and e["kind"] != "job.created"]
        assert [(e["kind"], e.get("attempt")) for e in jobs] == [
            ("job.started", 1),
            ("job.failed", 1),
            ("job.retrying", 1),
            ("job.started", 2),
            ("job.failed", 2),
            ("job.dead", 2),
        ]
        assert all(e["job_id"] == job_id and e["rule"] == "r" for e in jobs)
        assert jobs[1]["error"] == "RuntimeError: attempt 1 failed"
        assert jobs[1]["duration_ms"] == 0  # the fake clock did not move during the attempt
        assert jobs[3]["lateness_ms"] > 0  # started when the clock jumped past its retry time
        assert jobs[5]["at"] == (T0 + timedelta(minutes=5)).isoformat()

    _run(go())
    store.close()


def test_the_planner_publishes_fired_skipped_and_missed_occurrences_with_their_jobs(tmp_path):
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        textwrap.dedent("""
        actions:
          noop: {command: ["true"]}
        rules:
          - {name: tick, every: 1h, perform: noop, on_missed: skip}
        """)
    )
    rules = load_rules([rules_file], {})
    store = SqliteStore(tmp_path / "t.db")
    clock = FakeClock(T0)
    bus = EventBus(clock)
    seen: list[dict] = []
    bus.subscribe(lambda e: seen.append(e.to_json()))
    planner = OccurrencePlanner(store=store, rules=lambda: rules, publish=bus.publish)
    planner.plan(T0)  # the first pass anchors the schedule
    first = planner.next_fires()["tick"]
    assert first is not None
    planner.plan(first)
    fired = [e for e in seen if e["kind"] == "occurrence.fired"]
    created = [e for e in seen if e["kind"] == "job.created"]
    assert len(fired) == 1 and len(created) == 1
    assert fired[0]["job_id"] == created[0]["job_id"] is not None
    assert fired[0]["rule"] == "tick" and fired[0]["scheduled_for"] == first.isoformat()
    seen.clear()
    planner.plan(first + timedelta(hours=3, minutes=30))  # down for three fires: skipped
    kinds = [e["kind"] for e in seen]
    assert "occurrence.missed" in kinds and "job.created" not in kinds
    store.close()


# ---- metrics ------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_emits_and_finished_jobs_and_read_gauges_at_scrape_time(tmp_path):
    clock = FakeClock(T0)
    bus = EventBus(clock)
    calls: list[str] = []
    store, service, scheduler = _scheduled(tmp_path, clock, bus, _flaky_rules(calls, 1))

    async def go() -> None:
        task = asyncio.create_task(scheduler.run())
        service.emit("e", {})
        service.emit("e", {})
        service.emit("other", {})
        # Both first attempts recorded (not just started): a retry is scheduled from the clock
        # at the moment the failure is written, so advancing earlier would race it.
        await _until(
            lambda: (
                store.counts_by_status()["retrying"] == 1
                and store.counts_by_status()["succeeded"] == 1
            ),
            "both first attempts recorded",
        )
        clock.advance(timedelta(seconds=30))  # the failed one's retry is due (10 s backoff)
        await _until(lambda: store.counts_by_status()["succeeded"] == 2, "the retry")
        scheduler.stop()
        await task

    _run(go())
    metrics = _samples(service.metrics().decode())
    assert metrics[("timeos_up", ())] == 1
    assert metrics[("timeos_events_total", (("type", "e"),))] == 2
    assert metrics[("timeos_events_total", (("type", "other"),))] == 1
    finished = (("outcome", "succeeded"), ("rule", "r"))
    assert metrics[("timeos_jobs_finished_total", finished)] == 2
    assert metrics[("timeos_jobs", (("status", "succeeded"),))] == 2
    assert metrics[("timeos_jobs", (("status", "pending"),))] == 0
    assert metrics[("timeos_job_duration_seconds_count", (("rule", "r"),))] == 3  # 3 attempts
    lateness = ("timeos_job_lateness_seconds_count", (("rule", "r"),))
    assert metrics[lateness] == 3
    late_sum = metrics[("timeos_job_lateness_seconds_sum", (("rule", "r"),))]
    assert late_sum == pytest.approx(20.0, abs=0.5)  # the retry started 20 s after its time
    store.close()


def test_next_fire_gauge_comes_from_the_planner_and_event_type_labels_are_capped(tmp_path):
    clock = FakeClock(T0)
    fire = T0 + timedelta(hours=1)
    metrics = Metrics(job_counts=lambda: {}, next_fires=lambda: {"tick": fire, "off": None})
    bus = EventBus(clock)
    bus.subscribe(metrics.observe)
    for n in range(600):
        bus.publish("event.emitted", type=f"t{n}")
    samples = _samples(metrics.exposition().decode())
    assert samples[("timeos_rule_next_fire_timestamp_seconds", (("rule", "tick"),))] == (
        fire.timestamp()
    )
    fires = [labels for name, labels in samples if name.startswith("timeos_rule_next")]
    assert fires == [(("rule", "tick"),)]  # a rule with no next fire has no sample
    assert samples[("timeos_events_total", (("type", "_other"),))] == 100
    assert samples[("timeos_events_total", (("type", "t0"),))] == 1


def test_job_metrics_keep_each_rule_and_outcome_apart() -> None:
    metrics = Metrics(job_counts=lambda: {}, next_fires=lambda: {})
    bus = EventBus(FakeClock(T0))
    bus.subscribe(metrics.observe)
    for rule, kind, n in (
        ("a", "job.succeeded", 3),
        ("b", "job.succeeded", 2),
        ("a", "job.dead", 1),
    ):
        for _ in range(n):
            bus.publish("job.started", job_id="j", rule=rule, lateness_ms=1000)
            bus.publish(kind, job_id="j", rule=rule, duration_ms=2000)
    samples = _samples(metrics.exposition().decode())
    finished = "timeos_jobs_finished_total"
    assert samples[(finished, (("outcome", "succeeded"), ("rule", "a")))] == 3
    assert samples[(finished, (("outcome", "succeeded"), ("rule", "b")))] == 2
    assert samples[(finished, (("outcome", "dead"), ("rule", "a")))] == 1
    assert samples[("timeos_job_lateness_seconds_sum", (("rule", "a"),))] == 4.0
    assert samples[("timeos_job_duration_seconds_count", (("rule", "b"),))] == 2
    assert samples[("timeos_job_duration_seconds_count", (("rule", "a"),))] == 3  # not job.dead
