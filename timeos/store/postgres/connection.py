"""PostgreSQL connections under the store: the pool, transactions, and the error translation.

Every psycopg error becomes a StoreError in Session.execute/executemany (and in open_pool), the
one place that catches them. A transaction is one pooled connection held by one thread; a
statement outside a transaction borrows a connection for itself (autocommit).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from timeos.errors import StoreError
from timeos.store.postgres.dialect import translate

FOREIGN_ERRORS = (psycopg.Error,)
# NUL cannot be stored in a PostgreSQL text value; SQLite keeps it. A command's output or an
# error message may hold one: stored as U+FFFD, as undecodable bytes already are.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"
# A transaction of ours is a few statements long: one idle this long belongs to a stalled daemon.
IDLE_IN_TRANSACTION_MS = 30_000
TCP_DEAD_PEER = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Result:
    """A statement's rows, fetched at once, with the parts of sqlite3.Cursor the store uses."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


def _clean(args: Sequence[Any]) -> Sequence[Any]:
    if any(isinstance(a, str) and _NUL in a for a in args):
        return [a.replace(_NUL, _REPLACEMENT) if isinstance(a, str) else a for a in args]
    return args


# A statement that may make a job due earlier than other daemons plan to look: a new job, or a
# job's perform_at or pending status written. Its transaction notifies the other daemons.
_WAKES = re.compile(r"^\s*(INSERT INTO jobs\b|UPDATE jobs SET (status = 'pending'|.*perform_at =))")


class Session:
    """Runs the store's statements (SQLite dialect, translated) on PostgreSQL: on the calling
    thread's transaction connection when it has one, else on a pooled connection of its own.

    A transaction that may have made a job due sends `NOTIFY` on `channel` (payload: `sender`)
    as it commits, so idle daemons look at once rather than at their next planned wake.
    """

    def __init__(
        self, pool: ConnectionPool, where: str, channel: str | None = None, sender: str = ""
    ) -> None:
        self.pool = pool
        self.where = where
        self.channel = channel
        self.sender = sender
        self._local = threading.local()

    @property
    def current(self) -> psycopg.Connection[Any] | None:
        """The calling thread's transaction connection (None outside a transaction)."""
        return getattr(self._local, "conn", None)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Result:
        return self._run(translate(sql), _clean(list(args)), many=False)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Result:
        return self._run(translate(sql), [_clean(list(r)) for r in rows], many=True)

    def native(self, sql: str, args: Sequence[Any] = ()) -> Result:
        """Run PostgreSQL's own dialect (`%s` parameters), untranslated."""
        return self._run(sql, list(args), many=False)

    def _run(self, sql: str, args: Any, *, many: bool) -> Result:
        conn = self.current
        try:
            if conn is not None:
                if self.channel is not None and _WAKES.match(sql):
                    self._local.wakes = True
                return _execute(conn, sql, args, many)
            with self.pool.connection() as own:
                return _execute(own, sql, args, many)
        except FOREIGN_ERRORS as exc:
            raise StoreError(f"{self.where}: {_message(exc)}") from exc

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection, held by this thread until it ends; a nested
        call joins the transaction already open."""
        if self.current is not None:
            yield self.current
            return
        try:
            with self.pool.connection() as conn, conn.transaction():
                self._local.conn = conn
                self._local.wakes = False
                try:
                    yield conn
                    if self._local.wakes:  # delivered by PostgreSQL on commit, never before
                        conn.execute("SELECT pg_notify(%s, %s)", (self.channel, self.sender))
                finally:
                    self._local.conn = None
        except FOREIGN_ERRORS as exc:  # BEGIN or COMMIT failed
            raise StoreError(f"{self.where}: {_message(exc)}") from exc


def _execute(conn: psycopg.Connection[Any], sql: str, args: Any, many: bool) -> Result:
    with conn.cursor() as cur:
        if many:
            if args:
                cur.executemany(sql, args)
            return Result([], cur.rowcount if args else 0)
        cur.execute(sql, args)
        rows = cur.fetchall() if cur.description is not None else []
        return Result(rows, cur.rowcount)


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    notes = getattr(exc, "__notes__", ())
    detail = text[0] if text else type(exc).__name__
    if isinstance(exc, psycopg.errors.InvalidSchemaName):  # search_path names no schema
        detail += (
            ": the schema that the URL's search_path names does not exist;"
            " create it first (CREATE SCHEMA name) or leave search_path out"
        )
    return f"{detail} ({'; '.join(notes)})" if notes else detail


def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    where: str,
    schema: str | None = None,
    lock_timeout_ms: int = 5_000,
    wait_seconds: float = 5.0,
) -> tuple[ConnectionPool, dict[str, Any]]:
    """Open a pool of autocommit connections to `url` (in `schema`, created if missing: tests
    and several TimeOS instances on one database); StoreError when the server is not there.
    Returns the pool and the connection arguments, for connections of the store's own.

    The store is called on the daemon's event loop, so nothing may wait long: a lock held by
    another daemon (`lock_timeout`), or a free pooled connection (`wait_seconds`), fails as
    StoreError after a few seconds, and the server ends a session left idle inside a transaction
    (a daemon stopped mid-write by SIGSTOP or a paused VM), releasing what it held.
    """
    settings = [
        f"lock_timeout={lock_timeout_ms}",
        f"idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
    ]
    # A server that stops answering without closing the connection (a dead host, a cut link)
    # must not hold the event loop for the kernel's TCP timeout (minutes): libpq's keepalives
    # find it out in ~25 s, and unacknowledged sends give up after 30 s.
    kwargs: dict[str, Any] = {"autocommit": True, **TCP_DEAD_PEER}
    try:
        if schema is not None:
            if not _SCHEMA.fullmatch(schema):
                raise StoreError(f"{where}: schema name {schema!r}: use a-z, 0-9 and _")
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                try:
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # a checked name
                except psycopg.errors.UniqueViolation:
                    pass  # another daemon created it at the same moment
            settings.append(f"search_path={schema}")
        # Ours first, then the URL's own `options` (a search_path, or another lock_timeout),
        # which a keyword argument would otherwise replace.
        given = str(conninfo_to_dict(url).get("options") or "")
        kwargs["options"] = " ".join([*(f"-c {setting}" for setting in settings), given]).strip()
        pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            timeout=wait_seconds,
            open=False,
            name="timeos",
        )
        pool.open(wait=True, timeout=10)
    except psycopg.Error as exc:  # PoolTimeout included
        raise StoreError(f"cannot open database {where}: {_message(exc)}") from exc
    return pool, kwargs


class OwnConnection:
    """A connection outside the pool, for one thread's periodic statements (the heartbeat, the
    leader lock): it never waits behind the pool's transactions. Reconnects after a failure."""

    def __init__(
        self, url: str, kwargs: dict[str, Any], where: str, connect_timeout: int = 5
    ) -> None:
        self.url = url
        self.kwargs = kwargs
        self.where = where
        self.connect_timeout = connect_timeout
        self.conn: psycopg.Connection[Any] | None = None

    @property
    def connected(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def run(self, statement: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows; StoreError if the server does
        not take it (the connection is dropped, the next call opens a new one)."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(
                    self.url, connect_timeout=self.connect_timeout, **self.kwargs
                )
            cur = self.conn.execute(statement, args)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"{self.where}: {_message(exc)}") from exc

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None


class Leadership:
    """A session-level advisory lock on a connection of its own, held while that connection
    lives: when the holder dies, or loses the server, PostgreSQL releases it and the next daemon
    to ask takes it. Never raises: a connection that fails means not holding the lock."""

    def __init__(self, url: str, kwargs: dict[str, Any], key: int) -> None:
        # On the event loop (the planner asks): never wait long for a server that is away.
        self.own = OwnConnection(url, kwargs, "leader lock", connect_timeout=2)
        self.key = key
        self.holding = False

    def check(self) -> bool:
        """Whether this daemon holds the lock now: take it if free, or confirm the connection
        that holds it is still alive (one round trip either way)."""
        if not self.own.connected:
            self.holding = False  # a new connection holds nothing yet
        try:
            if self.holding:
                self.own.run("SELECT 1", ())
            else:
                rows = self.own.run(
                    "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))", (self.key,)
                )
                self.holding = bool(rows and rows[0][0])
        except StoreError:
            self.holding = False
        return self.holding

    def close(self) -> None:
        """Give the lock up (closing the connection releases it)."""
        self.holding = False
        self.own.close()


class Listener:
    """A thread that LISTENs on `channel` on a connection of its own and calls `wake` for each
    batch of notifications another daemon (payload != `me`) sent; reconnects after an error."""

    def __init__(self, url: str, kwargs: dict[str, Any], channel: str, me: str) -> None:
        self.url = url
        self.kwargs = kwargs
        self.channel = channel
        self.me = me
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, wake: Callable[[], object]) -> None:
        self.thread = threading.Thread(
            target=self._loop, args=(wake,), name="timeos-listen", daemon=True
        )
        self.thread.start()

    def _loop(self, wake: Callable[[], object]) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=5, **self.kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    wake()  # (re)connected: anything sent meanwhile was missed, look now
                    while not self.stop.is_set():
                        others = [n for n in conn.notifies(timeout=1.0) if n.payload != self.me]
                        if others:
                            wake()
            except psycopg.Error:
                self.stop.wait(2.0)  # the server is away: try again, never spin

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None
