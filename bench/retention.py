"""Database size under a steady load with short retention: it must stop growing.

In-process on a FakeClock (the daemon's own scheduler, occurrence planner and pruner over a real
SQLite file): every fake second, EMITS events whose rule runs a python no-op, plus a rule that
fires every second. Retention keeps jobs and events 2 minutes and prunes every minute, so after
a few minutes each pass removes about what the load added and SQLite reuses the freed pages.
Prints the database file's size (the WAL is the checkpointer's business: bench/wal_idle.py)
each fake minute; with retention off (`--no-retention`) it grows for good.
Usage: python bench/retention.py [--quick] [--no-retention]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchkit import parse_args, report

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.planner import OccurrencePlanner
from timeos.daemon.retention import Pruner
from timeos.daemon.scheduler import Scheduler
from timeos.daemon.service import Service
from timeos.engine import Limits, Retention
from timeos.model import (
    FOREVER,
    Action,
    ActionKind,
    EventTrigger,
    IntervalTrigger,
    PythonSpec,
    Rule,
    RuleSet,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
EMITS = 10  # events per fake second
PAYLOAD = {"user_id": "u-123", "note": "x" * 400}


def noop(payload: object, ctx: object) -> None:
    """The action every job runs: nothing, so the figure is the store's alone."""


def rules() -> RuleSet:
    act = Action("noop", ActionKind.PYTHON, PythonSpec("retention:noop", noop))
    return RuleSet(
        (
            Rule("on-signup", EventTrigger("user_signup"), "noop"),
            Rule("tick", IntervalTrigger(timedelta(seconds=1)), "noop"),
        ),
        {"noop": act},
    )


async def drive(db: Path, minutes: int, keep: Retention) -> list[tuple[int, float, int, int]]:
    clock = FakeClock(T0)
    store = SqliteStore(db, clock=clock)
    store.start_checkpointer()  # as timeosd does
    ruleset = rules()
    planner = OccurrencePlanner(store=store, rules=lambda: ruleset)
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(
        store=store, clock=clock, runner=runner, rules=lambda: ruleset, planner=planner
    )
    pruner = Pruner(store=store, clock=clock, rules=lambda: ruleset, retention=keep)
    service = Service(
        store=store,
        clock=clock,
        rules=ruleset,
        rule_paths=[],
        loader=lambda paths: ruleset,
        limits=Limits(),
        on_change=scheduler.poke,
        pruner=pruner,
    )
    tasks = [asyncio.create_task(scheduler.run()), asyncio.create_task(pruner.run())]
    sizes: list[tuple[int, float, int, int]] = []  # (minute, file MiB, jobs, events)
    for second in range(1, minutes * 60 + 1):
        clock.advance(timedelta(seconds=1))
        for _ in range(EMITS):
            service.emit("user_signup", PAYLOAD)
        # Let the loop run every due job (the scheduler, the pruner when due) before moving on.
        for _ in range(10_000):
            await asyncio.sleep(0.001 if scheduler.running else 0)
            due = store.next_due_at()
            if not scheduler.running and (due is None or due > clock.now()):
                break
        if second % 60 == 0:
            counts = store.counts_by_status()
            events = store.count_events()
            size = db.stat().st_size / 1_048_576
            wal = store.wal_bytes() / 1_048_576
            sizes.append((second // 60, round(size, 2), sum(counts.values()), events))
            print(
                f"  minute {second // 60:3d}: database file {size:6.2f} MiB (WAL {wal:5.1f} MiB),"
                f" {sum(counts.values()):6d} jobs, {events:6d} events",
                flush=True,
            )
    pruner.stop()
    scheduler.stop()
    await asyncio.gather(*tasks)
    await runner.aclose()
    store.close()
    return sizes


def main() -> None:
    off = "--no-retention" in sys.argv
    if off:
        sys.argv.remove("--no-retention")
    args = parse_args(__doc__ or "")
    minutes = 4 if args.quick else 15
    keep = Retention(
        events=FOREVER if off else timedelta(minutes=2),
        jobs=FOREVER if off else timedelta(minutes=2),
        every=timedelta(minutes=1),
        first_after=timedelta(minutes=1),
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = asyncio.run(drive(Path(tmp) / "timeos.db", minutes, keep))
    half = sizes[len(sizes) // 2][1]
    last = sizes[-1][1]
    report(
        "retention",
        args.quick,
        {
            "retention": "off" if off else "2m, pruned every 1m",
            "fake_minutes": minutes,
            "jobs_per_fake_second": EMITS + 1,
            "mib_by_minute": [s[1] for s in sizes],
            "growth_second_half_mib": round(last - half, 2),
            "real_seconds": round(time.monotonic() - started, 1),
        },
        {"growth_second_half_mib": "~0 with retention"},
    )


if __name__ == "__main__":
    main()
