"""The PostgreSQL schema and its versioned migrations.

The table `timeos_schema` holds the version; a newer daemon migrates an older database in place,
each step in its own transaction under an advisory lock, so daemons starting together migrate
once. Version 1 is the SQLite schema 11 (store/sqlite/schema.py) in PostgreSQL's types: instants
are BIGINT microseconds since the Unix epoch (UTC), text compares bytewise (COLLATE "C", as
SQLite's BINARY) so ids and names sort as they do in SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timeos.errors import StoreError

# Every table's primary key: INSERT OR REPLACE becomes ON CONFLICT (pk) DO UPDATE (dialect.py).
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "events": ("id",),
    "jobs": ("id",),
    "attempts": ("job_id", "number"),
    "rule_state": ("rule",),
    "occurrences": ("rule", "scheduled_for"),
    "rule_overrides": ("rule",),
    "replays": ("event_id", "number"),
    "job_deps": ("parent", "child"),
    "job_keys": ("job_id", "key"),
    "rate_buckets": ("key",),
    "daemons": ("id",),
}

_T = 'TEXT COLLATE "C"'
_WAITING = "WHERE status IN ('pending', 'retrying')"

_V1 = [
    f"""CREATE TABLE events (
        id {_T} PRIMARY KEY, type {_T} NOT NULL, payload TEXT NOT NULL,
        payload_hash {_T} NOT NULL, occurred_at BIGINT NOT NULL, received_at BIGINT NOT NULL,
        idempotency_key {_T})""",
    "CREATE INDEX events_type_id ON events (type, id)",
    "CREATE INDEX events_received_at ON events (received_at)",
    "CREATE UNIQUE INDEX events_idempotency_key ON events (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    f"""CREATE TABLE jobs (
        id {_T} PRIMARY KEY, rule {_T} NOT NULL, action {_T} NOT NULL, event_id {_T},
        status {_T} NOT NULL, priority INTEGER NOT NULL, perform_at BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
        payload TEXT NOT NULL, last_error {_T}, created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL, scheduled_for BIGINT, occurrence_key {_T},
        backoff_base INTEGER NOT NULL DEFAULT 0, note TEXT, failure_of {_T}, depends_on TEXT,
        cancelled_by {_T}, debounce_deadline BIGINT,
        claimed_by {_T})""",
    f"CREATE INDEX jobs_claim ON jobs (priority DESC, perform_at) {_WAITING}",
    f"CREATE INDEX jobs_wake ON jobs (perform_at) {_WAITING}",
    f"CREATE INDEX jobs_limited ON jobs (rule, action, priority, perform_at) {_WAITING}",
    "CREATE INDEX jobs_status_perform_at ON jobs (status, perform_at)",
    "CREATE INDEX jobs_perform_at ON jobs (perform_at)",
    "CREATE INDEX jobs_event_id ON jobs (event_id)",
    "CREATE INDEX jobs_rule_created_at ON jobs (rule, created_at)",
    "CREATE INDEX jobs_failure_of ON jobs (failure_of) WHERE failure_of IS NOT NULL",
    "CREATE INDEX jobs_finished ON jobs (updated_at)"
    " WHERE status IN ('succeeded', 'cancelled', 'dead')",
    "CREATE INDEX jobs_blocked ON jobs (id) WHERE status = 'blocked'",
    "CREATE INDEX jobs_running ON jobs (claimed_by) WHERE status = 'running'",
    # The unique (rule, scheduled instant) key: two daemons planning one occurrence make one job.
    "CREATE UNIQUE INDEX jobs_occurrence_key ON jobs (occurrence_key)"
    " WHERE occurrence_key IS NOT NULL",
    f"""CREATE TABLE attempts (
        job_id {_T} NOT NULL, number INTEGER NOT NULL, started_at BIGINT NOT NULL,
        ended_at BIGINT, outcome {_T}, error TEXT, output TEXT, stderr TEXT,
        delayed_ms BIGINT, delayed_by TEXT, PRIMARY KEY (job_id, number))""",
    f"""CREATE TABLE rule_state (
        rule {_T} PRIMARY KEY, fingerprint {_T}, anchor BIGINT, next_fire BIGINT,
        last_fire BIGINT, updated_at BIGINT)""",
    f"""CREATE TABLE occurrences (
        rule {_T} NOT NULL, scheduled_for BIGINT NOT NULL, outcome {_T} NOT NULL, reason TEXT,
        job_id {_T}, note TEXT, recorded_at BIGINT NOT NULL, PRIMARY KEY (rule, scheduled_for))""",
    "CREATE INDEX occurrences_job_id ON occurrences (job_id)",
    "CREATE INDEX occurrences_recorded_at ON occurrences (recorded_at)",
    f"""CREATE TABLE rule_overrides (
        rule {_T} PRIMARY KEY, enabled INTEGER, disabled_at BIGINT, disabled_until BIGINT,
        priority INTEGER, rate_limit {_T}, concurrency INTEGER, updated_at BIGINT)""",
    f"""CREATE TABLE replays (
        event_id {_T} NOT NULL REFERENCES events(id) ON DELETE CASCADE, number INTEGER NOT NULL,
        replayed_at BIGINT NOT NULL, jobs INTEGER NOT NULL, PRIMARY KEY (event_id, number))""",
    f"""CREATE TABLE job_deps (
        parent {_T} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        child {_T} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        wait BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (parent, child))""",
    "CREATE INDEX job_deps_child ON job_deps (child)",
    f"""CREATE TABLE job_keys (
        job_id {_T} NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, rule {_T} NOT NULL,
        key {_T} NOT NULL, value {_T} NOT NULL, PRIMARY KEY (job_id, key))""",
    "CREATE INDEX job_keys_match ON job_keys (rule, key, value)",
    # DOUBLE PRECISION: SQLite's REAL is 8 bytes; PostgreSQL's REAL (4) would round tokens.
    f"""CREATE TABLE rate_buckets (
        key {_T} PRIMARY KEY, tokens DOUBLE PRECISION, updated_at BIGINT NOT NULL,
        held_at BIGINT)""",
    # One row per daemon sharing the database: who it is and when it last beat (server time).
    f"""CREATE TABLE daemons (
        id {_T} PRIMARY KEY, host {_T} NOT NULL, pid INTEGER NOT NULL,
        started_at TIMESTAMPTZ NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL,
        fingerprint {_T})""",
]

MIGRATIONS: list[list[str]] = [_V1]
SCHEMA_VERSION = len(MIGRATIONS)
# pg_advisory_xact_lock(MIGRATION_LOCK, hashtext(schema)): one migrating daemon per schema.
MIGRATION_LOCK = 0x7100


def migrate(execute: Callable[..., Any], transaction: Callable[[], Any], where: str) -> int:
    """Bring the schema up to SCHEMA_VERSION in place; return the version found before.

    `execute(sql, args)` runs a statement and returns its rows; `transaction()` is a context
    manager around one transaction on the same connection.
    """
    with transaction():
        execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (MIGRATION_LOCK,))
        execute("CREATE TABLE IF NOT EXISTS timeos_schema (version INTEGER NOT NULL)")
        rows = execute("SELECT version FROM timeos_schema", ())
        if not rows:
            execute("INSERT INTO timeos_schema (version) VALUES (0)", ())
        found = int(rows[0][0]) if rows else 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: database schema version {found} is newer than this timeosd supports"
            f" ({SCHEMA_VERSION}); upgrade timeos"
        )
    for version in range(found, SCHEMA_VERSION):
        with transaction():
            execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (MIGRATION_LOCK,)
            )
            (current,) = execute("SELECT version FROM timeos_schema", ())[0]
            if current != version:  # another daemon migrated meanwhile
                continue
            try:
                for statement in MIGRATIONS[version]:
                    execute(statement, ())
            except BaseException as exc:
                exc.add_note(f"migration to schema {version + 1} failed")
                raise
            execute("UPDATE timeos_schema SET version = %s", (version + 1,))
    return found
