"""What the daemon needs from a store: every operation the service, scheduler and planner call.

The SQLite store (store/sqlite/) and the PostgreSQL store (store/postgres/) implement it. All
instants are timezone-aware UTC; every failure of the backend is raised as StoreError, and the
domain errors (NotFound, InvalidState, IdempotencyConflict) mean the same in every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from timeos.engine import PrunePlan
from timeos.errors import TimeOSError
from timeos.model import (
    ActionResult,
    Attempt,
    Claim,
    EmitResult,
    Event,
    Finished,
    Job,
    JobStatus,
    NewJob,
    Occurrence,
    PruneCounts,
    Replay,
    RuleOverride,
    RuleState,
    Verdict,
    WriteOutcome,
)
from timeos.rules.correlation import Correlation
from timeos.rules.limits import LimitsInForce


class Store(Protocol):
    """Durable events, jobs, attempts and rule schedule state."""

    @property
    def location(self) -> str:
        """Where the data lives, for status and health (a path or a URL without secrets)."""
        ...

    @property
    def last_write(self) -> WriteOutcome | None:
        """How the last write transaction ended (None: none yet): health reports it."""
        ...

    def facts(self) -> dict[str, Any]:
        """Backend-specific numbers for health and metrics (SQLite: `wal_bytes`)."""
        ...

    def close(self) -> None:
        """Release connections and background work."""
        ...

    def watch(self, wake: Callable[[], object]) -> None:
        """Call `wake` (from another thread) when another daemon sharing the database may have
        made a job due earlier (nothing to watch alone on a database)."""
        ...

    def announce_rules(self, fingerprint: str) -> None:
        """Tell the daemons sharing the database the fingerprint of the rules this one runs
        (health compares them; alone on a database, nobody to tell)."""
        ...

    def leads_planning(self) -> bool:
        """Whether this daemon plans time-based rules now (always, alone on a database; one
        daemon at a time of those sharing one)."""
        ...

    # ---- events ----

    def find_idempotent(self, key: str, event_type: str, payload: Mapping[str, Any]) -> str | None:
        """Event id stored under `key` with this payload; IdempotencyConflict if another."""
        ...

    def emit(
        self,
        event: Event,
        jobs: Sequence[NewJob],
        now: datetime,
        correlation: Correlation | None = None,
    ) -> EmitResult:
        """Store an event and the jobs it creates in one transaction (or find its duplicate);
        with a `correlation` (its jobs replace `jobs`), also apply its cancel_on and debounce."""
        ...

    def emit_group(
        self, items: Sequence[tuple[Event, Sequence[NewJob], datetime, Correlation | None]]
    ) -> list[EmitResult | TimeOSError]:
        """Store independent emits (event, jobs, now, correlation) in one transaction, each as
        `emit` would, in order; an emit that fails is undone alone (a savepoint) and its error
        is its result. Nothing is stored, and this raises, if the transaction fails."""
        ...

    def get_event(self, event_id: str) -> Event:
        """One event, or NotFound."""
        ...

    def list_events(
        self,
        *,
        event_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Events, newest first; `since` (inclusive) and `until` (exclusive) bound received_at."""
        ...

    def count_events(
        self,
        *,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many events list_events could return (the total behind a page)."""
        ...

    def find_idempotent_many(self, keys: Collection[str]) -> dict[str, tuple[str, str]]:
        """Stored events under any of `keys`: key -> (event id, payload_hash of type+payload)."""
        ...

    def emit_correlated(
        self, events: Sequence[Event], plans: Sequence[Correlation], now: datetime
    ) -> list[EmitResult]:
        """Store events one by one in order, each with its cancel_on and debounce, in one
        transaction (emit-batch when a rule correlates); one result per event."""
        ...

    def insert_job_keys(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Store (job id, rule, key, value) rows of the cancel_on/debounce key index."""
        ...

    def index_waiting(self, rule: str, paths: Sequence[Sequence[str]]) -> int:
        """Index `rule`'s waiting jobs at `paths` (newly given by a reload); rows written."""
        ...

    def emit_batch(
        self,
        events: Sequence[Event],
        jobs: Sequence[NewJob],
        now: datetime,
        encoded: Sequence[str] | None = None,
    ) -> list[EmitResult]:
        """Store events and their jobs in one transaction (all or nothing); one result per
        event, in order. A key another writer stored meanwhile makes that event a duplicate,
        or IdempotencyConflict (nothing stored) if its payload differs. `encoded`: each
        event's payload as payload.compact_json made it, when the caller has it already."""
        ...

    def replay(
        self, event_id: str, jobs: Sequence[NewJob], now: datetime
    ) -> tuple[Replay, list[str]]:
        """Record a replay of a stored event and insert its jobs, atomically (NotFound if the
        event is gone); the replay and the new job ids."""
        ...

    def replays(self, event_id: str) -> list[Replay]:
        """An event's replays, oldest first."""
        ...

    # ---- jobs ----

    def get_job(self, job_id: str) -> Job:
        """One job, or NotFound."""
        ...

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        rule: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        waiting_first: bool = False,
    ) -> list[Job]:
        """Jobs matching every given filter, by perform_at then id (`waiting_first`: running,
        then waiting by perform_at, then finished ones newest first)."""
        ...

    def count_jobs(
        self,
        *,
        status: JobStatus | None = None,
        rule: str | None = None,
        event_id: str | None = None,
    ) -> int:
        """How many jobs match every given filter (the total behind a page of list_jobs)."""
        ...

    def attempts(self, job_id: str) -> list[Attempt]:
        """A job's attempt history, oldest first."""
        ...

    def next_due_at(
        self,
        blocked: Collection[str] = (),
        limits: LimitsInForce | None = None,
        now: datetime | None = None,
    ) -> datetime | None:
        """When the earliest waiting job not of a `blocked` rule is due; with `limits`, also
        when a held-back rule or action next gets a token."""
        ...

    def claim_due(
        self,
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> list[Job]:
        """Mark up to `limit` due jobs running (highest priority, then earliest); return them,
        passing over jobs whose rule or action `limits` hold back (taking tokens for the rest)."""
        ...

    def finish(self, job: Job, result: ActionResult, now: datetime, verdict: Verdict) -> Job:
        """Record how attempt `job.attempts` ended and write the verdict on the job."""
        ...

    def record_and_claim(
        self,
        finished: Sequence[Finished],
        now: datetime,
        limit: int,
        blocked: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> Claim:
        """Write attempts' ends as finish() does (skipping, not raising for, one that is no
        longer the running attempt), then claim as claim_due() does, in one transaction; with
        the claimed jobs' event types."""
        ...

    def running_jobs(self) -> list[Job]:
        """Jobs marked running (at start-up: interrupted by a dead daemon)."""
        ...

    def cancel(self, job_id: str, now: datetime) -> Job:
        """Cancel a waiting job; InvalidState if it already ran or is running."""
        ...

    def cancel_many(
        self, job_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, bool, str | None, str | None]]:
        """Cancel the waiting jobs among `job_ids` in one transaction: (id, cancelled, status,
        error) per id, in order."""
        ...

    def cancel_matching(
        self, *, rule: str, statuses: Collection[str], event_id: str | None, now: datetime
    ) -> list[str]:
        """Cancel every job of `rule` in `statuses` (and of `event_id`) in one transaction;
        the ids cancelled."""
        ...

    def requeue_dead_many(
        self, renewals: Sequence[tuple[Job, Verdict]], now: datetime
    ) -> list[str | None]:
        """Write `dlq retry` verdicts in one transaction: per job None, or why it was not."""
        ...

    def delete_dead_many(self, job_ids: Sequence[str]) -> list[str | None]:
        """Delete the dead jobs among `job_ids` (and their attempts) in one transaction: per id
        None, or why it was not deleted."""
        ...

    def requeue_dead(self, job: Job, now: datetime, verdict: Verdict) -> Job:
        """Write a `dlq retry` verdict on a job that is still dead (else InvalidState)."""
        ...

    def delete_dead(self, job_id: str) -> None:
        """Delete a dead job and its attempts for good."""
        ...

    def counts_by_status(self) -> dict[str, int]:
        """Number of jobs in each status, zero included."""
        ...

    def ping(self) -> None:
        """Raise StoreError when the database does not answer."""
        ...

    def rule_activity(self, rule: str) -> tuple[bool, bool]:
        """(a job of `rule` is running, one is waiting): the overlap check."""
        ...

    # ---- time-based rule state ----

    def rule_states(self) -> dict[str, RuleState]:
        """Stored schedule state of every time-based rule ever seen."""
        ...

    def save_rule_state(
        self,
        state: RuleState,
        now: datetime,
        occurrences: Sequence[Occurrence] = (),
        jobs: Sequence[NewJob] = (),
    ) -> list[str | None]:
        """Advance a rule's schedule, record its occurrences and insert their jobs, atomically."""
        ...

    def record_run(
        self,
        job: NewJob,
        occurrence: Occurrence | None,
        now: datetime,
        steps: Sequence[NewJob] = (),
    ) -> str:
        """Insert a manual run's job, its perform list's `steps` and its occurrence, atomically."""
        ...

    # ---- chains (job dependencies) ----

    def settle_blocked(self, now: datetime) -> int:
        """Release or cancel blocked jobs whose parent already ended or is gone (recovery)."""
        ...

    def cascaded(self, parent: str) -> list[tuple[str, str, str | None]]:
        """(id, rule, event id) of the jobs cancelled because `parent` ended, transitively."""
        ...

    def chain_ids(self, job_id: str) -> tuple[list[str], list[str]]:
        """(parent ids, child ids) of one job."""
        ...

    def history(self, rule: str, limit: int = 50, offset: int = 0) -> list[Occurrence]:
        """A rule's recorded occurrences, newest first."""
        ...

    def count_history(self, rule: str) -> int:
        """How many occurrences of `rule` are recorded."""
        ...

    # ---- runtime rule control ----

    def rule_overrides(self) -> dict[str, RuleOverride]:
        """Every stored rule override, by rule name."""
        ...

    def save_rule_override(self, override: RuleOverride) -> None:
        """Store a rule's override, replacing the one it had."""
        ...

    def last_job_created(self, rule: str) -> datetime | None:
        """When the newest job of `rule` was created (None: none is stored)."""
        ...

    # ---- retention and upkeep ----

    def prune_batch(self, plan: PrunePlan, limit: int) -> tuple[PruneCounts, bool]:
        """Remove up to `limit` rows the plan allows in one transaction; (counts, more left)."""
        ...

    def count_prunable(self, plan: PrunePlan) -> PruneCounts:
        """What pruning by `plan` would remove, in all (a dry run)."""
        ...

    def vacuum(self) -> None:
        """Give freed space back to the file system (blocking; callers run it in a thread)."""
        ...

    def oldest_overdue(self, now: datetime) -> datetime | None:
        """When the longest-overdue waiting job was due, if one is."""
        ...

    def oldest_overdue_unheld(self, limits: LimitsInForce, now: datetime) -> datetime | None:
        """oldest_overdue, leaving out the jobs a rate limit or concurrency holds back."""
        ...
