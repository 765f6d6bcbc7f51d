"""No-op job throughput with one, two and three timeosd daemons sharing one PostgreSQL database
(and one daemon on SQLite, for reference).

Each round starts N daemons (4 workers each) on a fresh schema, sends one emit-batch of JOBS
events (each makes one `true` job) to the first, and times until every job succeeded. The jobs
are spread over the daemons by their claims (the others learn of them by LISTEN/NOTIFY).
PostgreSQL at $TIMEOS_BENCH_PG_URL (default the local server, database test).
Usage: python bench/pg_daemons.py [--jobs 600]
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

from timeos.cli.client import Client

URL = os.environ.get("TIMEOS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RULES = """\
actions:
  noop:
    command: ["true"]
rules:
  - {name: work, on_event: work, perform: noop}
"""


def _timeosd() -> list[str]:
    found = Path(sys.executable).parent / "timeosd"
    return [str(found)] if found.exists() else [shutil.which("timeosd") or "timeosd"]


def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def _round(daemons: int, jobs: int, tmp: Path, sqlite: bool = False) -> float:
    schema = f"daemons_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    db = str(tmp / "t.db") if sqlite else f"{URL}?options=-csearch_path%3D{schema}"
    procs: list[subprocess.Popen[bytes]] = []
    clients: list[Client] = []
    try:
        for n in range(daemons):
            sock = tmp / f"d{n}" / "s.sock"
            sock.parent.mkdir(exist_ok=True)
            cmd = [*_timeosd(), "--rules", str(rules), "--db", db, "--socket", str(sock)]
            with open(tmp / f"d{n}.log", "ab") as log:
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
            client = Client(sock, timeout=60)
            _wait(lambda c=client: _answers(c), 30)
            clients.append(client)
        start = time.perf_counter()
        clients[0].call("POST", "/v1/events/batch", {"events": [{"type": "work"}] * jobs})
        _wait(lambda: clients[-1].call("GET", "/v1/health")["jobs"]["succeeded"] == jobs, 300)
        return jobs / (time.perf_counter() - start)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(15)
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _answers(client: Client) -> bool:
    try:
        client.call("GET", "/v1/status")
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    args = parser.parse_args()
    print(f"{args.jobs} no-op jobs (`true`), 4 workers per daemon, CPUs {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        rate = _round(1, args.jobs, Path(tmp), sqlite=True)
    print(f"SQLite, 1 daemon: {rate:.0f} jobs/s")
    for daemons in (1, 2, 3):
        with tempfile.TemporaryDirectory() as tmp:
            rate = _round(daemons, args.jobs, Path(tmp))
        print(f"PostgreSQL, {daemons} daemon(s): {rate:.0f} jobs/s")


if __name__ == "__main__":
    main()
