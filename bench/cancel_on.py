"""cancel_on latency with a million waiting jobs: Service.emit of an event that cancels one job
(found through the job_keys index), of one whose key matches nothing, and of an event type no
rule correlates; plus a CEL cancel_on, which scans its rule's waiting jobs (10,000 of them).

The jobs and their key rows are written directly (executemany in big transactions, keys through
SqliteStore.insert_job_keys); the emits go through Service over the real store, as timeosd runs
them minus HTTP. Usage: python bench/cancel_on.py [--quick]
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import parse_args, percentile, report

from timeos.clock import SystemClock
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore
from timeos.timefmt import to_micros

CHUNK = 100_000
EMITS = 200
CEL_JOBS = 10_000
SEED = 20261202
RULES = """\
actions:
  notify: {command: ["true"]}
rules:
  - name: remind
    on_event: order_created
    offset: 7d
    perform: notify
    cancel_on: [{event: order_paid, match: payload.order_id}]
  - name: chase
    on_event: invoice_sent
    offset: 7d
    perform: notify
    cancel_on: [{event: invoice_settled, match: "payload.invoice == origin.invoice"}]
"""


def rows(rule: str, total: int, field: str, now_us: int) -> Iterator[tuple[Any, ...]]:
    """Pending jobs of `rule`, due within 30 days, each from a payload {field: i}."""
    rng = random.Random(SEED)
    month = 30 * 86400 * 10**6
    for i in range(total):
        yield (
            f"{rule[:1].upper()}{i:025d}",
            rule,
            "notify",
            f"E{rule[:1]}{i:024d}",
            "pending",
            0,
            now_us + rng.randrange(60 * 10**6, month),
            0,
            3,
            f'{{"{field}":{i}}}',
            now_us,
            now_us,
        )


def build(path: Path, total: int, now: datetime) -> float:
    """Create the schema through SqliteStore, then bulk-insert jobs and key rows; the seconds."""
    started = time.perf_counter()
    store = SqliteStore(path)
    conn = store.conn
    conn.execute("PRAGMA synchronous=OFF")  # build speed only; the measured Store uses NORMAL
    conn.execute("PRAGMA cache_size=-262144")
    sql = (
        "INSERT INTO jobs (id, rule, action, event_id, status, priority, perform_at, attempts,"
        " max_attempts, payload, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for rule, count, field in (("remind", total, "order_id"), ("chase", CEL_JOBS, "invoice")):
        source = rows(rule, count, field, to_micros(now))
        for start in range(0, count, CHUNK):
            part = [next(source) for _ in range(min(CHUNK, count - start))]
            conn.execute("BEGIN")
            conn.executemany(sql, part)
            conn.execute("COMMIT")
            if rule == "remind":  # what a correlated emit writes for each job it creates
                store.insert_job_keys([(r[0], rule, "payload.order_id", r[9][12:-1]) for r in part])
    # No ANALYZE: timeosd never runs it, and with statistics SQLite chose plans the daemon
    # would not (a cancel_on lookup walking every waiting job went unseen here: 242 ms).
    store.close()
    return time.perf_counter() - started


def timed(fn: Callable[[int], Any], reps: int) -> list[float]:
    """Call fn(0..reps-1); each call's duration in milliseconds."""
    out = []
    for n in range(reps):
        started = time.perf_counter()
        fn(n)
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    total = 100_000 if args.quick else 1_000_000
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        path = Path(tmp) / "timeos.db"
        build_s = build(path, total, now)
        rules_file = Path(tmp) / "rules.yaml"
        rules_file.write_text(RULES)
        rules = load_rules([rules_file], {})
        store = SqliteStore(path)
        store.start_checkpointer()  # as timeosd does
        service = Service(
            store=store,
            clock=SystemClock(),
            rules=rules,
            rule_paths=[rules_file],
            loader=lambda paths: rules,
            limits=Limits(),
        )
        try:
            targets = random.Random(SEED).sample(range(total), EMITS)

            def cancel(n: int) -> None:
                result = service.emit("order_paid", {"order_id": targets[n]})
                assert len(result.cancelled) == 1, result

            def miss(n: int) -> None:
                result = service.emit("order_paid", {"order_id": total + n})
                assert not result.cancelled

            def plain(n: int) -> None:
                service.emit("page_view", {"order_id": n})

            def scan(n: int) -> None:
                result = service.emit("invoice_settled", {"invoice": n})
                assert len(result.cancelled) == 1, result

            figures: dict[str, Any] = {"waiting_jobs": total, "build_s": round(build_s, 1)}
            for name, fn, reps in (
                ("uncorrelated", plain, EMITS),
                ("cancelling", cancel, EMITS),
                ("non_matching", miss, EMITS),
                ("cel_scan_10k", scan, 20),
            ):
                figures[name] = summary(timed(fn, reps))
        finally:
            store.close()
    print(f"database: {total:,} waiting jobs with keys (+{CEL_JOBS:,} for the CEL rule),", end="")
    print(f" built in {build_s:.1f} s")
    for name in ("uncorrelated", "cancelling", "non_matching", "cel_scan_10k"):
        f = figures[name]
        print(f"emit {name:>13}: p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms")
    report("cancel_on", args.quick, figures, {})


if __name__ == "__main__":
    main()
