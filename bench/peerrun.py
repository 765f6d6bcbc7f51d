"""One measurement of one system, for bench/peers.py: TimeOS through the other benchmarks' code,
the peers through their drivers (bench/peer_drivers/, run by the peers' venv python).

Every scenario function returns {metric: value} for one round; the metric keys are peerstable's.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import emit_throughput
import lateness
from benchkit import BENCH_DIR, REPO, TimeosDaemon, exe, percentile
from claim import build as build_timeos_db
from idle_cpu import context_switches, cpu_seconds

from timeos.cli.client import Client
from timeos.errors import StoreError

DRIVERS = BENCH_DIR / "peer_drivers"
sys.path.insert(0, str(DRIVERS))
from driverkit import Load  # noqa: E402  (pacing is the same for every system)

BATCH = 100  # events per batched emit request
SETTLE = 1.0  # seconds after a process is ready before its idle window or RSS reading
DRIVER_TIMEOUT = 900.0
Figures = dict[str, float]


@dataclass(frozen=True, slots=True)
class Sizes:
    late: int  # isolated delayed jobs per lateness run
    load: float  # background jobs/s
    drain: int  # jobs due at one instant
    noop: int  # no-op jobs for the 4-worker throughput
    submit: int  # single emits/enqueues, one client
    submit_each: int  # ... per client, four clients
    batched: int  # batched events, one client
    batched_each: int  # ... per client, four clients
    rss: tuple[int, int, int]  # waiting jobs for the three RSS readings
    idle: float  # seconds of idle window
    cli_runs: int  # whole-process runs of each command


FULL = Sizes(200, 1000.0, 1000, 5000, 2000, 1000, 20_000, 10_000, (0, 100_000, 1_000_000), 60, 10)
QUICK = Sizes(30, 1000.0, 1000, 500, 200, 50, 2_000, 1_000, (0, 10_000, 100_000), 5, 3)


def stats_ms(prefix: str, values: Sequence[float]) -> Figures:
    return {
        f"{prefix}_p50_ms": percentile(values, 50),
        f"{prefix}_p99_ms": percentile(values, 99),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- the peers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer variant: its driver script and whether it runs at TimeOS's durability."""

    system: str
    python: Path

    @property
    def script(self) -> Path:
        return DRIVERS / ("peer_huey.py" if self.system.startswith("huey") else "peer_aps.py")

    @property
    def server(self) -> str:
        return "consume" if self.system.startswith("huey") else "serve"

    def env(self, tmp: Path, db: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PEER_DB"] = str(db or tmp / "peer.db")
        env["PEER_SINK"] = str(tmp / "sink.txt")
        env["PEER_NORMAL"] = "1" if self.system.endswith("-normal") else "0"
        return env

    def command(self, scenario: str, *args: str) -> list[str]:
        return [str(self.python), str(self.script), scenario, *args]

    def run(self, tmp: Path, scenario: str, *args: str) -> dict[str, Any]:
        """Run one driver scenario to its end; its last stdout line is the result."""
        done = subprocess.run(
            self.command(scenario, *args),
            env=self.env(tmp),
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            cwd=tmp,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.system} {scenario} exited {done.returncode}:\n{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def start(self, tmp: Path, scenario: str, *args: str, db: Path | None = None) -> Server:
        """Start a driver that announces readiness and waits (a server, or a client at the gate)."""
        proc = subprocess.Popen(
            self.command(scenario, *args),
            env=self.env(tmp, db),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )
        return Server(self.system, proc).wait_ready()


class Server:
    """A driver process under the line protocol: ready line, then a go line or end of stdin."""

    def __init__(self, system: str, proc: subprocess.Popen[str]) -> None:
        self.system, self.proc = system, proc
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> Server:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            assert self.proc.stderr is not None
            raise RuntimeError(f"{self.system} exited before ready:\n{self.proc.stderr.read()}")
        self.info = json.loads(line)
        return self

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=DRIVER_TIMEOUT)
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.system} exited {self.proc.returncode}:\n{err}")
        found: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=10)


def peer_lateness(peer: Peer, sizes: Sizes, load: bool) -> Figures:
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        args = ["--n", str(sizes.late), "--lead", str(lateness.LEAD)]
        args += ["--spacing", str(lateness.SPACING)]
        if load:
            args += ["--load", str(sizes.load)]
        result = peer.run(Path(tmp), "lateness", *args)
    # A job that had not run 30 s after the last one was due is infinitely late: it counts.
    late = result["late_ms"] + [math.inf] * result["missing"]
    if result["missing"]:
        print(f"  {peer.system}: {result['missing']} of {sizes.late} delayed jobs never ran")
    if not load:
        return stats_ms("late_iso", late)
    return {**stats_ms("late_load", late), "load_rate": result["load_rate"]}


def peer_burst(peer: Peer, n: int, *, no_grace: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        args = ["--n", str(n), *(["--no-grace"] if no_grace else [])]
        return peer.run(Path(tmp), "burst", *args)


def peer_drain(peer: Peer, sizes: Sizes) -> Figures:
    result = peer_burst(peer, sizes.drain, no_grace=False)
    ends = result["ends"]
    drain = (max(ends) - result["due"]) * 1000 if ends else float("nan")
    return {"drain_ms": drain, "drain_skipped": result["skipped"]}


def peer_noop(peer: Peer, sizes: Sizes) -> Figures:
    result = peer_burst(peer, sizes.noop, no_grace=True)
    span = max(result["ends"]) - min(result["starts"])
    return {"noop_rate": len(result["ends"]) / span}


def peer_clients(peer: Peer, tmp: Path, clients: int, each: int) -> float:
    """Jobs/s of `clients` processes enqueueing `each` at once (first start to last finish)."""
    servers = [peer.start(tmp, "enqueue", "--n", str(each)) for _ in range(clients)]
    try:
        for server in servers:
            server.go()
        results = [server.result() for server in servers]
    finally:
        for server in servers:
            server.stop()
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["count"] for r in results) / span


def peer_submit(peer: Peer, sizes: Sizes) -> Figures:
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        return {
            "submit_1": peer_clients(peer, Path(tmp), 1, sizes.submit),
            "submit_4": peer_clients(peer, Path(tmp), 4, sizes.submit_each),
        }


def peer_build(peer: Peer, tmp: Path, n: int) -> Path:
    """A database of `n` jobs waiting far ahead, for the RSS readings."""
    db = tmp / f"{peer.system}-{n}.db"
    if n:
        done = subprocess.run(
            peer.command("build", "--n", str(n)),
            env=peer.env(tmp, db),
            capture_output=True,
            text=True,
            timeout=DRIVER_TIMEOUT,
            cwd=tmp,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{peer.system} build exited {done.returncode}:\n{done.stderr}")
    return db


# --- TimeOS -----------------------------------------------------------------------------------


def emit_batches(socket: Path, count: int, client_id: int) -> None:
    """Emit `count` events in requests of BATCH (POST /v1/events/batch: one transaction each)."""
    client = Client(socket, keep_alive=True)
    for start in range(0, count, BATCH):
        events = [
            {"type": "bench", "payload": {"c": client_id, "n": n}}
            for n in range(start, min(count, start + BATCH))
        ]
        answer = post_batch(client, events)
        if len(answer["results"]) != len(events):
            raise RuntimeError(f"batch of {len(events)} answered {len(answer['results'])}")


# Batches timeosd failed and the bench sent again, counted across the forked 4-client processes.
REFUSED_BATCHES = multiprocessing.get_context("fork").Value("i", 0)


def post_batch(client: Client, events: list[dict[str, Any]]) -> Any:
    """POST a batch, again if timeosd fails it for a transaction clash.

    timeosd runs a batch's transaction in a worker thread on the connection the event loop
    also writes on: a batch arriving while another write is open fails at BEGIN ("within a
    transaction"), or its COMMIT finds the transaction already ended by the other side ("no
    transaction is active", even "not an error"). Sent again (a duplicate at worst, which a
    rate does not mind) and counted; peers.py reports the count.
    """
    for _ in range(1000):
        try:
            return client.call("POST", "/v1/events/batch", {"events": events})
        except StoreError as exc:
            with REFUSED_BATCHES.get_lock():
                REFUSED_BATCHES.value += 1
                first = REFUSED_BATCHES.value == 1
            if first:
                print(f"  timeosd refused a batch, sending it again: {exc}", file=sys.stderr)
            time.sleep(0.001)
    raise RuntimeError("timeosd refused the same batch 1,000 times")


FAN_OUT = 10  # TimeOS's background load: events matched by this many rules, a job each
LOAD_RULES = lateness.RULES + "".join(
    f"  - name: load-{i}\n    on_event: load\n    perform: nothing\n" for i in range(FAN_OUT)
)


def timeos_lateness(sizes: Sizes, load: bool) -> Figures:
    """Lateness of lateness.py's delayed jobs; the load is events that each make FAN_OUT jobs.

    (Not batch requests: a batch's transaction runs in a worker thread on the connection the
    event loop writes on, and the probes' single emits then fail; see post_batch.)
    """
    with tempfile.TemporaryDirectory(prefix="peers-timeos-") as tmp:
        sink = Path(tmp) / "sink.txt"
        sink.touch()
        with TimeosDaemon(Path(tmp), LOAD_RULES, workers=4) as daemon:
            loader = Client(daemon.socket)
            body = {"type": "load", "payload": {}}
            pacer = Load(sizes.load / FAN_OUT, lambda: loader.call("POST", "/v1/events", body))
            if load:
                pacer.start()
            try:
                _, action = lateness.measure_lateness(daemon, sizes.late, sink)
            finally:
                achieved = pacer.stop() * FAN_OUT if load else 0.0
    if not load:
        return stats_ms("late_iso", action)
    return {**stats_ms("late_load", action), "load_rate": achieved}


def timeos_burst(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="peers-timeos-") as tmp:
        with TimeosDaemon(Path(tmp), lateness.RULES, workers=4) as daemon:
            return lateness.measure_throughput(daemon, n)  # exits if a job did not succeed


def timeos_drain(sizes: Sizes) -> Figures:
    flood = timeos_burst(sizes.drain)
    drain = flood["noop_first_start_late_ms"] + flood["noop_span_s"] * 1000
    return {"drain_ms": drain, "drain_skipped": 0.0}


def timeos_noop(sizes: Sizes) -> Figures:
    return {"noop_rate": timeos_burst(sizes.noop)["noop_jobs_per_s"]}


def timeos_submit(sizes: Sizes) -> Figures:
    rates: Figures = {}
    with tempfile.TemporaryDirectory(prefix="peers-timeos-") as tmp:
        with TimeosDaemon(Path(tmp), emit_throughput.RULES) as daemon:
            emit_throughput.emit_many(daemon.socket, 50, -1)  # warm-up
            started = time.perf_counter()
            emit_throughput.emit_many(daemon.socket, sizes.submit, 0)
            rates["submit_1"] = sizes.submit / (time.perf_counter() - started)
            rates["submit_4"] = emit_throughput.concurrent_rate(daemon.socket, 4, sizes.submit_each)
            started = time.perf_counter()
            emit_batches(daemon.socket, sizes.batched, 0)
            rates["submit_batch_1"] = sizes.batched / (time.perf_counter() - started)
            rates["submit_batch_4"] = emit_throughput.concurrent_rate(
                daemon.socket, 4, sizes.batched_each, emit_batches
            )
    return rates


def timeos_cli(sizes: Sizes) -> Figures:
    with tempfile.TemporaryDirectory(prefix="peers-timeos-") as tmp:
        with TimeosDaemon(Path(tmp), emit_throughput.RULES) as daemon:
            env = emit_throughput.cli_env(daemon.socket, Path(tmp))
            runs = sizes.cli_runs
            emit = emit_throughput.wall_ms(
                [exe("timeos"), "emit", "bench", "--payload", '{"n":1}'], env, runs
            )
            nxt = emit_throughput.wall_ms(
                [exe("timeos"), "next", "--cron", "*/5 * * * *", "--count", "5"], env, runs
            )
            bare = emit_throughput.wall_ms([sys.executable, "-c", "pass"], env, runs)
    emit_ms, next_ms, bare_ms = map(statistics.median, (emit, nxt, bare))
    return {
        "python_pass_ms": bare_ms,
        "cli_emit_ms": emit_ms,
        "cli_next_ms": next_ms,
        "cli_emit_x": emit_ms / bare_ms,
        "cli_next_x": next_ms / bare_ms,
    }


class TimeosServer:
    """timeosd as a Server for the idle and RSS readings."""

    def __init__(self, tmp: Path, rules: str | Path) -> None:
        self.system = "timeos"
        self.daemon = TimeosDaemon(tmp, rules).start()

    @property
    def pid(self) -> int:
        return self.daemon.pid

    def stop(self) -> None:
        self.daemon.stop()


AnyServer = Server | TimeosServer


def idle_all(peers: Sequence[Peer], sizes: Sizes) -> dict[str, Figures]:
    """Every system idle side by side, one job waiting an hour, over the same window."""
    with tempfile.TemporaryDirectory(prefix="peers-idle-") as tmp:
        servers: list[AnyServer] = []
        try:
            base = Path(tmp) / "timeos"
            base.mkdir()
            servers.append(TimeosServer(base, REPO / "rules.example.yaml"))
            for peer in peers:
                home = Path(tmp) / peer.system
                home.mkdir()
                servers.append(peer.start(home, peer.server, "--idle-job"))
            time.sleep(SETTLE)
            before = {s.system: (cpu_seconds(s.pid), wakeups(s.pid)) for s in servers}
            started = time.monotonic()
            time.sleep(sizes.idle)
            elapsed = time.monotonic() - started
            after = {s.system: (cpu_seconds(s.pid), wakeups(s.pid)) for s in servers}
        finally:
            for server in servers:
                server.stop()
    return {
        system: {
            "idle_cpu_pct": (after[system][0] - cpu) / elapsed * 100,
            "idle_wakeups": (after[system][1] - switches) / elapsed,
        }
        for system, (cpu, switches) in before.items()
    }


def wakeups(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of `pid`."""
    return context_switches(pid, nonvoluntary=True)


class RssDatabases:
    """The databases with waiting jobs, built once per run and reused by every round."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root, self.sizes = root, sizes
        self.built: dict[tuple[str, int], Path] = {}

    def timeos(self, n: int) -> Path:
        key = ("timeos", n)
        if key not in self.built:
            home = self.root / f"timeos-{n}"
            home.mkdir()
            if n:
                build_timeos_db(home / "timeos.db", n, 0, datetime.now(UTC))
            self.built[key] = home
        return self.built[key]

    def peer(self, peer: Peer, n: int) -> Path:
        key = (peer.system, n)
        if key not in self.built:
            self.built[key] = peer_build(peer, self.root, n)
        return self.built[key]


def rss(system: str, peer: Peer | None, dbs: RssDatabases) -> Figures:
    figures: Figures = {}
    for key, n in zip(("rss_0_mb", "rss_mid_mb", "rss_big_mb"), dbs.sizes.rss, strict=True):
        server: AnyServer
        if peer is None:
            server = TimeosServer(dbs.timeos(n), lateness.RULES)
        else:
            server = peer.start(dbs.root, peer.server, db=dbs.peer(peer, n))
        try:
            time.sleep(SETTLE)
            figures[key] = rss_mb(server.pid)
        finally:
            server.stop()
    figures["rss_max_mb"] = max(figures.values())
    return figures


def load_average() -> float:
    return os.getloadavg()[0]
