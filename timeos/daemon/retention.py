"""The pruner: removes what retention no longer keeps, on an interval of the injected clock and
for `timeos cleanup`, in small transactions with the event loop running between them.

What is old enough is decided by engine.prune_plan; the store deletes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import datetime, timedelta

from timeos.clock import Clock
from timeos.engine import PrunePlan, Retention, prune_plan
from timeos.errors import UsageError
from timeos.model import FOREVER, JobStatus, PruneCounts, RuleSet
from timeos.store.protocol import Store
from timeos.timefmt import parse_duration

log = logging.getLogger("timeos.retention")


def keep_time(text: str, source: str) -> timedelta:
    """A keep time from a flag or setting: a positive duration, or `never`."""
    if text.strip().lower() == "never":
        return FOREVER
    keep = parse_duration(text, source)
    if keep <= timedelta(0):
        raise UsageError(f"{source}: must be positive (or never), got {text!r}")
    return keep


def retention_from(
    base: Retention | None = None, *, keep_events: str | None = None, keep_jobs: str | None = None
) -> Retention:
    """`base` (default: the built-in retention) with the keep times given as text replaced."""
    found = base or Retention()
    if keep_events is not None:
        found = replace(found, events=keep_time(keep_events, "--keep-events"))
    if keep_jobs is not None:
        found = replace(found, jobs=keep_time(keep_jobs, "--keep-jobs"))
    return found


class Pruner:
    """Periodic pruning for one daemon; also serves `timeos cleanup` through the service."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        rules: Callable[[], RuleSet],
        retention: Retention | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules
        self.retention = retention or Retention()
        self.wake = asyncio.Event()
        self.stopping = False
        self.last_run: datetime | None = None
        self.last_counts = PruneCounts()
        self.last_error: str | None = None

    def plan(
        self,
        now: datetime,
        *,
        older_than: timedelta | None = None,
        statuses: Collection[JobStatus] = (JobStatus.SUCCEEDED, JobStatus.CANCELLED),
        events: bool = True,
    ) -> PrunePlan:
        """The cutoffs at `now` under the current rules (see engine.prune_plan)."""
        return prune_plan(
            self.retention,
            self.rules(),
            now,
            older_than=older_than,
            statuses=statuses,
            events=events,
        )

    async def prune(self, plan: PrunePlan) -> PruneCounts:
        """Remove everything `plan` allows, one batch per transaction, yielding between them."""
        total = PruneCounts()
        if plan.empty:
            return total
        more = True
        while more and not self.stopping:
            counts, more = self.store.prune_batch(plan, self.retention.batch)
            total += counts
            await asyncio.sleep(0)  # let due jobs, results and requests in between batches
        return total

    async def run(self) -> None:
        """Prune shortly after start, then every `retention.every`, until stop()."""
        due = self.clock.now() + self.retention.first_after
        while not self.stopping:
            now = self.clock.now()
            if now >= due:
                await self.pass_once(now)
                due = self.clock.now() + self.retention.every
            elif due - now > self.retention.every + self.retention.first_after:
                due = now + self.retention.every  # the clock stepped back: do not wait for ages
            await self.clock.sleep_until(due, self.wake)
            self.wake.clear()

    async def pass_once(self, now: datetime) -> PruneCounts:
        """One pruning pass with the configured retention; failures are logged, not raised."""
        try:
            counts = await self.prune(self.plan(now))
        except Exception as exc:  # e.g. the database locked by a backup: try on the next pass
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("retention pass failed (next in %s): %s", self.retention.every, exc)
            return PruneCounts()
        self.last_run, self.last_counts, self.last_error = now, counts, None
        if counts != PruneCounts():
            log.info(
                "retention removed %d event(s), %d job(s), %d attempt(s), %d occurrence(s)",
                counts.events,
                counts.jobs,
                counts.attempts,
                counts.occurrences,
            )
        return counts

    def stop(self) -> None:
        """End run() (and any prune in progress, after its current batch)."""
        self.stopping = True
        self.wake.set()
