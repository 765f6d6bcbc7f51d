"""Cost of publishing one lifecycle event: no subscriber, metrics only, metrics + N watchers.

Prints microseconds per publish (best of 5 runs); a full watcher (a stuck reader) is measured
too, since publishing must not get dearer when a watcher stops reading.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from timeos.clock import FakeClock
from timeos.daemon.metrics import Metrics
from timeos.daemon.telemetry import EventBus

N = 50_000


def _per_publish(bus: EventBus, drain: list | None = None) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for n in range(N):
            bus.publish("job.succeeded", job_id="01J", rule="r", attempt=1, duration_ms=n % 50)
        best = min(best, time.perf_counter() - start)
        for watcher in drain or []:  # empty the queues between runs (not timed)
            watcher._items.clear()
            watcher._queued = 0
    return best / N * 1e6


async def main() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    bare = EventBus(clock)
    print(f"no subscriber:            {_per_publish(bare):6.2f} us/publish")
    bus = EventBus(clock)
    bus.subscribe(Metrics(job_counts=dict, next_fires=dict).observe)
    print(f"metrics:                  {_per_publish(bus):6.2f} us/publish")
    watcher = bus.watch(capacity=N + 1)
    print(f"metrics + 1 watcher:      {_per_publish(bus, [watcher]):6.2f} us/publish")
    more = [bus.watch(capacity=N + 1) for _ in range(9)]
    print(f"metrics + 10 watchers:    {_per_publish(bus, [watcher, *more]):6.2f} us/publish")
    for w in [watcher, *more]:
        bus.unwatch(w)
    stuck = bus.watch(capacity=10)
    for _ in range(10):
        bus.publish("job.started")
    print(
        f"metrics + 1 full watcher: {_per_publish(bus):6.2f} us/publish (dropped {stuck.dropped})"
    )


if __name__ == "__main__":
    asyncio.run(main())
