"""CPU that an idle timeosd burns: rules.example.yaml loaded, nothing emitted, for a fixed window.

CPU time is utime + stime of the daemon process from /proc/PID/stat (its children excluded).
Usage: python bench/idle_cpu.py [--quick]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchkit import REPO, TimeosDaemon, parse_args, report, verdict

TARGET_PERCENT = 1.0
SETTLE = 1.0  # seconds after ready before the window opens: start-up work is not idling


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int, *, nonvoluntary: bool = False) -> int:
    """Voluntary context switches of all the daemon's threads: a proxy for its wake-ups.

    With `nonvoluntary`, preemptions are added (bench/peers.py counts both, as wake-ups).
    """
    kinds = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")[: 2 if nonvoluntary else 1]
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(kinds):
                total += int(line.split()[1])
    return total


def main() -> None:
    args = parse_args(__doc__ or "")
    window = 10.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="timeos-bench-") as tmp:
        with TimeosDaemon(Path(tmp), REPO / "rules.example.yaml") as daemon:
            ready_cpu = cpu_seconds(daemon.pid)
            time.sleep(SETTLE)
            before, switches = cpu_seconds(daemon.pid), context_switches(daemon.pid)
            started = time.monotonic()
            time.sleep(window)
            after, elapsed = cpu_seconds(daemon.pid), time.monotonic() - started
            wakeups = (context_switches(daemon.pid) - switches) / elapsed

    used = after - before
    percent = used / elapsed * 100
    figures = {
        "window_s": round(elapsed, 1),
        "startup_cpu_s": round(ready_cpu, 2),
        "idle_cpu_s": round(used, 3),
        "idle_cpu_percent": round(percent, 3),
        "wakeups_per_s": round(wakeups, 1),
    }
    print(f"timeosd with rules.example.yaml: {ready_cpu:.2f} CPU s to start and become ready")
    print(
        f"idle for {elapsed:.1f} s: {used:.3f} CPU s = {percent:.3f}% of one core"
        f" (target < {TARGET_PERCENT:g}%: {verdict(percent, TARGET_PERCENT)})"
    )
    print(f"  {wakeups:.1f} wake-ups/s (voluntary context switches, all threads)")
    report("idle_cpu", args.quick, figures, {"idle_cpu_percent": f"<{TARGET_PERCENT:g}"})


if __name__ == "__main__":
    main()
