"""What the peer drivers share: the line protocol with bench/peers.py, the sink, load pacing.

The drivers run under the peers' throwaway venv (no timeos there), as
`python bench/peer_drivers/peer_NAME.py SCENARIO [options]`, so this directory is on sys.path.
Protocol: a driver that must wait prints {"ready": ...} and reads a line (or EOF) on stdin; every
driver ends by printing one JSON line with its result. Samples are raw; peers.py computes the
statistics, the same way for every system.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HOUR = 3600.0


def say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def ready_then_wait(info: dict[str, Any] | None = None) -> None:
    """Announce readiness, then block until bench/peers.py writes a line or closes stdin."""
    say({"ready": True, **(info or {})})
    sys.stdin.readline()


def parse(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("scenario")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--lead", type=float, default=0.3)
    parser.add_argument("--spacing", type=float, default=0.05)
    parser.add_argument("--load", type=float, default=0.0, help="background jobs/s")
    parser.add_argument("--no-grace", action="store_true", help="never skip a late job")
    parser.add_argument("--idle-job", action="store_true", help="one job waiting an hour")
    return parser.parse_args()


class Sink:
    """Lines `kind due start end` appended by jobs (one handle per process, line-buffered)."""

    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.out = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def write(self, kind: str, due: float, started: float) -> None:
        ended = time.time()
        if self.out is not None:
            with self.lock:
                self.out.write(f"{kind} {due!r} {started!r} {ended!r}\n")


# Where jobs write, the database and the durability come from the environment (PEER_SINK,
# PEER_DB, PEER_NORMAL=1 for WAL + synchronous=NORMAL), so a consumer child inherits them.
SINK_PATH = os.environ.get("PEER_SINK", "")
DB = os.environ.get("PEER_DB", "peer.db")
NORMAL = os.environ.get("PEER_NORMAL") == "1"
SINK = Sink(SINK_PATH)


def rows(path: str, kind: str) -> list[tuple[float, float, float]]:
    """(due, start, end) of every finished job of `kind`."""
    found = []
    with open(path, encoding="utf-8") as sink:
        for line in sink:
            parts = line.split()
            if len(parts) == 4 and parts[0] == kind:
                found.append((float(parts[1]), float(parts[2]), float(parts[3])))
    return found


def wait_rows(
    path: str, kind: str, count: int, timeout: float, missed: Callable[[], int] = lambda: 0
) -> list[tuple[float, float, float]]:
    """Poll the sink until `count` jobs of `kind` ran or were reported missed, or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(path, kind)
        if len(found) + missed() >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def burst_due(n: int, probe: Callable[[], None]) -> float:
    """The instant to make `n` jobs due at: far enough ahead to submit them all before it."""
    count = max(1, min(50, n))
    started = time.perf_counter()
    for _ in range(count):
        probe()
    rate = count / (time.perf_counter() - started)
    return time.time() + 2.5 * n / rate + 1.0


class Load(threading.Thread):
    """Submit `rate` jobs/s in 10 ms ticks until stopped; counts what it really submitted."""

    def __init__(self, rate: float, submit: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.rate, self.submit = rate, submit
        self.stopping = threading.Event()
        self.done = 0
        self.seconds = 0.0

    def run(self) -> None:
        tick = 0.01
        started = time.monotonic()
        while not self.stopping.is_set():
            due = int((time.monotonic() - started) * self.rate) + 1
            while self.done < due and not self.stopping.is_set():
                self.submit()
                self.done += 1
            self.stopping.wait(tick)
        self.seconds = time.monotonic() - started

    def stop(self) -> float:
        """Stop and return the achieved rate (jobs/s)."""
        self.stopping.set()
        self.join(30)
        return self.done / self.seconds if self.seconds else 0.0


def lateness_result(n: int, timeout: float, load: Load | None) -> dict[str, Any]:
    found = wait_rows(SINK_PATH, "late", n, timeout)
    achieved = load.stop() if load is not None else 0.0
    return {
        "late_ms": [(start - due) * 1000 for due, start, _ in found],
        "missing": n - len(found),
        "load_rate": achieved,
    }


def burst_result(n: int, due: float, timeout: float, missed: Callable[[], int]) -> dict[str, Any]:
    found = wait_rows(SINK_PATH, "burst", n, timeout, missed)
    return {
        "due": due,
        "n": n,
        "starts": [s for _, s, _ in found],
        "ends": [e for _, _, e in found],
        "skipped": missed() if len(found) + missed() >= n else n - len(found),
    }


def timed_enqueue(n: int, submit: Callable[[int], None]) -> dict[str, Any]:
    """Wait for the go line, then submit `n` jobs; report the wall-clock span."""
    ready_then_wait()
    started = time.time()
    for i in range(n):
        submit(i)
    return {"start": started, "end": time.time(), "count": n}
