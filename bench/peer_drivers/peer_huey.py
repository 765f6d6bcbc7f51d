"""Huey (SqliteHuey) under bench/peers.py: a consumer process with 4 threads, producers in this one.

Scenarios: consume (the consumer itself: idle and RSS are measured on it), lateness, burst,
enqueue, build. PEER_NORMAL=1 opens every connection with synchronous=NORMAL (TimeOS's setting);
Huey's default is WAL with SQLite's default synchronous (FULL: an fsync per commit).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import driverkit as kit
from huey import Huey
from huey.storage import SqliteStorage


class NormalStorage(SqliteStorage):
    """SqliteStorage at TimeOS's durability: WAL, synchronous=NORMAL."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


FAR_AHEAD = 10.0**10  # epoch seconds, in the year 2286

huey = Huey("bench", filename=kit.DB, storage_class=NormalStorage if kit.NORMAL else SqliteStorage)


@huey.task()
def record(kind: str, due: float) -> None:
    kit.SINK.write(kind, due, time.time())


def settings() -> dict[str, Any]:
    conn = huey.storage.conn
    return {
        "journal_mode": conn.execute("pragma journal_mode").fetchone()[0],
        "synchronous": conn.execute("pragma synchronous").fetchone()[0],
    }


def at(due: float) -> datetime:
    return datetime.fromtimestamp(due, UTC)


def consume(idle_job: bool) -> None:
    if idle_job:
        record.schedule(args=("idle", 0.0), eta=at(time.time() + kit.HOUR))
    consumer = huey.create_consumer(workers=4, worker_type="thread")
    kit.say({"ready": True, "settings": settings()})
    consumer.run()  # until SIGTERM


def start_consumer() -> subprocess.Popen[str]:
    proc = subprocess.Popen(  # inherits PEER_DB, PEER_NORMAL and PEER_SINK
        [sys.executable, __file__, "consume"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(0.5)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def lateness(args: Any) -> dict[str, Any]:
    consumer = start_consumer()
    try:
        load = None
        if args.load:
            load = kit.Load(args.load, lambda: record("load", time.time()))
            load.start()
        begun = time.monotonic()
        for i in range(args.n):
            due = time.time() + args.lead
            record.schedule(args=("late", due), eta=at(due))
            pause = begun + (i + 1) * args.spacing - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return kit.lateness_result(args.n, 30 + args.lead + 2, load)
    finally:
        stop(consumer)


def burst(args: Any) -> dict[str, Any]:
    consumer = start_consumer()
    try:
        probe_at = at(time.time() + kit.HOUR)
        due = kit.burst_due(args.n, lambda: record.schedule(args=("probe", 0.0), eta=probe_at))
        for _ in range(args.n):
            record.schedule(args=("burst", due), eta=at(due))
        timeout = max(0.0, due - time.time()) + 60 + args.n / 20
        return kit.burst_result(args.n, due, timeout, lambda: 0)
    finally:
        stop(consumer)


def build(n: int) -> dict[str, Any]:
    """`n` tasks waiting in the schedule far ahead (one real message, copied in bulk).

    A scheduled task goes to the queue first and the consumer moves it to the schedule table;
    the copies go straight there, as if the consumer had moved them.
    """
    started = time.perf_counter()
    record.schedule(args=("waiting", 0.0), eta=at(time.time() + 365 * 86400))
    conn = sqlite3.connect(kit.DB)
    queue, data = conn.execute("SELECT queue, data FROM task").fetchone()
    conn.execute("BEGIN")
    conn.execute("DELETE FROM task")
    conn.executemany(
        "INSERT INTO schedule (queue, data, timestamp) VALUES (?, ?, ?)",
        ((queue, data, FAR_AHEAD + i) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.close()
    return {"built": n, "seconds": time.perf_counter() - started}


def main() -> None:
    args = kit.parse(__doc__ or "")
    if args.scenario == "consume":
        consume(args.idle_job)
        return
    if args.scenario == "lateness":
        result = lateness(args)
    elif args.scenario == "burst":
        result = burst(args)
    elif args.scenario == "enqueue":
        result = kit.timed_enqueue(args.n, lambda i: record("queued", float(i)))
    elif args.scenario == "build":
        result = build(args.n)
    else:
        raise SystemExit(f"unknown scenario {args.scenario!r}")
    result["settings"] = settings()
    kit.say(result)


if __name__ == "__main__":
    main()
