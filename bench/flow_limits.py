"""Rate-limit accuracy and the claim rate beside a saturated rate-limited rule.

1. Fake clock: a rule under `rate_limit: 10/minute` with a backlog, the real scheduler loop and
   store, the clock advanced second by second: runs per 60 s window over 10 windows.
2. Real time: a real timeosd with the same rule for --real-seconds (default 120): runs per 60 s
   window, and the gaps between consecutive starts (6 s expected).
3. Claim rate: 1,000,000 waiting jobs over 5 priorities, one rule rate-limited to 1/minute with
   a backlog of due jobs ahead of everyone (saturated), against the same database with no limits.

Usage: python bench/flow_limits.py [--quick] [--real-seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchkit import TimeosDaemon, percentile, report

from timeos.actions import ActionRunner
from timeos.clock import FakeClock
from timeos.daemon.scheduler import Scheduler
from timeos.model import (
    Action,
    ActionKind,
    Event,
    EventTrigger,
    NewJob,
    PythonSpec,
    RateLimit,
    Rule,
    RuleSet,
    new_id,
)
from timeos.rules.limits import Limit
from timeos.store.sqlite.store import SqliteStore
from timeos.timefmt import to_micros

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOWS = 10
CLAIM_BATCH = 100
PRIORITIES = 5
SEED = 20261202


# ---- 1. the fake clock ------------------------------------------------------------------------


def fake_clock_windows() -> tuple[int, list[int]]:
    """Runs at the start (the burst) and in each following 60 s window, on a FakeClock."""
    starts: list[datetime] = []
    clock = FakeClock(T0)

    async def act(payload: Any, ctx: Any) -> None:
        starts.append(clock.now())

    action = Action("act", ActionKind.PYTHON, PythonSpec("bench:act", act))
    rule = Rule("mail", EventTrigger("e"), "act", rate_limit=RateLimit(10, "minute", 10))
    rules = RuleSet((rule,), {"act": action})
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        store = SqliteStore(Path(tmp) / "t.db")
        event = Event(new_id(T0), "e", {}, T0, T0)
        store.emit(event, [NewJob("mail", "act", T0, 0, 3, {}, event.id)] * 250, T0)
        runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
        scheduler = Scheduler(store=store, clock=clock, runner=runner, rules=lambda: rules)

        async def settle() -> None:
            # A pass at the clock's instant with nothing running: that second is done.
            for _ in range(2000):
                if scheduler.last_tick == clock.now() and not scheduler.running:
                    await asyncio.sleep(0.002)
                    if scheduler.last_tick == clock.now() and not scheduler.running:
                        return
                await asyncio.sleep(0.001)
            raise SystemExit(f"the loop did not settle at {clock.now()}")

        async def go() -> None:
            task = asyncio.create_task(scheduler.run())
            await settle()
            for _ in range(WINDOWS * 60):
                clock.advance(timedelta(seconds=1))
                await settle()
            scheduler.stop()
            await task

        asyncio.run(go())
        store.close()
    burst = sum(1 for s in starts if s == T0)
    windows = [0] * WINDOWS
    for at in starts:
        if at > T0:
            windows[(at - T0 - timedelta(microseconds=1)) // timedelta(minutes=1)] += 1
    return burst, windows


# ---- 2. real time -----------------------------------------------------------------------------

REAL_RULES = """
actions:
  act:
    command: ["true"]
rules:
  - name: mail
    on_event: signup
    perform: act
    rate_limit: 10/minute
"""


def real_windows(seconds: float) -> tuple[int, list[int], list[float]]:
    """A real timeosd under 10/minute: runs in the first second (the burst), then per 60 s
    window after it, and the gaps between consecutive starts after the burst (s)."""
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        with TimeosDaemon(Path(tmp), REAL_RULES) as daemon:
            events = [{"type": "signup", "payload": {"n": i}} for i in range(60)]
            daemon.client.call("POST", "/v1/events/batch", {"events": events})
            time.sleep(seconds + 1.0)  # the token due at exactly `seconds` included
            rows = daemon.query(
                "SELECT a.started_at FROM attempts a JOIN jobs j ON j.id = a.job_id"
                " WHERE j.rule = 'mail' ORDER BY a.started_at"
            )
    starts = [r[0] / 1e6 for r in rows]
    if not starts:
        raise SystemExit("no run started")
    first = starts[0]
    burst = sum(1 for at in starts if at - first < 1.0)
    # Window k holds the tokens due in (60k, 60(k+1)] s after the burst, with half a second of
    # slack for the loop's wake-up (the gaps show how late each start really was).
    windows = [0] * max(1, round(seconds / 60))
    for at in starts[burst:]:
        index = int((at - first - 0.5) // 60)
        if 0 <= index < len(windows):
            windows[index] += 1
    gaps = [b - a for a, b in zip(starts[burst - 1 :], starts[burst:], strict=False)]
    return burst, windows, gaps or [0.0]


# ---- 3. the claim rate ------------------------------------------------------------------------


def rows(total: int, backlog: int, due: int, now_us: int) -> Iterator[tuple[Any, ...]]:
    """Waiting jobs over 5 priorities: the limited rule's `backlog` due first (oldest), `due`
    more of 19 other rules due in the last hour, the rest in the next 30 days."""
    rng = random.Random(SEED)
    hour, month = 3600 * 10**6, 30 * 86400 * 10**6
    for i in range(total):
        if i < backlog:
            rule, perform_at = "limited", now_us - 2 * hour - rng.randrange(hour)
        elif i < backlog + due:
            rule, perform_at = f"rule-{i % 19}", now_us - rng.randrange(1, hour)
        else:
            rule, perform_at = f"rule-{i % 19}", now_us + rng.randrange(60 * 10**6, month)
        yield (
            f"J{i:025d}",
            rule,
            "notify",
            "pending",
            rng.randrange(PRIORITIES),
            perform_at,
            0,
            3,
            "{}",
            now_us - 3 * hour,
            now_us - 3 * hour,
        )


def build(path: Path, total: int, backlog: int, due: int, now: datetime) -> None:
    store = SqliteStore(path)
    conn = store.conn
    conn.execute("PRAGMA synchronous=OFF")  # build speed only
    source = rows(total, backlog, due, to_micros(now))
    sql = (
        "INSERT INTO jobs (id, rule, action, status, priority, perform_at, attempts,"
        " max_attempts, payload, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    )
    for start in range(0, total, 100_000):
        conn.execute("BEGIN")
        conn.executemany(sql, (next(source) for _ in range(min(100_000, total - start))))
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    store.close()


def claim_rate(path: Path, limited: bool, target: int) -> tuple[float, float, int]:
    """claims/s and p50 ms per claim_due(now, 100) until `target` claimed; limited jobs taken."""
    limits = {"rule:limited": Limit("rule:limited", RateLimit(1, "minute", 1), None)}
    store = SqliteStore(path)
    claimed, calls, of_limited = 0, [], 0
    try:
        while claimed < target:
            started = time.perf_counter()
            got = store.claim_due(
                datetime.now(UTC), CLAIM_BATCH, limits=limits if limited else None
            )
            calls.append(time.perf_counter() - started)
            if not got:
                raise SystemExit(f"ran out of due jobs after {claimed}")
            claimed += len(got)
            of_limited += sum(1 for j in got if j.rule == "limited")
    finally:
        store.close()
    return claimed / sum(calls), percentile(calls, 50) * 1000, of_limited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--real-seconds", type=float, default=120.0, help="real-time run length")
    args = parser.parse_args()
    figures: dict[str, Any] = {}

    burst, windows = fake_clock_windows()
    print(f"fake clock, 10/minute: {burst} at once (the burst), then per 60 s window: {windows}")
    figures.update(fake_burst=burst, fake_windows=windows)

    real_s = min(args.real_seconds, 30.0) if args.quick else args.real_seconds
    real_burst, real, gaps = real_windows(real_s)
    gap = f"gaps between starts p50 {percentile(gaps, 50):.3f} s, max {max(gaps):.3f} s"
    print(
        f"real timeosd for {real_s:.0f} s, 10/minute: {real_burst} at once, then per 60 s"
        f" window {real} ({gap})"
    )
    figures.update(
        real_seconds=real_s,
        real_burst=real_burst,
        real_windows=real,
        gap_p50_s=round(percentile(gaps, 50), 3),
        gap_max_s=round(max(gaps), 3),
    )

    total, backlog, due, target = (
        (100_000, 20_000, 10_000, 5_000) if args.quick else (1_000_000, 200_000, 50_000, 20_000)
    )
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        base = Path(tmp) / "base.db"
        build(base, total, backlog, due, datetime.now(UTC))
        results = {}
        for limited in (False, True):
            path = Path(tmp) / f"run-{limited}.db"
            shutil.copy(base, path)
            results[limited] = claim_rate(path, limited, target)
            path.unlink()
    for limited, (rate, p50, taken) in results.items():
        what = "rule 'limited' at 1/minute, saturated" if limited else "no limits"
        print(
            f"claim_due(now, {CLAIM_BATCH}) with {total:,} waiting over {PRIORITIES} priorities"
            f" ({backlog:,} of them the limited rule's due backlog), {what}:"
            f" {rate:,.0f} claims/s, p50 {p50:.2f} ms per call; limited jobs claimed: {taken}"
        )
    figures.update(
        claims_per_s_no_limits=round(results[False][0]),
        claims_per_s_saturated=round(results[True][0]),
        limited_claimed_saturated=results[True][2],
    )
    report("flow_limits", args.quick, figures, {"fake_windows": "10 each"})


if __name__ == "__main__":
    main()
