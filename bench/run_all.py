"""Run every benchmark in turn (passing --quick through) and print one combined table.

Each benchmark's output is shown as it runs; its final JSON line feeds the table.
Usage: python bench/run_all.py [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from benchkit import BENCH_DIR, parse_args

BENCHMARKS = ("emit_throughput", "lateness", "claim", "idle_cpu", "wal_idle", "retention")
TIMEOUT = {False: 1800.0, True: 300.0}  # seconds per benchmark, full and quick


def run(name: str, quick: bool) -> dict[str, Any] | None:
    """Run one benchmark, echoing its output; return its JSON report (None if it failed)."""
    cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *(["--quick"] if quick else [])]
    print(f"== {name} {'(quick)' if quick else ''}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    killer = threading.Timer(TIMEOUT[quick], proc.kill)
    killer.start()
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"   {line}", end="", flush=True)
            if line.strip():
                last = line
        code = proc.wait()
    finally:
        killer.cancel()
    print(f"   ({time.monotonic() - started:.1f} s, exit {code})", flush=True)
    if code != 0:
        return None
    try:
        result: dict[str, Any] = json.loads(last)
    except json.JSONDecodeError:
        return None
    return result


def status(value: Any, target: str | None) -> str:
    """`ok`, `MISS` or empty, comparing a figure with a target like "<10" or ">10000"."""
    if target is None or not isinstance(value, int | float):
        return ""
    bound = float(target[1:])
    met = value < bound if target[0] == "<" else value > bound
    return "ok" if met else "MISS"


def main() -> None:
    args = parse_args(__doc__ or "")
    results = {name: run(name, args.quick) for name in BENCHMARKS}

    rows: list[tuple[str, str, str, str, str]] = []
    for name, result in results.items():
        if result is None:
            rows.append((name, "(failed)", "", "", "FAIL"))
            continue
        targets = result.get("targets", {})
        for figure, value in result["figures"].items():
            target = targets.get(figure)
            rows.append((name, figure, str(value), target or "", status(value, target)))
    header = ("benchmark", "figure", "value", "target", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print()
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(json.dumps({"quick": args.quick, "results": results}, separators=(",", ":")))
    if any(result is None for result in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
