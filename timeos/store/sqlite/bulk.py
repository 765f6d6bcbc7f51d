"""Bulk writes of the SQLite store (issue 8, flow control): a batch of events in one
transaction, cancelling every waiting job of a rule, dead letters by the hundred, replays.

Decisions come from the engine and the service; this module only writes them, with executemany
where the rows are many.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from timeos.errors import IdempotencyConflict, NotFound
from timeos.model import EmitResult, Event, Job, NewJob, Replay, Verdict, new_ids, payload_hash
from timeos.payload import compact_json
from timeos.store.sqlite.connection import translated
from timeos.store.sqlite.deps import Deps, depends_on, links
from timeos.store.sqlite.pruning import Pruning
from timeos.timefmt import from_micros, to_micros

BIG_WRITE_ROWS = 5_000
BIG_CACHE_KIB = -65_536  # 64 MiB (negative: KiB, as PRAGMA cache_size takes it)
_CHUNK = 500  # bound variables per IN (...) list, under SQLite's limit
_INSERT_JOB = (
    "INSERT INTO jobs (id, rule, action, event_id, priority, perform_at, attempts,"
    " max_attempts, payload, created_at, updated_at, scheduled_for, occurrence_key, note,"
    " failure_of, status, depends_on)"
    " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _dumps(value: Mapping[str, Any]) -> str:
    return compact_json(value)


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class Bulk(Pruning, Deps):
    """Writes of many rows at once (mixed into SqliteStore)."""

    def find_idempotent_many(self, keys: Collection[str]) -> dict[str, tuple[str, str]]:
        """Stored events under any of `keys`: key -> (event id, payload hash)."""
        with self._settled():  # never another thread's uncommitted events (an open batch)
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
        self,
        events: Sequence[Event],
        jobs: Sequence[NewJob],
        now: datetime,
        encoded: Sequence[str] | None = None,
    ) -> list[EmitResult]:
        """Store events and their jobs in one transaction; one result per event, in order.

        An event whose key another writer stored meanwhile is that event's duplicate (its jobs
        are dropped); IdempotencyConflict (nothing stored) if that event had another payload.
        """
        # Only an event with a key is ever compared by its hash (find_idempotent looks events
        # up by key): the others store '' and skip hashing, a fifth of a batch's Python time.
        hashes = [
            payload_hash(e.type, e.payload) if e.idempotency_key is not None else "" for e in events
        ]
        texts = list(encoded) if encoded is not None else [_dumps(e.payload) for e in events]
        micros = _Micros()
        stamp = micros(now)
        with self._big_cache(len(events) + len(jobs)), self._tx() as conn:
            keyed = [e.idempotency_key for e in events if e.idempotency_key is not None]
            taken = self._keys(conn, keyed) if keyed else {}
            duplicates: dict[str, str] = {}  # our event id -> the stored one's
            for event, digest in zip(events, hashes, strict=True):
                stored = taken.get(event.idempotency_key) if event.idempotency_key else None
                if stored is not None:
                    if stored[1] != digest:
                        raise IdempotencyConflict(
                            f"idempotency key {event.idempotency_key!r} was already used by"
                            f" event {stored[0]} with a different type or payload;"
                            " nothing was stored"
                        )
                    duplicates[event.id] = stored[0]
            conn.executemany(
                "INSERT INTO events (id, type, payload, payload_hash, occurred_at, received_at,"
                " idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.id,
                        e.type,
                        text,
                        digest,
                        micros(e.occurred_at),
                        micros(e.received_at),
                        e.idempotency_key,
                    )
                    for e, text, digest in zip(events, texts, hashes, strict=True)
                    if e.id not in duplicates
                ],
            )
            # A job's payload is its event's: encoded once.
            dumped = {e.id: t for e, t in zip(events, texts, strict=True)}
            created: dict[str, list[str]] = {}
            job_rows: list[tuple[Any, ...]] = []
            ids: list[str | None] = []
            for index, (job_id, job) in enumerate(zip(new_ids(now, len(jobs)), jobs, strict=True)):
                event_id = job.event_id or ""
                if event_id in duplicates:  # a chain's jobs are all of one event: all dropped
                    ids.append(None)
                    continue
                ids.append(job_id)
                text = dumped.get(event_id) or _dumps(job.payload)
                job_rows.append(_job_row(job_id, job, text, stamp, micros, index, ids))
                created.setdefault(event_id, []).append(job_id)
            conn.executemany(_INSERT_JOB, job_rows)
            self._link(conn, links(jobs, ids))
        return [
            EmitResult(duplicates[e.id], True, ())
            if e.id in duplicates
            else EmitResult(e.id, False, tuple(created.get(e.id, ())))
            for e in events
        ]

    @contextmanager
    def _big_cache(self, rows: int) -> Iterator[None]:
        """A bigger page cache while a transaction writes many rows, the default again after.

        With SQLite's 2 MiB the index pages of 200,000 new rows spill to the WAL mid-transaction
        and are read back: inserting them took 4.7 s, with 64 MiB 2.6 s.
        """
        if rows < BIG_WRITE_ROWS:
            yield
            return
        with translated(self.path):
            (before,) = self.conn.execute("PRAGMA cache_size").fetchone()
            self.conn.execute(f"PRAGMA cache_size={BIG_CACHE_KIB}")
        try:
            yield
        finally:
            with translated(self.path):
                self.conn.execute(f"PRAGMA cache_size={int(before)}")

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
            ids = [str(r[0]) for r in conn.execute(sql + " RETURNING id", args).fetchall()]
            for job_id in ids:  # their chains' blocked jobs go with them
                self._settle(conn, job_id, "cancelled", now)
            return ids

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
                if cur.rowcount == 1:
                    self._revive(conn, job.id, now)  # its chain's cancelled jobs wait again
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
            ids = new_ids(now, len(jobs))
            conn.executemany(
                _INSERT_JOB,
                [
                    _job_row(i, j, _dumps(j.payload), stamp, to_micros, n, ids)
                    for n, (i, j) in enumerate(zip(ids, jobs, strict=True))
                ],
            )
            self._link(conn, links(jobs, ids))
        return Replay(event_id, number, now, len(jobs)), ids

    def replays(self, event_id: str) -> list[Replay]:
        """An event's replays, oldest first."""
        rows = self._read(
            "SELECT number, replayed_at, jobs FROM replays WHERE event_id = ? ORDER BY number",
            (event_id,),
        )
        return [Replay(event_id, int(n), from_micros(at), int(j)) for n, at, j in rows]


class _Micros:
    """to_micros, remembering: a batch's instants are mostly one or a few."""

    def __init__(self) -> None:
        self.seen: dict[datetime, int] = {}

    def __call__(self, value: datetime) -> int:
        found = self.seen.get(value)
        if found is None:
            found = self.seen[value] = to_micros(value)
        return found


def _job_row(
    job_id: str,
    job: NewJob,
    payload: str,
    stamp: int,
    micros: Any,
    index: int,
    ids: Sequence[str | None],
) -> tuple[Any, ...]:
    return (
        job_id,
        job.rule,
        job.action,
        job.event_id,
        job.priority,
        micros(job.perform_at),
        job.max_attempts,
        payload,
        stamp,
        stamp,
        to_micros(job.scheduled_for) if job.scheduled_for else None,
        job.occurrence_key,
        job.note,
        job.failure_of,
        "blocked" if job.after else "pending",
        depends_on(job, index, ids) if job.after else None,
    )
