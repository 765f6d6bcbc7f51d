"""Retention and upkeep queries of the SQLite store: pruning in batches, dry-run counts, VACUUM,
and the overdue-job probe health reads.

The cutoffs come from engine.prune_plan; this module only finds the rows and deletes them, never
an event a waiting or running job still needs, nor a dead job a waiting notification reports.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from timeos.engine import Cutoff, PrunePlan
from timeos.model import PruneCounts
from timeos.store.sqlite.connection import Connection, translated
from timeos.timefmt import from_micros, to_micros

# jobs_finished's WHERE clause, verbatim: SQLite uses a partial index only for a query that
# repeats its condition.
_FINISHED = "status IN ('succeeded', 'cancelled', 'dead')"
_LIVE = "('pending', 'retrying', 'running', 'blocked')"
_NOT_REPORTED = (
    f"NOT EXISTS (SELECT 1 FROM jobs AS w WHERE w.failure_of = jobs.id AND w.status IN {_LIVE})"
)
# Dead jobs count as needing their event too: `dlq retry` may send them back to run.
_EVENT_UNNEEDED = (
    "NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_id = events.id"
    " AND jobs.status IN ('pending', 'retrying', 'running', 'blocked', 'dead'))"
)
# A job a dead parent's end cancelled (or its cascade's, transitively) comes back with `dlq retry`
# of that parent (deps.py): it stays while its parent does. Once the dead job is deleted or pruned,
# its edges go with it and the chain is pruned after it, one generation per pass.
_NOT_REVIVABLE = (
    "NOT EXISTS (SELECT 1 FROM job_deps AS d JOIN jobs AS p ON p.id = d.parent"
    " WHERE d.child = jobs.id AND jobs.last_error = 'parent job ' || p.id || ' ended ' || p.status"
    " AND (p.status = 'dead' OR p.last_error LIKE 'parent job % ended %'))"
)
_ORPHAN = "(job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = occurrences.job_id))"


# The planner would otherwise walk (status, perform_at) and sort; the oldest finished rows first
# is exactly the partial index's order.
_BY_AGE = "INDEXED BY jobs_finished"


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _rule_filter(cut: Cutoff) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if cut.rules is not None:
        clauses.append(f"rule IN ({_marks(cut.rules)})")
        args += cut.rules
    if cut.except_rules:
        clauses.append(f"rule NOT IN ({_marks(cut.except_rules)})")
        args += cut.except_rules
    return clauses, args


def _jobs_where(cut: Cutoff) -> tuple[str, list[Any]]:
    statuses = [str(s) for s in cut.statuses]
    clauses = [_FINISHED, f"status IN ({_marks(statuses)})", "updated_at < ?"]
    args: list[Any] = [*statuses, to_micros(cut.before)]
    more, more_args = _rule_filter(cut)
    return " AND ".join([*clauses, *more, _NOT_REPORTED, _NOT_REVIVABLE]), [*args, *more_args]


def _orphans_where(cut: Cutoff) -> tuple[str, list[Any]]:
    more, more_args = _rule_filter(cut)
    return " AND ".join([_ORPHAN, "recorded_at < ?", *more]), [to_micros(cut.before), *more_args]


class Pruning(Connection):
    """Retention and upkeep on top of the connection (SqliteStore inherits these)."""

    def prune_batch(self, plan: PrunePlan, limit: int) -> tuple[PruneCounts, bool]:
        """Remove up to `limit` rows (jobs, then jobless occurrences, then events) in one
        transaction, with the attempts and occurrences of those jobs; return the counts and
        whether more may be left."""
        left = limit
        with self._tx() as conn:
            ids: list[str] = []
            for cut in plan.jobs:
                if left <= 0:
                    break
                where, args = _jobs_where(cut)
                rows = conn.execute(
                    f"SELECT id FROM jobs {_BY_AGE} WHERE {where} ORDER BY updated_at LIMIT ?",
                    (*args, left),
                ).fetchall()
                ids += [r[0] for r in rows]
                left -= len(rows)
            attempts = occurrences = events = 0
            for start in range(0, len(ids), 500):  # under SQLite's bound-variable limit
                part = ids[start : start + 500]
                marks = _marks(part)
                attempts += conn.execute(
                    f"DELETE FROM attempts WHERE job_id IN ({marks})", part
                ).rowcount
                occurrences += conn.execute(
                    f"DELETE FROM occurrences WHERE job_id IN ({marks})", part
                ).rowcount
                conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})", part)
            for cut in plan.occurrences:
                if left <= 0:
                    break
                where, args = _orphans_where(cut)
                gone = conn.execute(
                    "DELETE FROM occurrences WHERE rowid IN"
                    f" (SELECT rowid FROM occurrences WHERE {where} LIMIT ?)",
                    (*args, left),
                ).rowcount
                occurrences += gone
                left -= gone
            if plan.events_before is not None and left > 0:
                events = conn.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at < ?"
                    f" AND {_EVENT_UNNEEDED} ORDER BY received_at LIMIT ?)",
                    (to_micros(plan.events_before), left),
                ).rowcount
                left -= events
        return PruneCounts(events, len(ids), attempts, occurrences), left <= 0

    def count_prunable(self, plan: PrunePlan) -> PruneCounts:
        """What prune_batch would remove, in all (a dry run)."""
        jobs = attempts = occurrences = events = 0
        removed: list[str] = []  # the jobs this plan removes, as subqueries (with their args)
        removed_args: list[Any] = []
        for cut in plan.jobs:
            where, args = _jobs_where(cut)
            removed.append(f"jobs.id IN (SELECT id FROM jobs {_BY_AGE} WHERE {where})")
            removed_args += args
            jobs += self._count(f"SELECT COUNT(*) FROM jobs {_BY_AGE} WHERE {where}", args)
            chosen = f"SELECT id FROM jobs {_BY_AGE} WHERE {where}"
            attempts += self._count(
                f"SELECT COUNT(*) FROM attempts WHERE job_id IN ({chosen})", args
            )
            occurrences += self._count(
                f"SELECT COUNT(*) FROM occurrences WHERE job_id IN ({chosen})", args
            )
        for cut in plan.occurrences:
            where, args = _orphans_where(cut)
            occurrences += self._count(f"SELECT COUNT(*) FROM occurrences WHERE {where}", args)
        if plan.events_before is not None:
            # prune_batch removes the jobs first, so a dead job the plan removes no longer keeps
            # its event: count as it will find them (a review saw 4 counted, 7 removed).
            kept_dead = f" AND NOT ({' OR '.join(removed)})" if removed else ""
            unneeded = (
                "NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.event_id = events.id AND"
                " (jobs.status IN ('pending', 'retrying', 'running', 'blocked')"
                f" OR (jobs.status = 'dead'{kept_dead})))"
            )
            events = self._count(
                f"SELECT COUNT(*) FROM events WHERE received_at < ? AND {unneeded}",
                [to_micros(plan.events_before), *removed_args],
            )
        return PruneCounts(events, jobs, attempts, occurrences)

    def _count(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._read(sql, args)[0][0])

    def vacuum(self) -> None:
        """Rewrite the database file to return freed pages to the file system.

        Runs on a connection of its own, so callers may run it in a thread; meanwhile writes on
        the main connection wait for it (up to busy_timeout each).
        """
        if self.path == ":memory:":
            with translated(f"{self.path}: VACUUM failed"):
                self.conn.execute("VACUUM")
            return
        with translated(f"{self.path}: VACUUM failed"):
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout=5000")
                conn.execute("VACUUM")
            finally:
                conn.close()

    def oldest_overdue(self, now: datetime) -> datetime | None:
        """When the longest-overdue waiting job was due (None: nothing waiting is due)."""
        rows = self._read(
            "SELECT MIN(perform_at) FROM jobs INDEXED BY jobs_wake"
            " WHERE status IN ('pending', 'retrying') AND perform_at <= ?",
            (to_micros(now),),
        )
        value = rows[0][0] if rows else None
        return from_micros(value) if value is not None else None

    def file_bytes(self) -> int:
        """Size of the database file (without its WAL), for retention figures."""
        rows = self._read("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size")
        return int(rows[0][0])
