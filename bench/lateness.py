"""Firing lateness of isolated due jobs, then throughput of no-op jobs with four workers.

Lateness is read from the database (attempt started_at minus job perform_at: the scheduler's own
lateness) and from the python action itself (when the function really started, in its thread).
Usage: python bench/lateness.py [--quick]
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchkit import TimeosDaemon, parse_args, percentile, report, verdict

LEAD = 0.300  # each job is due this long after its event is emitted
SPACING = 0.050  # between two emits
P99_TARGET_MS = 10.0
RULES = """\
actions:
  record:
    python: "sink:record"
    timeout: 10s
  nothing:
    python: "sink:noop"
    timeout: 10s
rules:
  - name: late
    on_event: late
    perform: record
  - name: flood
    on_event: flood
    perform: nothing
  - name: probe
    on_event: probe
    offset: 1h
    perform: nothing
"""


def iso_at(seconds: float) -> str:
    """An epoch instant as ISO 8601 UTC, microsecond precision."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def wait_finished(daemon: TimeosDaemon, rule: str, count: int, timeout: float) -> None:
    """Poll the database until `count` attempts of `rule` have ended."""
    deadline = time.monotonic() + timeout
    sql = (
        "SELECT COUNT(*) FROM attempts JOIN jobs ON jobs.id = attempts.job_id"
        " WHERE jobs.rule = ? AND attempts.ended_at IS NOT NULL"
    )
    while (done := daemon.query(sql, (rule,))[0][0]) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done} of {count} {rule!r} jobs finished after {timeout:.0f}s")
        time.sleep(0.2)


def measure_lateness(daemon: TimeosDaemon, n: int, sink: Path) -> tuple[list[float], list[float]]:
    """Emit `n` events LEAD ahead, SPACING apart; return scheduler and action lateness in ms."""
    start = time.monotonic()
    for i in range(n):
        body = {
            "type": "late",
            "payload": {"sink": str(sink), "n": i},
            "occurred_at": iso_at(time.time() + LEAD),
        }
        daemon.client.call("POST", "/v1/events", body)
        pause = start + (i + 1) * SPACING - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    wait_finished(daemon, "late", n, timeout=30 + n * SPACING)
    rows = daemon.query(
        "SELECT jobs.id, jobs.perform_at, attempts.started_at FROM jobs"
        " JOIN attempts ON attempts.job_id = jobs.id AND attempts.number = 1"
        " WHERE jobs.rule = 'late'"
    )
    perform = {job_id: perform_at for job_id, perform_at, _ in rows}
    scheduler = [(started - perform_at) / 1000 for _, perform_at, started in rows]
    action = []
    for line in sink.read_text().splitlines():
        job_id, started_us = line.split()
        action.append((int(started_us) - perform[job_id]) / 1000)
    return scheduler, action


def measure_throughput(daemon: TimeosDaemon, n: int) -> dict[str, float]:
    """Queue `n` no-op jobs all due at one instant after the emits end; time their execution."""
    probe = min(200, n)
    started = time.perf_counter()
    for i in range(probe):  # same cost as the real emits (one job each, due in an hour)
        daemon.client.call("POST", "/v1/events", {"type": "probe", "payload": {"n": i}})
    rate = probe / (time.perf_counter() - started)
    # Room for the emits to slow down (a busy machine) before the jobs fall due.
    due = time.time() + 2.5 * n / rate + 1.0
    for i in range(n):
        body = {"type": "flood", "payload": {"n": i}, "occurred_at": iso_at(due)}
        daemon.client.call("POST", "/v1/events", body)
    emitted = time.time()
    wait_finished(daemon, "flood", n, timeout=max(0.0, due - time.time()) + 60 + n / 20)
    first, last, ok = daemon.query(
        "SELECT MIN(started_at), MAX(ended_at), SUM(outcome = 'succeeded') FROM attempts"
        " JOIN jobs ON jobs.id = attempts.job_id WHERE jobs.rule = 'flood'"
    )[0]
    if ok != n:
        raise SystemExit(f"{n - ok} of {n} no-op jobs did not succeed; see {daemon.log}")
    span = (last - first) / 1e6
    return {
        "noop_jobs": n,
        "noop_jobs_per_s": round(n / span, 1),
        "noop_span_s": round(span, 3),
        "noop_first_start_late_ms": round((first / 1e6 - due) * 1000, 3),
        "emits_ended_before_due_s": round(due - emitted, 3),
    }


def main() -> None:
    args = parse_args(__doc__ or "")
    n_late, n_flood = (30, 500) if args.quick else (200, 5000)
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        sink = Path(tmp) / "sink.txt"
        sink.touch()
        with TimeosDaemon(Path(tmp), RULES, workers=4) as daemon:
            scheduler, action = measure_lateness(daemon, n_late, sink)
            flood = measure_throughput(daemon, n_flood)

    figures: dict[str, float] = {"late_jobs": n_late}
    for name, values in (("scheduler", scheduler), ("action", action)):
        figures[f"{name}_late_p50_ms"] = round(percentile(values, 50), 3)
        figures[f"{name}_late_p99_ms"] = round(percentile(values, 99), 3)
        figures[f"{name}_late_max_ms"] = round(max(values), 3)
    figures.update(flood)

    print(f"lateness of {n_late} isolated jobs (due {LEAD * 1000:.0f} ms after emit, ", end="")
    print(f"{SPACING * 1000:.0f} ms apart):")
    for name, what in (("scheduler", "claim (attempts.started_at)"), ("action", "python start")):
        print(
            f"  {what:28} p50 {figures[f'{name}_late_p50_ms']:7.3f} ms"
            f"  p99 {figures[f'{name}_late_p99_ms']:7.3f} ms"
            f"  max {figures[f'{name}_late_max_ms']:7.3f} ms"
        )
    p99 = figures["scheduler_late_p99_ms"]
    print(f"  target scheduler p99 < {P99_TARGET_MS:g} ms: {verdict(p99, P99_TARGET_MS)}")
    print(
        f"no-op throughput, {n_flood} jobs due at once, 4 workers:"
        f" {flood['noop_jobs_per_s']:.1f} jobs/s ({flood['noop_span_s']:.2f} s first start to"
        f" last finish; first start {flood['noop_first_start_late_ms']:.1f} ms after due)"
    )
    if flood["emits_ended_before_due_s"] < 0:
        print("  warning: emits were still arriving when the jobs fell due")
    report("lateness", args.quick, figures, {"scheduler_late_p99_ms": f"<{P99_TARGET_MS:g}"})


if __name__ == "__main__":
    main()
