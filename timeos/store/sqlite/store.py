"""The SQLite implementation of the store protocol: events, jobs, attempts, rule schedule state.

The hot path (emit, claim, finish) is stdlib sqlite3 with cached prepared statements, in WAL mode;
schema.py owns creation and migrations; connection.py translates every sqlite3 error to StoreError.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from timeos.errors import IdempotencyConflict, InvalidState, NotFound, TimeOSError
from timeos.model import (
    ActionResult,
    Attempt,
    Claim,
    EmitResult,
    Event,
    Finished,
    Job,
    JobStatus,
    NewJob,
    Occurrence,
    OccurrenceOutcome,
    Outcome,
    RuleState,
    Verdict,
    new_ids,
    occurrence_key,
    payload_hash,
)
from timeos.rules.correlation import Correlation
from timeos.rules.limits import LimitsInForce
from timeos.store.sqlite.bulk import Bulk
from timeos.store.sqlite.connection import translated
from timeos.store.sqlite.correlation import Correlations
from timeos.store.sqlite.deps import depends_on, links
from timeos.store.sqlite.limits import Limited
from timeos.store.sqlite.overrides import RuleOverrides
from timeos.timefmt import from_micros, to_micros

_JOB_COLUMNS = (
    "id, rule, action, event_id, status, priority, perform_at, attempts, max_attempts, payload,"
    " last_error, created_at, updated_at, scheduled_for, occurrence_key, backoff_base, note,"
    " failure_of, depends_on, cancelled_by"
)
_WAITING = "status IN ('pending', 'retrying')"


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SqliteStore(Bulk, RuleOverrides, Limited, Correlations):
    """The embedded store (implements store.protocol.Store). One instance per process."""

    # ---- events -------------------------------------------------------------------------------

    def find_idempotent(self, key: str, event_type: str, payload: Mapping[str, Any]) -> str | None:
        """Event id already stored under `key` with this payload; raise if it had another."""
        with self._settled():  # never another thread's uncommitted event (an open batch)
            rows = self._read(
                "SELECT id, payload_hash FROM events WHERE idempotency_key = ?", (key,)
            )
        if not rows:
            return None
        event_id, stored_hash = rows[0]
        if stored_hash != payload_hash(event_type, payload):
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used by event {event_id}"
                " with a different type or payload; nothing was changed"
            )
        return str(event_id)

    def emit(
        self,
        event: Event,
        jobs: Sequence[NewJob],
        now: datetime,
        correlation: Correlation | None = None,
    ) -> EmitResult:
        """Store an event and the jobs it creates in one transaction (or find its duplicate);
        with a `correlation` (its jobs replace `jobs`), also its cancel_on and debounce."""
        with self._tx() as conn:
            return self._store_event(conn, event, jobs, now, correlation)

    def emit_group(
        self, items: Sequence[tuple[Event, Sequence[NewJob], datetime, Correlation | None]]
    ) -> list[EmitResult | TimeOSError]:
        """Store several independent emits in one transaction, each in a savepoint of its own:
        one that fails (an idempotency conflict, a constraint) is rolled back alone and its
        error takes its place in the results. Nothing is stored if the commit fails."""
        if len(items) == 1:  # alone in its transaction: no savepoint needed to undo it alone
            event, jobs, now, correlation = items[0]
            try:
                return [self.emit(event, jobs, now, correlation)]
            except TimeOSError as exc:
                return [exc]
        results: list[EmitResult | TimeOSError] = []
        with self._tx() as conn:
            for event, jobs, now, correlation in items:
                conn.execute("SAVEPOINT emit")
                try:
                    with translated(self.path):
                        result = self._store_event(conn, event, jobs, now, correlation)
                except TimeOSError as exc:
                    if not conn.in_transaction:  # SQLite gave up the whole transaction
                        raise
                    conn.execute("ROLLBACK TO emit")
                    results.append(exc)
                else:
                    results.append(result)
                conn.execute("RELEASE emit")
        return results

    def _store_event(
        self,
        conn: sqlite3.Connection,
        event: Event,
        jobs: Sequence[NewJob],
        now: datetime,
        correlation: Correlation | None = None,
    ) -> EmitResult:
        if event.idempotency_key is not None:
            existing = self.find_idempotent(event.idempotency_key, event.type, event.payload)
            if existing is not None:
                return EmitResult(existing, True, ())
        conn.execute(
            "INSERT INTO events (id, type, payload, payload_hash, occurred_at, received_at,"
            " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.type,
                _dumps(event.payload),
                payload_hash(event.type, event.payload),
                to_micros(event.occurred_at),
                to_micros(event.received_at),
                event.idempotency_key,
            ),
        )
        if correlation is not None:
            made, cancelled, debounced = self._correlate(conn, correlation, now)
            return EmitResult(event.id, False, tuple(made), tuple(cancelled), tuple(debounced))
        ids = self._insert_jobs(conn, jobs, now)
        return EmitResult(event.id, False, tuple(i for i in ids if i is not None))

    def _insert_jobs(
        self, conn: sqlite3.Connection, jobs: Sequence[NewJob], now: datetime
    ) -> list[str | None]:
        stamp = to_micros(now)
        ids: list[str | None] = []
        for index, (job_id, job) in enumerate(zip(new_ids(now, len(jobs)), jobs, strict=True)):
            if job.after and ids[index - job.after] is None:
                ids.append(None)  # its parent was not inserted (a duplicate occurrence)
                continue
            cur = conn.execute(
                "INSERT OR IGNORE INTO jobs (id, rule, action, event_id, status, priority,"
                " perform_at, attempts, max_attempts, payload, created_at, updated_at,"
                " scheduled_for, occurrence_key, note, failure_of, depends_on)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    job.rule,
                    job.action,
                    job.event_id,
                    "blocked" if job.after else "pending",
                    job.priority,
                    to_micros(job.perform_at),
                    job.max_attempts,
                    _dumps(job.payload),
                    stamp,
                    stamp,
                    to_micros(job.scheduled_for) if job.scheduled_for else None,
                    job.occurrence_key,
                    job.note,
                    job.failure_of,
                    depends_on(job, index, ids),
                ),
            )
            # An occurrence key already present means another path created this job: keep one.
            ids.append(job_id if cur.rowcount == 1 else None)
        self._link(conn, links(jobs, ids))
        return ids

    def get_event(self, event_id: str) -> Event:
        """Return one event or raise NotFound."""
        rows = self._read(
            "SELECT id, type, payload, occurred_at, received_at, idempotency_key"
            " FROM events WHERE id = ?",
            (event_id,),
        )
        if not rows:
            raise NotFound(f"no event with id {event_id!r}")
        return _event(rows[0])

    def list_events(
        self,
        *,
        event_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Events, newest first; `since` (inclusive) and `until` (exclusive) bound received_at."""
        where, args = _event_filter(event_type, since, until)
        rows = self._read(
            "SELECT id, type, payload, occurred_at, received_at, idempotency_key FROM events"
            f" {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_event(r) for r in rows]

    def count_events(
        self,
        *,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many events list_events could return (the total behind a page)."""
        where, args = _event_filter(event_type, since, until)
        return int(self._read(f"SELECT COUNT(*) FROM events {where}", args)[0][0])

    # ---- jobs ---------------------------------------------------------------------------------

    def insert_jobs(self, jobs: Sequence[NewJob], now: datetime) -> list[str | None]:
        """Insert jobs outside an emit (time-based occurrences); None where the key existed."""
        with self._tx() as conn:
            return self._insert_jobs(conn, jobs, now)

    def get_job(self, job_id: str) -> Job:
        """Return one job or raise NotFound."""
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"no job with id {job_id!r}")
        return _job(rows[0])

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        rule: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        waiting_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every given filter, by perform_at then id.

        `waiting_first`: running, then waiting jobs next due first, then finished jobs newest
        (last updated) first: what someone looking at the queue wants to see on top.
        """
        where, args = _job_filter(status, rule, event_id)
        order = "perform_at, id"
        if waiting_first:
            order = (
                "CASE status WHEN 'running' THEN 0 WHEN 'pending' THEN 1 WHEN 'retrying' THEN 1"
                " WHEN 'blocked' THEN 2 ELSE 3 END,"
                " CASE WHEN status IN ('running', 'pending', 'retrying', 'blocked')"
                " THEN perform_at ELSE -updated_at END, id"
            )
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_job(r) for r in rows]

    def count_jobs(
        self,
        *,
        status: JobStatus | None = None,
        rule: str | None = None,
        event_id: str | None = None,
    ) -> int:
        """How many jobs match every given filter (the total behind a page of list_jobs)."""
        where, args = _job_filter(status, rule, event_id)
        return int(self._read(f"SELECT COUNT(*) FROM jobs {where}", args)[0][0])

    def attempts(self, job_id: str) -> list[Attempt]:
        """A job's attempt history, oldest first."""
        rows = self._read(
            "SELECT job_id, number, started_at, ended_at, outcome, error, output, stderr,"
            " delayed_ms, delayed_by FROM attempts"
            " WHERE job_id = ? ORDER BY number",
            (job_id,),
        )
        return [
            Attempt(
                job_id=r[0],
                number=r[1],
                started_at=from_micros(r[2]),
                ended_at=from_micros(r[3]) if r[3] is not None else None,
                outcome=Outcome(r[4]) if r[4] else None,
                error=r[5],
                output=r[6],
                stderr=r[7],
                delayed_ms=r[8],
                delayed_by=r[9],
            )
            for r in rows
        ]

    def next_due_at(
        self,
        blocked: Collection[str] = (),
        limits: LimitsInForce | None = None,
        now: datetime | None = None,
    ) -> datetime | None:
        """When the earliest waiting job not of a `blocked` rule is due (None: nothing waits).

        With `limits` (after a claim at `now`): when the next job not held back by a limit is
        due, or a held-back group gets its next token, whichever is first.
        """
        if limits and now is not None:
            return self._next_due_limited(blocked, limits, now)
        rows = self._read(
            f"SELECT perform_at FROM jobs INDEXED BY jobs_wake WHERE {_WAITING}"
            f"{_not_in(blocked)} ORDER BY perform_at LIMIT 1",
            list(blocked),
        )
        value = rows[0][0] if rows else None
        return from_micros(value) if value is not None else None

    def claim_due(
        self,
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> list[Job]:
        """Mark up to `limit` due jobs running (highest priority, then earliest) and return them.

        Jobs of `blocked` rules are passed over; of an `exclusive` rule, at most one is taken
        (callers pass the exclusive rules that already have a job running as `blocked`).
        `limits` (rules/limits.py): jobs whose rule or action has no token or no free slot wait,
        in the same transaction that takes the tokens (limits.py); without, the plain claim.
        """
        if limit <= 0:
            return []
        if limits:
            return self._claim_limited(now, limit, blocked, exclusive, limits, _JOB_COLUMNS, _job)
        stamp = to_micros(now)
        claimed: list[Job] = []
        with self._tx() as conn:
            # Loose index scan over the distinct priorities of waiting jobs (each step one index
            # seek), then per priority the earliest due rows: fast with millions of future rows.
            priority = conn.execute(
                f"SELECT MAX(priority) FROM jobs INDEXED BY jobs_claim WHERE {_WAITING}"
            ).fetchone()[0]
            skip = set(blocked)
            while priority is not None and len(claimed) < limit:
                rows = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_claim WHERE {_WAITING}"
                    f" AND priority = ? AND perform_at <= ?{_not_in(skip)}"
                    " ORDER BY perform_at LIMIT ?",
                    (priority, stamp, *skip, limit - len(claimed)),
                ).fetchall()
                again = False
                started: list[tuple[int, int, str]] = []
                for row in rows:
                    rule, attempt = row[1], row[7] + 1
                    if rule in skip:
                        # One run of an exclusive rule at a time: query this priority again
                        # without it, so its backlog cannot crowd out other rules' jobs.
                        again = True
                        continue
                    if rule in exclusive:
                        skip.add(rule)
                    started.append((attempt, stamp, row[0]))
                    # The row as it now is: running, its attempt counted (see _JOB_COLUMNS).
                    claimed.append(_job((*row[:4], "running", *row[5:7], attempt, *row[8:])))
                # One statement each for the batch, before this priority may be queried again.
                conn.executemany(
                    "UPDATE jobs SET status = 'running', attempts = ?, updated_at = ? WHERE id = ?",
                    started,
                )
                conn.executemany(
                    "INSERT INTO attempts (number, started_at, job_id) VALUES (?, ?, ?)", started
                )
                if again and len(claimed) < limit:
                    continue
                priority = conn.execute(
                    f"SELECT MAX(priority) FROM jobs INDEXED BY jobs_claim WHERE {_WAITING}"
                    " AND priority < ?",
                    (priority,),
                ).fetchone()[0]
        return claimed

    def finish(self, job: Job, result: ActionResult, now: datetime, verdict: Verdict) -> Job:
        """Record how attempt `job.attempts` ended and write the verdict on the job."""
        with self._tx() as conn:
            if not self._finish(conn, Finished(job, result, now, verdict)):
                raise InvalidState(
                    f"job {job.id}: attempt {job.attempts} is no longer the running attempt"
                )
        return self.get_job(job.id)

    def record_and_claim(
        self,
        finished: Sequence[Finished],
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> Claim:
        """Write `finished` attempts' ends, then claim as claim_due does, in one transaction.

        An attempt that is no longer the running one is left unwritten (`Claim.written` says
        so), as finish() refuses it; the others and the claim still go through.
        """
        with self._tx() as conn:
            written = [self._finish(conn, f) for f in finished]
            jobs = self.claim_due(now, limit, blocked, exclusive, limits)  # joins this transaction
            ids = sorted({j.event_id for j in jobs if j.event_id is not None})
            types: dict[str, str] = {}
            if ids:  # the actions' context names the event type: one query, not one per job
                types = dict(
                    conn.execute(
                        f"SELECT id, type FROM events WHERE id IN ({', '.join('?' * len(ids))})",
                        ids,
                    ).fetchall()
                )
        return Claim(written, jobs, types)

    def _finish(self, conn: sqlite3.Connection, done: Finished) -> bool:
        """Write one attempt's end; False (nothing written) if it is not the running attempt."""
        job, result, verdict = done.job, done.result, done.verdict
        stamp = to_micros(done.at)
        error = result.error if result.outcome is not Outcome.SUCCEEDED else None
        # Only the attempt that is running may settle the job: a stale attempt's result
        # (however it came about) never overwrites a newer one's.
        cur = conn.execute(
            "UPDATE jobs SET status = ?, perform_at = ?, last_error ="
            " CASE WHEN ? = 'succeeded' THEN NULL ELSE COALESCE(?, last_error) END,"
            " max_attempts = ?, backoff_base = ?, updated_at = ?"
            " WHERE id = ? AND status = 'running' AND attempts = ?",
            (
                str(verdict.status),
                to_micros(verdict.perform_at),
                str(verdict.status),
                error,
                verdict.max_attempts,
                verdict.backoff_base,
                stamp,
                job.id,
                job.attempts,
            ),
        )
        if cur.rowcount != 1:
            return False
        conn.execute(
            "UPDATE attempts SET ended_at = ?, outcome = ?, error = ?, output = ?, stderr = ?"
            " WHERE job_id = ? AND number = ?",
            (stamp, str(result.outcome), error, result.output, result.stderr, job.id, job.attempts),
        )
        if verdict.notice is not None:  # on_failure: the notification job, atomically
            self._insert_jobs(conn, [verdict.notice], done.at)
        self._settle(conn, job.id, str(verdict.status), done.at)  # its chain, atomically
        return True

    def running_jobs(self) -> list[Job]:
        """Jobs marked running: at start-up, these were interrupted by a dead daemon."""
        rows = self._read(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'running'")
        return [_job(r) for r in rows]

    def cancel(self, job_id: str, now: datetime) -> Job:
        """Cancel a waiting job; raise InvalidState if it already ran or is running."""
        with self._tx() as conn:
            job = self.get_job(job_id)
            if job.status not in (JobStatus.PENDING, JobStatus.RETRYING, JobStatus.BLOCKED):
                raise InvalidState(
                    f"job {job_id} is {job.status}; only waiting jobs can be cancelled"
                )
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', updated_at = ? WHERE id = ?",
                (to_micros(now), job_id),
            )
            self._settle(conn, job_id, "cancelled", now)
        return self.get_job(job_id)

    def cancel_many(
        self, job_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, bool, str | None, str | None]]:
        """Cancel the waiting jobs among `job_ids` in one transaction.

        Returns (id, cancelled, status now, error) per id, in order; one bad id does not stop
        the others. Callers bound the list (the API takes at most MAX_CANCEL_IDS per request).
        """
        stamp = to_micros(now)
        with self._tx() as conn:
            found: dict[str, str] = {}
            unique = list(dict.fromkeys(job_ids))
            for start in range(0, len(unique), 500):  # under SQLite's bound-variable limit
                part = unique[start : start + 500]
                marks = ", ".join("?" * len(part))
                rows = conn.execute(f"SELECT id, status FROM jobs WHERE id IN ({marks})", part)
                found.update((str(r[0]), str(r[1])) for r in rows)
            results: list[tuple[str, bool, str | None, str | None]] = []
            for job_id in job_ids:
                status = found.get(job_id)
                if status is None:
                    results.append((job_id, False, None, f"no job with id {job_id!r}"))
                elif status not in ("pending", "retrying", "blocked"):
                    error = f"job {job_id} is {status}; only waiting jobs can be cancelled"
                    results.append((job_id, False, status, error))
                else:
                    conn.execute(
                        "UPDATE jobs SET status = 'cancelled', updated_at = ? WHERE id = ?",
                        (stamp, job_id),
                    )
                    self._settle(conn, job_id, "cancelled", now)
                    found[job_id] = "cancelled"  # a repeated id is then "already cancelled"
                    results.append((job_id, True, "cancelled", None))
        return results

    def requeue_dead(self, job: Job, now: datetime, verdict: Verdict) -> Job:
        """Write a `dlq retry` verdict on a job that is still dead (else raise InvalidState)."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, perform_at = ?, max_attempts = ?, backoff_base = ?,"
                " updated_at = ? WHERE id = ? AND status = 'dead' AND attempts = ?",
                (
                    str(verdict.status),
                    to_micros(verdict.perform_at),
                    verdict.max_attempts,
                    verdict.backoff_base,
                    to_micros(now),
                    job.id,
                    job.attempts,
                ),
            )
            if cur.rowcount != 1:
                current = self.get_job(job.id)
                raise InvalidState(
                    f"job {job.id} is {current.status}, not in the dead letter queue"
                )
            self._revive(conn, job.id, now)  # the children its death cancelled wait again
        return self.get_job(job.id)

    def delete_dead(self, job_id: str) -> None:
        """Delete a dead job and its attempts for good."""
        with self._tx() as conn:
            job = self.get_job(job_id)
            if job.status is not JobStatus.DEAD:
                raise InvalidState(f"job {job_id} is {job.status}, not in the dead letter queue")
            conn.execute("DELETE FROM attempts WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def counts_by_status(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zero included)."""
        counts = {str(s): 0 for s in JobStatus}
        for status, count in self._read("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            counts[status] = count
        return counts

    def ping(self) -> None:
        """Raise StoreError when the database does not answer."""
        self._read("SELECT 1")

    def rule_activity(self, rule: str) -> tuple[bool, bool]:
        """(a job of `rule` is running, one is pending or retrying): the overlap check."""
        rows = self._read(
            "SELECT DISTINCT status FROM jobs WHERE rule = ?"
            " AND status IN ('pending', 'retrying', 'running')",
            (rule,),
        )
        found = {r[0] for r in rows}
        return "running" in found, bool(found & {"pending", "retrying"})

    # ---- time-based rule state ----------------------------------------------------------------

    def rule_states(self) -> dict[str, RuleState]:
        """Stored schedule state of every time-based rule ever seen."""
        rows = self._read("SELECT rule, fingerprint, anchor, next_fire, last_fire FROM rule_state")
        return {
            r[0]: RuleState(
                r[0],
                r[1],
                from_micros(r[2]) if r[2] is not None else None,
                from_micros(r[3]) if r[3] is not None else None,
                from_micros(r[4]) if r[4] is not None else None,
            )
            for r in rows
        }

    def save_rule_state(
        self,
        state: RuleState,
        now: datetime,
        occurrences: Sequence[Occurrence] = (),
        jobs: Sequence[NewJob] = (),
    ) -> list[str | None]:
        """Advance a rule's schedule, record its occurrences and insert their jobs, atomically."""
        with self._tx() as conn:
            ids = self._insert_jobs(conn, jobs, now)
            by_key = {j.occurrence_key: i for j, i in zip(jobs, ids, strict=True)}
            for occ in occurrences:
                job_id = occ.job_id
                if occ.outcome is OccurrenceOutcome.FIRED and job_id is None:
                    job_id = by_key.get(occurrence_key(occ.rule, occ.scheduled_for))
                conn.execute(
                    "INSERT OR IGNORE INTO occurrences (rule, scheduled_for, outcome, reason,"
                    " job_id, note, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        occ.rule,
                        to_micros(occ.scheduled_for),
                        str(occ.outcome),
                        occ.reason,
                        job_id,
                        occ.note,
                        to_micros(occ.recorded_at),
                    ),
                )
            conn.execute(
                "INSERT INTO rule_state (rule, fingerprint, anchor, next_fire, last_fire,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(rule) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, anchor = excluded.anchor,"
                " next_fire = excluded.next_fire, last_fire = excluded.last_fire,"
                " updated_at = excluded.updated_at",
                (
                    state.rule,
                    state.fingerprint,
                    _opt_micros(state.anchor),
                    _opt_micros(state.next_fire),
                    _opt_micros(state.last_fire),
                    to_micros(now),
                ),
            )
        return ids

    def record_run(
        self,
        job: NewJob,
        occurrence: Occurrence | None,
        now: datetime,
        steps: Sequence[NewJob] = (),
    ) -> str:
        """Insert a manual run's job, its perform list's blocked `steps` and (time-based rules)
        its occurrence, atomically."""
        with self._tx() as conn:
            job_id = self._insert_jobs(conn, [job, *steps], now)[0]
            if job_id is None:
                raise InvalidState(f"rule {job.rule!r} was already run at this instant")
            if occurrence is not None:
                # INSERT OR IGNORE: a scheduled fire recorded at this very microsecond keeps its
                # row; the manual job exists either way.
                conn.execute(
                    "INSERT OR IGNORE INTO occurrences (rule, scheduled_for, outcome, reason,"
                    " job_id, note, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        occurrence.rule,
                        to_micros(occurrence.scheduled_for),
                        str(occurrence.outcome),
                        occurrence.reason,
                        job_id,
                        occurrence.note,
                        to_micros(occurrence.recorded_at),
                    ),
                )
        return job_id

    def history(self, rule: str, limit: int = 50, offset: int = 0) -> list[Occurrence]:
        """A rule's recorded occurrences, newest first."""
        rows = self._read(
            "SELECT rule, scheduled_for, outcome, reason, job_id, note, recorded_at"
            " FROM occurrences WHERE rule = ? ORDER BY scheduled_for DESC LIMIT ? OFFSET ?",
            (rule, limit, offset),
        )
        return [
            Occurrence(
                r[0],
                from_micros(r[1]),
                OccurrenceOutcome(r[2]),
                r[3],
                r[4],
                r[5],
                from_micros(r[6]),
            )
            for r in rows
        ]

    def count_history(self, rule: str) -> int:
        """How many occurrences of `rule` are recorded."""
        rows = self._read("SELECT COUNT(*) FROM occurrences WHERE rule = ?", (rule,))
        return int(rows[0][0])


def _event_filter(
    event_type: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("type = ?", event_type),
        ("received_at >= ?", _opt_micros(since)),
        ("received_at < ?", _opt_micros(until)),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def _job_filter(
    status: JobStatus | None, rule: str | None, event_id: str | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for column, value in (("status", status), ("rule", rule), ("event_id", event_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(str(value))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


def _not_in(names: Collection[str]) -> str:
    return f" AND rule NOT IN ({', '.join('?' * len(names))})" if names else ""


def _opt_micros(value: datetime | None) -> int | None:
    return to_micros(value) if value is not None else None


def _event(row: tuple[Any, ...]) -> Event:
    return Event(
        id=row[0],
        type=row[1],
        payload=json.loads(row[2]),
        occurred_at=from_micros(row[3]),
        received_at=from_micros(row[4]),
        idempotency_key=row[5],
    )


def _job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        rule=row[1],
        action=row[2],
        event_id=row[3],
        status=JobStatus(row[4]),
        priority=row[5],
        perform_at=from_micros(row[6]),
        attempts=row[7],
        max_attempts=row[8],
        payload=json.loads(row[9]),
        last_error=row[10],
        created_at=from_micros(row[11]),
        updated_at=from_micros(row[12]),
        scheduled_for=from_micros(row[13]) if row[13] is not None else None,
        occurrence_key=row[14],
        backoff_base=row[15],
        note=row[16],
        failure_of=row[17],
        depends_on=tuple(json.loads(row[18])) if row[18] else (),
        cancelled_by=row[19],
    )
