"""Frozen dataclasses and StrEnums shared by every layer: rules, actions, triggers, events, jobs,
and the domain helpers that name them (ids, payload hashes, occurrence keys).

Built once at the boundary (rules/, store/, daemon/api.py) and trusted inside. Pure: no I/O.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from timeos.errors import Problem
from timeos.timefmt import to_micros


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"  # waiting on a parent job (chains, after:) before it can be due


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retryable
    PERMANENT = "permanent"  # not retryable: straight to the dead letter queue
    TIMEOUT = "timeout"  # retryable
    INTERRUPTED = "interrupted"  # daemon died or shut down mid-run: retryable


class ActionKind(enum.StrEnum):
    COMMAND = "command"
    HTTP = "http"
    PYTHON = "python"
    EMIT = "emit"


# ---- rules and actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: `backoff` doubling per attempt up to `max_backoff`, with jitter."""

    max_attempts: int = 3
    backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(hours=1)
    jitter: float = 0.2  # +/- fraction of the delay


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit: COUNT/UNIT` with `burst:`: a token bucket of `burst` tokens refilled at
    `count` per `unit` (see rules/limits.py). `burst` defaults to one unit's worth (`count`)."""

    count: int
    unit: str  # second, minute, hour or day
    burst: int

    @property
    def spec(self) -> str:
        """The canonical `COUNT/UNIT` text."""
        return f"{self.count}/{self.unit}"


# A keep time meaning "never remove" (retention: never; dead jobs by default).
FOREVER = timedelta.max
# A failure notification job's rule: its source rule's name and this suffix. Rule names cannot
# contain "/", so it never collides with a loaded rule (nor shares its overlap checks).
ON_FAILURE_SUFFIX = "/on_failure"
DEFAULT_ACTION_TIMEOUT = timedelta(seconds=60)


# Set by timeosd for every command run; an action's `env:` may not set them.
COMMAND_RUN_VARIABLES = (
    "TIMEOS_JOB_ID",
    "TIMEOS_RULE",
    "TIMEOS_ACTION",
    "TIMEOS_EVENT_ID",
    "TIMEOS_EVENT_TYPE",
    "TIMEOS_ATTEMPT",
    "TIMEOS_SCHEDULED_FOR",
)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    argv: tuple[str, ...]
    # The action's `env:`, ${VAR} already expanded: kept out of repr like http headers.
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class HttpSpec:
    url: str
    method: str = "POST"
    # ${VAR} already expanded at load: kept out of repr so a token never reaches a log line.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class PythonSpec:
    target: str  # "module:function"
    function: Callable[..., Any] = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class EmitSpec:
    event_type: str


ActionSpec = CommandSpec | HttpSpec | PythonSpec | EmitSpec


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    kind: ActionKind
    spec: ActionSpec
    timeout: timedelta = DEFAULT_ACTION_TIMEOUT
    retry: RetryPolicy | None = None
    where: str = ""  # file:line:col of its definition
    on_failure: str | None = None  # action run once when one of its jobs goes dead
    # Shared by every rule that performs it (rules/limits.py): None is unlimited.
    rate_limit: RateLimit | None = None
    concurrency: int | None = None


class Condition(Protocol):
    """A compiled `when:` expression (see conditions.py)."""

    source: str

    def evaluate(self, payload: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """True when the rule applies; raise ConditionFailed on a runtime error."""
        ...

    def evaluate_value(self, payload: Mapping[str, Any], event: Mapping[str, Any]) -> object:
        """The expression's value (e.g. a zone name); raise ConditionFailed on an error."""
        ...


class GapPolicy(enum.StrEnum):
    RUN_AFTER = "run_after"
    SKIP = "skip"


class FoldPolicy(enum.StrEnum):
    FIRST = "first"
    LAST = "last"
    BOTH = "both"


class MissedPolicy(enum.StrEnum):
    SKIP = "skip"
    ONCE = "once"
    ALL = "all"


class OverlapPolicy(enum.StrEnum):
    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


@dataclass(frozen=True, slots=True)
class DstPolicy:
    gap: GapPolicy = GapPolicy.RUN_AFTER
    fold: FoldPolicy = FoldPolicy.FIRST


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """`on_event: TYPE` with `offset:` and, optionally, a local `at:` time after the offset."""

    event_type: str
    offset: timedelta = timedelta(0)
    at: time | None = None
    timezone_expr: Condition | None = None  # CEL giving a zone name from the payload


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """`cron:`, or `every: monday` + `at:` compiled to the equivalent fixed-time cron."""

    expression: str
    # How the rule file said it, when not as cron (e.g. "every monday at 09:00"): for display.
    label: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class IntervalTrigger:
    """`every: 30m`: elapsed time, anchored at the rule's first activation."""

    every: timedelta


Trigger = EventTrigger | CronTrigger | IntervalTrigger


@dataclass(frozen=True, slots=True)
class CancelOn:
    """`cancel_on:` entry: an `event` whose value at `path` (or for which `expression`, over
    `payload` and `origin`, holds) matches the creating event cancels a waiting job."""

    event: str
    match: str  # the source text: a dotted path `payload.a.b` or a CEL expression
    path: tuple[str, ...] | None = None  # the path's steps after `payload` (index lookups)
    expression: Condition | None = None  # CEL over payload (new event) and origin (scans)


@dataclass(frozen=True, slots=True)
class Debounce:
    """`debounce:` of an event rule: one waiting job per key value, pushed back by `period`."""

    key: str  # the source text, `payload.user_id`
    path: tuple[str, ...]
    period: timedelta
    max_wait: timedelta | None = None  # None: pushed back without bound


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    trigger: Trigger
    action: str
    condition: Condition | None = None
    priority: int = 0
    retry: RetryPolicy | None = None
    rate_limit: RateLimit | None = None  # in force (a `rules set` override wins over the file)
    concurrency: int | None = None  # at most this many of its jobs running at once
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    enabled: bool = True
    dst: DstPolicy = DstPolicy()
    on_missed: MissedPolicy = MissedPolicy.ONCE
    grace: timedelta | None = None  # None: no limit on how late a missed occurrence may run
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    where: str = ""
    retention: timedelta | None = None  # its finished jobs' keep time (None: the global one)
    on_failure: str | None = None  # overrides its action's on_failure
    cancel_on: tuple[CancelOn, ...] = ()  # events that cancel its waiting jobs (correlation)
    debounce: Debounce | None = None
    # Its latest runtime disable (`timeos rules disable`), set by rules/overrides.py: from when,
    # and until when (None: until enabled). Kept after it ends, so the planner can tell the
    # occurrences it held back ("rule disabled") from those missed while the daemon was down.
    disabled_at: datetime | None = field(default=None, compare=False)
    disabled_until: datetime | None = field(default=None, compare=False)
    # A perform list's actions after the first (`perform: [a, b, c]`: action a, then b, c).
    then: tuple[str, ...] = ()
    # `after: other-rule` (event rules): its job waits until that rule's job for the same event
    # succeeded, its offset counting from then (rules/chains.py).
    after: str | None = None

    @property
    def time_based(self) -> bool:
        return not isinstance(self.trigger, EventTrigger)

    @property
    def performs(self) -> tuple[str, ...]:
        """Every action it runs, in order (one job each, each after the previous succeeded)."""
        return (self.action, *self.then)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything loaded from the rule files, validated and cross-checked."""

    rules: tuple[Rule, ...]
    actions: Mapping[str, Action]
    sources: tuple[str, ...] = ()
    # Worth a look but not a reason to refuse the rules (a command not executable yet).
    warnings: tuple[Problem, ...] = ()
    # Every value a ${VAR} expanded to: kept out of logs (the daemon's log redacts them).
    secrets: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def rule(self, name: str) -> Rule | None:
        """Return the rule called `name`, if any."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def for_event(self, event_type: str) -> list[Rule]:
        """Enabled event rules listening for `event_type`, in file order."""
        return [
            r
            for r in self.rules
            if r.enabled
            and isinstance(r.trigger, EventTrigger)
            and r.trigger.event_type == event_type
        ]


@dataclass(frozen=True, slots=True)
class RuleOverride:
    """Runtime changes to one rule over its file's values (`timeos rules disable/set`), stored.

    `enabled`: None keeps the file's value; False disables from `disabled_at` until
    `disabled_until` (None: until enabled); True enables a rule the file disables.
    `rate_limit` (canonical `COUNT/UNIT`, burst one unit's worth) and `concurrency` replace the
    file's values while set.
    """

    rule: str
    enabled: bool | None = None
    disabled_at: datetime | None = None
    disabled_until: datetime | None = None
    priority: int | None = None
    rate_limit: str | None = None
    concurrency: int | None = None
    updated_at: datetime | None = None


def effective_retry(rule: Rule, action: Action) -> RetryPolicy:
    """A rule's `retry:` overrides its action's, which overrides the default."""
    return rule.retry or action.retry or DEFAULT_RETRY


# ---- runtime records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    payload: Mapping[str, Any]
    occurred_at: datetime
    received_at: datetime
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job the engine decided to create; the store gives it an id and a row."""

    rule: str
    action: str
    perform_at: datetime
    priority: int
    max_attempts: int
    payload: Mapping[str, Any]
    event_id: str | None = None
    occurrence_key: str | None = None  # (rule, scheduled time) for time-based rules: unique
    scheduled_for: datetime | None = None
    note: str | None = None  # what planning could not honour (e.g. a payload's unknown zone)
    failure_of: str | None = None  # an on_failure job: the dead job it reports
    # Chains: its parent is the job `after` places earlier in the same list (0: none); it is
    # stored `blocked` and becomes due `wait` after that parent succeeded.
    after: int = 0
    wait: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    rule: str
    action: str
    status: JobStatus
    priority: int
    perform_at: datetime
    attempts: int
    max_attempts: int
    payload: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    event_id: str | None = None
    last_error: str | None = None
    scheduled_for: datetime | None = None
    occurrence_key: str | None = None
    backoff_base: int = 0  # attempts made before the budget was last renewed
    note: str | None = None  # see NewJob.note
    failure_of: str | None = None  # see NewJob.failure_of
    cancelled_by: str | None = None  # the event whose cancel_on cancelled it
    depends_on: tuple[str, ...] = ()  # the parent jobs' ids (chains, after:)


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: str
    number: int
    started_at: datetime
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    error: str | None = None
    output: str | None = None
    stderr: str | None = None
    # How long a rate limit or concurrency held this attempt back past its due time, and whose.
    delayed_ms: int | None = None
    delayed_by: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where a job goes next: the whole decision, which the store only writes."""

    status: JobStatus
    perform_at: datetime
    max_attempts: int
    backoff_base: int  # attempts made before the budget was last renewed
    # A dead verdict's failure notification (on_failure): inserted in the same transaction.
    notice: NewJob | None = None

    @property
    def retry_at(self) -> datetime | None:
        """When the next attempt runs, if there is one."""
        return self.perform_at if self.status is JobStatus.RETRYING else None


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What running an action once produced."""

    outcome: Outcome
    error: str | None = None
    output: str | None = None
    stderr: str | None = None  # a command's standard error, stored beside its stdout
    retry_after: timedelta | None = None  # the server's own "try again in" (HTTP Retry-After)


@dataclass(frozen=True, slots=True)
class Finished:
    """One attempt's end, to be written: the job as claimed, its result, when, the verdict."""

    job: Job
    result: ActionResult
    at: datetime
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Claim:
    """What Store.record_and_claim did: which ends it wrote (False: the attempt was no longer
    the running one), the jobs it claimed, and their events' types by event id."""

    written: list[bool]
    jobs: list[Job]
    event_types: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RuleState:
    """Where a time-based rule's schedule stands (stored, so restarts keep the phase)."""

    rule: str
    fingerprint: str
    anchor: datetime | None
    next_fire: datetime | None
    last_fire: datetime | None


class OccurrenceOutcome(enum.StrEnum):
    """What became of one expected fire time of a time-based rule."""

    FIRED = "fired"  # a job was created
    SKIPPED = "skipped"  # deliberately not run (DST policy, overlap)
    MISSED = "missed"  # not run because the daemon was down, the rule disabled, or too late


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One expected fire time of a time-based rule, and what became of it."""

    rule: str
    scheduled_for: datetime
    outcome: OccurrenceOutcome
    reason: str | None
    job_id: str | None
    note: str | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """How the last write transaction ended: health reports it (SELECT 1 cannot see a full disk)."""

    ok: bool
    at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows removed (or, in a dry run, that would be) by retention, per kind."""

    events: int = 0
    jobs: int = 0
    attempts: int = 0
    occurrences: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.events + other.events,
            self.jobs + other.jobs,
            self.attempts + other.attempts,
            self.occurrences + other.occurrences,
        )

    @property
    def rows(self) -> int:
        """Events, jobs and occurrences: what a batch is bounded by (attempts go with jobs)."""
        return self.events + self.jobs + self.occurrences


@dataclass(frozen=True, slots=True)
class EmitResult:
    """What storing an event did: its id, whether it was a re-send, the jobs it created, the
    waiting jobs its cancel_on cancelled and those a debounce gave its payload instead."""

    event_id: str
    duplicate: bool
    job_ids: tuple[str, ...]
    cancelled: tuple[str, ...] = ()
    debounced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Replay:
    """One `timeos events replay` of a stored event: its number (1, 2, ...), when, how many jobs."""

    event_id: str
    number: int
    at: datetime
    jobs: int


# ---- domain helpers ---------------------------------------------------------------------------


def new_id(now: datetime) -> str:
    """A unique, time-sortable, printable id (ULID, 26 chars).

    Encoded here, as python-ulid would (ms timestamp, 80 random bits): importing python-ulid
    loads importlib.metadata for its version string, ~20 modules and 1 MB of daemon RSS.
    """
    return _ulid_prefix(now) + _ulid_randomness()


def _ulid_prefix(now: datetime) -> str:
    """The 10 characters of a ULID that encode `now` (milliseconds since the epoch)."""
    ms = int(now.timestamp() * 1000)  # python-ulid's from_datetime, truncation included
    return "".join(_ALPHABET[(ms >> shift) & 31] for shift in range(45, -1, -5))


def _ulid_randomness() -> str:
    """The 16 characters of a ULID's 80 random bits."""
    bits = int.from_bytes(secrets.token_bytes(10))
    return "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(75, -1, -5))


_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# Crockford's base32 (ULID's alphabet) from the RFC 4648 one base64.b32encode writes.
_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def new_ids(now: datetime, count: int) -> list[str]:
    """`count` ULIDs of instant `now`, increasing in the order given (for a batch of rows).

    The same ids as new_id makes, 30 times faster: the 10 timestamp characters once, then the
    80 random bits counted up from a random start and encoded all together.
    """
    if count <= 0:
        return []
    prefix = _ulid_prefix(now)
    start = int.from_bytes(secrets.token_bytes(10)) >> 1  # headroom: start + count fits 80 bits
    raw = b"".join((start + n).to_bytes(10) for n in range(count))
    text = base64.b32encode(raw).translate(_CROCKFORD).decode("ascii")
    return [prefix + text[i : i + 16] for i in range(0, 16 * count, 16)]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def payload_hash(event_type: str, payload: Mapping[str, Any]) -> str:
    """Hash of the canonical JSON of type + payload: how idempotent re-sends are recognised."""
    canonical = _CANONICAL.encode([event_type, payload])
    return hashlib.sha256(canonical.encode()).hexdigest()


def occurrence_key(rule: str, scheduled_for: datetime) -> str:
    """The unique key of a time-based rule's occurrence: one job per (rule, instant), ever."""
    return f"{rule}@{to_micros(scheduled_for)}"
