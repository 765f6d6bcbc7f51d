"""Python actions the benchmarks point timeosd at (`python: sink:noop`, `python: sink:record`).

timeosd imports this module because the benchmarks put bench/ on the daemon's PYTHONPATH.
"""

from __future__ import annotations

import time
from typing import Any


def noop(payload: dict[str, Any], ctx: Any) -> None:
    """Do nothing: the job costs only what the daemon spends around it."""


def record(payload: dict[str, Any], ctx: Any) -> None:
    """Append `job_id start_us` to the file named by payload["sink"] (the real start instant)."""
    started_us = time.time_ns() // 1000
    with open(payload["sink"], "a", encoding="utf-8") as out:
        out.write(f"{ctx.job_id} {started_us}\n")
