"""The SQLite schema and its versioned migrations, created and inspected with sqlite-utils.

`PRAGMA user_version` holds the schema version; a newer daemon migrates an older file in place,
each step in its own transaction. Instants are INTEGER microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from timeos.errors import StoreError

if TYPE_CHECKING:
    import sqlite_utils


def _v1(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "id": str,
            "type": str,
            "payload": str,
            "payload_hash": str,
            "occurred_at": int,
            "received_at": int,
            "idempotency_key": str,
        },
        pk="id",
        not_null={"type", "payload", "payload_hash", "occurred_at", "received_at"},
    )
    db.table("events").create_index(["idempotency_key"], unique=True)
    db.table("events").create_index(["type", "id"])
    db.table("jobs").create(
        {
            "id": str,
            "rule": str,
            "action": str,
            "event_id": str,
            "status": str,
            "priority": int,
            "perform_at": int,
            "attempts": int,
            "max_attempts": int,
            "payload": str,
            "last_error": str,
            "created_at": int,
            "updated_at": int,
            "scheduled_for": int,
            "occurrence_key": str,
        },
        pk="id",
        not_null={
            "rule",
            "action",
            "status",
            "priority",
            "perform_at",
            "attempts",
            "max_attempts",
            "payload",
            "created_at",
            "updated_at",
        },
        defaults={"attempts": 0},
    )
    # The claim index: partial, so it holds only waiting jobs, ordered the way they are claimed.
    # A plain (status, perform_at) index would make ORDER BY priority sort every due row.
    db.execute(
        "CREATE INDEX jobs_claim ON jobs(priority DESC, perform_at)"
        " WHERE status IN ('pending', 'retrying')"
    )
    db.execute("CREATE INDEX jobs_wake ON jobs(perform_at) WHERE status IN ('pending', 'retrying')")
    db.table("jobs").create_index(["status", "perform_at"])
    db.table("jobs").create_index(["perform_at"])
    db.table("jobs").create_index(["rule", "perform_at"])
    db.table("jobs").create_index(["event_id"])
    db.table("jobs").create_index(["occurrence_key"], unique=True)
    db.table("attempts").create(
        {
            "job_id": str,
            "number": int,
            "started_at": int,
            "ended_at": int,
            "outcome": str,
            "error": str,
            "output": str,
        },
        pk=("job_id", "number"),
        not_null={"job_id", "number", "started_at"},
    )
    # Time-based rules: where each rule's schedule stands, and a record of every occurrence.
    db.table("rule_state").create(
        {
            "rule": str,
            "fingerprint": str,
            "anchor": int,
            "next_fire": int,
            "last_fire": int,
            "updated_at": int,
        },
        pk="rule",
    )
    db.table("occurrences").create(
        {
            "rule": str,
            "scheduled_for": int,
            "outcome": str,
            "reason": str,
            "job_id": str,
            "note": str,
            "recorded_at": int,
        },
        pk=("rule", "scheduled_for"),
        not_null={"rule", "scheduled_for", "outcome", "recorded_at"},
    )


def _v2(db: sqlite_utils.Database) -> None:
    # The attempt number backoff doubles from: renewed by `dlq retry`, moved on by attempts a
    # graceful shutdown did not charge. Stored, because the rule's policy may change on reload.
    db.table("jobs").add_column("backoff_base", int, not_null_default=0)


def _v3(db: sqlite_utils.Database) -> None:
    # What planning could not honour for a job (a payload's time zone that is not a zone), so
    # `timeos jobs show` can say why the job runs when it does.
    db.table("jobs").add_column("note", str)


def _v4(db: sqlite_utils.Database) -> None:
    # Failure notifications (on_failure): the dead job a notification job reports. Retention
    # keeps a dead job while a waiting notification of it exists, hence the partial index.
    db.table("jobs").add_column("failure_of", str)
    db.execute("CREATE INDEX jobs_failure_of ON jobs(failure_of) WHERE failure_of IS NOT NULL")
    # Retention walks finished jobs oldest first; partial, so claims and retries (which update
    # updated_at of waiting and running jobs) do not pay for it. Queries repeat its WHERE term
    # verbatim: that is how SQLite knows the partial index applies.
    db.execute(
        "CREATE INDEX jobs_finished ON jobs(updated_at)"
        " WHERE status IN ('succeeded', 'cancelled', 'dead')"
    )
    db.table("events").create_index(["received_at"])
    db.table("occurrences").create_index(["job_id"])
    db.table("occurrences").create_index(["recorded_at"])


def _v5(db: sqlite_utils.Database) -> None:
    # A command's standard error, stored beside its stdout (`timeos jobs output --stderr`).
    db.table("attempts").add_column("stderr", str)


def _v6(db: sqlite_utils.Database) -> None:
    # Runtime rule control (`timeos rules disable/enable/set/reset`): one row of overrides per
    # rule, kept across restarts and reloads (and while the rule is out of the files). enabled:
    # NULL = the file's value, 0 = disabled from disabled_at until disabled_until (NULL: until
    # enabled), 1 = enabled over the file. rate_limit and concurrency replace the file's values.
    db.table("rule_overrides").create(
        {
            "rule": str,
            "enabled": int,
            "disabled_at": int,
            "disabled_until": int,
            "priority": int,
            "rate_limit": str,
            "concurrency": int,
            "updated_at": int,
        },
        pk="rule",
    )
    # `rules list` LAST: a rule's newest job without reading all of its jobs.
    db.table("jobs").create_index(["rule", "created_at"])


def _v7(db: sqlite_utils.Database) -> None:
    # `timeos events replay`: one row per replay of an event (shown by `events show`). Rows go
    # with their event when retention removes it.
    db.execute(
        "CREATE TABLE replays (event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,"
        " number INTEGER NOT NULL, replayed_at INTEGER NOT NULL, jobs INTEGER NOT NULL,"
        " PRIMARY KEY (event_id, number))"
    )


def _v8(db: sqlite_utils.Database) -> None:
    """Chains and dependencies (perform lists, after:, the blocked status)."""
    # A job waits (status 'blocked') until each of its parents succeeded, then runs `wait`
    # microseconds after the parent's end. Edges go with either job when it is removed.
    db.execute(
        "CREATE TABLE job_deps (parent TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " child TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " wait INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (parent, child)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX job_deps_child ON job_deps(child)")
    # The parents' ids (JSON list), on the job row itself so every job read carries them.
    db.table("jobs").add_column("depends_on", str)
    # Crash recovery finds the blocked jobs without a scan.
    db.execute("CREATE INDEX jobs_blocked ON jobs(id) WHERE status = 'blocked'")


def _v9(db: sqlite_utils.Database) -> None:
    """Event-correlated cancellation (cancel_on) and debounce."""
    # The values a job of a correlating rule was created with, at the paths its rule's cancel_on
    # and debounce name (value: canonical JSON), so a later event finds its jobs by index, also
    # jobs created before a restart. Rows go with their job (retention, dlq delete).
    db.execute(
        "CREATE TABLE job_keys (job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " rule TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
        " PRIMARY KEY (job_id, key)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX job_keys_match ON job_keys(rule, key, value)")
    # The event whose cancel_on cancelled the job; a debounced job's latest possible run.
    db.table("jobs").add_column("cancelled_by", str)
    db.table("jobs").add_column("debounce_deadline", int)


def _v10(db: sqlite_utils.Database) -> None:
    """Rate limits and concurrency (token buckets that survive restarts)."""
    # One row per limit key (`rule:NAME`, `action:NAME`): the bucket's tokens as of updated_at
    # (NULL: no rate limit, only concurrency), and held_at, the last claim that found the limit
    # closed: a job due before it was held back, and its attempt records by how long.
    db.execute(
        "CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tokens REAL, updated_at INTEGER NOT NULL,"
        " held_at INTEGER)"
    )
    # A claim with a limit closed merges the other (rule, action) groups' due jobs, one index
    # range each, instead of walking past the closed group's backlog (store/sqlite/limits.py).
    db.execute(
        "CREATE INDEX jobs_limited ON jobs(rule, action, priority, perform_at)"
        " WHERE status IN ('pending', 'retrying')"
    )
    db.table("attempts").add_column("delayed_ms", int)
    db.table("attempts").add_column("delayed_by", str)


def _v11(db: sqlite_utils.Database) -> None:
    """Index audit (issue 8, emit-batch): every index a job insert maintains must serve a query.

    tests/test_query_plans.py holds the plans; docs/decisions.md ("Indexes of jobs and events")
    the audit and its figures.
    """
    # (rule, perform_at) only ordered `jobs list --rule R --json`; (rule, created_at) serves that
    # query too (an index seek to the rule's jobs, then a sort of them) and is the only index
    # `rules list` LAST, the overlap check and cancel by rule can use.
    db.execute("DROP INDEX idx_jobs_rule_perform_at")
    # Unique keys that most rows leave NULL: a partial index holds only the rows with a key, so
    # an event job (no occurrence key) and an event without an idempotency key add no entry.
    # NULLs never collided, and `key = ?` implies `key IS NOT NULL`: same constraint, same seeks.
    db.execute("DROP INDEX idx_jobs_occurrence_key")
    db.execute(
        "CREATE UNIQUE INDEX jobs_occurrence_key ON jobs(occurrence_key)"
        " WHERE occurrence_key IS NOT NULL"
    )
    db.execute("DROP INDEX idx_events_idempotency_key")
    db.execute(
        "CREATE UNIQUE INDEX events_idempotency_key ON events(idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _v8,
    _v9,
    _v10,
    _v11,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database up to SCHEMA_VERSION in place; return the version found before."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{where}: database schema version {found} is newer than this timeosd supports"
            f" ({SCHEMA_VERSION}); upgrade timeos"
        )
    if found == SCHEMA_VERSION:
        return found  # up to date: sqlite-utils (and click, pluggy, dateutil) stay unloaded
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](db)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # Errors rise to connection.translated(); say which step failed.
            exc.add_note(f"migration to schema {version + 1} failed")
            raise
    return found
