"""Runtime rule control through Service on a real store and a FakeClock: disable/enable (with
--for), set/reset overrides, manual runs; kept across a restart (a new Service) and a reload."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.clock import FakeClock
from timeos.daemon.planner import OccurrencePlanner
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.errors import NotFound, UsageError
from timeos.model import (
    Action,
    ActionKind,
    CommandSpec,
    CronTrigger,
    EventTrigger,
    Rule,
    RuleSet,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 5, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
ACT = Action("act", ActionKind.COMMAND, CommandSpec(("true",)))
RULES = RuleSet(
    (
        Rule("hook", EventTrigger("signup"), "act", priority=1),
        Rule("tick", CronTrigger("0 * * * *"), "act"),
    ),
    {"act": ACT},
)


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


def _service(store: SqliteStore, clock: FakeClock, rules: RuleSet = RULES) -> Service:
    return Service(
        store=store,
        clock=clock,
        rules=rules,
        rule_paths=[Path("rules.yaml")],
        loader=lambda paths: rules,
        limits=Limits(),
    )


def test_a_disabled_event_rule_creates_no_jobs_until_enabled(store, clock):
    service = _service(store, clock)
    assert service.disable_rule("hook", None).enabled is False
    assert service.emit("signup", {}).job_ids == ()
    service.enable_rule("hook")
    assert len(service.emit("signup", {}).job_ids) == 1


def test_disable_for_re_enables_by_the_injected_clock(store, clock):
    service = _service(store, clock)
    service.disable_rule("hook", HOUR)
    clock.advance(HOUR - timedelta(seconds=1))
    assert service.emit("signup", {}).job_ids == ()
    clock.advance(timedelta(seconds=1))
    assert len(service.emit("signup", {}).job_ids) == 1
    view = service.rule_control(service.rule("hook"))
    assert (view["enabled_from"], view["disabled_until"]) == ("file", None)


def test_a_disable_survives_a_restart_and_a_reload(store, clock):
    _service(store, clock).disable_rule("hook", None)
    restarted = _service(store, clock)
    assert restarted.rule("hook").enabled is False
    asyncio.run(restarted.reload())
    assert restarted.rule("hook").enabled is False
    assert restarted.emit("signup", {}).job_ids == ()


def test_priority_override_applies_to_new_jobs_and_survives_a_restart(store, clock):
    _service(store, clock).set_rule("hook", priority=9)
    service = _service(store, clock)
    (job_id,) = service.emit("signup", {}).job_ids
    assert store.get_job(job_id).priority == 9
    service.reset_rule("hook")
    (job_id,) = service.emit("signup", {}).job_ids
    assert store.get_job(job_id).priority == 1


def test_rate_limit_and_concurrency_overrides_are_in_force_after_a_restart(store, clock):
    _service(store, clock).set_rule("hook", rate_limit="10/minute", concurrency=2)
    restarted = _service(store, clock)
    view = restarted.rule_control(RULES.rules[0])
    assert view["overrides"]["rate_limit"]["value"] == "10/minute"
    assert view["overrides"]["concurrency"] == {"value": 2, "from": "override", "file": None}
    hook = restarted.rule("hook")
    assert hook.rate_limit is not None and hook.rate_limit.spec == "10/minute"
    assert hook.concurrency == 2


def test_overrides_of_an_unknown_rule_are_not_found(store, clock):
    service = _service(store, clock)
    for call in (
        lambda: service.disable_rule("nope", None),
        lambda: service.enable_rule("nope"),
        lambda: service.set_rule("nope", priority=1),
        lambda: service.reset_rule("nope"),
        lambda: service.run_rule("nope", None),
    ):
        with pytest.raises(NotFound, match="nope"):
            call()


def test_bad_rate_limit_is_refused_and_stores_nothing(store, clock):
    service = _service(store, clock)
    with pytest.raises(UsageError):
        service.set_rule("hook", rate_limit="10/week")
    assert store.rule_overrides() == {}


def test_manual_run_of_a_time_rule_records_a_fired_occurrence_and_keeps_the_schedule(store, clock):
    service = _service(store, clock)
    planner = OccurrencePlanner(store=store, rules=lambda: service.rules)
    planner.plan(T0)
    before = store.rule_states()["tick"]
    job = service.run_rule("tick", {"reason": "test"})
    assert job.perform_at == T0
    assert job.note == "manual run"
    assert job.payload == {
        "rule": "tick",
        "scheduled_for": T0.isoformat(),
        "manual": True,
        "reason": "test",
    }
    assert store.rule_states()["tick"] == before
    (occurrence,) = store.history("tick")
    assert (occurrence.outcome, occurrence.reason, occurrence.job_id) == (
        "fired",
        "manual run",
        job.id,
    )
    # The schedule goes on at 10:00; the manual job still waiting counts for overlap: skip.
    assert planner.plan(T0.replace(hour=10, minute=0)) == T0.replace(hour=11, minute=0)
    ten = store.history("tick")[0]
    assert (ten.scheduled_for.hour, ten.outcome) == (10, "skipped")
    assert ten.reason is not None and ten.reason.startswith("overlap")


def test_manual_run_of_an_event_rule_makes_a_job_with_the_payload_and_no_event(store, clock):
    service = _service(store, clock)
    service.disable_rule("hook", None)  # like systemctl start: a disabled rule runs by hand
    job = service.run_rule("hook", {"user": 7})
    assert (job.event_id, job.payload, job.priority) == (None, {"user": 7}, 1)
    assert service.rule_control(service.rule("hook"))["last_run"] == T0.isoformat()


def test_a_time_rule_disabled_for_a_while_comes_back_through_the_planner(store, clock):
    service = _service(store, clock)
    planner = OccurrencePlanner(store=store, rules=lambda: service.rules)
    planner.plan(clock.now())
    service.disable_rule("tick", 2 * HOUR)
    assert planner.plan(clock.now()) == T0 + 2 * HOUR  # wakes when the --for runs out
    clock.advance(2 * HOUR)
    planner.plan(clock.now())
    history = [(o.scheduled_for.hour, o.outcome, o.reason) for o in store.history("tick")]
    assert sorted(history) == [
        (10, "skipped", "rule disabled"),
        (11, "fired", "late run (on_missed: once)"),
    ]


def test_enable_of_a_rule_the_file_disables_shows_it_overridden(store, clock):
    off = RuleSet((replace(RULES.rules[0], enabled=False),), {"act": ACT})
    service = _service(store, clock, off)
    assert service.emit("signup", {}).job_ids == ()
    service.enable_rule("hook")
    assert len(service.emit("signup", {}).job_ids) == 1
    enabled = service.rule_control(service.rule("hook"))["overrides"]["enabled"]
    assert (enabled["value"], enabled["from"], enabled["file"]) == (True, "override", False)
