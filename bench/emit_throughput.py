"""Emit throughput over the Unix socket (one and four concurrent clients); `timeos emit` time.

Every event creates exactly one job, due in an hour so nothing runs during the measurement.
Usage: python bench/emit_throughput.py [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

from benchkit import TimeosDaemon, exe, parse_args, percentile, report, verdict

from timeos.cli.client import Client

RULES = """\
actions:
  nothing:
    command: ["true"]
rules:
  - name: bench
    on_event: bench
    offset: 1h
    perform: nothing
"""
CLI_TARGET_MS = 100.0


def emit_many(socket: Path, count: int, client_id: int) -> list[float]:
    """Emit `count` events one after another; return each request's latency in seconds."""
    client = Client(socket, keep_alive=True)
    latencies: list[float] = []
    for n in range(count):
        started = time.perf_counter()
        answer = client.call(
            "POST", "/v1/events", {"type": "bench", "payload": {"c": client_id, "n": n}}
        )
        latencies.append(time.perf_counter() - started)
        if len(answer["jobs"]) != 1:
            raise RuntimeError(f"event {answer['id']} created {len(answer['jobs'])} jobs, not 1")
    return latencies


Emitter = Callable[[Path, int, int], object]  # (socket, count, client_id): emits `count` events


def _client_process(
    socket: Path,
    count: int,
    client_id: int,
    barrier: Barrier,
    out: mp.Queue[tuple[float, float]],
    emit: Emitter,
) -> None:
    barrier.wait(30)
    started = time.time()
    emit(socket, count, client_id)
    out.put((started, time.time()))


def concurrent_rate(socket: Path, clients: int, each: int, emit: Emitter = emit_many) -> float:
    """Events/s with `clients` processes emitting at once (from first start to last finish).

    `emit` is how each client sends its events (one request each by default; bench/peers.py
    passes a batching one).
    """
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(clients)
    out: mp.Queue[tuple[float, float]] = ctx.Queue()
    procs = [
        ctx.Process(target=_client_process, args=(socket, each, i, barrier, out, emit))
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
        if proc.exitcode != 0:
            raise RuntimeError(f"client process exited {proc.exitcode}")
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return clients * each / (last - first)


def cli_env(socket: Path, tmp: Path) -> dict[str, str]:
    """The CLI's environment: TIMEOS_SOCKET, plus a bytecode cache like an installed package's."""
    env = {**os.environ, "TIMEOS_SOCKET": str(socket), "PYTHONPYCACHEPREFIX": str(tmp / "pyc")}
    # Under PYTHONDONTWRITEBYTECODE an editable checkout recompiles timeos on every run; a wheel
    # ships bytecode. The cache lives in the temp dir, so the checkout is left untouched.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall_ms(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall time of `runs` whole processes, in ms, after one unmeasured warm-up run."""
    times: list[float] = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return times[1:]


def main() -> None:
    args = parse_args(__doc__ or "")
    single, per_client, clients, cli_runs = (500, 250, 4, 10) if args.quick else (5000, 2500, 4, 30)
    baseline_runs = cli_runs // 2
    with (
        tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp,
        TimeosDaemon(Path(tmp), RULES) as daemon,
    ):
        emit_many(daemon.socket, 50, -1)  # warm-up: imports, statement cache, page cache
        started = time.perf_counter()
        latencies = emit_many(daemon.socket, single, 0)
        one_rate = single / (time.perf_counter() - started)
        four_rate = concurrent_rate(daemon.socket, clients, per_client)
        env = cli_env(daemon.socket, Path(tmp))
        cli = wall_ms([exe("timeos"), "emit", "bench", "--payload", '{"n":1}'], env, cli_runs)
        # Where the time goes: a bare interpreter, and importing the CLI module without running it.
        bare = wall_ms([sys.executable, "-c", "pass"], env, baseline_runs)
        imports = wall_ms([sys.executable, "-c", "import timeos.cli.app"], env, baseline_runs)
        jobs = daemon.query("SELECT COUNT(*) FROM jobs WHERE rule = 'bench'")[0][0]
    # The power-loss-safe setting: every commit fsyncs the WAL.
    with (
        tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp,
        TimeosDaemon(Path(tmp), RULES, extra_args=["--synchronous", "FULL"]) as full,
    ):
        emit_many(full.socket, 50, -1)
        started = time.perf_counter()
        emit_many(full.socket, single // 5, 0)
        full_rate = (single // 5) / (time.perf_counter() - started)

    expected = 50 + single + clients * per_client + cli_runs + 1
    if jobs != expected:
        raise SystemExit(f"expected {expected} jobs in the database, found {jobs}")
    lat_ms = [s * 1000 for s in latencies]
    figures = {
        "one_client_events_per_s": round(one_rate, 1),
        "one_client_latency_p50_ms": round(percentile(lat_ms, 50), 3),
        "one_client_latency_p99_ms": round(percentile(lat_ms, 99), 3),
        f"{clients}_clients_events_per_s": round(four_rate, 1),
        "one_client_synchronous_full_events_per_s": round(full_rate, 1),
        "cli_emit_min_ms": round(min(cli), 1),
        "cli_emit_median_ms": round(statistics.median(cli), 1),
        "cli_emit_p90_ms": round(percentile(cli, 90), 1),
        "python_bare_median_ms": round(statistics.median(bare), 1),
        "import_timeos_cli_median_ms": round(statistics.median(imports), 1),
    }
    print(f"emit over the socket, one job per event ({jobs} jobs stored)")
    print(f"  1 client,  {single} events: {one_rate:8.1f} events/s", end="")
    print(f"  (latency p50 {figures['one_client_latency_p50_ms']} ms,", end="")
    print(f" p99 {figures['one_client_latency_p99_ms']} ms)")
    print(f"  {clients} clients, {clients} x {per_client} events: {four_rate:8.1f} events/s")
    print(f"  1 client, --synchronous FULL, {single // 5} events: {full_rate:8.1f} events/s")
    print(f"`timeos emit` whole process, {cli_runs} runs:")
    print(
        f"  min {min(cli):.1f} ms  median {statistics.median(cli):.1f} ms"
        f"  p90 {percentile(cli, 90):.1f} ms  (target p90 < {CLI_TARGET_MS:.0f} ms:"
        f" {verdict(percentile(cli, 90), CLI_TARGET_MS)})"
    )
    print(
        f"  of which: bare interpreter {statistics.median(bare):.1f} ms,"
        f" `import timeos.cli.app` {statistics.median(imports):.1f} ms (medians, start-up included)"
    )
    report("emit_throughput", args.quick, figures, {"cli_emit_p90_ms": f"<{CLI_TARGET_MS:g}"})


if __name__ == "__main__":
    main()
