"""Pure decisions: which jobs an event creates, what happens after an attempt (and who hears
of a dead job), payload limits, and what retention removes.

No I/O and no clock: every function takes `now` (and a random source where jitter is involved).
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from timeos.errors import ConditionFailed, PayloadError, UsageError
from timeos.model import (
    DEFAULT_RETRY,
    FOREVER,
    ON_FAILURE_SUFFIX,
    Action,
    ActionResult,
    Event,
    EventTrigger,
    Job,
    JobStatus,
    NewJob,
    Occurrence,
    OccurrenceOutcome,
    Outcome,
    RetryPolicy,
    Rule,
    RuleSet,
    Verdict,
    effective_retry,
    occurrence_key,
)
from timeos.payload import EVENT_TYPE, nesting_depth, parse_object
from timeos.rules import chains
from timeos.time.cron import next_local_time

log = logging.getLogger("timeos.engine")


MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_PAYLOAD_DEPTH = 64
MAX_IDEMPOTENCY_KEY = 256
# Idempotency keys timeosd makes for its own events (the emit action's); clients may not send them.
RESERVED_KEY_PREFIX = "timeos:"


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits on what a client may send, checked before anything reaches the store or CEL."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_payload_depth: int = MAX_PAYLOAD_DEPTH
    max_idempotency_key: int = MAX_IDEMPOTENCY_KEY
    max_event_type: int = 200
    max_list_limit: int = 1000


def check_payload(raw: str | bytes, limits: Limits, source: str = "payload") -> dict[str, Any]:
    """Parse JSON text into a payload object, enforcing size and depth before parsing deeply."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > limits.max_payload_bytes:
        raise PayloadError(
            f"{source}: {size} bytes is over the limit of {limits.max_payload_bytes} bytes"
        )
    try:
        text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{source}: not UTF-8 (byte {exc.start})") from None
    # Measure nesting on the text first: json.loads itself recurses and the CEL library crashes
    # the whole process on very deep values, so a hostile payload must fail here, cheaply.
    depth = nesting_depth(text)
    if depth > limits.max_payload_depth:
        raise PayloadError(
            f"{source}: nested {depth} levels deep, over the limit of {limits.max_payload_depth}"
        )
    return parse_object(text, source)


def check_event_type(event_type: str, limits: Limits) -> str:
    """Event types are short printable names: letters, digits, `_ - . :`."""
    if not event_type or len(event_type) > limits.max_event_type:
        raise PayloadError(f"event type must be 1..{limits.max_event_type} characters")
    if not EVENT_TYPE.fullmatch(event_type):
        raise PayloadError(
            f"event type {event_type!r} may contain only letters, digits and _ - . :"
        )
    return event_type


def check_idempotency_key(key: str | None, limits: Limits) -> str | None:
    """Reject empty, over-long and reserved (`timeos:...`) client keys."""
    if key is None:
        return None
    if not key or len(key) > limits.max_idempotency_key:
        raise PayloadError(f"idempotency key must be 1..{limits.max_idempotency_key} characters")
    if key.startswith(RESERVED_KEY_PREFIX):
        raise PayloadError(
            f"idempotency keys starting with {RESERVED_KEY_PREFIX!r} are reserved for timeosd"
        )
    try:
        key.encode("utf-8")
    except UnicodeError:
        raise PayloadError("idempotency key contains a lone surrogate") from None
    return key


def job_emit_key(job_id: str) -> str:
    """The idempotency key of the event a job's emit action emits: one event per job."""
    return f"{RESERVED_KEY_PREFIX}job:{job_id}"


def event_context(event: Event) -> dict[str, Any]:
    """What a condition sees as `event`."""
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "idempotency_key": event.idempotency_key,
    }


def plan_event(event: Event, rules: RuleSet) -> list[NewJob]:
    """One job per enabled rule listening for this type whose condition holds."""
    return _plan(event, rules.for_event(event.type), rules)


def _plan(
    event: Event,
    listening: Sequence[Rule],
    rules: RuleSet,
    attempts: dict[str, int] | None = None,
) -> list[NewJob]:
    jobs: list[NewJob] = []
    context: dict[str, Any] | None = None
    chained = any(r.after or r.then for r in listening)
    ends: dict[str, int] = {}  # rule -> index in `jobs` of its chain's last job (after:)
    for rule in chains.ordered(listening) if chained else listening:
        if rule.after is not None and rule.after not in ends:
            continue  # the rule it waits for made no job for this event: nothing to wait on
        if rule.condition is not None:
            context = context or event_context(event)
            try:
                if not rule.condition.evaluate(event.payload, context):
                    continue
            except ConditionFailed as exc:
                # A payload missing a field the condition reads: the rule does not apply.
                log.warning("event %s: rule %r: %s (treated as false)", event.id, rule.name, exc)
                continue
        trigger = rule.trigger
        assert isinstance(trigger, EventTrigger)
        if trigger.at is None:  # the common case, without plan_time's call
            at, note = event.occurred_at + trigger.offset, None
        else:
            at, note = plan_time(event, rule, trigger)
        max_attempts = attempts.get(rule.name) if attempts is not None else None
        if max_attempts is None:
            max_attempts = effective_retry(rule, rules.actions[rule.action]).max_attempts
            if attempts is not None:
                attempts[rule.name] = max_attempts
        head = NewJob(
            rule=rule.name,
            action=rule.action,
            perform_at=at,
            priority=rule.priority,
            max_attempts=max_attempts,
            payload=event.payload,
            event_id=event.id,
            note=note,
        )
        if not chained:
            jobs.append(head)
            continue
        if rule.after is not None:  # due `offset` after its parent succeeded, not the event
            parent = ends[rule.after]
            head = replace(
                head,
                perform_at=jobs[parent].perform_at + trigger.offset,  # the earliest it can be
                after=len(jobs) - parent,
                wait=trigger.offset,
            )
        jobs.append(head)
        jobs.extend(chains.steps(head, rule, rules))
        ends[rule.name] = len(jobs) - 1
    return jobs


def plan_events(events: Sequence[Event], rules: RuleSet) -> list[NewJob]:
    """plan_event over a batch in one pass: each type's rules and each rule's attempt budget
    looked up once."""
    listening: dict[str, list[Rule]] = {}
    attempts: dict[str, int] = {}
    jobs: list[NewJob] = []
    for event in events:
        found = listening.get(event.type)
        if found is None:
            found = listening[event.type] = rules.for_event(event.type)
        if found:
            jobs += _plan(event, found, rules, attempts)
    return jobs


class MatchReason(enum.StrEnum):
    """Why a rule did or did not create a job for an event (`timeos events show`)."""

    MATCHED = "matched"
    OTHER_TYPE = "other_type"
    CONDITION_FALSE = "condition_false"
    CONDITION_ERROR = "condition_error"
    RULE_DISABLED = "rule_disabled"
    AFTER_UNMATCHED = "after_unmatched"  # its own test held, but its `after:` rule's did not


@dataclass(frozen=True, slots=True)
class Match:
    """One event rule's verdict on one event; `detail` holds a condition's error."""

    rule: str
    matched: bool
    reason: MatchReason
    detail: str | None = None


def explain_event(event: Event, rules: RuleSet) -> list[Match]:
    """For every loaded event rule, in file order: would it create a job for `event` now?

    Time-based rules are left out: no event ever triggers them. A disabled rule listening for
    another type is `other_type` (the type is the first thing that decides).
    """
    matches: list[Match] = []
    context = event_context(event)
    for rule in rules.rules:
        trigger = rule.trigger
        if not isinstance(trigger, EventTrigger):
            continue
        if trigger.event_type != event.type:
            matches.append(Match(rule.name, False, MatchReason.OTHER_TYPE))
        elif not rule.enabled:
            matches.append(Match(rule.name, False, MatchReason.RULE_DISABLED))
        elif rule.condition is None:
            matches.append(Match(rule.name, True, MatchReason.MATCHED))
        else:
            try:
                holds = rule.condition.evaluate(event.payload, context)
            except ConditionFailed as exc:
                matches.append(Match(rule.name, False, MatchReason.CONDITION_ERROR, exc.message))
                continue
            reason = MatchReason.MATCHED if holds else MatchReason.CONDITION_FALSE
            matches.append(Match(rule.name, bool(holds), reason))
    return _after_unmatched(matches, rules)


def _after_unmatched(matches: list[Match], rules: RuleSet) -> list[Match]:
    """A matching rule whose `after:` rule made no job makes none either (transitively)."""
    verdicts = {m.rule: m for m in matches}
    for rule in chains.ordered([r for r in rules.rules if r.name in verdicts]):
        own = verdicts[rule.name]
        parent = verdicts.get(rule.after) if rule.after else None
        if own.matched and rule.after and (parent is None or not parent.matched):
            verdicts[rule.name] = Match(rule.name, False, MatchReason.AFTER_UNMATCHED, rule.after)
    return [verdicts[m.rule] for m in matches]


def perform_at(event: Event, rule: Rule, trigger: EventTrigger) -> datetime:
    """occurred_at + offset, then (with `at:`) the next such local time in the rule's zone."""
    return plan_time(event, rule, trigger)[0]


def plan_time(event: Event, rule: Rule, trigger: EventTrigger) -> tuple[datetime, str | None]:
    """Like perform_at, plus a note for the job when the payload's zone had to be ignored."""
    due = event.occurred_at + trigger.offset
    if trigger.at is None:
        return due, None
    zone, note = rule.timezone, None
    if trigger.timezone_expr is not None:
        try:
            name = trigger.timezone_expr.evaluate_value(event.payload, event_context(event))
            zone = find_zone(name)
        except (ConditionFailed, ValueError) as exc:
            note = f"timezone {trigger.timezone_expr.source!r}: {exc}; used {rule.timezone.key}"
            log.warning("event %s: rule %r: %s", event.id, rule.name, note)
    return next_local_time(due, trigger.at, zone, rule.dst).at, note


MAX_ZONE_KEY = 255  # the longest file name; real keys are under 40 characters


def find_zone(name: object) -> ZoneInfo:
    """The IANA zone called `name`; ValueError naming the value (never a path) if there is none.

    The key comes from a client's payload, so it is checked before it reaches the file system:
    ZoneInfo raises IsADirectoryError for `America` and ENAMETOOLONG for a long string.
    """
    if not isinstance(name, str):
        raise ValueError(f"{_shorten(repr(name))} is not a zone name")
    if not name or len(name) > MAX_ZONE_KEY or ".." in name:
        raise ValueError(f"{_shorten(repr(name))} is not a time zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{_shorten(repr(name))} is not a time zone") from None


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def retry_delay(policy: RetryPolicy, attempt: int, rng: random.Random) -> timedelta:
    """Delay before the attempt after `attempt`: backoff * 2**(attempt-1), capped, +/- jitter."""
    # The exponent is capped: 2**60 seconds is far past any max_backoff, and 2**1024 overflows.
    base = policy.backoff.total_seconds() * (2 ** min(max(0, attempt - 1), 60))
    cap = policy.max_backoff.total_seconds()
    delay = min(base, cap)
    if policy.jitter:
        delay *= 1 + policy.jitter * (2 * rng.random() - 1)
    return timedelta(seconds=min(delay, cap))


class AttemptEnd(enum.StrEnum):
    """How an attempt came to an end, besides its result."""

    RAN = "ran"  # the action ran to a result
    CRASHED = "crashed"  # found running at start-up: the daemon died mid-run
    SHUTDOWN = "shutdown"  # our own graceful shutdown killed it


def killed(job: Job, now: datetime) -> Verdict:
    """A running job stopped by `timeos jobs cancel --kill`: cancelled, never retried."""
    return Verdict(JobStatus.CANCELLED, now, job.max_attempts, job.backoff_base)


def retry_policy_for(rules: RuleSet, job: Job) -> RetryPolicy:
    """The policy that governs `job` under `rules`: the rule's, else its action's, else default.

    A job of a removed rule keeps its action's policy; of a removed action, the default.
    """
    rule = rules.rule(job.rule)
    action = rules.actions.get(job.action)
    if rule is not None and action is not None:
        return effective_retry(rule, action)
    return (action.retry if action else None) or DEFAULT_RETRY


def after_attempt(
    job: Job,
    result: ActionResult,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
    end: AttemptEnd = AttemptEnd.RAN,
    on_failure: Action | None = None,
) -> Verdict:
    """Where `job` goes after its attempt number `job.attempts` ended with `result`.

    A dead verdict carries the `on_failure` action's notification job, if there is one.
    """
    verdict = _after_attempt(job, result, policy, now, rng, end)
    if verdict.status is JobStatus.DEAD and on_failure is not None:
        return replace(verdict, notice=failure_notice(job, result, on_failure, now))
    return verdict


def _after_attempt(
    job: Job,
    result: ActionResult,
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
    end: AttemptEnd,
) -> Verdict:
    keep = Verdict(JobStatus.RETRYING, now, job.max_attempts, job.backoff_base)
    if end is AttemptEnd.SHUTDOWN:
        # Killed by our own graceful shutdown: run again on the next start, and do not charge
        # the job an attempt for it (a crash, by contrast, counts).
        return replace(keep, max_attempts=job.max_attempts + 1, backoff_base=job.backoff_base + 1)
    if result.outcome is Outcome.SUCCEEDED:
        return replace(keep, status=JobStatus.SUCCEEDED, perform_at=job.perform_at)
    if result.outcome is Outcome.PERMANENT or job.attempts >= job.max_attempts:
        return replace(keep, status=JobStatus.DEAD, perform_at=job.perform_at)
    if end is AttemptEnd.CRASHED or result.outcome is Outcome.INTERRUPTED:
        return keep  # retry at once: no backoff for a crash
    # Backoff counts the attempts since the budget was last renewed (a `dlq retry` starts
    # again from `backoff`, not from where the dead job left off).
    delay = retry_delay(policy, max(1, job.attempts - job.backoff_base), rng)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)  # the server knows when it will be ready
    return replace(keep, perform_at=now + delay)


def renewal(job: Job, policy: RetryPolicy, now: datetime) -> Verdict:
    """A dead job sent back by `dlq retry`: due now, with a fresh budget of attempts on top.

    Attempts keep counting up (history stays intact); backoff starts again from `backoff`.
    """
    return Verdict(JobStatus.PENDING, now, job.attempts + policy.max_attempts, job.attempts)


# ---- failure notification (on_failure) -----------------------------------------------------------


def failure_action_for(rules: RuleSet, job: Job) -> Action | None:
    """The action to tell when `job` goes dead: its rule's `on_failure:`, else its action's.

    None for a notification job itself, so a failing notification never notifies (no loops).
    """
    if job.failure_of is not None:
        return None
    rule = rules.rule(job.rule)
    action = rules.actions.get(job.action)
    name = (rule.on_failure if rule else None) or (action.on_failure if action else None)
    return rules.actions.get(name) if name else None


def failure_notice(job: Job, result: ActionResult, action: Action, now: datetime) -> NewJob:
    """The job that runs `action` once for dead `job`, its payload describing the failure."""
    return NewJob(
        rule=job.rule + ON_FAILURE_SUFFIX,
        action=action.name,
        perform_at=now,
        priority=job.priority,
        max_attempts=(action.retry or DEFAULT_RETRY).max_attempts,
        payload={
            "job_id": job.id,
            "rule": job.rule,
            "action": job.action,
            "error": result.error or job.last_error,
            "payload": dict(job.payload),
        },
        failure_of=job.id,
    )


# ---- manual runs ------------------------------------------------------------------------------

MANUAL_RUN = "manual run"


def manual_run(
    rule: Rule, rules: RuleSet, payload: dict[str, Any] | None, now: datetime
) -> tuple[NewJob, Occurrence | None]:
    """The job (and, for a time-based rule, the fired occurrence) of `timeos rules run`.

    Runs now, whatever the rule's schedule, condition, offset or enabled state (like `systemctl
    start` on a timer's service). A time-based rule's job gets the payload a scheduled fire has
    plus `"manual": true` (the given payload's keys over them) and an occurrence of its own; the
    schedule state is not touched. An event rule's job gets the given payload and no event.
    """
    job = NewJob(
        rule=rule.name,
        action=rule.action,
        perform_at=now,
        priority=rule.priority,
        max_attempts=effective_retry(rule, rules.actions[rule.action]).max_attempts,
        payload=dict(payload or {}),
        note=MANUAL_RUN,
    )
    if not rule.time_based:
        return job, None
    body: dict[str, Any] = {"rule": rule.name, "scheduled_for": now.isoformat(), "manual": True}
    body.update(payload or {})
    job = replace(
        job,
        payload=body,
        scheduled_for=now,
        # A key of its own: a scheduled fire at this very instant still gets its job.
        occurrence_key=occurrence_key(rule.name, now) + "/manual",
    )
    return job, Occurrence(rule.name, now, OccurrenceOutcome.FIRED, MANUAL_RUN, None, None, now)


# ---- retention --------------------------------------------------------------------------------

DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished records are kept, and how the daemon prunes them.

    One small value so that flags today and a configuration file later fill the same thing.
    FOREVER keeps a kind for good.
    """

    events: timedelta = 90 * DAY
    jobs: timedelta = 30 * DAY  # succeeded and cancelled (a rule's `retention:` overrides)
    dead: timedelta = FOREVER  # the dead letter queue is emptied by people, not by age
    every: timedelta = timedelta(minutes=10)  # between pruning passes
    first_after: timedelta = timedelta(minutes=1)  # the first pass after start
    batch: int = 500  # rows per transaction; the event loop runs between batches


FINISHED = (JobStatus.SUCCEEDED, JobStatus.CANCELLED, JobStatus.DEAD)


@dataclass(frozen=True, slots=True)
class Cutoff:
    """Jobs in `statuses` updated before `before`: only of `rules`, or all but `except_rules`."""

    before: datetime
    statuses: tuple[JobStatus, ...]
    rules: tuple[str, ...] | None = None
    except_rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What is old enough to go. The store never removes an event a waiting or running job
    still needs, nor a dead job a waiting notification job reports."""

    jobs: tuple[Cutoff, ...] = ()
    # Occurrences without a job (skipped, missed): by when they were recorded.
    occurrences: tuple[Cutoff, ...] = ()
    events_before: datetime | None = None

    @property
    def empty(self) -> bool:
        return not self.jobs and not self.occurrences and self.events_before is None


def prune_plan(
    retention: Retention,
    rules: RuleSet,
    now: datetime,
    *,
    older_than: timedelta | None = None,
    statuses: Collection[JobStatus] = (JobStatus.SUCCEEDED, JobStatus.CANCELLED),
    events: bool = True,
) -> PrunePlan:
    """The cutoffs for `now`: `older_than` for everything chosen, else the configured keep times
    (a rule's `retention:` for its succeeded and cancelled jobs and their occurrences)."""
    for status in statuses:
        if status not in FINISHED:
            raise UsageError(
                f"cannot clean up {status} jobs: only {', '.join(FINISHED)} jobs are removed"
            )
    if older_than is not None and older_than < timedelta(0):
        raise UsageError("older-than must not be negative")
    live = tuple(s for s in FINISHED if s in statuses and s is not JobStatus.DEAD)
    jobs: list[Cutoff] = []
    occurrences: list[Cutoff] = []
    if older_than is not None:
        chosen = tuple(s for s in FINISHED if s in statuses)
        if chosen:
            jobs.append(Cutoff(now - older_than, chosen))
        if live:
            occurrences.append(Cutoff(now - older_than, live))
        return PrunePlan(tuple(jobs), tuple(occurrences), now - older_than if events else None)
    if JobStatus.DEAD in statuses:
        if retention.dead == FOREVER:
            raise UsageError("dead jobs are kept until deleted; give --older-than to remove them")
        jobs.append(Cutoff(now - retention.dead, (JobStatus.DEAD,)))
    if live:
        own = {r.name: r.retention for r in rules.rules if r.retention is not None}
        cuts: list[Cutoff] = []
        if retention.jobs != FOREVER:
            cuts.append(Cutoff(now - retention.jobs, live, except_rules=tuple(sorted(own))))
        for name, keep in sorted(own.items()):
            if keep != FOREVER:
                cuts.append(Cutoff(now - keep, live, rules=(name,)))
        jobs.extend(cuts)
        occurrences.extend(cuts)
    events_before = None
    if events and retention.events != FOREVER:
        events_before = now - retention.events
    return PrunePlan(tuple(jobs), tuple(occurrences), events_before)
