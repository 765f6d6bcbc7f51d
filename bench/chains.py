"""Chains in the store: what a perform list costs when an event batch is stored, and how fast a
parent's success releases its blocked child (Store.finish with the chain's edge, one transaction).

No daemon: this drives SqliteStore on a temporary database, planning with the engine as the
daemon does. Compared: one action per event against a two-action perform list.
Usage: python bench/chains.py [--quick]
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchkit import parse_args, report

from timeos.engine import after_attempt, plan_events
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    CommandSpec,
    Event,
    EventTrigger,
    Job,
    Outcome,
    RetryPolicy,
    Rule,
    RuleSet,
    new_ids,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACTIONS = {
    name: Action(name, ActionKind.COMMAND, CommandSpec(("true",))) for name in ("charge", "mail")
}
PLAIN = RuleSet((Rule("pay", EventTrigger("paid"), "charge"),), ACTIONS)
CHAINED = RuleSet((Rule("pay", EventTrigger("paid"), "charge", then=("mail",)),), ACTIONS)


def events(count: int) -> list[Event]:
    ids = new_ids(T0, count)
    return [Event(i, "paid", {"user_id": n}, T0, T0) for n, i in enumerate(ids)]


def store_batch(path: Path, rules: RuleSet, count: int) -> tuple[float, int]:
    """Seconds to plan and store `count` events in one batch; the jobs it made."""
    store = SqliteStore(path)
    batch = events(count)
    started = time.perf_counter()
    jobs = plan_events(batch, rules)
    store.emit_batch(batch, jobs, T0)
    seconds = time.perf_counter() - started
    store.close()
    return seconds, len(jobs)


def finish_rate(path: Path, count: int) -> float:
    """Parents finished per second, each releasing its blocked child (claim excluded)."""
    store = SqliteStore(path)
    claimed: list[Job] = []
    while len(claimed) < count:
        found = store.claim_due(T0 + timedelta(seconds=1), min(500, count - len(claimed)))
        if not found:
            break
        claimed += found
    rng = random.Random(1)
    ok = ActionResult(Outcome.SUCCEEDED)
    started = time.perf_counter()
    for job in claimed:
        store.finish(job, ok, T0, after_attempt(job, ok, RetryPolicy(), T0, rng))
    seconds = time.perf_counter() - started
    store.close()
    return len(claimed) / seconds


def main() -> None:
    args = parse_args(__doc__ or "")
    count = 2_000 if args.quick else 50_000
    finishes = 500 if args.quick else 5_000
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, rules in (("plain", PLAIN), ("chained", CHAINED)):
            path = Path(tmp) / f"{label}.db"
            seconds, jobs = store_batch(path, rules, count)
            figures[f"{label}_batch_s"] = round(seconds, 3)
            figures[f"{label}_jobs_per_s"] = round(jobs / seconds)
            figures[f"{label}_finish_per_s"] = round(finish_rate(path, finishes))
    print(
        f"{count} events in one batch: plain {figures['plain_batch_s']} s"
        f" ({figures['plain_jobs_per_s']} jobs/s), two-step chain {figures['chained_batch_s']} s"
        f" ({figures['chained_jobs_per_s']} jobs/s)"
    )
    print(
        f"finish: plain {figures['plain_finish_per_s']}/s,"
        f" releasing a child {figures['chained_finish_per_s']}/s"
    )
    report("chains", args.quick, figures, {})


if __name__ == "__main__":
    main()
