"""The PostgreSQL implementation of the store protocol, for several daemons on one database.

It is the SQLite store's code (store/sqlite/) on a psycopg pool: the statements are translated
(dialect.py), and what several writers on one database change is done here:

- Every write transaction takes an advisory lock first: shared for the plain claim and for
  finish, exclusive for every other write. The SQLite store's writes assume they are the only writer
  (BEGIN IMMEDIATE); under the exclusive lock they still are, across daemons.
- The plain claim runs concurrently with other daemons' claims: due rows are taken with
  `FOR UPDATE SKIP LOCKED` inside the claim's one transaction, so no two daemons take one job.
- Each daemon has a row in `daemons` with a heartbeat; a job records the daemon that claimed it,
  and recovery (running_jobs: at start-up, then the leader's periodic rescue) takes only jobs
  whose daemon is this one's previous life or has stopped beating, never a live daemon's.
- One daemon at a time plans time-based rules (leads_planning: a session-level advisory lock);
  a transaction that makes a job due notifies the others (watch: LISTEN/NOTIFY).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from timeos.clock import Clock, SystemClock
from timeos.errors import StoreError, TimeOSError
from timeos.model import (
    ActionResult,
    Claim,
    EmitResult,
    Event,
    Finished,
    Job,
    JobStatus,
    NewJob,
    Verdict,
    WriteOutcome,
)
from timeos.rules.correlation import Correlation
from timeos.rules.limits import LimitsInForce
from timeos.store.postgres import schema
from timeos.store.postgres.connection import (
    FOREIGN_ERRORS,
    Leadership,
    Listener,
    OwnConnection,
    Session,
    open_pool,
)
from timeos.store.sqlite.store import _JOB_COLUMNS, SqliteStore, _job
from timeos.store.urls import redacted
from timeos.timefmt import to_micros

# pg_advisory_xact_lock(WRITE_LOCK, hashtext(schema)): the writer lock of one schema.
WRITE_LOCK = 0x7101
HEARTBEAT_SECONDS = 2.0
# A daemon whose heartbeat is older than this is dead: its running jobs may be rescued.
LEASE_SECONDS = 15
_WAITING = "status IN ('pending', 'retrying')"
# pg_try_advisory_lock(LEADER_LOCK, hashtext(schema)), session-level: the daemon that plans.
LEADER_LOCK = 0x7102
# How often the leader confirms its lock's connection (a round trip), and a follower asks for
# the lock: a dead leader is replaced within about this long after PostgreSQL notices.
LEADER_CHECK_SECONDS = 1.0


class PostgresStore(SqliteStore):
    """The shared store (implements store.protocol.Store). One instance per daemon."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        daemon_id: str | None = None,
        schema_name: str | None = None,
        pool_size: int = 4,
        lock_timeout_ms: int = 5_000,
    ) -> None:
        # Deliberately not SqliteStore.__init__: no file, no pragmas, no checkpointer.
        self.url = url
        self.path = redacted(url) + (f" (schema {schema_name})" if schema_name else "")
        self.clock = clock or SystemClock()
        self.last_write: WriteOutcome | None = None
        self._last_write_mono = self.clock.monotonic()
        self.daemon_id = daemon_id or f"{socket.gethostname()}:{os.getpid()}"
        self._heart: threading.Thread | None = None
        # The rules fingerprint this daemon announced (None: not yet): every beat writes it.
        self._fingerprint: str | None = None
        self._recovered = False  # running_jobs() has run once (start-up recovery)
        self._stop_heart = threading.Event()
        self.pool, kwargs = open_pool(
            url,
            min_size=1,
            max_size=pool_size,
            where=self.path,
            schema=schema_name,
            lock_timeout_ms=lock_timeout_ms,
        )
        self.leadership = Leadership(url, kwargs, LEADER_LOCK)
        self.listener: Listener | None = None
        self._heart_conn = OwnConnection(url, kwargs, self.path)  # never behind the pool
        self._kwargs = kwargs
        self._leader_checked: float | None = None
        self.session = Session(self.pool, self.path)
        self.session.sender = self.daemon_id
        # The SQLite store's code runs its statements on `self.conn`: here the session, which
        # uses this thread's open transaction, or a pooled connection.
        self.conn = cast(sqlite3.Connection, self.session)
        try:
            self.schema_found = schema.migrate(
                lambda sql, args=(): self.session.native(sql, args).rows,
                self.session.transaction,
                self.path,
            )
            self._beat(register=True)
            # One channel per schema (NOTIFY channels are per database).
            schema_now = self.session.native("SELECT current_schema()", ()).rows[0][0]
            self.session.channel = f"timeos:{schema_now}"
            # Durability of an acknowledged write is the server's: on (the default) or above,
            # a commit has reached the server's disk before the API answers.
            setting = self.session.native("SHOW synchronous_commit", ()).rows[0][0]
            self.synchronous = f"synchronous_commit={setting}"
        except BaseException:
            self.pool.close()
            raise

    # ---- connection -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The database URL without its password."""
        return self.path

    def facts(self) -> dict[str, Any]:
        """Backend facts for health: this daemon's id and every daemon sharing the database
        (host, pid, last heartbeat, alive: beat within the lease, rules fingerprint)."""
        facts: dict[str, Any] = {"daemon_id": self.daemon_id}
        try:
            rows = self.session.native(
                "SELECT id, host, pid, heartbeat_at,"
                " heartbeat_at > now() - make_interval(secs => %s), fingerprint"
                " FROM daemons ORDER BY id",
                (LEASE_SECONDS,),
            ).rows
        except StoreError:
            return facts  # health's ping reports the outage itself
        facts["daemons"] = [
            {
                "id": i,
                "host": h,
                "pid": p,
                "heartbeat_at": at.isoformat(),
                "alive": alive,
                "fingerprint": fingerprint,
            }
            for i, h, p, at, alive, fingerprint in rows
        ]
        facts["daemons_alive"] = sum(1 for d in facts["daemons"] if d["alive"])
        return facts

    def close(self) -> None:
        """Stop the heartbeat, give up leadership, leave the daemons table, close the pool
        (once)."""
        if self.pool.closed:
            return
        self.leadership.close()
        if self.listener is not None:
            self.listener.close()
        self._stop_heart.set()
        if self._heart is not None:
            self._heart.join(5)
            self._heart = None
        self._heart_conn.close()
        try:
            self.session.native("DELETE FROM daemons WHERE id = %s", (self.daemon_id,))
        except StoreError:
            pass  # the server is gone: the row expires by its heartbeat
        self.pool.close()

    def start_checkpointer(self, interval: float = 1.0) -> None:
        """Start the heartbeat thread (what the daemon starts beside a SQLite store's
        checkpointer): other daemons see this one alive while it beats."""
        if self._heart is not None:
            return
        self._stop_heart.clear()
        self._heart = threading.Thread(
            target=self._heart_loop, name="timeos-heartbeat", daemon=True
        )
        self._heart.start()

    def _heart_loop(self) -> None:
        while not self._stop_heart.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
            except StoreError:
                pass  # the server is away this time: the next beat tries again

    def _beat(self, register: bool = False) -> None:
        if register:
            self.session.native(
                "INSERT INTO daemons (id, host, pid, started_at, heartbeat_at, fingerprint)"
                " VALUES (%s, %s, %s, now(), now(), %s) ON CONFLICT (id) DO UPDATE SET"
                " host = excluded.host, pid = excluded.pid, started_at = now(),"
                " heartbeat_at = now(), fingerprint = excluded.fingerprint",
                (self.daemon_id, socket.gethostname(), os.getpid(), self._fingerprint),
            )
            return
        # The fingerprint rides along: a write announce_rules could not make is made here.
        self._heart_conn.run(
            "UPDATE daemons SET heartbeat_at = now(), fingerprint = %s WHERE id = %s",
            (self._fingerprint, self.daemon_id),
        )

    def announce_rules(self, fingerprint: str) -> None:
        """Record the fingerprint of the rules this daemon runs in its `daemons` row (at start
        and after each reload): health compares the daemons' fingerprints. Best effort: with the
        server away, the next heartbeat writes it."""
        self._fingerprint = fingerprint
        try:
            self.session.native(
                "UPDATE daemons SET fingerprint = %s WHERE id = %s", (fingerprint, self.daemon_id)
            )
        except StoreError:
            pass  # the heartbeat thread writes self._fingerprint with its next beat

    def watch(self, wake: Callable[[], object]) -> None:
        """Call `wake` (from a thread of ours) when another daemon may have made a job due
        earlier: LISTEN on this schema's channel, which every such write transaction notifies."""
        if self.listener is not None or self.session.channel is None:
            return
        self.listener = Listener(self.url, self._kwargs, self.session.channel, self.daemon_id)
        self.listener.start(wake)

    def leads_planning(self) -> bool:
        """Whether this daemon plans time-based rules now: it holds the leader lock. Checked
        against the server at most every LEADER_CHECK_SECONDS; between checks, the last answer
        (two leaders for a moment still make one job per occurrence: its unique key)."""
        mono = self.clock.monotonic()
        if self._leader_checked is None or mono - self._leader_checked >= LEADER_CHECK_SECONDS:
            self._leader_checked = mono
            self.leadership.check()
        return self.leadership.holding

    def checkpoint(self, conn: sqlite3.Connection | None = None) -> str | None:
        """No WAL file to checkpoint: PostgreSQL manages its own."""
        return None

    def wal_bytes(self) -> int:
        """No WAL file of ours (health shows no WAL size for PostgreSQL)."""
        return 0

    @contextmanager
    def _tx(self, *, shared: bool = False) -> Iterator[sqlite3.Connection]:
        if self.session.current is not None:  # joined: the outer transaction holds the lock
            yield self.conn
            return
        mode = "_shared" if shared else ""
        try:
            with self.session.transaction():
                self.session.native(
                    f"SELECT pg_advisory_xact_lock{mode}(%s, hashtext(current_schema()))",
                    (WRITE_LOCK,),
                )
                yield self.conn
        except StoreError as exc:
            if isinstance(exc.__cause__, FOREIGN_ERRORS):  # the database refused the write
                self._write_failed(exc)
            raise
        self.last_write = WriteOutcome(True, self.clock.now())
        self._last_write_mono = self.clock.monotonic()

    def _read(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        return self.session.execute(sql, args).rows

    def _settled(self) -> AbstractContextManager[object]:
        """Nothing to wait for: a read outside this thread's transaction runs on a pooled
        connection of its own and sees only committed rows."""
        return nullcontext()

    @contextmanager
    def _big_cache(self, rows: int) -> Iterator[None]:
        yield  # the server sizes its own buffers

    def vacuum(self) -> None:
        """VACUUM this schema's tables (space freed for reuse; autovacuum runs anyway)."""
        self.session.native(f"VACUUM {', '.join(schema.PRIMARY_KEYS)}", ())

    def file_bytes(self) -> int:
        """Size of this schema's tables and indexes."""
        rows = self.session.native(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'",
            (),
        ).rows
        return int(rows[0][0])

    # ---- claims -----------------------------------------------------------------------------

    def claim_due(
        self,
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> list[Job]:
        """Mark up to `limit` due jobs running (highest priority, then earliest) and return them.

        Without limits, daemons claim side by side: `FOR UPDATE SKIP LOCKED` passes over the
        rows another daemon's claim holds, in this one transaction. Under limits, the claim takes
        the writer lock (the buckets and running counts must be read and written by one claimer
        at a time) and runs the SQLite store's limited claim.
        """
        if limit <= 0:
            return []
        if limits:
            with self._tx():
                # The limited claim keeps an exclusive rule to one run through `blocked`, which
                # holds this daemon's runs only: add the rules running on any daemon.
                elsewhere = self._running_rules(exclusive)
                jobs = super().claim_due(now, limit, {*blocked, *elsewhere}, exclusive, limits)
                self._mark_claimed([j.id for j in jobs])
            return jobs
        stamp = to_micros(now)
        claimed: list[Job] = []
        with self._tx(shared=True):
            skip = set(blocked)
            # Priority by priority, highest first (each an index seek on jobs_claim), then the
            # earliest due rows of that priority: one walk in (priority, perform_at) order would
            # pass every future job of a higher priority first (bench/pg_claim.py).
            priority = self._top_priority(None)
            while priority is not None and len(claimed) < limit:
                rows = self.session.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {_WAITING} AND priority = ?"
                    " AND perform_at <= ? AND NOT (rule = ANY(?)) ORDER BY perform_at, id"
                    " LIMIT ? FOR UPDATE SKIP LOCKED",
                    (priority, stamp, sorted(skip), limit - len(claimed)),
                ).rows
                again = False
                taken: list[Job] = []
                for row in rows:
                    job = _job(row)
                    if job.rule in skip:
                        again = True  # a second job of an exclusive rule: look again without it
                        continue
                    if job.rule in exclusive:
                        skip.add(job.rule)
                        if not self._exclusive_free(job.rule):
                            again = True  # running in another daemon (or being claimed there)
                            continue
                    taken.append(job)
                claimed += self._start_all(taken, stamp)
                if not (again and rows):
                    priority = self._top_priority(priority)
        return claimed

    def _running_rules(self, rules: Collection[str]) -> set[str]:
        """Which of `rules` have a job running on some daemon."""
        if not rules:
            return set()
        rows = self.session.execute(
            "SELECT DISTINCT rule FROM jobs WHERE status = 'running' AND rule = ANY(?)",
            (sorted(rules),),
        ).rows
        return {r[0] for r in rows}

    def _top_priority(self, below: int | None) -> int | None:
        """The highest priority of a waiting job (below `below`): an index seek."""
        rows = self.session.execute(
            f"SELECT MAX(priority) FROM jobs WHERE {_WAITING}"
            + (" AND priority < ?" if below is not None else ""),
            (below,) if below is not None else (),
        ).rows
        return rows[0][0] if rows else None

    def finish(self, job: Job, result: ActionResult, now: datetime, verdict: Verdict) -> Job:
        """Record how attempt `job.attempts` ended and write the verdict, beside other daemons'
        claims and finishes (the shared lock): the job's row is this daemon's alone (claimed by
        it, and guarded by its attempt number), a notification job is new, and a chain child
        has one parent, so no other claim or finish writes what this one reads."""
        with self._tx(shared=True):
            return super().finish(job, result, now, verdict)

    def record_and_claim(
        self,
        finished: Sequence[Finished],
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> Claim:
        """Write `finished` attempts' ends, then claim, in one transaction: under the shared
        writer lock, as finish and the plain claim each take it (the exclusive one under
        limits, which the limited claim needs)."""
        with self._tx(shared=not limits):
            return super().record_and_claim(finished, now, limit, blocked, exclusive, limits)

    def emit_group(
        self, items: Sequence[tuple[Event, Sequence[NewJob], datetime, Correlation | None]]
    ) -> list[EmitResult | TimeOSError]:
        """Each emit in a transaction of its own: the server's commit is a round trip, not an
        fsync of ours, so grouping buys less here than savepoints would cost when one fails
        (an error aborts a PostgreSQL transaction until it is rolled back to a savepoint)."""
        results: list[EmitResult | TimeOSError] = []
        for event, jobs, now, correlation in items:
            try:
                results.append(self.emit(event, jobs, now, correlation))
            except TimeOSError as exc:
                results.append(exc)
        return results

    def _exclusive_free(self, rule: str) -> bool:
        """Whether a job of the exclusive `rule` may start: no other daemon is claiming one now
        (a transaction-scoped advisory lock on the rule) and none is running."""
        got = self.session.native(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(current_schema() || ':' || %s))",
            (WRITE_LOCK + 1, rule),
        ).rows[0][0]
        if not got:
            return False
        running = self.session.native(
            "SELECT 1 FROM jobs WHERE status = 'running' AND rule = %s LIMIT 1", (rule,)
        ).rows
        return not running

    def _start_all(self, jobs: list[Job], stamp: int) -> list[Job]:
        """Mark the rows this claim locked running and open their attempts (executemany is
        pipelined: one UPDATE ... = ANY(ids) measured no faster, bench/pg_claim.py)."""
        if not jobs:
            return []
        self.session.executemany(
            "UPDATE jobs SET status = 'running', attempts = ?, updated_at = ?, claimed_by = ?"
            " WHERE id = ?",
            [(j.attempts + 1, stamp, self.daemon_id, j.id) for j in jobs],
        )
        self.session.executemany(
            "INSERT INTO attempts (job_id, number, started_at) VALUES (?, ?, ?)",
            [(j.id, j.attempts + 1, stamp) for j in jobs],
        )
        return [replace(j, status=JobStatus.RUNNING, attempts=j.attempts + 1) for j in jobs]

    def _mark_claimed(self, ids: list[str]) -> None:
        if ids:
            self.session.execute(
                "UPDATE jobs SET claimed_by = ? WHERE id = ANY(?)", (self.daemon_id, ids)
            )

    def running_jobs(self) -> list[Job]:
        """Jobs marked running that no live daemon runs: those of daemons whose heartbeat
        stopped, and at the first call (start-up) this daemon's previous life's. Later calls
        (the leader's periodic rescue) never return this daemon's own jobs: it runs them."""
        first = not self._recovered
        self._recovered = True
        # At start-up, this daemon's previous life's jobs (same id) are its to rerun; later, its
        # own jobs never are, even if its heartbeat has gone stale: it is running them.
        rows = self._read(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = 'running' AND (claimed_by IS NULL"
            f"{' OR claimed_by = ?' if first else ''} OR claimed_by NOT IN (SELECT id FROM daemons"
            " WHERE heartbeat_at > now() - make_interval(secs => ?)))"
            f"{'' if first else ' AND claimed_by IS DISTINCT FROM ?'}",
            (self.daemon_id, LEASE_SECONDS) if first else (LEASE_SECONDS, self.daemon_id),
        )
        return [_job(r) for r in rows]
