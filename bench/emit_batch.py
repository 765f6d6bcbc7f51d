"""`timeos emit-batch` throughput: 100,000 events from a JSON-lines file through the socket.

The whole path a user pays for: the CLI reads and checks every line, sends them (one request:
one transaction in timeosd), the daemon parses, plans one job per event and inserts with
executemany. Every event creates exactly one job, due in an hour. Target: under 5 s.
The daemon's and the CLI's CPU seconds are printed beside the wall times: on a shared machine
they move much less with the load than the wall time does (compare runs by them).
Usage: python bench/emit_batch.py [--quick]
"""

from __future__ import annotations

import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from benchkit import TimeosDaemon, exe, parse_args, report, verdict
from idle_cpu import cpu_seconds

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
TARGET_S = 5.0


def write_lines(path: Path, count: int, keyed: bool) -> None:
    """`count` events, each with a small payload (and, `keyed`, an idempotency key)."""
    with path.open("w") as out:
        for n in range(count):
            event = {"type": "bench", "payload": {"user_id": n, "plan": "pro", "amount": n % 997}}
            if keyed:
                event["idempotency_key"] = f"bench-{n}"
            out.write(json.dumps(event) + "\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(daemon: TimeosDaemon, path: Path, env: dict[str, str], cpu: dict[str, float]) -> float:
    """One `timeos emit-batch`: its wall seconds; adds the daemon's and the CLI's CPU seconds."""
    daemon_cpu, cli_cpu = cpu_seconds(daemon.pid), _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [exe("timeos"), "emit-batch", str(path)], env=env, capture_output=True, text=True
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"timeos emit-batch exited {done.returncode}:\n{done.stderr}")
    cpu["daemon"] = round(cpu_seconds(daemon.pid) - daemon_cpu, 2)
    cpu["cli"] = round(_children_cpu() - cli_cpu, 2)
    return took


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 10_000 if args.quick else 100_000
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        plain, keyed = Path(tmp) / "plain.jsonl", Path(tmp) / "keyed.jsonl"
        write_lines(plain, count, keyed=False)
        write_lines(keyed, count, keyed=True)
        with TimeosDaemon(Path(tmp), RULES) as daemon:
            env = {"TIMEOS_SOCKET": str(daemon.socket), "PATH": str(Path(exe("timeos")).parent)}
            cpu: dict[str, float] = {}
            cpu_keyed: dict[str, float] = {}
            took = run(daemon, plain, env, cpu)
            took_keyed = run(daemon, keyed, env, cpu_keyed)
            took_again = run(daemon, keyed, env, {})  # every line a duplicate: no new rows
            jobs = daemon.query("SELECT COUNT(*) FROM jobs")[0][0]
        if jobs != 2 * count:
            raise SystemExit(f"expected {2 * count} jobs, found {jobs}")
    figures = {
        "events": count,
        "seconds": round(took, 3),
        "events_per_s": round(count / took, 1),
        "keyed_seconds": round(took_keyed, 3),
        "keyed_events_per_s": round(count / took_keyed, 1),
        "all_duplicates_seconds": round(took_again, 3),
        "daemon_cpu_s": cpu["daemon"],
        "cli_cpu_s": cpu["cli"],
        "keyed_daemon_cpu_s": cpu_keyed["daemon"],
    }
    print(f"{count} events through `timeos emit-batch`: {took:.2f} s ({count / took:,.0f}/s)")
    print(
        f"  with idempotency keys: {took_keyed:.2f} s; again (all duplicates): {took_again:.2f} s"
    )
    print(
        f"  CPU: timeosd {cpu['daemon']} s, timeos {cpu['cli']} s"
        f" (keyed: timeosd {cpu_keyed['daemon']} s)"
    )
    print(f"  target: under {TARGET_S} s for 100,000: {verdict(took, TARGET_S)}")
    report("emit_batch", args.quick, figures, {"seconds": f"< {TARGET_S}"})


if __name__ == "__main__":
    main()
