"""WAL size under a write load with a reader holding a snapshot, and after the writer goes idle.

Drives Store directly on a temporary database with the daemon's checkpointer thread running, as
timeosd does. A second connection keeps read transactions open during the load (as API readers
do), so passive checkpoints cannot let SQLite restart the WAL and the file grows; the figure
that matters is the size a few seconds after the load stops. Usage: python bench/wal_idle.py
[--quick]
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchkit import parse_args, report

from timeos.model import Event, NewJob, new_id
from timeos.store.sqlite.store import SqliteStore


def wal_mb(db: Path) -> float:
    wal = Path(f"{db}-wal")
    return round(wal.stat().st_size / 1_048_576, 1) if wal.exists() else 0.0


def main() -> None:
    args = parse_args(__doc__ or "")
    events = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "timeos.db"
        store = SqliteStore(db)
        store.start_checkpointer()
        reader = sqlite3.connect(db, isolation_level=None)
        now = datetime.now(UTC)
        payload = {"blob": "x" * 4000}
        started = time.monotonic()
        for i in range(events):
            if i % 500 == 0:  # a reader pinning a snapshot, renewed now and then
                if reader.in_transaction:
                    reader.execute("COMMIT")
                reader.execute("BEGIN")
                reader.execute("SELECT COUNT(*) FROM events").fetchone()
            at = now + timedelta(microseconds=i)
            event = Event(new_id(at), "load", payload, at, at, None)
            store.emit(event, [NewJob("r", "a", at, 0, 3, payload, event.id)], at)
        if reader.in_transaction:
            reader.execute("COMMIT")
        load_s = time.monotonic() - started
        after_load = wal_mb(db)
        time.sleep(4.0)  # idle: longer than IDLE_TRUNCATE_SECONDS plus one checkpointer tick
        after_idle = wal_mb(db)
        reader.close()
        store.close()
    print(f"{events} events in {load_s:.1f} s; WAL {after_load} MB after the load,")
    print(f"{after_idle} MB after 4 s idle")
    report(
        "wal_idle",
        args.quick,
        {"events": events, "wal_mb_after_load": after_load, "wal_mb_after_idle": after_idle},
        {"wal_mb_after_idle": "<1"},
    )


if __name__ == "__main__":
    main()
