"""The PostgreSQL store beside the SQLite store: emit throughput, and claim+finish throughput with
one, two and three claimers (processes, each with its own store, as daemons would be).

No daemon and no actions: this measures the store alone. Each claimer loops claim_due(batch) then
finish() on every job until nothing is due. PostgreSQL at $TIMEOS_BENCH_PG_URL (default the local
server, database test), in a schema of its own that is dropped at the end.
Usage: python bench/pg_store.py [--jobs N] [--batch N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from timeos.model import ActionResult, Event, JobStatus, NewJob, Outcome, Verdict, new_id
from timeos.store.postgres.store import PostgresStore
from timeos.store.sqlite.store import SqliteStore

URL = os.environ.get("TIMEOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _open(kind: str, where: str, name: str) -> Any:
    if kind == "sqlite":
        return SqliteStore(where)
    return PostgresStore(URL, schema_name=where, daemon_id=name)


def _fill(store: Any, jobs: int) -> float:
    """Emit `jobs` events of one job each, one event per transaction; events/s."""
    start = time.perf_counter()
    for _ in range(jobs):
        event = Event(new_id(T0), "e", {"n": 1}, T0, T0)
        store.emit(event, [NewJob("r", "act", T0, 0, 3, event.payload, event.id)], T0)
    return jobs / (time.perf_counter() - start)


def _drain(kind: str, where: str, name: str, batch: int, out: Any) -> None:
    store = _open(kind, where, name)
    done = 0
    verdict = Verdict(JobStatus.SUCCEEDED, T0, 3, 0)
    while jobs := store.claim_due(T0, batch):
        for job in jobs:
            store.finish(job, ActionResult(Outcome.SUCCEEDED), T0, verdict)
        done += len(jobs)
    store.close()
    out.put(done)


def _run(kind: str, where: str, claimers: int, jobs: int, batch: int) -> tuple[float, float]:
    store = _open(kind, where, "filler")
    emit_rate = _fill(store, jobs)
    store.close()
    out: Any = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_drain, args=(kind, where, f"d{n}", batch, out))
        for n in range(claimers)
    ]
    start = time.perf_counter()
    for p in procs:
        p.start()
    counts = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - start
    assert sum(counts) == jobs, f"{counts} != {jobs}: a job was lost or run twice"
    return emit_rate, jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.jobs} jobs, claim batch {args.batch}, CPUs {os.cpu_count()}")
    print(f"{'store':<10} {'claimers':>8} {'emit/s':>9} {'claim+finish/s':>15}")
    with tempfile.TemporaryDirectory() as tmp:
        emit, rate = _run("sqlite", str(Path(tmp) / "b.db"), 1, args.jobs, args.batch)
        print(f"{'sqlite':<10} {1:>8} {emit:>9.0f} {rate:>15.0f}")
    import psycopg

    for claimers in (1, 2, 3):
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            emit, rate = _run("postgres", schema, claimers, args.jobs, args.batch)
            print(f"{'postgres':<10} {claimers:>8} {emit:>9.0f} {rate:>15.0f}")
        finally:
            with psycopg.connect(URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
