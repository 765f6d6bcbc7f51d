"""One, two and three timeosd daemons sharing one PostgreSQL database (and one daemon on SQLite,
for reference): emit throughput, firing lateness and no-op job throughput (issue 12).

Each round starts N daemons (4 workers each, the same rules) on a fresh schema, dropped at the
end, and measures in this order, so the lateness probes find the daemons idle:
- lateness: lateness.py's isolated delayed jobs (each due LEAD after its emit, SPACING apart; the
  emits go round-robin to the daemons, whichever claims the job runs it), read from the database
  afterwards as attempt started_at minus job perform_at;
- emits: CLIENTS processes at once, client i with a keep-alive connection to daemon i mod N, one
  event per request, each event one job due in an hour (emit_throughput.emit_many);
- no-op jobs: one emit-batch of JOBS events to the first daemon, each a `true` job, timed from the
  request to the last attempt's end (the jobs spread over the daemons by their claims; the others
  learn of them by LISTEN/NOTIFY).
PostgreSQL at $TIMEOS_BENCH_PG_URL (default the local server, database test).
Usage: python bench/pg_daemons.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emit_throughput
import lateness
import psycopg
from benchkit import TimeosDaemon, percentile

from timeos.cli.client import Client

URL = os.environ.get("TIMEOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLIENTS = 6  # emitting processes: two per daemon with three daemons
RULES = """\
actions:
  record:
    python: "sink:record"
    timeout: 10s
  noop:
    command: ["true"]
rules:
  - {name: late, on_event: late, perform: record}
  - {name: bench, on_event: bench, offset: 1h, perform: noop}
  - {name: work, on_event: work, perform: noop}
"""


@dataclass(frozen=True, slots=True)
class Sizes:
    late: int  # isolated delayed jobs
    emits: int  # events per emitting client
    jobs: int  # no-op jobs


FULL = Sizes(late=200, emits=500, jobs=1000)
QUICK = Sizes(late=30, emits=100, jobs=200)


class RoundRobin(Client):
    """A client that sends each request to the next daemon in turn."""

    def __init__(self, clients: list[Client]) -> None:
        super().__init__(clients[0].socket_path)
        self.clients = clients
        self.sent = 0

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        self.sent += 1
        return self.clients[self.sent % len(self.clients)].call(method, path, body, query)


@dataclass(frozen=True, slots=True)
class Spread:
    """emit_throughput's emitter, client i on daemon i mod N (concurrent_rate forks the clients)."""

    sockets: list[Path]

    def __call__(self, socket: Path, count: int, client_id: int) -> None:
        emit_throughput.emit_many(self.sockets[client_id % len(self.sockets)], count, client_id)


@contextmanager
def daemons(tmp: Path, count: int, postgres: bool) -> Iterator[list[TimeosDaemon]]:
    """`count` daemons on a fresh PostgreSQL schema (dropped afterwards), or one on SQLite."""
    schema = f"daemons_{uuid.uuid4().hex[:12]}"
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    url = f"{URL}?options=-csearch_path%3D{schema}" if postgres else None
    if postgres:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    try:
        with ExitStack() as stack:
            started = []
            for n in range(count):
                (tmp / f"d{n}").mkdir()
                started.append(stack.enter_context(TimeosDaemon(tmp / f"d{n}", rules, url=url)))
            yield started
    finally:
        if postgres:
            with psycopg.connect(URL, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def emit_rate(running: list[TimeosDaemon], each: int) -> float:
    """Events/s of CLIENTS keep-alive clients spread over the daemons, one event per request."""
    sockets = [d.socket for d in running]
    for n, socket in enumerate(sockets):
        emit_throughput.emit_many(socket, 20, -1 - n)  # warm-up: statement caches, pools
    rate = emit_throughput.concurrent_rate(sockets[0], CLIENTS, each, Spread(sockets))
    stored = running[0].query("SELECT COUNT(*) FROM jobs WHERE rule = 'bench'")[0][0]
    if stored != (20 * len(sockets) + CLIENTS * each):
        raise SystemExit(f"{stored} emitted jobs stored, not {20 * len(sockets) + CLIENTS * each}")
    return rate


def noop_rate(running: list[TimeosDaemon], jobs: int) -> float:
    """No-op jobs/s: from one emit-batch of `jobs` events to the last attempt's end."""
    start = time.time()
    running[0].client.call("POST", "/v1/events/batch", {"events": [{"type": "work"}] * jobs})
    lateness.wait_finished(running[0], "work", jobs, timeout=300)
    last, ok = running[0].query(
        "SELECT MAX(ended_at), SUM(CASE WHEN outcome = 'succeeded' THEN 1 ELSE 0 END)"
        " FROM attempts JOIN jobs ON jobs.id = attempts.job_id WHERE jobs.rule = 'work'"
    )[0]
    if ok != jobs:
        raise SystemExit(f"{jobs - ok} of {jobs} no-op jobs did not succeed")
    return jobs / (last / 1e6 - start)


def measure(count: int, postgres: bool, sizes: Sizes) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        sink = Path(tmp) / "sink.txt"
        sink.touch()
        with daemons(Path(tmp), count, postgres) as running:
            probe = running[0]
            probe.client = RoundRobin([d.client for d in running])
            scheduler, _ = lateness.measure_lateness(probe, sizes.late, sink)
            emits = emit_rate(running, sizes.emits)
            jobs = noop_rate(running, sizes.jobs)
    return {
        "emits_per_s": emits,
        "late_p50_ms": percentile(scheduler, 50),
        "late_p99_ms": percentile(scheduler, 99),
        "late_max_ms": max(scheduler),
        "jobs_per_s": jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    print(
        f"4 workers per daemon, {os.cpu_count()} CPUs; emits: {CLIENTS} clients x {sizes.emits}"
        f" events (one job each, due in 1 h); lateness: {sizes.late} isolated jobs due"
        f" {lateness.LEAD * 1000:.0f} ms after emit, {lateness.SPACING * 1000:.0f} ms apart"
        f" (attempt started_at - perform_at); no-op: {sizes.jobs} `true` jobs in one batch"
    )
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f}")
    header = (
        "| store | daemons | emits/s | late p50 ms | late p99 ms | late max ms | no-op jobs/s |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for store, count in (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2), ("PostgreSQL", 3)):
        f = measure(count, store == "PostgreSQL", sizes)
        print(
            f"| {store} | {count} | {f['emits_per_s']:.0f} | {f['late_p50_ms']:.1f}"
            f" | {f['late_p99_ms']:.1f} | {f['late_max_ms']:.1f} | {f['jobs_per_s']:.0f} |",
            flush=True,
        )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
