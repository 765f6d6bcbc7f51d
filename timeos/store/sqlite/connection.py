"""The SQLite connection under the store: opening, pragmas, migration, transactions, checkpoints.

Every sqlite3 (and sqlite-utils) error becomes a StoreError in translated(), the one place that
catches them; store.py builds its queries on top and schema.py lets them rise.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from timeos.clock import Clock, SystemClock
from timeos.errors import StoreError
from timeos.model import WriteOutcome
from timeos.store.sqlite import schema

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
BACKSTOP_CHECKPOINT_PAGES = 50_000  # ~200 MB of WAL
# When SQLite restarts the WAL after a complete checkpoint it cuts the file back to this size;
# without a limit the file keeps its high-water mark (207 MB after a load test) for good.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
IDLE_TRUNCATE_SECONDS = 2.0  # writer quiet this long: truncate the WAL to zero
TRUNCATE_WAL_BYTES = 64 * 1024 * 1024  # WAL this big: truncate once a checkpoint caught up


def truncate_wanted(idle_seconds: float, wal_bytes: int, caught_up: bool) -> bool:
    """Whether the checkpointer should truncate the WAL now (after its PASSIVE checkpoint).

    When the writer is idle, a TRUNCATE costs it nothing; under load, only once the WAL is big
    and a PASSIVE checkpoint has copied every frame (so TRUNCATE has nothing left to copy while
    it holds the writer off).
    """
    if wal_bytes == 0:
        return False
    return idle_seconds >= IDLE_TRUNCATE_SECONDS or (wal_bytes > TRUNCATE_WAL_BYTES and caught_up)


def checkpoint_again(mode: str | None, wal_bytes: int) -> bool:
    """Whether the checkpointer needs another pass with no new write: until the WAL is empty.

    After TRUNCATE (or with no WAL) it sleeps until the next commit; after a PASSIVE pass that
    left frames (the writer was busy a moment ago) or a failed pass (busy, locked) it comes
    back, so the WAL is still truncated once the writer has been idle for a while.
    """
    return mode is None or (mode == "PASSIVE" and wal_bytes > 0)


def foreign_errors() -> tuple[type[Exception], ...]:
    """What the driver and sqlite-utils raise: translated to StoreError, never seen above the store.

    sqlite-utils is imported only to migrate (schema.migrate); until it is, it raises nothing.
    """
    alter = getattr(sys.modules.get("sqlite_utils.db"), "AlterError", None)
    return (sqlite3.Error, alter) if alter is not None else (sqlite3.Error,)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise any database error inside the block as StoreError(`what: error`)."""
    try:
        yield
    except foreign_errors() as exc:
        notes = getattr(exc, "__notes__", ())  # e.g. which migration step failed
        detail = f"{exc} ({'; '.join(notes)})" if notes else str(exc)
        raise StoreError(f"{what}: {detail}") from exc


class Connection:
    """One SQLite connection in WAL mode, its transactions, and a checkpointer thread."""

    def __init__(
        self, path: Path | str, *, synchronous: str = "NORMAL", clock: Clock | None = None
    ) -> None:
        self.path = str(path)
        self.clock: Clock = clock or SystemClock()
        self.last_write: WriteOutcome | None = None
        self._last_write_mono = self.clock.monotonic()
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}")
        self.synchronous = mode
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpointer = threading.Event()
        # Set by every commit (and by close): the checkpointer sleeps on it, so a daemon with
        # nothing to write never wakes that thread. `checkpoint_passes` counts its passes.
        self._written = threading.Event()
        self.checkpoint_passes = 0
        # One transaction at a time on self.conn: timeosd runs a batch in a worker thread while
        # the event loop writes on the same connection, and SQLite transactions belong to the
        # connection, not the thread (interleaved, one thread's COMMIT ended the other's).
        self._writer = threading.RLock()
        self._in_tx = False  # read and written only by the thread holding _writer
        with translated(f"cannot open database {self.path}"):
            if self.path != ":memory:":
                # Payloads may hold personal data: the database (and so its WAL and SHM, which
                # SQLite creates with the same mode) is private to the daemon's user and group.
                Path(self.path).parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                if not Path(self.path).exists():
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o640))
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=256
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={mode}")
            self.conn.execute("PRAGMA busy_timeout=5000")
            # Checkpoints belong off the hot path: with SQLite's default (every 1,000 WAL
            # pages) every fifth claim batch paid for one on the event loop (bench/claim.py,
            # p99 27-32 ms). The daemon runs start_checkpointer(); this high mark is only
            # the backstop that bounds the WAL if nothing else checkpoints.
            self.conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
            self.conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.schema_found = schema.migrate(self.conn, self.path)

    @property
    def location(self) -> str:
        """The database file, for status and health."""
        return self.path

    def start_checkpointer(self, interval: float = 1.0) -> None:
        """Checkpoint the WAL from a thread with its own connection, off the event loop.

        PASSIVE checkpoints never block the writer; SQLite releases the GIL while it copies.
        """
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        self._stop_checkpointer.clear()
        if self.wal_bytes():  # frames from before (a migration): a first pass truncates them
            self._written.set()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(interval,), name="timeos-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self, interval: float) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            if self._written.is_set():
                # Frames from before the daemon started (a migration, a crash): nothing is
                # writing yet, so truncate at once rather than in passes a second apart.
                self._written.clear()
                self.checkpoint_passes += 1
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    self._written.set()  # busy: the loop below tries again
            while True:
                self._written.wait()  # at rest: no timer, no wake-up until something commits
                # One pass per `interval` while writes keep coming: a burst shares a pass.
                if self._stop_checkpointer.wait(interval):
                    return
                self._written.clear()  # commits from here on ask for another pass
                self.checkpoint_passes += 1  # counted as it starts: tests wait on its effect
                mode = self.checkpoint(conn)
                if checkpoint_again(mode, self.wal_bytes()):
                    self._written.set()
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection | None = None) -> str | None:
        """One checkpointer pass: PASSIVE, then TRUNCATE if truncate_wanted(); return the last mode.

        The checkpointer thread passes its own connection; tests call this directly.
        """
        conn = conn or self.conn
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            idle = self.clock.monotonic() - self._last_write_mono
            if not truncate_wanted(idle, self.wal_bytes(), not busy and frames == copied):
                return "PASSIVE"
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return "TRUNCATE"
        except sqlite3.Error:
            return None  # busy or locked this time: the next tick tries again

    def facts(self) -> dict[str, Any]:
        """Backend numbers for health and metrics: the WAL's size."""
        return {"wal_bytes": self.wal_bytes()}

    def watch(self, wake: Callable[[], object]) -> None:
        """No other daemon writes this file: nothing to watch for."""

    def announce_rules(self, fingerprint: str) -> None:
        """No other daemon shares this file: nobody to compare rules with."""

    def leads_planning(self) -> bool:
        """Whether this daemon plans time-based rules: always, the file is its alone."""
        return True

    def wal_bytes(self) -> int:
        """Size of the WAL file now (0 when there is none)."""
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def close(self) -> None:
        """Stop the checkpointer and close the connection (checkpointing the WAL)."""
        self._stop_checkpointer.set()
        self._written.set()  # wake a checkpointer parked until the next write
        if self._checkpointer is not None:
            self._checkpointer.join(5)
            self._checkpointer = None
        self.conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._writer:
            if self._in_tx:  # called inside this thread's transaction: part of it
                yield self.conn
                return
            self._in_tx = True
            try:
                yield from self._transaction()
            finally:
                self._in_tx = False

    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with translated(f"{self.path}: cannot start a transaction"):
                self.conn.execute("BEGIN IMMEDIATE")
        except StoreError as exc:
            self._write_failed(exc)
            raise
        try:
            with translated(self.path):
                yield self.conn
        except StoreError as exc:
            self._rollback()
            if isinstance(exc.__cause__, foreign_errors()):  # the database refused the write
                self._write_failed(exc)
            raise
        except BaseException:
            self._rollback()  # our own refusal (not found, invalid state): not a write failure
            raise
        try:
            with translated(f"{self.path}: commit failed"):
                self.conn.execute("COMMIT")
        except StoreError as exc:
            self._rollback()
            self._write_failed(exc)
            raise
        self.last_write = WriteOutcome(True, self.clock.now())
        self._last_write_mono = self.clock.monotonic()
        if not self._written.is_set():  # a lock and a notify only for the first of a burst
            self._written.set()

    def _write_failed(self, exc: StoreError) -> None:
        self.last_write = WriteOutcome(False, self.clock.now(), exc.message)

    def _rollback(self) -> None:
        # SQLite may already have rolled back (disk full, I/O error): rolling back again would
        # raise and hide the real error.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with translated(f"{self.path}: query failed"):
            return self.conn.execute(sql, args).fetchall()

    def _settled(self) -> AbstractContextManager[object]:
        """Held around a read whose answer is acknowledged as stored (an idempotency key's
        event): the one connection is shared by threads, so a read while another thread's
        transaction is open would see its uncommitted rows; this waits for it to end."""
        return self._writer
