"""APScheduler 3 under bench/peers.py: a BackgroundScheduler, SQLAlchemy job store on SQLite.

Everything runs in this process (APScheduler is a library, not a service): 4 pool threads.
Scenarios: serve (idle and RSS are measured on it), lateness, burst, enqueue, build.
PEER_NORMAL=1 opens connections with journal_mode=WAL, synchronous=NORMAL (TimeOS's setting);
the default is SQLite's: a rollback journal and synchronous=FULL.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import driverkit as kit
from apscheduler.events import EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, event, text

ENGINE = create_engine(f"sqlite:///{kit.DB}")
if kit.NORMAL:

    @event.listens_for(ENGINE, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def record(kind: str, due: float) -> None:
    kit.SINK.write(kind, due, time.time())


class Missed:
    """Counts jobs APScheduler skipped (EVENT_JOB_MISSED: later than misfire_grace_time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, _event: JobEvent) -> None:
        with self.lock:
            self.count += 1


def scheduler(no_grace: bool = False) -> BackgroundScheduler:
    sched = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=ENGINE)},
        executors={"default": ThreadPoolExecutor(4)},
        job_defaults={"misfire_grace_time": None} if no_grace else {},
        timezone="UTC",
    )
    sched.start()
    return sched


def at(due: float) -> datetime:
    return datetime.fromtimestamp(due, UTC)


def add(sched: BackgroundScheduler, kind: str, due: float) -> None:
    sched.add_job(record, "date", run_date=at(due), args=(kind, due))


def settings() -> dict[str, Any]:
    with ENGINE.connect() as conn:
        return {
            "journal_mode": conn.execute(text("PRAGMA journal_mode")).scalar(),
            "synchronous": conn.execute(text("PRAGMA synchronous")).scalar(),
        }


def serve(idle_job: bool) -> None:
    sched = scheduler()
    if idle_job:
        add(sched, "idle", time.time() + kit.HOUR)
    kit.say({"ready": True, "settings": settings()})
    sys.stdin.read()  # until peers.py closes stdin or ends this process
    sched.shutdown(wait=False)


def lateness(args: Any) -> dict[str, Any]:
    sched = scheduler()
    try:
        load = None
        if args.load:
            load = kit.Load(args.load, lambda: add(sched, "load", time.time()))
            load.start()
        begun = time.monotonic()
        for i in range(args.n):
            add(sched, "late", time.time() + args.lead)
            pause = begun + (i + 1) * args.spacing - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return kit.lateness_result(args.n, 30 + args.lead + 2, load)
    finally:
        sched.shutdown(wait=False)


def burst(args: Any) -> dict[str, Any]:
    sched = scheduler(args.no_grace)
    missed = Missed()
    sched.add_listener(missed, EVENT_JOB_MISSED)
    try:
        due = kit.burst_due(args.n, lambda: add(sched, "probe", time.time() + kit.HOUR))
        for _ in range(args.n):
            add(sched, "burst", due)
        timeout = max(0.0, due - time.time()) + 60 + args.n / 20
        return kit.burst_result(args.n, due, timeout, lambda: missed.count)
    finally:
        sched.shutdown(wait=False)


def build(n: int) -> dict[str, Any]:
    """`n` jobs waiting a year ahead (one real job's row, copied in bulk with new ids)."""
    started = time.perf_counter()
    sched = scheduler()
    add(sched, "waiting", time.time() + 365 * 86400)
    sched.shutdown(wait=False)
    ENGINE.dispose()
    conn = sqlite3.connect(kit.DB)
    when, state = conn.execute("SELECT next_run_time, job_state FROM apscheduler_jobs").fetchone()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO apscheduler_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)",
        ((f"bulk-{i}", when + i, state) for i in range(1, n)),
    )
    conn.execute("COMMIT")
    conn.close()
    return {"built": n, "seconds": time.perf_counter() - started}


def main() -> None:
    args = kit.parse(__doc__ or "")
    if args.scenario == "serve":
        serve(args.idle_job)
        return
    if args.scenario == "lateness":
        result = lateness(args)
    elif args.scenario == "burst":
        result = burst(args)
    elif args.scenario == "enqueue":
        sched = scheduler()
        later = time.time() + kit.HOUR
        result = kit.timed_enqueue(args.n, lambda i: add(sched, "queued", later + i))
        sched.shutdown(wait=False)
    elif args.scenario == "build":
        result = build(args.n)
    else:
        raise SystemExit(f"unknown scenario {args.scenario!r}")
    result["settings"] = settings()
    kit.say(result)


if __name__ == "__main__":
    main()
