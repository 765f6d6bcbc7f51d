"""Claim latency of the PostgreSQL store with a million waiting jobs (no daemon; the store alone).

A tenth of the jobs wait at a high priority in the future (the case a single index walk in
(priority, perform_at) order handles badly), the rest at priority 0, 1% of them already due.
Rows are loaded with COPY into a fresh schema (dropped at the end); then claim_due(now, 100) is
timed until the due jobs are gone. PostgreSQL at $TIMEOS_BENCH_PG_URL (default: local, db test).
Usage: python bench/pg_claim.py [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime

import psycopg

from timeos.store.postgres.store import PostgresStore
from timeos.timefmt import to_micros

URL = os.environ.get("TIMEOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _load(store: PostgresStore, total: int) -> int:
    rng = random.Random(7)
    now, month = to_micros(NOW), 30 * 86400 * 10**6
    due = 0
    with store.pool.connection() as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY jobs (id, rule, action, status, priority, perform_at, attempts, max_attempts,"
            " payload, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(total):
                roll = rng.random()
                if roll < 0.1:
                    priority, at = 10, now + rng.randrange(60 * 10**6, month)
                elif roll < 0.11:
                    priority, at = 0, now - rng.randrange(1, 3600 * 10**6)
                    due += 1
                else:
                    priority, at = 0, now + rng.randrange(60 * 10**6, month)
                copy.write_row((f"J{i:09d}", f"r{i % 50}", "act", "pending", priority, at, 0, 3,
                                "{}", now, now))  # fmt: skip
        cur.execute("ANALYZE jobs")
    return due


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    schema = f"claim_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(URL, schema_name=schema, daemon_id="bench")
    try:
        start = time.perf_counter()
        due = _load(store, args.jobs)
        print(f"{args.jobs} waiting jobs ({due} due) loaded in {time.perf_counter() - start:.1f} s")
        times, claimed = [], 0
        while True:
            start = time.perf_counter()
            jobs = store.claim_due(NOW, 100)
            times.append((time.perf_counter() - start) * 1000)
            claimed += len(jobs)
            if not jobs:
                break
        rate = claimed / (sum(times) / 1000)
        print(f"claimed {claimed} in batches of 100: median {statistics.median(times):.1f} ms,"
              f" max {max(times):.1f} ms per batch, {rate:.0f} claims/s")  # fmt: skip
    finally:
        store.close()
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
