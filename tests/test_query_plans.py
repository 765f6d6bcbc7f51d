"""Query plans of the store's reads and writes of jobs and events (issue 8, index audit).

Every query the store runs is recorded while the store's own methods run (so the SQL is the
code's, not a copy), then explained with EXPLAIN QUERY PLAN on the same database. The key queries
must use the index named for them, and no query may scan the whole jobs table unless it is one
of the few that have to (a listing with no filter, sorted by an expression). Dropping or changing
an index (schema.py) that a query needs makes this fail. The plans do not depend on the number of
rows: the daemon never runs ANALYZE, so SQLite plans from the schema alone.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import verdict

from timeos.engine import Cutoff, PrunePlan
from timeos.errors import IdempotencyConflict
from timeos.model import ActionResult, Event, JobStatus, NewJob, Outcome, new_id
from timeos.rules.correlation import Correlation, DebounceStep, KeyLookup, Scan
from timeos.rules.limits import Limit
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
_NOT_ALIASES = {"where", "indexed", "join", "left", "set", "on", "order", "group", "limit", "as"}


class _Recorder:
    """The store's connection, noting each statement (SQL and its first row of arguments)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        self.seen.append((sql, tuple(args)))
        return self._conn.execute(sql, args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        if rows:
            self.seen.append((sql, tuple(rows[0])))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _plan(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[str]:
    return [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()]


def _jobs_names(sql: str) -> set[str]:
    """`jobs` and the aliases the statement gives it (`jobs AS j`, `jobs c`)."""
    names = {"jobs"}
    for alias in re.findall(r"\bjobs\s+(?:AS\s+)?(\w+)", sql, re.IGNORECASE):
        if alias.lower() not in _NOT_ALIASES:
            names.add(alias)
    return names


def _full_scans(sql: str, plan: list[str]) -> list[str]:
    """Plan lines that read the whole jobs table row by row (no index at all)."""
    names = _jobs_names(sql)
    return [line for line in plan if re.fullmatch(r"SCAN (\w+)", line) and line[5:] in names]


@pytest.fixture
def store(tmp_path: Any) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "plans.db")
    yield s
    s.close()


def _fill(store: SqliteStore) -> dict[str, Any]:
    """A few jobs in every status, a chain, keyed jobs: enough for every path to run."""
    ev = Event(new_id(T0), "signup", {"user": "u1"}, T0, T0, "key-1")
    jobs = [
        NewJob("r", "act", T0 - timedelta(minutes=5), 1, 3, ev.payload, ev.id),
        NewJob("r", "act", T0 + timedelta(hours=1), 0, 3, ev.payload, ev.id),
        NewJob("r", "act", T0 + timedelta(hours=1), 0, 3, ev.payload, ev.id, after=2),
        NewJob("other", "act", T0 - timedelta(minutes=1), 0, 3, ev.payload, ev.id),
    ]
    [result] = store.emit_batch([ev], jobs, T0)
    store.insert_job_keys([(result.job_ids[1], "r", "user", '"u1"')])
    return {"event": ev.id, "jobs": list(result.job_ids)}


def _record(store: SqliteStore, run: Callable[[], Any]) -> list[tuple[str, tuple[Any, ...]]]:
    recorder = _Recorder(store.conn)
    real, store.conn = store.conn, recorder  # type: ignore[assignment]
    try:
        run()
    finally:
        store.conn = real
    return recorder.seen


def _plans(store: SqliteStore, run: Callable[[], Any]) -> list[tuple[str, list[str]]]:
    return [(sql, _plan(store.conn, sql, args)) for sql, args in _record(store, run)]


def _uses(plans: list[tuple[str, list[str]]], index: str, where: str = "") -> None:
    """Some statement (containing `where`) reads jobs through `index`."""
    lines = [line for sql, plan in plans if where in sql for line in plan]
    assert any(f"INDEX {index} " in line or line.endswith(f"INDEX {index}") for line in lines), (
        f"no plan uses {index}: {lines}"
    )


def _searches(plans: list[tuple[str, list[str]]], term: str) -> None:
    """Some statement seeks an index of jobs by `term` (`rule=?`), whichever index it is."""
    lines = [line for _, plan in plans for line in plan]
    assert any(
        re.search(rf"SEARCH \w+ USING (COVERING )?INDEX \w+ \({re.escape(term)}", line)
        for line in lines
    ), f"no plan seeks by {term}: {lines}"


# ---- the key queries, each through the index it needs --------------------------------------


def test_claim_walks_the_claim_index(store):
    _fill(store)
    plans = _plans(store, lambda: store.claim_due(T0, 10))
    _uses(plans, "jobs_claim", "priority = ?")
    assert not [p for sql, p in plans if "priority = ?" in sql and "TEMP B-TREE" in " ".join(p)]


def test_claim_under_limits_uses_the_limited_index(store):
    _fill(store)
    limits = {"rule:r": Limit("rule:r", None, 1), "rule:other": Limit("rule:other", None, 0)}
    plans = _plans(store, lambda: store.claim_due(T0, 10, limits=limits))
    _uses(plans, "jobs_limited")


def test_wake_reads_one_entry_of_the_wake_index(store):
    _fill(store)
    plans = _plans(store, store.next_due_at)
    _uses(plans, "jobs_wake")
    plans = _plans(store, lambda: store.oldest_overdue(T0))
    _uses(plans, "jobs_wake")


@pytest.mark.parametrize("status", list(JobStatus))
def test_list_and_count_by_status_search_the_status_index(store, status):
    _fill(store)
    plans = _plans(store, lambda: store.list_jobs(status=status))
    _uses(plans, "idx_jobs_status_perform_at")
    assert "TEMP B-TREE FOR ORDER BY" not in " ".join(plans[0][1])  # only the id tie-break
    _uses(_plans(store, lambda: store.count_jobs(status=status)), "idx_jobs_status_perform_at")


def test_list_by_rule_and_by_event_search_their_indexes(store):
    ids = _fill(store)
    _uses(_plans(store, lambda: store.list_jobs(rule="r")), "idx_jobs_rule_created_at")
    _searches(_plans(store, lambda: store.count_jobs(rule="r")), "rule=?")
    _uses(_plans(store, lambda: store.list_jobs(event_id=ids["event"])), "idx_jobs_event_id")


def test_rules_last_reads_the_newest_job_of_a_rule_from_an_index(store):
    _fill(store)
    plans = _plans(store, lambda: store.last_job_created("r"))
    _uses(plans, "idx_jobs_rule_created_at")


def test_retention_walks_finished_jobs_by_age_and_checks_events_by_index(store):
    _fill(store)
    plan = PrunePlan(
        jobs=(Cutoff(T0, (JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED)),),
        occurrences=(Cutoff(T0, (JobStatus.SUCCEEDED,)),),
        events_before=T0 + timedelta(days=1),
    )
    for run in (lambda: store.count_prunable(plan), lambda: store.prune_batch(plan, 100)):
        plans = _plans(store, run)
        _uses(plans, "jobs_finished")
        _uses(plans, "jobs_failure_of")  # a dead job a waiting notification reports stays
        _uses(plans, "idx_jobs_event_id", "FROM events")  # an event a job needs stays


def test_chain_release_and_recovery_find_jobs_by_key(store):
    ids = _fill(store)
    [first] = store.claim_due(T0, 1)
    assert first.id == ids["jobs"][0]
    done = ActionResult(Outcome.SUCCEEDED)
    plans = _plans(
        store, lambda: store.finish(first, done, T0, verdict(first, JobStatus.SUCCEEDED))
    )
    _uses(plans, "sqlite_autoindex_jobs_1", "job_deps")
    _uses(_plans(store, lambda: store.settle_blocked(T0)), "jobs_blocked")


def test_correlation_finds_waiting_jobs_by_key_and_by_rule(store):
    ids = _fill(store)
    plan = Correlation(
        "E2",
        "signup",
        (),
        lookups=(KeyLookup("r", "user", '"u1"'),),
        scans=(Scan("other", lambda payload: True),),
    )
    plans = _plans(store, lambda: store.emit_correlated([_next_event()], [plan], T0))
    _uses(plans, "job_keys_match")
    # The key lookup's jobs by id, never a walk of every waiting job by status.
    _uses(plans, "sqlite_autoindex_jobs_1", "job_keys_match")
    assert not [p for sql, p in plans if "job_keys_match" in sql and "status=?" in " ".join(p)]
    _searches(plans, "rule=?")
    step = DebounceStep("user", '"u1"', None)
    job = NewJob("r", "act", T0, 0, 3, {"user": "u1"}, ids["event"])
    debounce = Correlation("E3", "signup", (job,), keys=((("user", '"u1"'),),), debounce=(step,))
    plans = _plans(store, lambda: store.emit_correlated([_next_event()], [debounce], T0))
    _uses(plans, "job_keys_match")


def _next_event() -> Event:
    return Event(new_id(T0), "signup", {"user": "u1"}, T0, T0)


# ---- no full scan of jobs anywhere else ---------------------------------------------------------

# The statements that read every job row by design: the people's listing of all jobs, sorted by an
# expression (`timeos jobs list` without --status), and the counts by status (a covering index).
_SCANS_ALLOWED = ("CASE status WHEN", "COUNT(*) FROM jobs GROUP BY status")


def test_no_statement_scans_the_jobs_table_without_an_index(store):
    ids = _fill(store)
    everything: list[tuple[str, list[str]]] = []

    def run() -> None:
        store.find_idempotent("key-1", "signup", {"user": "u1"})
        store.find_idempotent_many(["key-1", "key-2"])
        store.list_jobs()
        store.list_jobs(waiting_first=True, rule="r")
        store.count_jobs()
        store.counts_by_status()
        store.rule_activity("r")
        store.next_due_at(blocked=["other"])
        [job] = store.claim_due(T0, 1)
        store.get_job(job.id)
        store.attempts(job.id)
        store.chain_ids(job.id)
        store.cancel_matching(rule="other", statuses=["pending"], event_id=ids["event"], now=T0)
        store.cancel_many(ids["jobs"][1:2], T0)
        store.list_events(event_type="signup")
        store.count_events(since=T0 - timedelta(days=1))

    everything += _plans(store, run)
    scans = [
        (sql, scan)
        for sql, plan in everything
        if not any(allowed in sql for allowed in _SCANS_ALLOWED)
        for scan in _full_scans(sql, plan)
    ]
    assert not scans


# ---- schema 11: the partial unique keys keep their constraints ---------------------------------


def test_schema_11_migrates_a_version_10_file_and_keeps_both_unique_keys(tmp_path):
    import sqlite_utils

    from timeos.store.sqlite import schema

    path = tmp_path / "v10.db"
    conn = sqlite3.connect(path)
    for step in schema.MIGRATIONS[:10]:
        step(sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 10")
    conn.execute(
        "INSERT INTO events (id, type, payload, payload_hash, occurred_at, received_at,"
        " idempotency_key) VALUES ('E1', 't', '{}', 'h', 0, 0, 'k1'), ('E2', 't', '{}', '', 0, 0,"
        " NULL), ('E3', 't', '{}', '', 0, 0, NULL)"
    )
    conn.execute(
        "INSERT INTO jobs (id, rule, action, status, priority, perform_at, attempts, max_attempts,"
        " payload, created_at, updated_at, occurrence_key) VALUES"
        " ('J1', 'r', 'a', 'pending', 0, 0, 0, 3, '{}', 0, 0, 'r@1'),"
        " ('J2', 'r', 'a', 'pending', 0, 0, 0, 3, '{}', 0, 0, NULL)"
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.schema_found == 10
        names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert "idx_jobs_rule_perform_at" not in names
        assert {"jobs_occurrence_key", "events_idempotency_key"} <= names
        assert store.get_job("J1").rule == "r" and store.get_event("E2").type == "t"
        # The constraints stand: a second occurrence is ignored, a reused key refused.
        again = NewJob("r", "a", T0, 0, 3, {}, occurrence_key="r@1")
        assert store.insert_jobs([again, NewJob("r", "a", T0, 0, 3, {})], T0)[0] is None
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute(
                "INSERT INTO events (id, type, payload, payload_hash, occurred_at, received_at,"
                " idempotency_key) VALUES ('E4', 't', '{}', 'h', 0, 0, 'k1')"
            )
        with pytest.raises(IdempotencyConflict, match="event E1"):  # found through the index
            store.find_idempotent("k1", "t", {})
        _uses(_plans(store, lambda: store.find_idempotent_many(["k1"])), "events_idempotency_key")
    finally:
        store.close()
