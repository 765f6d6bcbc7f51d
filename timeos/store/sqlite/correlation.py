"""Event correlation in the SQLite store: cancel_on's cancellations and debounce's replacements,
written in the transaction that stores the event, and the key index (job_keys) they look up.

What to do comes planned from rules/correlation.py; this module only finds and writes rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from timeos.model import EmitResult, Event, NewJob
from timeos.payload import compact_json
from timeos.rules.correlation import (
    CANCELLABLE,
    DEBOUNCEABLE,
    Correlation,
    DebounceStep,
    key_name,
    value_at,
)
from timeos.timefmt import to_micros

_CANCELLABLE = f"status IN ({', '.join(repr(s) for s in CANCELLABLE)})"
_DEBOUNCEABLE = f"status IN ({', '.join(repr(s) for s in DEBOUNCEABLE)})"


class Correlations:
    """cancel_on and debounce writes (mixed into SqliteStore)."""

    if TYPE_CHECKING:  # provided by SqliteStore

        def _insert_jobs(
            self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: datetime
        ) -> list[str | None]: ...

        def _tx(self) -> Any: ...

        def _settle(
            self, conn: sqlite3.Connection, parent: str, status: str, now: datetime
        ) -> None: ...

        def _store_event(
            self,
            conn: sqlite3.Connection,
            event: Event,
            jobs: Sequence[NewJob],
            now: datetime,
            correlation: Correlation | None = None,
        ) -> EmitResult: ...

    def emit_correlated(
        self, events: Sequence[Event], plans: Sequence[Correlation], now: datetime
    ) -> list[EmitResult]:
        """Store a batch's events one by one, in order, each with its correlation (so an event
        can cancel a job an earlier one of the batch created), all in one transaction."""
        with self._tx() as conn:
            return [
                self._store_event(conn, e, p.jobs, now, p)
                for e, p in zip(events, plans, strict=True)
            ]

    def _correlate(
        self, conn: sqlite3.Connection, plan: Correlation, now: datetime
    ) -> tuple[list[str], list[str], list[str]]:
        """Cancel what `plan` cancels, then create or debounce its jobs: (created, cancelled,
        debounced) job ids. Cancelling first: an event never cancels the jobs it creates."""
        stamp = to_micros(now)
        reason = f"cancelled by event {plan.event_id} ({plan.event_type}, cancel_on)"
        cancelled: list[str] = []
        for lookup in plan.lookups:
            rows = conn.execute(
                "UPDATE jobs SET status = 'cancelled', cancelled_by = ?, last_error = ?,"
                " updated_at = ? WHERE id IN (SELECT job_id FROM job_keys INDEXED BY"
                " job_keys_match WHERE rule = ? AND key = ? AND value = ?)"
                # `+status`: not an index term. Else SQLite walked every waiting job through
                # the status index, testing each id against the list (242 ms a lookup with
                # 90,000 waiting, against 0.02 ms by id; tests/test_query_plans.py).
                f" AND +{_CANCELLABLE} RETURNING id",
                (plan.event_id, reason, stamp, lookup.rule, lookup.key, lookup.value),
            ).fetchall()
            cancelled += [str(r[0]) for r in rows]
        for scan in plan.scans:
            # A CEL match cannot use the index: every waiting job of the rule is evaluated.
            waiting = conn.execute(
                f"SELECT id, payload FROM jobs WHERE rule = ? AND {_CANCELLABLE}", (scan.rule,)
            ).fetchall()
            chosen = [(str(i),) for i, payload in waiting if scan.matches(json.loads(payload))]
            conn.executemany(
                "UPDATE jobs SET status = 'cancelled', cancelled_by = ?, last_error = ?,"
                f" updated_at = ? WHERE id = ? AND {_CANCELLABLE}",
                [(plan.event_id, reason, stamp, i) for (i,) in chosen],
            )
            cancelled += [i for (i,) in chosen]
        for job_id in dict.fromkeys(cancelled):  # a cancelled job takes its blocked chain along
            self._settle(conn, job_id, "cancelled", now)
        debounced: list[str] = []
        # Which jobs to insert: a debounced one is not, nor are the jobs chained after it (its
        # waiting job's own chain stands). Chains link by position in the list, so the kept
        # jobs' `after` is recounted over the kept list.
        kept: list[int] = []
        position: dict[int, int] = {}
        # The event's keys per rule (every job of a rule from one event has the same payload).
        rule_keys = {job.rule: keys for job, keys in zip(plan.jobs, plan.keys, strict=True)}
        for n, (job, keys, step) in enumerate(
            zip(plan.jobs, plan.keys, plan.debounce, strict=True)
        ):
            if job.after and (n - job.after) not in position:
                continue
            if step is not None:
                existing = self._debounce(conn, job, step, stamp)
                if existing is not None:
                    self._write_keys(conn, existing, job.rule, keys, replace=True)
                    self._carry(conn, existing, job, rule_keys, stamp)
                    debounced.append(existing)
                    continue
            position[n] = len(kept)
            kept.append(n)
        jobs = [
            replace(job, after=position[n] - position[n - job.after]) if job.after else job
            for n in kept
            for job in (plan.jobs[n],)
        ]
        ids = self._insert_jobs(conn, jobs, now)
        created: list[str] = []
        for n, made in zip(kept, ids, strict=True):
            if made is None:
                continue
            created.append(made)
            self._write_keys(conn, made, plan.jobs[n].rule, plan.keys[n])
            step = plan.debounce[n]
            if step is not None and step.deadline is not None:
                conn.execute(
                    "UPDATE jobs SET debounce_deadline = ? WHERE id = ?",
                    (to_micros(step.deadline), made),
                )
        return created, list(dict.fromkeys(cancelled)), debounced

    def _debounce(
        self, conn: sqlite3.Connection, job: NewJob, step: DebounceStep, stamp: int
    ) -> str | None:
        """Give the waiting job of `job.rule` with the same key value `job`'s payload and event,
        due at `job.perform_at` but never after its deadline; its id, or None if there is none."""
        row = conn.execute(
            "SELECT k.job_id FROM job_keys AS k INDEXED BY job_keys_match"
            " JOIN jobs AS j ON j.id = k.job_id"
            f" WHERE k.rule = ? AND k.key = ? AND k.value = ? AND j.{_DEBOUNCEABLE}"
            # an event's job: a manual run (`rules run`, no event) runs now, never pushed back
            " AND j.event_id IS NOT NULL ORDER BY j.created_at DESC LIMIT 1",
            (job.rule, step.key, step.value),
        ).fetchone()
        if row is None:
            return None
        # Capped at the deadline, and never earlier than it was: an event that occurred before
        # the job's window (a late delivery with an old occurred_at) must not pull it forward.
        at = to_micros(job.perform_at)
        conn.execute(
            "UPDATE jobs SET payload = ?, event_id = ?, updated_at = ?, perform_at ="
            " MAX(perform_at, CASE WHEN debounce_deadline IS NOT NULL AND debounce_deadline < ?"
            " THEN debounce_deadline ELSE ? END) WHERE id = ?",
            (compact_json(job.payload), job.event_id, stamp, at, at, row[0]),
        )
        return str(row[0])

    def _carry(
        self,
        conn: sqlite3.Connection,
        head: str,
        job: NewJob,
        rule_keys: dict[str, tuple[tuple[str, str], ...]],
        stamp: int,
    ) -> None:
        """The blocked jobs chained after a debounced `head` (the rest of its perform list, the
        `after:` rules' jobs) that this event would have created again take its payload and
        event too, so the chain runs once, with the newest event, as the head does."""
        payload = compact_json(job.payload)
        todo = [head]
        while todo:
            children = conn.execute(
                "SELECT j.id, j.rule FROM job_deps AS d JOIN jobs AS j ON j.id = d.child"
                " WHERE d.parent = ? AND j.status = 'blocked'",
                (todo.pop(),),
            ).fetchall()
            for child, rule in children:
                if rule not in rule_keys:  # not planned for this event: its own event stands
                    continue
                conn.execute(
                    "UPDATE jobs SET payload = ?, event_id = ?, updated_at = ? WHERE id = ?",
                    (payload, job.event_id, stamp, child),
                )
                self._write_keys(conn, child, rule, rule_keys[rule], replace=True)
                todo.append(child)

    def _write_keys(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        rule: str,
        keys: Iterable[tuple[str, str]],
        replace: bool = False,
    ) -> None:
        if replace:  # a debounced job's keys follow the event it now carries
            conn.execute("DELETE FROM job_keys WHERE job_id = ?", (job_id,))
        conn.executemany(
            "INSERT OR REPLACE INTO job_keys (job_id, rule, key, value) VALUES (?, ?, ?, ?)",
            [(job_id, rule, key, value) for key, value in keys],
        )

    def insert_job_keys(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Store (job id, rule, key, value) index rows in one transaction (bench, backfills)."""
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO job_keys (job_id, rule, key, value) VALUES (?, ?, ?, ?)",
                rows,
            )

    def index_waiting(self, rule: str, paths: Sequence[Sequence[str]]) -> int:
        """Index the waiting jobs of `rule` at `paths` (a path a reload just gave the rule's
        cancel_on or debounce), so jobs created before it are found too; the rows written."""
        with self._tx() as conn:
            waiting = conn.execute(
                f"SELECT id, payload FROM jobs WHERE rule = ? AND {_CANCELLABLE}", (rule,)
            ).fetchall()
            rows = [
                (str(job_id), rule, key_name(path), value)
                for job_id, payload in waiting
                for origin in (json.loads(payload),)
                for path in paths
                if (value := value_at(origin, path)) is not None
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO job_keys (job_id, rule, key, value) VALUES (?, ?, ?, ?)",
                rows,
            )
        return len(rows)
