"""TimeOS side by side with Huey (SqliteHuey) and APScheduler 3 (SQLAlchemy store on SQLite).

Installs the peers into a throwaway venv (pip; a peer that cannot be installed is skipped),
then measures every system back to back in the same rounds, the order rotated each round, and
reports medians: firing lateness (isolated, and under a background load), 1,000 jobs due at once,
no-op throughput with 4 workers, emit/enqueue rates, idle CPU and wake-ups, RSS with waiting
jobs, and TimeOS's whole-process CLI time. Peers run at their defaults and at TimeOS's durability
(WAL, synchronous=NORMAL). Prints the table with TimeOS's ratio to the best peer and the targets
of issue 13, and writes docs/performance.md.

Usage: python bench/peers.py [--quick] [--rounds N] [--idle SECONDS] [--venv DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import peerrun as run
import peerstable as table
from benchkit import REPO

PEER_PACKAGES = {
    "huey": ["huey>=3.5,<3.6"],
    "aps": ["apscheduler>=3.11,<3.12", "sqlalchemy>=2"],
}
DISTRIBUTIONS = {"huey": ("huey",), "aps": ("APScheduler", "SQLAlchemy")}
SCENARIOS = ("lateness", "lateness-load", "drain", "noop", "submit", "idle", "rss", "cli")
DEFAULTS_ONLY = ("idle", "rss")  # durability changes nothing at rest
Results = dict[str, dict[str, list[float]]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one round, small counts, 5 s idle")
    parser.add_argument("--rounds", type=int, help="rounds, medians over them [3; --quick: 1]")
    parser.add_argument("--idle", type=float, help="idle window in seconds [60; --quick: 5]")
    parser.add_argument("--venv", type=Path, help="create (or reuse) the peers' venv here")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "docs" / "performance.md",
        help="where to write the report ['-': nowhere]",
    )
    return parser.parse_args()


def install_peers(venv: Path) -> tuple[Path | None, dict[str, str], dict[str, str]]:
    """The venv's python, versions of what was installed, and why a peer was skipped."""
    python = venv / "bin" / "python"
    skipped: dict[str, str] = {}
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if made.returncode != 0:
            reason = f"no venv: {made.stderr.strip()[-300:]}"
            return None, {}, {peer: reason for peer in PEER_PACKAGES}
    for peer, packages in PEER_PACKAGES.items():
        print(f"installing {' '.join(packages)} into {venv} ...", flush=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            skipped[peer] = done.stderr.strip().splitlines()[-1] if done.stderr else "pip failed"
            print(f"  skipping {peer}: {skipped[peer]}", flush=True)
    probe = (
        "import importlib.metadata as m, json, sqlite3\n"
        "out = {'sqlite (peers)': sqlite3.sqlite_version}\n"
        f"for name in {sorted(n for ns in DISTRIBUTIONS.values() for n in ns)!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(found.stdout)
    return python, versions, skipped


def scenario_call(
    scenario: str, system: str, peer: run.Peer | None, sizes: run.Sizes, dbs: run.RssDatabases
) -> run.Figures:
    """One measurement of one system."""
    if peer is None:
        timeos: dict[str, Callable[[], run.Figures]] = {
            "lateness": lambda: run.timeos_lateness(sizes, load=False),
            "lateness-load": lambda: run.timeos_lateness(sizes, load=True),
            "drain": lambda: run.timeos_drain(sizes),
            "noop": lambda: run.timeos_noop(sizes),
            "submit": lambda: run.timeos_submit(sizes),
            "rss": lambda: run.rss(system, None, dbs),
            "cli": lambda: run.timeos_cli(sizes),
        }
        return timeos[scenario]()
    peers: dict[str, Callable[[run.Peer], run.Figures]] = {
        "lateness": lambda p: run.peer_lateness(p, sizes, load=False),
        "lateness-load": lambda p: run.peer_lateness(p, sizes, load=True),
        "drain": lambda p: run.peer_drain(p, sizes),
        "noop": lambda p: run.peer_noop(p, sizes),
        "submit": lambda p: run.peer_submit(p, sizes),
        "rss": lambda p: run.rss(system, p, dbs),
    }
    return peers[scenario](peer)


def measure(
    scenarios: Sequence[str],
    peers: Sequence[run.Peer],
    sizes: run.Sizes,
    rounds: int,
    dbs: run.RssDatabases,
) -> tuple[Results, list[float], list[str]]:
    """Every scenario for every system, `rounds` times; the loads seen; what failed."""
    results: Results = defaultdict(lambda: defaultdict(list))
    loads: list[float] = []
    failures: list[str] = []
    by_name = {p.system: p for p in peers}
    systems = ["timeos", *by_name]

    def record(system: str, figures: run.Figures) -> None:
        for key, value in figures.items():
            results[system][key].append(value)

    number, scenario = 0, ""
    try:
        for number in range(rounds):
            for scenario in scenarios:
                loads.append(run.load_average())
                print(f"round {number + 1}/{rounds}: {scenario}", flush=True)
                if scenario == "idle":
                    defaults = [p for p in peers if not p.system.endswith("-normal")]
                    try:
                        for system, figures in run.idle_all(defaults, sizes).items():
                            record(system, figures)
                            show(system, figures)
                    except Exception as exc:  # one failure must not lose the rest of the run
                        failures.append(f"round {number + 1} idle: {exc}")
                        traceback.print_exc()
                    continue
                order = systems
                if scenario in DEFAULTS_ONLY:
                    order = [s for s in systems if not s.endswith("-normal")]
                if scenario == "cli":
                    order = ["timeos"]
                for system in table.rotated(order, number):
                    began = time.monotonic()
                    try:
                        figures = scenario_call(scenario, system, by_name.get(system), sizes, dbs)
                    except (Exception, SystemExit) as exc:
                        failures.append(f"round {number + 1} {scenario} {system}: {exc}")
                        print(f"  {system}: FAILED {str(exc)[-500:]}", flush=True)
                        continue
                    record(system, figures)
                    show(system, figures, time.monotonic() - began)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: report what was measured so far
        failures.append(f"interrupted in round {number + 1} of {rounds} ({scenario})")
        print(f"interrupted in round {number + 1}: the table has the rounds measured so far")
    loads.append(run.load_average())
    return results, loads, failures


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM ends the measurements like Ctrl-C: the table and the page get what was measured."""
    raise KeyboardInterrupt


def show(system: str, figures: run.Figures, took: float | None = None) -> None:
    cells = ", ".join(
        f"{key} {table.fmt(value, table.METRIC[key].unit)}" for key, value in figures.items()
    )
    after = f" ({took:.0f} s)" if took is not None else ""
    print(f"  {table.LABELS[system]:12} {cells}{after}", flush=True)


def machine() -> dict[str, str]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kb / 2**20:.1f} GiB RAM"
    return {
        "machine": f"{os.cpu_count()} CPUs ({cpu}){memory}",
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


DURABILITY = """\
- TimeOS: its default, WAL with `synchronous=NORMAL` (a commit is durable once in the WAL;
  an fsync at each checkpoint).
- Huey: `SqliteHuey`'s default, WAL with SQLite's default `synchronous=FULL` (an fsync per
  commit); *Huey NORMAL*: the same storage opened with `synchronous=NORMAL`.
- APScheduler: `SQLAlchemyJobStore`'s default, a rollback journal with `synchronous=FULL`;
  *APS NORMAL*: connections opened with `journal_mode=WAL`, `synchronous=NORMAL`.
"""


METHOD = """\
How each figure is taken (the same way for every system; the drivers are bench/peer_drivers/):
- **Lateness**: delayed jobs due 300 ms after they are submitted, 50 ms apart; lateness is the
  instant the job's function started minus the instant it was due. *Under load* adds a
  background of no-op jobs due at once at the stated rate (Huey and APScheduler: one enqueue per
  job, from a thread; TimeOS: events matched by 10 rules each, one `POST /v1/events` per event,
  from a thread of the bench).
- **1,000 due at once**: 1,000 no-op jobs submitted ahead of one instant; drain is the last
  job's end minus that instant; skipped counts jobs the system dropped (APScheduler's default
  `misfire_grace_time` of 1 s).
- **No-op jobs, 4 workers**: the same with more jobs (and no grace limit); jobs over the span
  from the first start to the last end. TimeOS: 4 workers; Huey: a consumer with 4 threads (its
  own process); APScheduler: a `ThreadPoolExecutor(4)` in process.
- **Emit/enqueue**: TimeOS: `POST /v1/events` over the Unix socket, one job per event due in an
  hour (batched: `POST /v1/events/batch`, 100 events a request). Huey: `task()` in process, no
  consumer running. APScheduler: `add_job` of a date job an hour ahead on a running scheduler.
  Four clients are four processes. The peers have no batch API: their batched cells are empty
  and the batched target compares with their single enqueue.
- **Idle**: all systems side by side over the same window, each with one job waiting an hour
  (TimeOS with rules.example.yaml); CPU from /proc/PID/stat, wake-ups = voluntary +
  involuntary context switches of all threads, per second.
- **RSS**: VmRSS one second after start-up, on databases holding the stated number of jobs
  waiting far ahead (built in bulk once per run); Huey's figure is its consumer process's,
  APScheduler's the process running the scheduler.
- **CLI**: median wall time of whole `timeos emit` (to a running daemon) and
  `timeos next --cron` processes against `python -c pass`, same venv.
"""


def document(
    meds: table.Medians,
    systems: Sequence[str],
    info: dict[str, Any],
) -> str:
    """docs/performance.md: what was measured where and when, then the two tables."""
    figures = table.render_markdown(table.figure_rows(meds, systems, info["relabel"]))
    targets = table.render_markdown(table.target_rows(meds))
    lines = [
        "# Performance: TimeOS side by side with Huey and APScheduler",
        "",
        "Written by `python bench/peers.py` (see bench/README.md); rerun it to refresh this page.",
        "Absolute figures vary a lot between runs on shared machines; ratios from the same run",
        "much less. Cells are medians over the rounds; `-` is not measured (or failed).",
        "",
        f"- Date: {info['date']}{' (quick run: small counts)' if info['quick'] else ''}",
        f"- Machine: {info['machine']['machine']}; {info['machine']['system']}",
        f"- Load average (1 min) during the run: {info['load']}",
        f"- Rounds: {info['rounds']}, order rotated each round; sizes: {info['sizes']}",
        f"- Versions: {info['versions']}",
        *([f"- Skipped: {info['skipped']}"] if info["skipped"] else []),
        *([f"- Note: {info['refused']}"] if info["refused"] else []),
        *(
            [f"- Failed measurements: {len(info['failures'])} (see the run's output)"]
            if info["failures"]
            else []
        ),
        "",
        "Durability:",
        DURABILITY,
        "",
        "## Figures",
        "",
        figures,
        "",
        "## Targets (issue 13)",
        "",
        targets,
        "",
        "## Method",
        "",
        METHOD,
    ]
    return "\n".join(lines)


def load_summary(loads: Sequence[float]) -> str:
    return f"{loads[0]:.2f} at the start, {loads[-1]:.2f} at the end, {min(loads):.2f}-" + (
        f"{max(loads):.2f} over the run"
    )


def main() -> None:
    args = parse_args()
    sizes = run.QUICK if args.quick else run.FULL
    if args.idle is not None:
        sizes = dataclasses.replace(sizes, idle=args.idle)
    rounds = args.rounds or (1 if args.quick else 3)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="peers-run-") as tmp:
        venv = args.venv or Path(tmp) / "venv"
        python, versions, skipped = install_peers(venv)
        peers = [
            run.Peer(system, python)
            for system in table.PEERS
            if python is not None and system.split("-")[0] not in skipped
        ]
        versions = {"timeos": metadata.version("timeos"), **versions}
        dbs = run.RssDatabases(Path(tmp), sizes)
        results, loads, failures = measure(scenarios, peers, sizes, rounds, dbs)
    meds = table.medians(results)
    systems = ["timeos", *(p.system for p in peers)]
    print()
    relabel = {
        "rss_mid_mb": f"RSS, {sizes.rss[1]:,} waiting",
        "rss_big_mb": f"RSS, {sizes.rss[2]:,} waiting",
    }
    print(table.render_text(table.figure_rows(meds, systems, relabel)))
    print()
    print(table.render_text(table.target_rows(meds)))
    print()
    load = load_summary(loads)
    print(f"load average (1 min): {load}; {time.monotonic() - started:.0f} s")
    for failure in failures:
        print(f"failed: {failure.splitlines()[0]}")
    refused = ""
    if run.REFUSED_BATCHES.value:
        refused = (
            f"timeosd failed {run.REFUSED_BATCHES.value} batch requests (of"
            f" {rounds * (sizes.batched + 4 * sizes.batched_each) // run.BATCH:,}) with"
            " store errors such as 'cannot start a transaction within a transaction', 'cannot"
            " commit - no transaction is active' or 'commit failed: not an error' (a batch's"
            " transaction runs in a worker thread on the connection the event loop writes on);"
            " each was sent again"
        )
        print(refused)
    if str(args.out) != "-":
        info = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "machine": machine(),
            "load": load,
            "rounds": rounds,
            "sizes": sizes_text(sizes),
            "versions": ", ".join(
                f"{name} {version}"
                for name, version in {
                    "Python": platform.python_version(),
                    "SQLite": sqlite3.sqlite_version,
                    **versions,
                }.items()
            ),
            "skipped": "; ".join(f"{k}: {v}" for k, v in skipped.items()),
            "failures": failures,
            "refused": refused,
            "relabel": relabel,
        }
        args.out.write_text(document(meds, systems, info))
        print(f"wrote {args.out}")


def sizes_text(sizes: run.Sizes) -> str:
    return (
        f"{sizes.late} delayed jobs per lateness run, load {sizes.load:,.0f} jobs/s,"
        f" {sizes.drain:,} due at once, {sizes.noop:,} no-op jobs, emits {sizes.submit:,}"
        f" (1 client) and 4 x {sizes.submit_each:,}, batched {sizes.batched:,} and"
        f" 4 x {sizes.batched_each:,}, RSS at {' / '.join(f'{n:,}' for n in sizes.rss)} waiting,"
        f" idle {sizes.idle:g} s, {sizes.cli_runs} CLI runs"
    )


if __name__ == "__main__":
    main()
