"""The PostgreSQL store's own behaviour: the dialect rewrite, and several daemons (stores) on one
database claiming side by side without ever taking one job twice."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import stores
from stores import Backend, backend_fixture

from timeos.model import (
    Event,
    JobStatus,
    NewJob,
    Occurrence,
    OccurrenceOutcome,
    RateLimit,
    RuleState,
    new_id,
    occurrence_key,
)
from timeos.rules.limits import Limit
from timeos.store.postgres.dialect import translate
from timeos.store.urls import redacted

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT a FROM jobs INDEXED BY jobs_wake WHERE x = ?",
         "SELECT a FROM jobs WHERE x = %s"),
        ("WHERE rule = ? AND +status IN ('a', 'b')", "WHERE rule = %s AND status IN ('a', 'b')"),
        ("SET perform_at = MAX(perform_at, CASE WHEN a < ? THEN a ELSE ? END)",
         "SET perform_at = GREATEST(perform_at, CASE WHEN a < %s THEN a ELSE %s END)"),
        ("SELECT MAX(priority) FROM jobs", "SELECT MAX(priority) FROM jobs"),
        ("last_error LIKE 'parent job % ended %' AND x LIKE ?",
         "last_error LIKE 'parent job %% ended %%' AND x LIKE %s"),
        ("SET e = 'parent ' || COALESCE(json_extract(depends_on, '$[0]'), '?') || ?",
         "SET e = 'parent ' || COALESCE(((depends_on)::json ->> 0), '?') || %s"),
        ("INSERT OR IGNORE INTO job_deps (parent, child, wait) VALUES (?, ?, ?)",
         "INSERT INTO job_deps (parent, child, wait) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"),
        ("INSERT OR IGNORE INTO t (a) VALUES (?) RETURNING a",
         "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING RETURNING a"),
        ("INSERT OR REPLACE INTO job_keys (job_id, rule, key, value) VALUES (?, ?, ?, ?)",
         "INSERT INTO job_keys (job_id, rule, key, value) VALUES (%s, %s, %s, %s)"
         " ON CONFLICT (job_id, key) DO UPDATE SET rule = excluded.rule, value = excluded.value"),
        ("INSERT INTO rate_buckets (key, tokens, held_at) VALUES (?, ?, ?) ON CONFLICT(key) DO"
         " UPDATE SET tokens = CASE WHEN ? THEN excluded.tokens ELSE tokens END,"
         " held_at = COALESCE(excluded.held_at, held_at)",
         "INSERT INTO rate_buckets (key, tokens, held_at) VALUES (%s, %s, %s) ON CONFLICT(key) DO"
         " UPDATE SET tokens = CASE WHEN %s THEN excluded.tokens ELSE rate_buckets.tokens END,"
         " held_at = COALESCE(excluded.held_at, rate_buckets.held_at)"),
        ("DELETE FROM o WHERE rowid IN (SELECT rowid FROM o LIMIT ?)",
         "DELETE FROM o WHERE ctid IN (SELECT ctid FROM o LIMIT %s)"),
    ],
    ids=["index-hint", "unary-plus", "scalar-max", "aggregate-max", "percent-in-literal",
         "json-first", "or-ignore", "or-ignore-returning", "or-replace", "upsert-bare-columns",
         "rowid"],
)  # fmt: skip
def test_sqlite_idioms_are_rewritten_and_literals_kept(sqlite, postgres):
    assert translate(sqlite) == postgres


def test_a_password_never_reaches_status_or_messages():
    assert redacted("postgresql://u:s3cret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redacted("postgresql://u@db/x") == "postgresql://u@db/x"
    # libpq's other places for a password: a URL parameter, a conninfo key.
    assert (
        redacted("postgresql://u@db/x?sslmode=require&password=s3cret&application_name=t")
        == "postgresql://u@db/x?sslmode=require&password=***&application_name=t"
    )
    assert redacted("host=db password='s 3cret' dbname=x") == "host=db password=*** dbname=x"


def test_print_config_never_shows_the_database_password(tmp_path):
    import json

    from timeos.daemon.config import resolve

    url = "postgresql://tim:S3cretPw@db.example/timeos?password=Other9"
    config = resolve({"db": url}, {}, (tmp_path / "none.yaml", False))
    for shown in (config.render(), json.dumps(config.describe())):
        assert "S3cretPw" not in shown and "Other9" not in shown
    shown = config.render()
    assert "S3cretPw" not in shown and "Other9" not in shown
    assert "postgresql://tim:***@db.example/timeos?password=***" in shown


def test_an_unreachable_server_skips_the_postgres_variants_or_fails_them_under_ci(monkeypatch):
    monkeypatch.setattr(stores, "PG_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setattr(stores, "_reachable", [])
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("TIMEOS_TEST_PG", raising=False)
    request = SimpleNamespace(param="postgres")
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL at postgresql://nobody"):
        next(backend_fixture(request))  # type: ignore[arg-type]
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL is required"):
        next(backend_fixture(request))  # type: ignore[arg-type]


# ---- several daemons on one database ----------------------------------------------------------


@pytest.fixture
def pg(request):
    """A PostgreSQL backend (these tests are about PostgreSQL only)."""
    request.param = "postgres"
    yield from backend_fixture(request)


def _emit(store, count: int, *, rule: str = "r", at: datetime = T0) -> list[str]:
    event = Event(new_id(T0), "e", {}, T0, T0)
    jobs = [NewJob(rule, "act", at, 0, 3, {}, event.id) for _ in range(count)]
    return list(store.emit(event, jobs, T0).job_ids)


def _claim_all(store, limit: int, out: list[str], start: threading.Barrier, **kw) -> None:
    start.wait()
    while True:
        jobs = store.claim_due(T0, limit, **kw)
        if not jobs:
            return
        out += [j.id for j in jobs]


def test_two_daemons_claiming_at_once_never_take_one_job_twice(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    ids = _emit(a, 400)
    taken: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=_claim_all, args=(s, 7, taken[n], start))
        for n, s in (("a", a), ("b", b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    both = taken["a"] + taken["b"]
    assert sorted(both) == sorted(ids)  # every job once: none lost, none twice
    assert taken["a"] and taken["b"]  # and both daemons claimed
    assert {r[0] for r in a.conn.execute("SELECT claimed_by FROM jobs WHERE id = ANY(?)",
                                         (taken["b"],))} == {"b"}  # fmt: skip


def test_a_rate_limit_holds_across_daemons(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    _emit(a, 50, rule="slow")
    limits = {"rule:slow": Limit("rule:slow", RateLimit(5, "minute", 5), None)}
    taken: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    threads = [
        threading.Thread(target=_claim_all, args=(s, 3, taken[n], start), kwargs={"limits": limits})
        for n, s in (("a", a), ("b", b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(taken["a"]) + len(taken["b"]) == 5  # one bucket, whoever claims


def test_an_exclusive_rule_runs_once_across_daemons(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    _emit(a, 3, rule="single", at=T0 - timedelta(seconds=1))
    other = _emit(a, 1, rule="other")
    (first,) = a.claim_due(T0, 1, exclusive={"single"})
    assert first.rule == "single"  # the earliest due; `other` is due after
    # b knows nothing of a's running job in memory: the database tells it.
    assert [j.id for j in b.claim_due(T0, 5, exclusive={"single"})] == other


def test_recovery_takes_only_jobs_no_live_daemon_runs(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    _emit(a, 2)
    (mine,) = a.claim_due(T0, 1)
    (theirs,) = b.claim_due(T0, 1)
    # A restart of `a` (same id) takes back what its previous life left running, never b's.
    again = pg.open(path, daemon_id="a")
    assert [j.id for j in again.running_jobs()] == [mine.id]
    # Later calls (the leader's periodic rescue) never hand a daemon its own running jobs.
    assert again.running_jobs() == []
    c = pg.open(path, daemon_id="c")
    assert c.running_jobs() == []  # a and b are alive: nothing to rescue
    # b stops beating (killed): its job is rescued by the next daemon to start; a's is a's.
    c.conn.execute("UPDATE daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = 'b'")
    assert [j.id for j in c.running_jobs()] == [theirs.id]


def test_two_daemons_planning_one_occurrence_make_one_job(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    fire = T0 + timedelta(minutes=1)
    key = occurrence_key("tick", fire)
    job = NewJob("tick", "act", fire, 0, 3, {}, None, key, fire)
    occ = Occurrence("tick", fire, OccurrenceOutcome.FIRED, None, None, None, T0)
    state = RuleState("tick", "f1", T0, fire + timedelta(minutes=1), fire)
    results = []
    start = threading.Barrier(2)

    def plan(store) -> None:
        start.wait()
        results.append(store.save_rule_state(state, T0, [occ], [job]))

    threads = [threading.Thread(target=plan, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    made = [ids[0] for ids in results if ids[0] is not None]
    assert len(made) == 1
    assert [j.id for j in a.list_jobs(rule="tick")] == made
    assert [o.job_id for o in b.history("tick")] == made
    assert a.get_job(made[0]).status is JobStatus.PENDING


def test_the_schema_is_migrated_once_by_daemons_starting_together(pg: Backend, tmp_path):
    path = tmp_path / "fresh"
    opened: list[int] = []
    start = threading.Barrier(3)

    def open_one(n: int) -> None:
        start.wait()
        opened.append(pg.open(path, daemon_id=f"d{n}").schema_found)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # All three opened (a second run of the migration would have failed on CREATE TABLE), each
    # finding the schema empty or already migrated by another.
    assert len(opened) == 3 and set(opened) <= {0, 1}
    (version,) = pg.open(path).conn.execute("SELECT version FROM timeos_schema").fetchall()
    assert version == (1,)


def test_health_facts_list_the_daemons_sharing_the_database(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a = pg.open(path, daemon_id="a")
    b = pg.open(path, daemon_id="b")
    facts = a.facts()
    assert facts["daemon_id"] == "a" and facts["daemons_alive"] == 2
    assert [(d["id"], d["alive"]) for d in facts["daemons"]] == [("a", True), ("b", True)]
    a.conn.execute("UPDATE daemons SET heartbeat_at = now() - interval '1 hour' WHERE id = 'b'")
    assert [d["alive"] for d in a.facts()["daemons"]] == [True, False]
    b._beat()  # type: ignore[attr-defined]  # what its heartbeat thread does every 2 s
    assert [d["alive"] for d in a.facts()["daemons"]] == [True, True]
    b.close()  # a clean stop leaves the table
    assert [d["id"] for d in a.facts()["daemons"]] == ["a"]
    # The server gone: health still answers, its ping says what is wrong.
    a.pool.close()  # type: ignore[attr-defined]
    assert a.facts() == {"daemon_id": "a"}


def test_one_daemon_plans_and_another_takes_the_lead_when_it_dies(pg: Backend, tmp_path):
    from timeos.clock import FakeClock
    from timeos.daemon.planner import FOLLOW_EVERY, OccurrencePlanner
    from timeos.model import (
        Action,
        ActionKind,
        CommandSpec,
        IntervalTrigger,
        OverlapPolicy,
        Rule,
        RuleSet,
    )

    clock = FakeClock(T0)
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a", clock=clock), pg.open(path, daemon_id="b", clock=clock)
    rule = Rule("tick", IntervalTrigger(timedelta(minutes=1)), "act", overlap=OverlapPolicy.ALLOW)
    rules = RuleSet((rule,), {"act": Action("act", ActionKind.COMMAND, CommandSpec(("true",)))})
    leader = OccurrencePlanner(store=a, rules=lambda: rules)
    follower = OccurrencePlanner(store=b, rules=lambda: rules)
    assert leader.plan(T0) == T0 + timedelta(minutes=1)  # a leads: it plans
    assert follower.plan(T0) == T0 + FOLLOW_EVERY  # b follows, and asks again soon
    for _ in (1, 2):
        clock.advance(timedelta(minutes=1))
        leader.plan(clock.now())
        follower.plan(clock.now())
    a.close()  # the leader dies: PostgreSQL releases its lock
    clock.advance(timedelta(minutes=1, seconds=5))  # b's next look, a few seconds late
    assert follower.plan(clock.now()) == T0 + timedelta(minutes=4)
    clock.advance(timedelta(seconds=55))
    follower.plan(clock.now())
    fired = [o.scheduled_for for o in reversed(b.history("tick")) if o.outcome == "fired"]
    # Every occurrence exactly once, across the failover (minute 3 late, not missed).
    assert fired == [T0 + timedelta(minutes=m) for m in (1, 2, 3, 4)]
    assert len(b.list_jobs(rule="tick")) == 4


def test_a_job_made_due_by_another_daemon_wakes_an_idle_one(pg: Backend, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    woken = threading.Event()
    b.watch(woken.set)
    assert woken.wait(10)  # a (re)connected listener looks once at once
    woken.clear()
    _emit(b, 1)  # b's own writes never wake b
    a.claim_due(T0, 10)  # nor does a claim (nothing becomes due by it)
    assert not woken.wait(1.5)
    _emit(a, 1)  # a new job by another daemon does
    assert woken.wait(10)


def test_a_daemon_stalled_holding_the_writer_lock_blocks_others_only_briefly(pg: Backend, tmp_path):
    import psycopg

    from timeos.errors import StoreError
    from timeos.store.postgres.store import WRITE_LOCK

    path = tmp_path / "shared"
    a = pg.open(path, daemon_id="a", lock_timeout_ms=200)
    stalled = psycopg.connect(stores.PG_URL, options=f"-c search_path={pg.schemas[str(path)]}")
    try:  # a daemon stopped (SIGSTOP) in the middle of a write transaction
        stalled.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (WRITE_LOCK,)
        )
        with pytest.raises(StoreError, match="lock timeout"):
            _emit(a, 1)  # an error after lock_timeout, never a loop blocked for good
        assert a.last_write is not None and not a.last_write.ok  # health says so
        idle = a.conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert idle == ("30s",)  # and the server ends such a session, releasing its locks
    finally:
        stalled.close()
    assert len(_emit(a, 1)) == 1  # the lock freed: writes go through again


def test_a_search_path_in_the_url_is_kept_beside_the_store_settings(pg: Backend, tmp_path):
    import psycopg

    from timeos.store.postgres.store import PostgresStore

    schema = f"t_{uuid.uuid4().hex}"
    pg.schemas[str(tmp_path / "url")] = schema
    with psycopg.connect(stores.PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(f"{stores.PG_URL}?options=-csearch_path%3D{schema}", daemon_id="u")
    pg.opened.append(store)
    assert store.conn.execute("SELECT current_schema()").fetchone() == (schema,)
    assert store.conn.execute("SHOW lock_timeout").fetchone() == ("5s",)


def test_a_chain_started_by_one_daemon_continues_on_another(pg: Backend, tmp_path):
    from timeos.model import ActionResult, Outcome, Verdict

    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    event = Event(new_id(T0), "e", {}, T0, T0)
    parent = NewJob("chain", "first", T0, 0, 3, {}, event.id)
    child = NewJob("chain", "second", T0, 0, 3, {}, event.id, after=1)
    first, second = a.emit(event, [parent, child], T0).job_ids
    assert a.get_job(second).status is JobStatus.BLOCKED
    (running,) = b.claim_due(T0, 5)  # b runs the parent; the child waits for it
    assert running.id == first
    done = Verdict(JobStatus.SUCCEEDED, T0, 3, 0)
    b.finish(running, ActionResult(Outcome.SUCCEEDED), T0, done)
    assert [j.id for j in a.claim_due(T0, 5)] == [second]  # released in b's finish, run by a


def test_an_exclusive_rule_runs_once_across_daemons_on_the_limited_claim_too(pg, tmp_path):
    path = tmp_path / "shared"
    a, b = pg.open(path, daemon_id="a"), pg.open(path, daemon_id="b")
    _emit(a, 3, rule="single", at=T0 - timedelta(seconds=1))
    _emit(a, 1, rule="other", at=T0 - timedelta(seconds=1))
    # A limit on any rule sends every claim down the limited path.
    limits = {"rule:other": Limit("rule:other", RateLimit(5, "minute", 5), None)}
    (first,) = a.claim_due(T0, 1, exclusive={"single"}, limits=limits)
    assert first.rule == "single"
    second = b.claim_due(T0, 5, exclusive={"single"}, limits=limits)
    assert [j.rule for j in second] == ["other"]  # `single` runs on a: b takes none of it


def test_the_periodic_rescue_never_takes_a_daemons_own_running_jobs(pg, tmp_path):
    a = pg.open(tmp_path / "shared", daemon_id="a")
    _emit(a, 1)
    assert a.running_jobs() == []  # start-up recovery done
    (mine,) = a.claim_due(T0, 1)
    # a's heartbeat connection could not reach the server for a while (its pool still can).
    a.conn.execute("UPDATE daemons SET heartbeat_at = now() - interval '1 minute' WHERE id = 'a'")
    assert a.running_jobs() == []  # a runs it: never rescued (and rerun) by a itself
    b = pg.open(tmp_path / "shared", daemon_id="b")
    assert [j.id for j in b.running_jobs()] == [mine.id]  # another daemon may take it over


def test_every_connection_detects_a_silent_server_within_seconds(pg, tmp_path):
    store = pg.open(tmp_path / "shared", daemon_id="a")
    with store.pool.connection() as conn:
        given = conn.info.get_parameters()
    assert given["keepalives_idle"] == "10" and given["tcp_user_timeout"] == "30000"


def test_a_search_path_naming_no_schema_is_refused_saying_so(pg):
    from timeos.errors import StoreError
    from timeos.store.postgres.store import PostgresStore

    missing = f"nothere_{uuid.uuid4().hex[:8]}"
    url = f"{stores.PG_URL}?options=-csearch_path%3D{missing}"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url, daemon_id="a")
    assert "search_path names does not exist" in str(caught.value)
    assert "CREATE SCHEMA" in str(caught.value)
