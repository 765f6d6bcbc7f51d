"""Service, one method per API call, over a real SQLite store and a FakeClock: no daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from harness import verdict

from timeos.clock import FakeClock
from timeos.daemon.service import HealthProbe, Service
from timeos.engine import Limits, renewal, retry_policy_for
from timeos.errors import (
    IdempotencyConflict,
    InvalidState,
    NotFound,
    PayloadError,
    Problem,
    RulesError,
    StoreError,
    UsageError,
)
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    CronTrigger,
    EventTrigger,
    IntervalTrigger,
    JobStatus,
    Occurrence,
    OccurrenceOutcome,
    Outcome,
    PythonSpec,
    RetryPolicy,
    Rule,
    RuleSet,
    RuleState,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
NY = ZoneInfo("America/New_York")
ACT = Action("act", ActionKind.PYTHON, PythonSpec("t:noop", lambda payload, ctx: None))
RULES = RuleSet(
    (
        Rule("welcome", EventTrigger("user_signup"), "act"),
        Rule(
            "follow-up",
            EventTrigger("user_signup", offset=timedelta(days=2)),
            "act",
            retry=RetryPolicy(max_attempts=2),
        ),
        Rule("nightly", CronTrigger("30 2 * * *"), "act", timezone=NY),
        Rule("pulse", IntervalTrigger(timedelta(minutes=30)), "act"),
    ),
    {"act": ACT},
)
ONE_RULE = RuleSet((Rule("welcome", EventTrigger("user_signup"), "act"),), {"act": ACT})
Loader = Callable[[Sequence[Path]], RuleSet]


class Rig:
    """A Service wired to a real store in tmp_path, a FakeClock and a counter of pokes."""

    def __init__(
        self,
        store: SqliteStore,
        *,
        loader: Loader | None = None,
        probes: dict[str, HealthProbe] | None = None,
        limits: Limits = Limits(max_list_limit=10),
    ) -> None:
        self.store = store
        self.clock = FakeClock(T0)
        self.pokes = 0
        self.service = Service(
            store=store,
            clock=self.clock,
            rules=RULES,
            rule_paths=[Path("rules.yaml")],
            loader=loader or (lambda paths: RULES),
            limits=limits,
            on_change=self._poke,
            info={"version": "test", "pid": 42},
            probes=probes,
        )

    def _poke(self) -> None:
        self.pokes += 1


def _loader(*outcomes: RuleSet | BaseException) -> Loader:
    """A loader answering each call with the next outcome: a rule set, or an error it raises."""
    pending = list(outcomes)

    def load(paths: Sequence[Path]) -> RuleSet:
        item = pending.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return load


@pytest.fixture
def store(backend, tmp_path):
    s = backend.open(tmp_path / "t.db")
    yield s
    s.close()


@pytest.fixture
def rig(store):
    return Rig(store)


def _dead_follow_up(rig: Rig) -> str:
    """Emit a signup and run its follow-up job into the dead letter queue (1 attempt made)."""
    result = rig.service.emit("user_signup", {"user_id": "1"})
    job = rig.store.list_jobs(rule="follow-up", event_id=result.event_id)[0]
    (claimed,) = rig.store.claim_due(job.perform_at, 1, blocked=["welcome"])
    rig.store.finish(
        claimed, ActionResult(Outcome.PERMANENT, "bad"), T0, verdict(claimed, JobStatus.DEAD)
    )
    return job.id


# ---- events -----------------------------------------------------------------------------------


def test_emit_stores_the_event_and_one_job_per_matching_rule_then_pokes_once(rig):
    result = rig.service.emit("user_signup", {"user_id": "1"})
    assert not result.duplicate and len(result.job_ids) == 2
    jobs = rig.store.list_jobs(event_id=result.event_id)
    assert {j.rule: j.perform_at for j in jobs} == {
        "welcome": T0,
        "follow-up": T0 + timedelta(days=2),
    }
    assert {j.rule: j.max_attempts for j in jobs} == {"welcome": 3, "follow-up": 2}
    assert rig.service.get_event(result.event_id).received_at == T0
    assert rig.pokes == 1


def test_emit_of_an_event_no_rule_listens_to_stores_it_without_waking_the_scheduler(rig):
    result = rig.service.emit("page_view", {})
    assert result.job_ids == () and rig.pokes == 0
    assert rig.service.get_event(result.event_id).type == "page_view"


def test_emit_stores_nothing_when_one_rule_cannot_plan_its_job(rig):
    # "welcome" plans fine; "follow-up" (+2 days) overflows: neither the event nor a job is kept.
    near_the_end = datetime(9999, 12, 31, tzinfo=UTC)
    with pytest.raises(PayloadError, match="out of range"):
        rig.service.emit("user_signup", {}, occurred_at=near_the_end)
    assert rig.store.list_events() == [] and rig.store.list_jobs() == []
    assert rig.pokes == 0


def test_idempotent_resend_returns_the_original_event_and_creates_no_jobs(rig):
    first = rig.service.emit("user_signup", {"user_id": "1"}, idempotency_key="k1")
    rig.clock.advance(timedelta(minutes=1))
    again = rig.service.emit("user_signup", {"user_id": "1"}, idempotency_key="k1")
    assert again.duplicate and again.event_id == first.event_id and again.job_ids == ()
    assert len(rig.store.list_jobs()) == 2
    assert rig.pokes == 1


def test_same_key_with_another_payload_raises_conflict_and_stores_nothing(rig):
    rig.service.emit("user_signup", {"user_id": "1"}, idempotency_key="k1")
    with pytest.raises(IdempotencyConflict, match="k1"):
        rig.service.emit("user_signup", {"user_id": "2"}, idempotency_key="k1")
    assert len(rig.store.list_events()) == 1 and len(rig.store.list_jobs()) == 2


@pytest.mark.parametrize(
    ("event_type", "key"),
    [("", None), ("has space", None), ("x" * 201, None), ("ok", ""), ("ok", "k" * 257)],
    ids=["empty-type", "space-in-type", "type-too-long", "empty-key", "key-too-long"],
)
def test_emit_rejects_bad_event_types_and_keys_before_storing(rig, event_type, key):
    with pytest.raises(PayloadError):
        rig.service.emit(event_type, {}, idempotency_key=key)
    assert rig.store.list_events() == []


# ---- jobs -------------------------------------------------------------------------------------


def test_list_jobs_filters_by_status_rule_and_event(rig):
    first = rig.service.emit("user_signup", {}).event_id
    second = rig.service.emit("user_signup", {}).event_id
    rig.store.claim_due(T0, 10)  # both "welcome" jobs start running
    svc = rig.service
    running = svc.list_jobs(status="running", rule=None, event_id=None, limit=10, offset=0)
    assert {j.rule for j in running} == {"welcome"} and len(running) == 2
    mine = svc.list_jobs(status=None, rule="follow-up", event_id=second, limit=10, offset=0)
    assert [(j.rule, j.event_id, j.status) for j in mine] == [
        ("follow-up", second, JobStatus.PENDING)
    ]
    assert len(svc.list_jobs(status=None, rule=None, event_id=first, limit=10, offset=0)) == 2


def test_list_jobs_with_an_unknown_status_names_the_valid_ones(rig):
    with pytest.raises(UsageError, match="unknown status 'done'.*pending"):
        rig.service.list_jobs(status="done", rule=None, event_id=None, limit=10, offset=0)


def test_cancel_reports_per_id_and_one_failure_does_not_stop_the_others(rig):
    rig.service.emit("user_signup", {})
    (running,) = rig.store.claim_due(T0, 1)
    (waiting,) = rig.store.list_jobs(status=JobStatus.PENDING)
    outcomes = rig.service.cancel([running.id, "nope", waiting.id])
    assert [(o.id, o.cancelled, o.status) for o in outcomes] == [
        (running.id, False, "running"),
        ("nope", False, None),
        (waiting.id, True, "cancelled"),
    ]
    assert outcomes[0].error is not None and "running" in outcomes[0].error
    assert outcomes[1].error is not None and "nope" in outcomes[1].error
    assert outcomes[2].error is None
    assert rig.store.get_job(waiting.id).status is JobStatus.CANCELLED


def test_dlq_retry_renews_the_budget_by_the_rules_policy_and_wakes_the_scheduler(rig):
    job_id = _dead_follow_up(rig)
    dead = rig.store.get_job(job_id)
    rig.clock.advance(timedelta(hours=1))
    pokes = rig.pokes
    job = rig.service.dlq_retry(job_id)
    expected = renewal(dead, retry_policy_for(RULES, dead), rig.clock.now())
    assert expected.max_attempts == 1 + 2  # attempts made + the rule's own max_attempts
    assert (job.status, job.max_attempts, job.backoff_base) == (JobStatus.PENDING, 3, 1)
    assert job.perform_at == rig.clock.now() and job.attempts == 1
    assert rig.pokes == pokes + 1


def test_dlq_delete_removes_a_dead_job_and_its_attempts(rig):
    job_id = _dead_follow_up(rig)
    rig.service.dlq_delete(job_id)
    with pytest.raises(NotFound):
        rig.service.get_job(job_id)
    assert rig.service.attempts(job_id) == []


def test_dlq_retry_and_delete_refuse_a_job_that_is_not_dead(rig):
    rig.service.emit("user_signup", {})
    job_id = rig.store.list_jobs()[0].id
    with pytest.raises(InvalidState, match="not in the dead letter queue"):
        rig.service.dlq_retry(job_id)
    with pytest.raises(InvalidState, match="not in the dead letter queue"):
        rig.service.dlq_delete(job_id)
    with pytest.raises(NotFound):
        rig.service.dlq_retry("nope")


# ---- rules ------------------------------------------------------------------------------------


def test_reload_swaps_in_valid_rules_counts_it_and_wakes_the_scheduler(store):
    rig = Rig(store, loader=_loader(ONE_RULE))
    assert asyncio.run(rig.service.reload()) is ONE_RULE
    assert rig.service.rules is ONE_RULE
    assert rig.service.status()["reloads"] == 1 and rig.pokes == 1
    with pytest.raises(NotFound, match="nightly"):
        rig.service.rule("nightly")


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (RulesError([Problem("rules.yaml:3:5", "unknown action 'x'")]), RulesError, "unknown"),
        (FileNotFoundError(2, "No such file"), RulesError, "reload failed: FileNotFoundError"),
        (PermissionError(13, "Permission denied"), RulesError, "PermissionError"),
    ],
    ids=["invalid-rules", "file-gone", "unreadable"],
)
def test_reload_keeps_the_old_rules_when_loading_fails(store, error, raised, message):
    rig = Rig(store, loader=_loader(error))
    with pytest.raises(raised, match=message):
        asyncio.run(rig.service.reload())
    assert rig.service.rules is RULES
    assert rig.service.status()["reloads"] == 0 and rig.pokes == 0
    rules = rig.service.health()["components"]["rules"]
    assert rules["status"] == "degraded" and "previous rules" in rules["message"]


def test_a_good_reload_after_a_bad_one_clears_the_degraded_rules_component(store):
    rig = Rig(store, loader=_loader(OSError("disk"), ONE_RULE))
    with pytest.raises(RulesError):
        asyncio.run(rig.service.reload())
    asyncio.run(rig.service.reload())
    assert rig.service.health()["components"]["rules"] == {
        "status": "healthy",
        "message": "1 rule(s) loaded",
    }


def _record(store: SqliteStore, rule: str, *times: datetime) -> None:
    occurrences = [
        Occurrence(rule, at, OccurrenceOutcome.SKIPPED, "overlap", None, "n", T0) for at in times
    ]
    store.save_rule_state(RuleState(rule, "fp", None, None, times[-1]), T0, occurrences)


def test_rule_history_is_newest_first_and_pages(rig):
    hours = [T0 - timedelta(hours=h) for h in (3, 2, 1)]
    _record(rig.store, "nightly", *hours)
    history = rig.service.rule_history("nightly", 10)
    assert [h["scheduled_for"] for h in history] == [t.isoformat() for t in reversed(hours)]
    assert history[0] == {
        "scheduled_for": hours[2].isoformat(),
        "outcome": "skipped",
        "reason": "overlap",
        "job_id": None,
        "note": "n",
        "recorded_at": T0.isoformat(),
    }
    paged = rig.service.rule_history("nightly", 1, offset=1)
    assert [h["scheduled_for"] for h in paged] == [hours[1].isoformat()]


def test_rule_history_answers_for_a_removed_rule_but_not_for_an_unknown_name(rig):
    _record(rig.store, "retired", T0)
    assert len(rig.service.rule_history("retired", 10)) == 1
    with pytest.raises(NotFound, match="no rule named 'ghost'"):
        rig.service.rule_history("ghost", 10)
    assert rig.service.rule_history("nightly", 10) == []  # loaded, never fired


def test_rule_next_counts_an_interval_from_its_stored_anchor_else_from_now(rig):
    (fire,) = rig.service.rule_next("pulse", None, 1)
    assert fire["at"] == (T0 + timedelta(minutes=30)).isoformat()
    rig.store.save_rule_state(RuleState("pulse", "fp", T0 - timedelta(minutes=10), None, None), T0)
    fires = rig.service.rule_next("pulse", None, 3)
    assert [f["at"] for f in fires] == [
        (T0 + timedelta(minutes=m)).isoformat() for m in (20, 50, 80)
    ]


def test_rule_next_of_a_cron_rule_notes_the_dst_gap(rig):
    fires = rig.service.rule_next("nightly", datetime(2026, 3, 7, 12, tzinfo=UTC), 2)
    assert [(f["local"], f["note"]) for f in fires] == [
        ("2026-03-08T03:00:00-04:00", "moved from 02:30 by the DST gap"),
        ("2026-03-09T02:30:00-04:00", None),
    ]


@pytest.mark.parametrize(("count", "expected"), [(0, 1), (-3, 1), (5000, 1000)], ids=str)
def test_rule_next_clamps_count_to_1_through_1000(rig, count, expected):
    assert len(rig.service.rule_next("pulse", None, count)) == expected


def test_rule_next_refuses_event_rules_and_unknown_names(rig):
    with pytest.raises(UsageError, match="triggered by events"):
        rig.service.rule_next("welcome", None, 1)
    with pytest.raises(NotFound):
        rig.service.rule_next("ghost", None, 1)


# ---- status and health ------------------------------------------------------------------------


def test_status_merges_daemon_info_with_live_facts(rig):
    rig.clock.advance(timedelta(minutes=2, seconds=3))
    status = rig.service.status()
    assert status["version"] == "test" and status["pid"] == 42
    assert status["up"] is True
    assert status["started_at"] == T0.isoformat()
    assert status["uptime_seconds"] == 123.0
    assert (status["rules"], status["actions"], status["reloads"]) == (4, 1, 0)
    assert status["rule_files"] == [str(Path("rules.yaml").absolute())]  # absolute: no guessing


def test_health_lists_database_rules_and_every_probe_with_job_counts(store, backend):
    rig = Rig(store, probes={"scheduler": lambda: ("healthy", "tick 0.1s ago")})
    rig.service.emit("user_signup", {})
    health = rig.service.health()
    assert health["status"] == "healthy"
    components = health["components"]
    # PostgreSQL: the daemons sharing the database too (tests/test_fleet.py).
    shared = {"daemons"} if backend.name == "postgres" else set()
    assert set(components) == {"database", "rules", "scheduler", "lateness"} | shared
    database = components["database"]
    assert database["status"] == "healthy" and database["message"].startswith(store.location)
    assert database["last_write_ok"] is True
    if backend.name == "sqlite":
        assert database["wal_bytes"] >= 0
    assert components["rules"] == {"status": "healthy", "message": "4 rule(s) loaded"}
    assert components["scheduler"] == {"status": "healthy", "message": "tick 0.1s ago"}
    assert health["jobs"]["pending"] == 2 and health["jobs"]["dead"] == 0


def _probe(status: str) -> HealthProbe:
    return lambda: (status, "said so")


@pytest.mark.parametrize(
    ("states", "overall"),
    [
        (("healthy", "healthy"), "healthy"),
        (("degraded", "healthy"), "degraded"),
        (("degraded", "unhealthy"), "unhealthy"),
    ],
    ids=["all-well", "one-degraded", "unhealthy-wins"],
)
def test_health_is_the_worst_of_its_probes(store, states, overall):
    probes = {f"p{i}": _probe(state) for i, state in enumerate(states)}
    rig = Rig(store, probes=probes)
    health = rig.service.health()
    assert health["status"] == overall
    assert [health["components"][p]["status"] for p in probes] == list(states)


class DeadStore(SqliteStore):
    """A real store whose database stopped answering (disk gone, file locked for good)."""

    def ping(self) -> None:
        raise StoreError("disk I/O error")

    def counts_by_status(self) -> dict[str, int]:
        raise StoreError("disk I/O error")


def test_health_is_unhealthy_when_the_store_does_not_answer(tmp_path):
    store = DeadStore(tmp_path / "t.db")
    health = Rig(store).service.health()
    store.close()
    assert health["status"] == "unhealthy"
    database = health["components"]["database"]
    assert database["status"] == "unhealthy"
    assert database["message"].startswith("disk I/O error")
    assert health["jobs"] == {}


# ---- limits -----------------------------------------------------------------------------------


LISTINGS = {
    "events": lambda s, n: s.list_events(None, n, 0),
    "jobs": lambda s, n: s.list_jobs(status=None, rule=None, event_id=None, limit=n, offset=0),
    "history": lambda s, n: s.rule_history("nightly", n),
}


@pytest.mark.parametrize("listing", LISTINGS, ids=str)
@pytest.mark.parametrize("limit", [0, -1, 11], ids=["zero", "negative", "over-max"])
def test_list_limits_outside_1_to_max_are_usage_errors(rig, listing, limit):
    assert LISTINGS[listing](rig.service, 1) == LISTINGS[listing](rig.service, 10) == []
    with pytest.raises(UsageError, match=f"limit must be 1..10, got {limit}"):
        LISTINGS[listing](rig.service, limit)
