"""Crash torture: kill -9 timeosd at random moments under a steady emit load; check nothing is lost.

Client threads emit events with unique idempotency keys through the real socket and remember
which ones the daemon ACKNOWLEDGED (a 2xx answer). A failed or unanswered emit is re-sent with
the same key once the daemon is back, so every key is eventually acknowledged exactly once as a
new event (or as its duplicate). Meanwhile the daemon is SIGKILLed and restarted `--kills` times.
Each event creates two jobs: `record` (a python action appending its job id to a file with
O_APPEND) and `chain` (an `emit` action whose event creates one more `record` job).

After a final drain it checks, and exits 1 if any fails:
- every acknowledged event is stored, under its key, with the acknowledged id;
- every job reached `succeeded` (none pending, retrying, running or dead);
- every succeeded `record` job left at least one line in the sink file (it really ran);
- every `chain` job emitted exactly one event (keyed `timeos:job:<id>`), whatever the kills.
Runs of a job beyond the first (at-least-once after a crash) are counted and reported, not
failed. Usage: python bench/torture.py [--kills 20] [--synchronous FULL] [--seed N]
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchkit import TimeosDaemon, percentile, report

from timeos.engine import job_emit_key
from timeos.errors import TimeOSError

RULES = """\
actions:
  record:
    python: "sink:record"
    timeout: 10s
    retry: {max_attempts: 1000, backoff: 1s, max_backoff: 2s}
  chain:
    emit: torture_chained
    retry: {max_attempts: 1000, backoff: 1s, max_backoff: 2s}
rules:
  - name: record
    on_event: torture
    perform: record
  - name: chain
    on_event: torture
    perform: chain
  - name: chained
    on_event: torture_chained
    perform: record
"""
# A crash is charged as an attempt (README: "Crash recovery"), so the budget must outlast the
# kills; 1000 attempts with a 1-2 s backoff keeps "dead" meaning "a real failure".


class Emitter(threading.Thread):
    """One client: emits `torture` events with keys `c<N>-<seq>`, re-sending until acknowledged."""

    def __init__(self, n: int, daemon: TimeosDaemon, sink: Path, stop: threading.Event) -> None:
        super().__init__(name=f"emitter-{n}", daemon=True)
        self.n = n
        self.timeosd = daemon
        self.sink = sink
        self.stop_flag = stop
        self.acked: dict[str, str] = {}  # idempotency key -> event id the daemon answered
        self.duplicate_acks = 0  # a re-send answered `duplicate`: the first try had been stored
        self.failures = 0  # requests that got no answer (daemon down or killed mid-request)
        self.latencies: list[float] = []

    def run(self) -> None:
        seq = 0
        while not self.stop_flag.is_set():
            key = f"c{self.n}-{seq}"
            body = {
                "type": "torture",
                "payload": {"sink": str(self.sink), "key": key},
                "idempotency_key": key,
            }
            while True:
                started = time.monotonic()
                try:
                    answer = self.timeosd.client.call("POST", "/v1/events", body)
                except TimeOSError:
                    self.failures += 1
                    if self.stop_flag.is_set():
                        return  # this key was never acknowledged: nothing is owed for it
                    time.sleep(0.02)
                    continue
                if not isinstance(answer, dict):  # never acknowledged: a bug, report it
                    raise SystemExit(f"emit {key}: answer {answer!r} is not an acknowledgement")
                self.latencies.append(time.monotonic() - started)
                self.acked[key] = answer["id"]
                self.duplicate_acks += bool(answer["duplicate"])
                break
            seq += 1


def drain(daemon: TimeosDaemon, timeout: float) -> dict[str, int]:
    """Wait until no job is waiting or running; return the final job counts by status."""
    deadline = time.monotonic() + timeout
    while True:
        counts = dict(daemon.query("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
        if not any(counts.get(s) for s in ("pending", "retrying", "running")):
            return counts
        if time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (default 20)")
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--clients", type=int, default=3, help="emitting threads (default 3)")
    parser.add_argument(
        "--max-gap", type=float, default=1.0, help="longest run between two kills, s (default 1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="for a reproducible kill pattern")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(
        f"torture: {args.kills} kills, synchronous={args.synchronous}, "
        f"{args.clients} clients, seed {seed}",
        flush=True,
    )
    holder = tempfile.TemporaryDirectory(prefix="timeos-torture-")
    tmp = Path(holder.name)
    sink = tmp / "runs.txt"
    daemon = TimeosDaemon(tmp, RULES, extra_args=["--synchronous", args.synchronous])
    began = time.monotonic()
    daemon.start()
    stop = threading.Event()
    emitters = [Emitter(n, daemon, sink, stop) for n in range(args.clients)]
    for e in emitters:
        e.start()
    restarts: list[float] = []
    for i in range(args.kills):
        # Random moments, including right after a restart (recovery still running).
        time.sleep(rng.uniform(0.0, args.max_gap))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        t0 = time.monotonic()
        daemon.start()
        restarts.append(time.monotonic() - t0)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1} kills", flush=True)
    time.sleep(0.3)  # some load on the last incarnation too
    stop.set()
    for e in emitters:
        e.join(30)
    load_seconds = time.monotonic() - began
    counts = drain(daemon, timeout=120)
    wal = tmp / "timeos.db-wal"
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    problems = check(daemon, emitters, sink, counts)
    daemon.stop()
    figures = summarise(daemon, emitters, sink, restarts, counts, load_seconds, wal_bytes)
    figures.update(kills=args.kills, synchronous=args.synchronous, seed=seed)
    figures["elapsed_s"] = round(time.monotonic() - began, 1)
    for name, value in figures.items():
        print(f"  {name:24} {value}")
    for p in problems[:20]:
        print(f"FAIL: {p}")
    if len(problems) > 20:
        print(f"FAIL: ... and {len(problems) - 20} more")
    report("torture", args.kills <= 20, figures, {"lost_events": "=0", "stuck_jobs": "=0"})
    if args.keep or problems:
        print(f"kept {tmp} (timeosd.log, timeos.db, runs.txt)")
        holder._finalizer.detach()  # type: ignore[attr-defined]
    else:
        holder.cleanup()
    return 1 if problems else 0


def check(
    daemon: TimeosDaemon, emitters: list[Emitter], sink: Path, counts: dict[str, int]
) -> list[str]:
    """Everything that must hold after the drain; one line per violation."""
    problems: list[str] = []
    stored = dict(daemon.query("SELECT idempotency_key, id FROM events WHERE type = 'torture'"))
    for e in emitters:
        for key, event_id in e.acked.items():
            if key not in stored:
                problems.append(f"acknowledged event {event_id} (key {key}) is not stored")
            elif stored[key] != event_id:
                problems.append(f"key {key}: acknowledged {event_id}, stored {stored[key]}")
    for status, n in counts.items():
        if status != "succeeded":
            problems.append(f"{n} job(s) left {status} after the drain")
    ran = runs(sink)
    never = daemon.query("SELECT id, rule FROM jobs WHERE rule IN ('record', 'chained')")
    for job_id, rule in never:
        if job_id not in ran:
            problems.append(f"{rule} job {job_id} never ran (no line in {sink.name})")
    chain_jobs = {r[0] for r in daemon.query("SELECT id FROM jobs WHERE rule = 'chain'")}
    prefix = job_emit_key("")  # the emit action's own key namespace, "timeos:job:<id>"
    chained = collections.Counter(
        r[0].removeprefix(prefix)
        for r in daemon.query("SELECT idempotency_key FROM events WHERE type = 'torture_chained'")
    )
    for job_id in chain_jobs:
        if chained[job_id] != 1:
            problems.append(f"chain job {job_id} emitted {chained[job_id]} events, not 1")
    for event in daemon.query("SELECT id FROM events WHERE id NOT IN (SELECT event_id FROM jobs)"):
        problems.append(f"event {event[0]} is stored without its jobs (half-written emit)")
    return problems


def runs(sink: Path) -> collections.Counter[str]:
    """Job id -> how many times the python action started it (lines in the sink file)."""
    if not sink.exists():
        return collections.Counter()
    lines = sink.read_text().splitlines()
    return collections.Counter(line.split()[0] for line in lines if line.strip())


def summarise(
    daemon: TimeosDaemon,
    emitters: list[Emitter],
    sink: Path,
    restarts: list[float],
    counts: dict[str, int],
    load_seconds: float,
    wal_bytes: int,
) -> dict[str, Any]:
    """The figures: what was done, what was checked, what ran twice."""
    ran = runs(sink)
    acked = sum(len(e.acked) for e in emitters)
    latencies = [x for e in emitters for x in e.latencies]
    interrupted = daemon.query("SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'")[0][0]
    chain_runs = daemon.query(
        "SELECT COUNT(*) FROM attempts JOIN jobs ON jobs.id = attempts.job_id"
        " WHERE jobs.rule = 'chain' AND attempts.number > 1"
    )[0][0]
    return {
        "events_acknowledged": acked,
        "events_stored": daemon.query("SELECT COUNT(*) FROM events WHERE type = 'torture'")[0][0],
        "chained_events_stored": daemon.query(
            "SELECT COUNT(*) FROM events WHERE type = 'torture_chained'"
        )[0][0],
        "acks_that_were_duplicates": sum(e.duplicate_acks for e in emitters),
        "emit_requests_unanswered": sum(e.failures for e in emitters),
        "jobs_checked": sum(counts.values()),
        "jobs_by_status": counts,
        "action_runs": sum(ran.values()),
        "jobs_run_more_than_once": sum(1 for n in ran.values() if n > 1),
        "duplicate_runs": sum(n - 1 for n in ran.values() if n > 1),
        "chain_jobs_retried": chain_runs,
        "interrupted_attempts": interrupted,
        "emit_p50_ms": round(percentile(latencies, 50) * 1000, 2) if latencies else None,
        "emit_p99_ms": round(percentile(latencies, 99) * 1000, 2) if latencies else None,
        "restart_p50_s": round(percentile(restarts, 50), 3) if restarts else None,
        "restart_max_s": round(max(restarts), 3) if restarts else None,
        "load_s": round(load_seconds, 1),
        "wal_bytes_after_load": wal_bytes,
        "db_bytes": daemon.db.stat().st_size,
    }


if __name__ == "__main__":
    raise SystemExit(main())
