"""Leader failover with daemons sharing PostgreSQL: how long until a new leader plans.

Starts N timeosd processes on one fresh schema with a rule firing every second (`overlap:
allow`), lets the first (the leader) fire a few times, kills it with SIGKILL, and measures from
the kill to the first occurrence another daemon records. Checks every second's occurrence was
recorded exactly once, fired, across each kill. Repeats with a fresh schema per round.
PostgreSQL at $TIMEOS_BENCH_PG_URL (default the local server, database test).
Usage: python bench/pg_failover.py [--daemons 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

URL = os.environ.get("TIMEOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RULES = """\
actions:
  noop:
    command: ["true"]
rules:
  - {name: tick, every: 1s, perform: noop, overlap: allow}
"""


def _timeosd() -> list[str]:
    found = Path(sys.executable).parent / "timeosd"
    return [str(found)] if found.exists() else [shutil.which("timeosd") or "timeosd"]


def _occurrences(schema: str) -> list[tuple[int, str, int]]:
    with psycopg.connect(URL, autocommit=True) as conn:
        try:
            rows = conn.execute(
                f"SELECT scheduled_for, outcome, recorded_at FROM {schema}.occurrences"
                " ORDER BY scheduled_for"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []  # the first daemon has not created its tables yet
    return [(int(s), str(o), int(r)) for s, o, r in rows]


def _round(daemons: int, tmp: Path) -> float:
    schema = f"failover_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    db = f"{URL}?options=-csearch_path%3D{schema}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(daemons):
            sock = tmp / f"d{n}" / "s.sock"
            sock.parent.mkdir(exist_ok=True)
            cmd = [*_timeosd(), "--rules", str(rules), "--db", db, "--socket", str(sock)]
            with open(tmp / f"d{n}.log", "ab") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
            time.sleep(1.5 if n == 0 else 0.3)  # the first to start takes the lead
        while len(_occurrences(schema)) < 3:
            time.sleep(0.1)
        killed_at = time.time()
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        deadline = time.monotonic() + 60
        while True:
            after = [r for _, _, r in _occurrences(schema) if r / 1e6 > killed_at]
            if after or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not after:
            raise SystemExit("no daemon took the lead within 60 s")
        time.sleep(3)  # a few more fires by the new leader
        rows = _occurrences(schema)
        seconds = [s for s, _, _ in rows]
        gaps = {b - a for a, b in zip(seconds, seconds[1:], strict=False)}
        if gaps != {1_000_000} or {o for _, o, _ in rows} != {"fired"}:
            raise SystemExit(f"occurrences not each second exactly once: {rows}")
        return min(after) / 1e6 - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(15)
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            took = _round(args.daemons, Path(tmp))
        times.append(took)
        print(f"round {n + 1}: a new leader planned {took:.2f} s after the kill")
    print(f"{args.daemons} daemons, {args.rounds} rounds: failover {min(times):.2f}-"
          f"{max(times):.2f} s; every second's occurrence fired exactly once")  # fmt: skip


if __name__ == "__main__":
    main()
