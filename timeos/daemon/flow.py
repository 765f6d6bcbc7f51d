"""The service's flow-control calls (issue 8): a batch of events in one transaction, cancelling
a rule's jobs, dead letters in bulk, why an event did or did not match, replaying an event.

Mixed into Service (service.py), so the API still talks to one object, one method per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from timeos.clock import Clock
from timeos.daemon.logs import fields
from timeos.engine import (
    Limits,
    Match,
    check_event_type,
    check_idempotency_key,
    explain_event,
    plan_event,
    plan_events,
    renewal,
    retry_policy_for,
)
from timeos.errors import InvalidState, NotFound, PayloadError, TimeOSError, UsageError
from timeos.model import EmitResult, Event, Job, JobStatus, NewJob, Replay, RuleSet, new_ids
from timeos.model import payload_hash as hash_of
from timeos.payload import compact_json
from timeos.rules.correlation import correlate, correlates, index_rows
from timeos.store.protocol import Store
from timeos.timefmt import parse_instant

log = logging.getLogger("timeos.service")

# Events per POST /v1/events/batch: the whole 100,000-event target goes in one request, so in
# one transaction. `timeos emit-batch` splits longer files (each request is then atomic alone).
MAX_BATCH_EVENTS = 100_000
# A batch body may be this many times the payload limit (64 MiB by default).
BATCH_BODY_FACTOR = 64
MAX_BULK_IDS = 1000  # ids per dlq retry/delete request, as for cancel
WAITING = ("pending", "retrying", "blocked")
KillRunning = Callable[[Collection[str]], list[str]]  # job ids -> the ones it stopped


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    id: str
    ok: bool
    error: str | None = None


class FlowControl:
    """Flow-control operations over the service's store, clock and rules."""

    store: Store
    clock: Clock
    limits: Limits
    on_change: Callable[[], None]
    kill_running: KillRunning | None

    if TYPE_CHECKING:  # provided by Service, which this mixes into

        @property
        def rules(self) -> RuleSet: ...

        def _limit(self, limit: int) -> int: ...

        def _announce_cancels(self, result: EmitResult) -> None: ...

    # ---- emit-batch ---------------------------------------------------------------------------

    def emit_batch(self, items: Sequence[Any]) -> list[EmitResult]:
        """Validate every event first; then store all (one transaction) or nothing.

        Every bad item is reported, each named `events[i]` (0-based, in request order).
        Duplicates by idempotency key, within the batch or against stored events, follow the
        rules of a single emit: same type and payload is a duplicate (no jobs), else a conflict.
        """
        if len(items) > MAX_BATCH_EVENTS:
            raise UsageError(
                f"at most {MAX_BATCH_EVENTS} events per batch request, got {len(items)};"
                " send them in several requests (timeos emit-batch does)"
            )
        now = self.clock.now()
        problems: list[str] = []
        events: list[Event | None] = []
        ids = new_ids(now, len(items))
        texts: list[str] = []
        types: set[str] = set()  # checked already: a batch repeats a few types
        for n, item in enumerate(items):
            try:
                events.append(self._batch_event(item, now, ids[n], texts, types))
            except TimeOSError as exc:
                problems.append(f"events[{n}]: {exc.message}")
                events.append(None)
        # Keys: within the batch first (the earliest one stands), then against stored events.
        first: dict[str, int] = {}
        hashes: dict[int, str] = {}
        same_as: dict[int, int] = {}
        for n, event in enumerate(events):
            if event is None or event.idempotency_key is None:
                continue
            hashes[n] = hash_of(event.type, event.payload)
            earlier = first.setdefault(event.idempotency_key, n)
            if earlier != n:
                if hashes[earlier] != hashes[n]:
                    problems.append(
                        f"events[{n}]: idempotency key {event.idempotency_key!r} was already"
                        f" used by events[{earlier}] with a different type or payload"
                    )
                else:
                    same_as[n] = earlier
        stored = self.store.find_idempotent_many(list(first)) if first else {}
        for key, n in first.items():
            if key in stored and stored[key][1] != hashes[n]:
                problems.append(
                    f"events[{n}]: idempotency key {key!r} was already used by event"
                    f" {stored[key][0]} with a different type or payload"
                )
        if problems:
            problems.sort(key=lambda p: int(p[7 : p.index("]")]))
            raise PayloadError(
                f"{len(problems)} bad event(s), nothing stored:\n" + "\n".join(problems)
            )
        chosen = [
            n
            for n, e in enumerate(events)
            if e is not None
            and n not in same_as
            and (e.idempotency_key is None or e.idempotency_key not in stored)
        ]
        fresh = [e for n in chosen if (e := events[n]) is not None]
        encoded = [texts[n] for n in chosen]
        try:
            written = iter(self._store_batch(fresh, now, encoded))
        except OverflowError:
            raise PayloadError("an occurred_at plus a rule's offset is out of range") from None
        results: list[EmitResult] = []
        for n, event in enumerate(events):
            assert event is not None
            if n in same_as:
                results.append(EmitResult(results[same_as[n]].event_id, True, ()))
            elif event.idempotency_key is not None and event.idempotency_key in stored:
                results.append(EmitResult(stored[event.idempotency_key][0], True, ()))
            else:
                results.append(next(written))
        created = sum(len(r.job_ids) for r in results)
        log.info(
            "event batch received",
            extra=fields(events=len(results), stored=len(fresh), jobs=created),
        )
        if created:
            self.on_change()
        for result in results:  # cancel_on: told as a single emit tells them
            if not result.duplicate:
                self._announce_cancels(result)
        return results

    def _store_batch(
        self, fresh: Sequence[Event], now: datetime, encoded: Sequence[str]
    ) -> list[EmitResult]:
        rules = self.rules
        if not correlates(rules):  # the fast path: one pass of planning, executemany
            return self.store.emit_batch(fresh, plan_events(fresh, rules), now, encoded)
        # A rule correlates: event by event, in order, so each sees what the earlier ones did.
        plans = [correlate(e, plan_event(e, rules), rules) for e in fresh]
        return self.store.emit_correlated(fresh, plans, now)

    def _batch_event(
        self, item: Any, now: datetime, event_id: str, texts: list[str], types: set[str]
    ) -> Event:
        if not isinstance(item, dict):
            raise PayloadError(f"must be a JSON object, got {type(item).__name__}")
        unknown = set(item) - {"type", "payload", "idempotency_key", "occurred_at"}
        if unknown:
            raise PayloadError(f"unknown field(s): {', '.join(sorted(unknown))}")
        event_type = item.get("type")
        if not isinstance(event_type, str):
            raise PayloadError("needs a string field 'type'")
        if event_type not in types:
            types.add(check_event_type(event_type, self.limits))
        payload = item.get("payload", {})
        if not isinstance(payload, dict):
            raise PayloadError(f"payload must be a JSON object, got {type(payload).__name__}")
        try:
            text = compact_json(payload)
            size = len(text.encode("utf-8"))
        except UnicodeError:
            raise PayloadError("payload contains a lone surrogate (\\ud800-\\udfff)") from None
        if size > self.limits.max_payload_bytes:
            raise PayloadError(
                f"payload: {size} bytes is over the limit of {self.limits.max_payload_bytes} bytes"
            )
        key = item.get("idempotency_key")
        if key is not None and not isinstance(key, str):
            raise PayloadError("idempotency_key must be a string")
        check_idempotency_key(key, self.limits)
        raw = item.get("occurred_at")
        if raw is not None and not isinstance(raw, str):
            raise PayloadError("occurred_at must be an ISO 8601 string")
        occurred = parse_instant(raw, "occurred_at", PayloadError) if raw is not None else now
        texts.append(text)
        return Event(event_id, event_type, payload, occurred, now, key)

    # ---- cancel by rule -----------------------------------------------------------------------

    def cancel_matching(
        self, *, rule: str, status: str | None, event_id: str | None, kill: bool
    ) -> dict[str, Any]:
        """Cancel the waiting jobs of `rule` (only `status`, only of `event_id`); with `kill`,
        also stop its running jobs (the scheduler records them cancelled)."""
        if status is not None and status not in (*WAITING, "running"):
            raise UsageError(
                f"--status {status!r}: only pending, retrying, blocked or running jobs can be"
                " cancelled"
            )
        if status == "running" and not kill:
            raise UsageError("--status running needs --kill: running jobs are stopped, not skipped")
        statuses = [status] if status else list(WAITING)
        cancelled = (
            self.store.cancel_matching(
                rule=rule,
                statuses=[s for s in statuses if s != "running"],
                event_id=event_id,
                now=self.clock.now(),
            )
            if statuses != ["running"]
            else []
        )
        killed: list[str] = []
        if kill and (status is None or status == "running"):
            running = self.store.list_jobs(
                status=JobStatus.RUNNING, rule=rule, event_id=event_id, limit=1_000_000
            )
            if running and self.kill_running is None:  # a service without a scheduler (tests)
                raise InvalidState("no scheduler in this process runs these jobs; none stopped")
            if running and self.kill_running is not None:
                killed = self.kill_running([j.id for j in running])
        log.info(
            "jobs cancelled by rule",
            extra=fields(rule=rule, cancelled=len(cancelled), killed=len(killed) or None),
        )
        return {"cancelled": len(cancelled), "ids": cancelled, "killed": killed}

    # ---- dead letters in bulk -----------------------------------------------------------------

    def _dead_ids(self, ids: Sequence[str] | None, rule: str | None) -> list[str]:
        if ids is not None:
            if rule is not None:
                raise UsageError("give job ids or --all [--rule NAME], not both")
            if len(ids) > MAX_BULK_IDS:
                raise UsageError(
                    f"at most {MAX_BULK_IDS} job ids per request, got {len(ids)};"
                    " send them in several requests"
                )
            return list(ids)
        found: list[str] = []
        while True:
            page = self.store.list_jobs(
                status=JobStatus.DEAD, rule=rule, limit=1000, offset=len(found)
            )
            found += [j.id for j in page]
            if len(page) < 1000:
                return found

    def dlq_retry_many(self, ids: Sequence[str] | None, rule: str | None) -> list[BulkOutcome]:
        """Send dead jobs back to pending (the ids, or every dead job [of `rule`])."""
        now = self.clock.now()
        outcomes: dict[int, BulkOutcome] = {}
        renewals: list[tuple[int, tuple[Job, Any]]] = []
        for n, job_id in enumerate(self._dead_ids(ids, rule)):
            try:
                job = self.store.get_job(job_id)
            except NotFound as exc:
                outcomes[n] = BulkOutcome(job_id, False, exc.message)
                continue
            if job.status is not JobStatus.DEAD:
                error = f"job {job.id} is {job.status}, not in the dead letter queue"
                outcomes[n] = BulkOutcome(job_id, False, error)
                continue
            verdict = renewal(job, retry_policy_for(self.rules, job), now)
            renewals.append((n, (job, verdict)))
        written = self.store.requeue_dead_many([r for _, r in renewals], now)
        for (n, (job, _)), refused in zip(renewals, written, strict=True):
            outcomes[n] = BulkOutcome(job.id, refused is None, refused)
        if any(o.ok for o in outcomes.values()):
            self.on_change()
        return [outcomes[n] for n in sorted(outcomes)]

    def dlq_delete_many(self, ids: Sequence[str] | None, rule: str | None) -> list[BulkOutcome]:
        """Delete dead jobs for good (the ids, or every dead job [of `rule`])."""
        chosen = self._dead_ids(ids, rule)
        errors = self.store.delete_dead_many(chosen) if chosen else []
        return [BulkOutcome(i, e is None, e) for i, e in zip(chosen, errors, strict=True)]

    # ---- explain and replay -------------------------------------------------------------------

    def explain(self, event: Event) -> list[Match]:
        """Every loaded event rule's verdict on `event` now."""
        return explain_event(event, self.rules)

    def replays(self, event_id: str) -> list[Replay]:
        """An event's replays, oldest first."""
        return self.store.replays(event_id)

    def replay(self, event_id: str, dry_run: bool) -> tuple[Event, Replay | None, list[Any]]:
        """Re-evaluate a stored event against the current rules; the new jobs link to it.

        Jobs are planned exactly as at first (from the event's occurred_at), so one whose
        offset has passed is due now. `dry_run`: the NewJobs it would create, nothing stored.
        """
        event = self.store.get_event(event_id)
        try:
            jobs: list[NewJob] = plan_event(event, self.rules)
        except OverflowError:
            raise PayloadError("occurred_at plus a rule's offset is out of range") from None
        if dry_run:
            return event, None, jobs
        replay, ids = self.store.replay(event.id, jobs, self.clock.now())
        # Replayed jobs can be cancelled like any other (their cancel_on keys; no debounce).
        keyed = index_rows(ids, jobs, self.rules)
        if keyed:
            self.store.insert_job_keys(keyed)
        log.info(
            "event replayed",
            extra=fields(event_id=event.id, replay=replay.number, jobs=len(ids)),
        )
        if ids:
            self.on_change()
        return event, replay, [self.store.get_job(i) for i in ids]


def describe_matches(matches: Sequence[Match]) -> list[Mapping[str, Any]]:
    """The wire form of explain_event's verdicts."""
    return [
        {"rule": m.rule, "matched": m.matched, "reason": str(m.reason), "detail": m.detail}
        for m in matches
    ]
