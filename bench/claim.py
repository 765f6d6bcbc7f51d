"""Claim rate of Store.claim_due with a million waiting jobs, its query plans, and next_due_at.

The database is built directly (executemany in big transactions) with varied priorities, most jobs
due in the next 30 days and a subset already due. No daemon: this measures the store alone.
Usage: python bench/claim.py [--quick]
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchkit import parse_args, percentile, report, verdict

from timeos.store.sqlite.store import SqliteStore
from timeos.timefmt import to_micros

CLAIM_BATCH = 100
RATE_TARGET = 10_000.0  # claims/s
CHUNK = 100_000
SEED = 20240601


def rows(total: int, due: int, now_us: int) -> Iterator[tuple[Any, ...]]:
    """Pending jobs: ids in creation order, `due` of them in the past hour, the rest future."""
    rng = random.Random(SEED)
    hour, month = 3600 * 10**6, 30 * 86400 * 10**6
    due_at = set(rng.sample(range(total), due))
    for i in range(total):
        if i in due_at:
            perform_at = now_us - rng.randrange(1, hour)
        else:
            perform_at = now_us + rng.randrange(60 * 10**6, month)
        yield (
            f"J{i:025d}",
            f"rule-{i % 20}",
            "notify",
            f"E{i:025d}",
            "pending",
            rng.randrange(10),
            perform_at,
            0,
            3,
            f'{{"user_id":{i}}}',
            now_us - hour,
            now_us - hour,
        )


def build(path: Path, total: int, due: int, now: datetime) -> float:
    """Create the schema through SqliteStore, then bulk-insert the jobs; return the seconds."""
    started = time.perf_counter()
    store = SqliteStore(path)
    conn = store.conn
    conn.execute("PRAGMA synchronous=OFF")  # build speed only; the measured Store uses NORMAL
    conn.execute("PRAGMA cache_size=-262144")
    source = rows(total, due, to_micros(now))
    sql = (
        "INSERT INTO jobs (id, rule, action, event_id, status, priority, perform_at, attempts,"
        " max_attempts, payload, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for start in range(0, total, CHUNK):
        conn.execute("BEGIN")
        conn.executemany(sql, (next(source) for _ in range(min(CHUNK, total - start))))
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    store.close()
    # Flush the build now, so the first checkpoint's fsync in the measurement does not pay for it.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], reps: int) -> list[float]:
    """Call `fn` `reps` times; return each call's duration in seconds."""
    durations = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return durations


def query_plans(store: SqliteStore, now: datetime) -> list[tuple[str, list[str]]]:
    """EXPLAIN QUERY PLAN of every SELECT one claim_due and one next_due_at actually run."""
    seen: list[str] = []
    conn = store.conn
    conn.set_trace_callback(seen.append)
    try:
        store.next_due_at()
        store.claim_due(now, 3)  # claims three jobs for real; only the SQL it runs matters here
    finally:
        conn.set_trace_callback(None)
    plans: list[tuple[str, list[str]]] = []
    shapes: set[str] = set()
    for sql in seen:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        shape = " ".join(w if not w[:1].isdigit() else "N" for w in sql.split())
        if shape in shapes:
            continue
        shapes.add(shape)
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
        plans.append((sql, [str(row[-1]) for row in plan]))
    return plans


def main() -> None:
    args = parse_args(__doc__ or "")
    total, due, target = (100_000, 10_000, 5_000) if args.quick else (1_000_000, 50_000, 20_000)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        path = Path(tmp) / "timeos.db"
        build_s = build(path, total, due, now)
        size_mb = path.stat().st_size / 2**20
        store = SqliteStore(path)  # a fresh connection, configured exactly as the daemon's
        store.start_checkpointer()  # as timeosd does: checkpoints run off the claiming thread
        try:
            plans = query_plans(store, now)
            claimed = 0
            calls: list[float] = []
            while claimed < target:
                started = time.perf_counter()
                got = store.claim_due(datetime.now(UTC), CLAIM_BATCH)
                calls.append(time.perf_counter() - started)
                if not got:
                    raise SystemExit(f"ran out of due jobs after {claimed}")
                claimed += len(got)
            rate = claimed / sum(calls)
            past = now - timedelta(days=365)
            empty = timed(lambda: store.claim_due(past, CLAIM_BATCH), 1000)
            wake = timed(store.next_due_at, 1000)
        finally:
            store.close()

    ms = [c * 1000 for c in calls]
    figures = {
        "jobs_in_db": total,
        "due_jobs": due,
        "build_s": round(build_s, 1),
        "db_mb": round(size_mb, 1),
        "claimed": claimed,
        "claims_per_s": round(rate, 1),
        "claims_per_s_at_median_call": round(CLAIM_BATCH / percentile(calls, 50), 1),
        "claim_call_p50_ms": round(percentile(ms, 50), 3),
        "claim_call_p99_ms": round(percentile(ms, 99), 3),
        "claim_call_max_ms": round(max(ms), 3),
        "empty_claim_p50_us": round(percentile(empty, 50) * 1e6, 1),
        "next_due_at_p50_us": round(percentile(wake, 50) * 1e6, 1),
        "next_due_at_p99_us": round(percentile(wake, 99) * 1e6, 1),
    }
    print(f"database: {total:,} pending jobs ({due:,} due), {size_mb:.0f} MB", end="")
    print(f" (built in {build_s:.1f} s)")
    print("query plans:")
    for sql, plan in plans:
        print(f"  {sql}")
        for line in plan:
            print(f"      {line}")
    print(
        f"claim_due(now, {CLAIM_BATCH}) until {claimed:,} claimed: {rate:,.0f} claims/s"
        f" (target > {RATE_TARGET:,.0f}/s: {verdict(rate, RATE_TARGET, below=False)})"
    )
    print(
        f"  per call p50 {figures['claim_call_p50_ms']} ms, p99 {figures['claim_call_p99_ms']} ms,"
        f" max {figures['claim_call_max_ms']} ms"
    )
    print(f"claim_due with nothing due: p50 {figures['empty_claim_p50_us']} µs")
    print(
        f"next_due_at(): p50 {figures['next_due_at_p50_us']} µs,"
        f" p99 {figures['next_due_at_p99_us']} µs"
    )
    report("claim", args.quick, figures, {"claims_per_s": f">{RATE_TARGET:g}"})


if __name__ == "__main__":
    main()
