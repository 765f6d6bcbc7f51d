"""Bulk writes of the SQLite store (issue 8, flow control): a batch of events in one
transaction, cancelling every waiting job of a rule, dead letters by the hundred, replays.

Decisions come from the engine and the service; this module only writes them, with executemany
where the rows are many.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from timeos.errors import IdempotencyConflict, NotFound
from timeos.model import EmitResult, Event, Job, NewJob, Replay, Verdict, new_id, payload_hash
from timeos.store.sqlite.pruning import Pruning
from timeos.timefmt import from_micros, to_micros

_CHUNK = 500  # bound variables per IN (...) list, under SQLite's limit
_INSERT_JOB = (
    "INSERT INTO jobs (id, rule, action, event_id, status, priority, perform_at, attempts,"
    " max_attempts, payload, created_at, updated_at, scheduled_for, occurrence_key, note,"
    " failure_of) VALUES (?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class Bulk(Pruning):
    """Writes of many rows at once (mixed into SqliteStore)."""

    def find_idempotent_many(self, keys: Collection[str]) -> dict[str, tuple[str, str]]:
        """Stored events under any of `keys`: key -> (event id, payload hash)."""
        return self._keys(self.conn, list(keys))

    def _keys(self, conn: Any, keys: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            rows = conn.execute(
                "SELECT idempotency_key, id, payload_hash FROM events"
                f" WHERE idempotency_key IN ({_marks(part)})",
                part,
            ).fetchall()
            found.update((str(k), (str(i), str(h))) for k, i, h in rows)
        return found

    def emit_batch(
        self, events: Sequence[Event], jobs: Sequence[NewJob], now: datetime
    ) -> list[EmitResult]:
        """Store events and their jobs in one transaction; one result per event, in order.

        An event whose key another writer stored meanwhile is that event's duplicate (its jobs
        are dropped); IdempotencyConflict (nothing stored) if that event had another payload.
        """
        hashes = [payload_hash(e.type, e.payload) for e in events]
        stamp = to_micros(now)
        with self._tx() as conn:
            keyed = [e.idempotency_key for e in events if e.idempotency_key is not None]
            taken = self._keys(conn, keyed) if keyed else {}
            results: list[EmitResult] = []
            rows: list[tuple[Any, ...]] = []
            dropped: set[str] = set()
            dumped: dict[str, str] = {}
            for event, digest in zip(events, hashes, strict=True):
                stored = taken.get(event.idempotency_key or "") if taken else None
                if stored is not None:
                    if stored[1] != digest:
                        raise IdempotencyConflict(
                            f"idempotency key {event.idempotency_key!r} was already used by"
                            f" event {stored[0]} with a different type or payload;"
                            " nothing was stored"
                        )
                    dropped.add(event.id)
                    results.append(EmitResult(stored[0], True, ()))
                    continue
                text = dumped[event.id] = _dumps(event.payload)
                rows.append(
                    (
                        event.id,
                        event.type,
                        text,
                        digest,
                        to_micros(event.occurred_at),
                        to_micros(event.received_at),
                        event.idempotency_key,
                    )
                )
                results.append(EmitResult(event.id, False, ()))
            conn.executemany(
                "INSERT INTO events (id, type, payload, payload_hash, occurred_at, received_at,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            created: dict[str, list[str]] = {}
            job_rows: list[tuple[Any, ...]] = []
            for job in jobs:
                if job.event_id in dropped:
                    continue
                job_id = new_id(now)
                # A job's payload is its event's: dump it once.
                text = dumped.get(job.event_id or "") or _dumps(job.payload)
                job_rows.append(_job_row(job_id, job, text, stamp))
                created.setdefault(job.event_id or "", []).append(job_id)
            conn.executemany(_INSERT_JOB, job_rows)
        return [
            r if r.duplicate else EmitResult(r.event_id, False, tuple(created.get(r.event_id, ())))
            for r in results
        ]

    def cancel_matching(
        self, *, rule: str, statuses: Collection[str], event_id: str | None, now: datetime
    ) -> list[str]:
        """Cancel every job of `rule` in `statuses` (and of `event_id`); their ids."""
        wanted = sorted(statuses)
        sql = (
            "UPDATE jobs SET status = 'cancelled', updated_at = ?"
            f" WHERE rule = ? AND status IN ({_marks(wanted)})"
        )
        args: list[Any] = [to_micros(now), rule, *wanted]
        if event_id is not None:
            sql += " AND event_id = ?"
            args.append(event_id)
        with self._tx() as conn:
            return [str(r[0]) for r in conn.execute(sql + " RETURNING id", args).fetchall()]

    def requeue_dead_many(
        self, renewals: Sequence[tuple[Job, Verdict]], now: datetime
    ) -> list[str | None]:
        """Write `dlq retry` verdicts in one transaction: per job None, or why it was not."""
        stamp = to_micros(now)
        outcomes: list[str | None] = []
        with self._tx() as conn:
            for job, verdict in renewals:
                cur = conn.execute(
                    "UPDATE jobs SET status = ?, perform_at = ?, max_attempts = ?,"
                    " backoff_base = ?, updated_at = ?"
                    " WHERE id = ? AND status = 'dead' AND attempts = ?",
                    (
                        str(verdict.status),
                        to_micros(verdict.perform_at),
                        verdict.max_attempts,
                        verdict.backoff_base,
                        stamp,
                        job.id,
                        job.attempts,
                    ),
                )
                outcomes.append(
                    None
                    if cur.rowcount == 1
                    else f"job {job.id} is no longer in the dead letter queue"
                )
        return outcomes

    def delete_dead_many(self, job_ids: Sequence[str]) -> list[str | None]:
        """Delete the dead jobs among `job_ids` and their attempts in one transaction: per id
        None, or why it was not deleted."""
        outcomes: list[str | None] = []
        with self._tx() as conn:
            found: dict[str, str] = {}
            unique = list(dict.fromkeys(job_ids))
            for start in range(0, len(unique), _CHUNK):
                part = unique[start : start + _CHUNK]
                rows = conn.execute(
                    f"SELECT id, status FROM jobs WHERE id IN ({_marks(part)})", part
                )
                found.update((str(i), str(s)) for i, s in rows)
            gone: list[tuple[str]] = []
            for job_id in job_ids:
                status = found.get(job_id)
                if status is None:
                    outcomes.append(f"no job with id {job_id!r}")
                elif status != "dead":
                    outcomes.append(f"job {job_id} is {status}, not in the dead letter queue")
                else:
                    found[job_id] = "deleted"
                    gone.append((job_id,))
                    outcomes.append(None)
            conn.executemany("DELETE FROM attempts WHERE job_id = ?", gone)
            conn.executemany("DELETE FROM jobs WHERE id = ?", gone)
        return outcomes

    def replay(
        self, event_id: str, jobs: Sequence[NewJob], now: datetime
    ) -> tuple[Replay, list[str]]:
        """Record a replay of `event_id` and insert the jobs it created, in one transaction."""
        stamp = to_micros(now)
        with self._tx() as conn:
            if not conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone():
                raise NotFound(f"no event with id {event_id!r}")
            number = int(
                conn.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM replays WHERE event_id = ?",
                    (event_id,),
                ).fetchone()[0]
            )
            conn.execute(
                "INSERT INTO replays (event_id, number, replayed_at, jobs) VALUES (?, ?, ?, ?)",
                (event_id, number, stamp, len(jobs)),
            )
            ids = [new_id(now) for _ in jobs]
            conn.executemany(
                _INSERT_JOB,
                [_job_row(i, j, _dumps(j.payload), stamp) for i, j in zip(ids, jobs, strict=True)],
            )
        return Replay(event_id, number, now, len(jobs)), ids

    def replays(self, event_id: str) -> list[Replay]:
        """An event's replays, oldest first."""
        rows = self._read(
            "SELECT number, replayed_at, jobs FROM replays WHERE event_id = ? ORDER BY number",
            (event_id,),
        )
        return [Replay(event_id, int(n), from_micros(at), int(j)) for n, at, j in rows]


def _job_row(job_id: str, job: NewJob, payload: str, stamp: int) -> tuple[Any, ...]:
    return (
        job_id,
        job.rule,
        job.action,
        job.event_id,
        job.priority,
        to_micros(job.perform_at),
        job.max_attempts,
        payload,
        stamp,
        stamp,
        to_micros(job.scheduled_for) if job.scheduled_for else None,
        job.occurrence_key,
        job.note,
        job.failure_of,
    )
