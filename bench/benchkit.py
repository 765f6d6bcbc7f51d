"""What every benchmark shares: a timeosd subprocess on a temp dir, percentiles, the report line.

Benchmarks run as `python bench/NAME.py [--quick]`, so this directory is on sys.path and they
import this module as `benchkit`. Nothing here is imported by timeos or its tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from timeos.cli.client import Client

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
READY_TIMEOUT = 30.0


def exe(name: str) -> str:
    """Path of a console script installed next to this interpreter (else on PATH)."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        raise SystemExit(f"{name} not found next to {sys.executable} nor on PATH")
    return which


def parse_args(description: str) -> argparse.Namespace:
    """The command line every benchmark accepts: --quick."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    return parser.parse_args()


class TimeosDaemon:
    """One `timeosd` subprocess on `tmp`, with bench/ importable by python actions."""

    def __init__(
        self,
        tmp: Path,
        rules: str | Path,
        *,
        workers: int = 4,
        extra_args: Sequence[str] = (),
        url: str | None = None,
    ) -> None:
        self.tmp = tmp
        if isinstance(rules, Path):
            self.rules = rules
        else:
            self.rules = tmp / "rules.yaml"
            self.rules.write_text(rules)
        self.db = tmp / "timeos.db"
        # A PostgreSQL URL instead of the SQLite file (bench/pg_daemons.py: several daemons on one).
        self.url = url
        self.socket = tmp / "run" / "timeos.sock"
        self.log = tmp / "timeosd.log"
        self.workers = workers
        self.extra_args = list(extra_args)
        self.env = {**os.environ, "PYTHONPATH": _pythonpath(os.environ.get("PYTHONPATH"))}
        self.env.pop("TIMEOS_FAKE_CLOCK", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket, timeout=10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> TimeosDaemon:
        """Start timeosd and return once it answers GET /v1/status."""
        cmd = [
            exe("timeosd"),
            "--rules",
            str(self.rules),
            "--db",
            self.url or str(self.db),
            "--socket",
            str(self.socket),
            "--workers",
            str(self.workers),
            "--grace",
            "5s",
            *self.extra_args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, cwd=self.tmp)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"timeosd exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                self.client.call("GET", "/v1/status")
                return self
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"timeosd not ready after {READY_TIMEOUT}s") from None
                time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, wait for the graceful shutdown, SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the daemon's database (a separate read-only connection; WAL allows it).

        On PostgreSQL the SQL's `?` placeholders become psycopg's `%s`.
        """
        if self.url is not None:
            import psycopg  # only the PostgreSQL benchmarks need the driver

            with psycopg.connect(self.url, autocommit=True) as pg:
                return pg.execute(sql.replace("?", "%s"), args).fetchall()
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def __enter__(self) -> TimeosDaemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pythonpath(existing: str | None) -> str:
    return os.pathsep.join([str(BENCH_DIR), *([existing] if existing else [])])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(value: float, target: float, *, below: bool = True) -> str:
    """`ok` or how far a figure misses its target, for the human summary."""
    met = value < target if below else value > target
    if met:
        return "ok"
    return f"MISSES target by {abs(value - target) / target:.0%}"


def report(bench: str, quick: bool, figures: dict[str, Any], targets: dict[str, str]) -> None:
    """Print the final JSON line: figures, targets like {"p99_ms": "<10"}, and the load average.

    The 1-minute load average is there because a busy machine explains a slow figure.
    """
    line = {
        "bench": bench,
        "quick": quick,
        "figures": figures,
        "targets": targets,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
