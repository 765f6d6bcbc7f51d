"""The daemon's operations, one method per API call: emit, inspect, cancel, retry, reload, health,
cleanup.

api.py translates HTTP to these calls; the `emit` action calls emit() in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from timeos.clock import Clock
from timeos.daemon.fleet import daemons_health
from timeos.daemon.flow import FlowControl, KillRunning
from timeos.daemon.group_commit import GroupCommit, PlannedEmit
from timeos.daemon.logs import fields
from timeos.daemon.metrics import Metrics
from timeos.daemon.retention import Pruner
from timeos.daemon.rule_control import RuleControl
from timeos.daemon.telemetry import EventBus, Watcher
from timeos.engine import (
    Limits,
    check_event_type,
    check_idempotency_key,
    job_emit_key,
    plan_event,
    renewal,
    retry_policy_for,
)
from timeos.errors import (
    IdempotencyConflict,
    NotFound,
    PayloadError,
    Problem,
    RulesError,
    TimeOSError,
    UsageError,
)
from timeos.model import (
    Attempt,
    EmitResult,
    Event,
    Job,
    JobStatus,
    NewJob,
    Rule,
    RuleOverride,
    RuleSet,
    new_id,
)
from timeos.rules.correlation import correlate, correlates
from timeos.rules.correlation import rule_paths as keyed_paths
from timeos.rules.fingerprint import fingerprint
from timeos.rules.limits import limits_in_force
from timeos.store.protocol import Store
from timeos.time.preview import rule_fires

log = logging.getLogger("timeos.service")

MAX_CANCEL_IDS = 1000  # job ids per cancel request; the CLI splits longer lists
# A waiting job overdue by more than this makes the `lateness` component degraded: the scheduler
# is not keeping up (workers busy, a stalled loop) or a rule's overlap holds a queue back.
LATENESS_DEGRADED = timedelta(seconds=60)

RulesLoader = Callable[[Sequence[Path]], RuleSet]
# () -> (healthy|degraded|unhealthy, message[, extra fields of the component])
HealthProbe = Callable[[], tuple[str, str] | tuple[str, str, Mapping[str, Any]]]
RuleSchedule = Callable[[Rule], Mapping[str, Any]]  # a rule -> its next_fire / last_fire
Reloading = Callable[[], AbstractContextManager[object]]  # wraps each reload (systemd notify)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    id: str
    cancelled: bool
    status: str | None = None
    error: str | None = None


class Service(RuleControl, FlowControl):
    """Holds the current rule set and the store; every API call lands here (rule control's
    calls are in rule_control.py, flow control's in flow.py)."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        rules: RuleSet,
        rule_paths: Sequence[Path],
        loader: RulesLoader,
        limits: Limits,
        on_change: Callable[[], None] = lambda: None,
        wake_at: Callable[[datetime], None] | None = None,
        info: Mapping[str, Any] | None = None,
        probes: Mapping[str, HealthProbe] | None = None,
        schedule: RuleSchedule = lambda rule: {},
        reloading: Reloading = contextlib.nullcontext,
        pruner: Pruner | None = None,
        bus: EventBus | None = None,
        metrics: Metrics | None = None,
        kill_running: KillRunning | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        # The rule files' rules, the stored runtime overrides, and the two composed: what every
        # reader (engine, planner, scheduler, API) sees. See rule_control.py.
        self._file_rules = rules
        self._overrides: dict[str, RuleOverride] = store.rule_overrides()
        self._rules = rules
        self._recompose_at: datetime | None = None
        self._compose()
        # The files' rules' fingerprint (overrides are shared through the database anyway):
        # daemons sharing one compare theirs in health.
        self.rules_fingerprint = fingerprint(rules)
        store.announce_rules(self.rules_fingerprint)
        self.rule_paths = list(rule_paths)
        self.loader = loader
        self.limits = limits
        self.on_change = on_change
        # New jobs from an emit, the earliest due then: the scheduler wakes only if that is
        # before its deadline (without it, every change wakes it: on_change as set then).
        self.wake_at: Callable[[datetime], None] = wake_at or (lambda due: self.on_change())
        self.info = dict(info or {})
        self.started_at = clock.now()
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._reload_lock = asyncio.Lock()
        self.health_probes: dict[str, HealthProbe] = dict(probes or {})
        self.schedule = schedule
        self.reloading = reloading
        self.pruner = pruner or Pruner(store=store, clock=clock, rules=lambda: self.rules)
        self.bus = bus or EventBus(clock)
        self.publish = self.bus.publish
        # Fed from the bus; without the planner's view, no rule's next fire time is known.
        self._metrics = metrics or Metrics(
            job_counts=store.counts_by_status,
            next_fires=dict,
            watchers=lambda: len(self.bus.watchers),
        )
        self.bus.subscribe(self._metrics.observe)
        # The scheduler's hand on running jobs (`jobs cancel --kill`): job ids -> those stopped.
        self.kill_running = kill_running
        self._group = GroupCommit(store.emit_group, self._emitted)

    @property
    def rules(self) -> RuleSet:
        """The effective rules: the files' with the runtime overrides in force now."""
        return self._current()

    # ---- events -------------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        occurred_at: datetime | None = None,
    ) -> EmitResult:
        """Store an event and the jobs its rules create, atomically; wake the scheduler."""
        check_idempotency_key(idempotency_key, self.limits)
        return self._emit(event_type, payload, idempotency_key, occurred_at)

    def emit_for_job(self, event_type: str, payload: Mapping[str, Any], job_id: str) -> EmitResult:
        """Emit the event of job `job_id`'s emit action, at most once however often it runs.

        Keyed `timeos:job:ID`, a namespace check_idempotency_key refuses to clients, so no client
        key can pre-empt (or conflict with) a pending job's event.
        """
        # Until this release the key was `job:ID`, which clients could send too. An event an
        # earlier attempt of this job stored under it (same type and payload) still counts as
        # emitted; anything else under that key is a client's event and is none of our business.
        try:
            earlier = self.store.find_idempotent(f"job:{job_id}", event_type, payload)
        except IdempotencyConflict:
            earlier = None
        if earlier is not None:
            return EmitResult(earlier, True, ())
        return self._emit(event_type, payload, job_emit_key(job_id), None)

    async def emit_soon(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        occurred_at: datetime | None = None,
    ) -> EmitResult:
        """emit(), committed together with the other emits that arrive within the same few
        turns of the event loop (group commit); returns once its transaction has committed."""
        check_idempotency_key(idempotency_key, self.limits)
        planned = self._plan_emit(event_type, payload, idempotency_key, occurred_at)
        if isinstance(planned, EmitResult):  # a duplicate, found before storing anything
            return planned
        return await self._group.submit(planned)

    def _emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        idempotency_key: str | None,
        occurred_at: datetime | None,
    ) -> EmitResult:
        planned = self._plan_emit(event_type, payload, idempotency_key, occurred_at)
        if isinstance(planned, EmitResult):
            return planned
        result = self.store.emit(planned.event, planned.jobs, planned.now, planned.correlation)
        return self._emitted(planned, result)

    def _plan_emit(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        idempotency_key: str | None,
        occurred_at: datetime | None,
    ) -> PlannedEmit | EmitResult:
        """Check an emit and plan its jobs (nothing stored); a duplicate's result if its key
        is stored already with the same type and payload."""
        check_event_type(event_type, self.limits)
        now = self.clock.now()
        if idempotency_key is not None:
            existing = self.store.find_idempotent(idempotency_key, event_type, payload)
            if existing is not None:
                return EmitResult(existing, True, ())
        event = Event(
            id=new_id(now),
            type=event_type,
            payload=dict(payload),
            occurred_at=occurred_at or now,
            received_at=now,
            idempotency_key=idempotency_key,
        )
        try:
            jobs = plan_event(event, self.rules)
            # debounce adds its period and max_wait to the planned time: may overflow too
            plan = correlate(event, jobs, self.rules) if correlates(self.rules) else None
        except OverflowError:
            raise PayloadError(
                f"occurred_at {event.occurred_at.isoformat()} plus a rule's offset is out of range"
            ) from None
        if plan is not None and plan.active:
            jobs = list(plan.jobs)
        else:
            plan = None
        return PlannedEmit(event, jobs, now, plan)

    def _emitted(self, planned: PlannedEmit, result: EmitResult) -> EmitResult:
        """After an emit's transaction committed: log it, wake the scheduler, tell watchers."""
        event, jobs = planned.event, planned.jobs
        made: Sequence[NewJob | Job] = jobs
        if result.debounced:  # some planned jobs were folded into waiting ones: the ones made
            made = [self.store.get_job(job_id) for job_id in result.job_ids]
        log.info(
            "event received",
            extra=fields(
                event_id=result.event_id,
                type=event.type,
                jobs=len(result.job_ids),
                duplicate=result.duplicate or None,
                cancelled=len(result.cancelled) or None,
                debounced=len(result.debounced) or None,
            ),
        )
        for job_id, job in zip(result.job_ids, made, strict=False):
            log.debug(
                "job created",
                extra=fields(
                    job_id=job_id,
                    rule=job.rule,
                    action=job.action,
                    event_id=result.event_id,
                    perform_at=job.perform_at.isoformat(),
                ),
            )
        if result.debounced:  # a waiting job moved: look again
            self.on_change()
        elif result.job_ids:
            self.wake_at(min(job.perform_at for job in made))
        if not result.duplicate:
            self._announce(event, made, result)
            self._announce_cancels(result)
        return result

    def _announce_cancels(self, result: EmitResult) -> None:
        """Tell watchers (and metrics) of the jobs an event's cancel_on cancelled, and chains."""
        for job_id in result.cancelled:
            self._announce_cancel(job_id)
            for child, rule, event_id in self.store.cascaded(job_id):  # its chain
                self.publish("job.cancelled", job_id=child, rule=rule, event_id=event_id)

    def _announce(self, event: Event, jobs: Sequence[NewJob | Job], result: EmitResult) -> None:
        publish = self.publish
        publish("event.emitted", event_id=event.id, type=event.type, jobs=len(result.job_ids))
        # Event jobs carry no occurrence key, so every one is inserted: ids match jobs in order.
        pairs = zip(jobs, result.job_ids, strict=False) if len(jobs) == len(result.job_ids) else ()
        for job, job_id in pairs:
            publish("rule.matched", event_id=event.id, rule=job.rule, job_id=job_id)
            publish(
                "job.created",
                event_id=event.id,
                rule=job.rule,
                job_id=job_id,
                perform_at=job.perform_at.isoformat(),
            )

    def get_event(self, event_id: str) -> Event:
        """One event by id."""
        return self.store.get_event(event_id)

    def list_events(
        self,
        event_type: str | None,
        limit: int,
        offset: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Event]:
        """Events, newest first; since/until bound when they were received."""
        return self.store.list_events(
            event_type=event_type,
            limit=self._limit(limit),
            offset=max(0, offset),
            since=since,
            until=until,
        )

    def count_events(
        self, event_type: str | None, since: datetime | None = None, until: datetime | None = None
    ) -> int:
        """How many events match (the total behind a page of list_events)."""
        return self.store.count_events(event_type=event_type, since=since, until=until)

    # ---- jobs ---------------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        status: str | None,
        rule: str | None,
        event_id: str | None,
        limit: int,
        offset: int,
        waiting_first: bool = False,
    ) -> list[Job]:
        """Jobs filtered by status, rule and event."""
        return self.store.list_jobs(
            status=_status(status),
            rule=rule,
            event_id=event_id,
            limit=self._limit(limit),
            offset=max(0, offset),
            waiting_first=waiting_first,
        )

    def count_jobs(self, *, status: str | None, rule: str | None, event_id: str | None) -> int:
        """How many jobs match (the total behind a page of list_jobs)."""
        return self.store.count_jobs(status=_status(status), rule=rule, event_id=event_id)

    def get_job(self, job_id: str) -> Job:
        """One job by id."""
        return self.store.get_job(job_id)

    def cancel(self, job_ids: Sequence[str]) -> list[CancelOutcome]:
        """Cancel each waiting job; report per id (one failure does not stop the others)."""
        if len(job_ids) > MAX_CANCEL_IDS:
            # One request runs on the event loop: 85,000 ids froze the scheduler for 8.9 s.
            raise UsageError(
                f"at most {MAX_CANCEL_IDS} job ids per cancel request, got {len(job_ids)};"
                " send them in several requests (timeos jobs cancel does)"
            )
        results = [CancelOutcome(*r) for r in self.store.cancel_many(job_ids, self.clock.now())]
        for outcome in results:
            if outcome.cancelled:
                self._announce_cancel(outcome.id)
                for child, rule, event_id in self.store.cascaded(outcome.id):  # its chain
                    self.publish("job.cancelled", job_id=child, rule=rule, event_id=event_id)
        return results

    def _announce_cancel(self, job_id: str) -> None:
        try:  # the rule and event, for watchers filtering by rule and for the metrics' labels
            job: Job | None = self.store.get_job(job_id)
        except TimeOSError:
            job = None
        self.publish(
            "job.cancelled",
            job_id=job_id,
            rule=job.rule if job else None,
            event_id=job.event_id if job else None,
        )

    def chain(self, job_id: str) -> dict[str, list[dict[str, str]]]:
        """A job's `parents` and `children` (chains, after:): id, rule, action and status each."""
        parents, children = self.store.chain_ids(job_id)

        def brief(ids: list[str]) -> list[dict[str, str]]:
            jobs = [self.store.get_job(i) for i in ids]
            return [
                {"id": j.id, "rule": j.rule, "action": j.action, "status": j.status} for j in jobs
            ]

        return {"parents": brief(parents), "children": brief(children)}

    def attempts(self, job_id: str) -> list[Attempt]:
        """A job's attempt history, oldest first."""
        return self.store.attempts(job_id)

    def dlq_retry(self, job_id: str) -> Job:
        """Send a dead job back to pending with a fresh attempt budget."""
        job = self.store.get_job(job_id)
        now = self.clock.now()
        job = self.store.requeue_dead(
            job, now, renewal(job, retry_policy_for(self.rules, job), now)
        )
        self.on_change()
        return job

    def dlq_delete(self, job_id: str) -> None:
        """Delete a dead job for good."""
        self.store.delete_dead(job_id)

    # ---- rules --------------------------------------------------------------------------------

    def rule(self, name: str) -> Rule:
        """One loaded rule by name."""
        rule = self.rules.rule(name)
        if rule is None:
            raise NotFound(f"no rule named {name!r} is loaded")
        return rule

    async def reload(self) -> RuleSet:
        """Load and validate the rule files; swap them in only if valid, else keep the old ones.

        Loading imports python actions, which runs user code that may be slow or hang: it runs
        in a thread of its own, so the scheduler and the API keep going meanwhile (each import
        gives up after its timeout). Concurrent reloads take turns, in the order they came.
        """
        async with self._reload_lock:
            with self.reloading():
                try:
                    # Hashed in the loading thread too: 1000 rules take ~50 ms to walk.
                    rules, hashed = await _in_thread(self._load_and_hash)
                except RulesError as exc:
                    self.last_reload_error = exc.message
                    log.error(
                        "reload rejected, keeping the loaded rules:\n%s",
                        exc,
                        extra=fields(rules=len(self._rules.rules)),
                    )
                    raise
                except Exception as exc:  # not a rule error (I/O, a bug, SystemExit): still reject
                    self.last_reload_error = f"{type(exc).__name__}: {exc}"
                    log.error(
                        "reload failed, keeping the loaded rules",
                        exc_info=exc,
                        extra=fields(rules=len(self._rules.rules)),
                    )
                    problem = Problem("", f"reload failed: {type(exc).__name__}: {exc}")
                    raise RulesError([problem]) from exc
                # Swapped inside `reloading`: whoever watches it sees the new rules on the way out.
                self._index_new_paths(self._file_rules, rules)
                self._file_rules = rules
                self._compose()
                self.rules_fingerprint = hashed
                self.store.announce_rules(hashed)
                self.reloads += 1
                self.last_reload_error = None
        log.info(
            "rules reloaded",
            extra=fields(rules=len(rules.rules), files=",".join(map(str, self.rule_paths))),
        )
        self.on_change()
        return rules

    def _load_and_hash(self) -> tuple[RuleSet, str]:
        rules = self.loader(self.rule_paths)
        return rules, fingerprint(rules)

    def _index_new_paths(self, old: RuleSet, new: RuleSet) -> None:
        """A reload that gives a rule a new cancel_on/debounce path indexes its waiting jobs
        at it: the ones created before the reload are cancelled (or debounced) as later ones."""
        had = {(r.name, p) for r in old.rules for p in keyed_paths(r)}
        for rule in new.rules:
            added = [p for p in keyed_paths(rule) if (rule.name, p) not in had]
            if added:
                rows = self.store.index_waiting(rule.name, added)
                log.info("waiting jobs indexed", extra=fields(rule=rule.name, rows=rows))

    def rule_schedule(self, rule: Rule) -> dict[str, Any]:
        """A time-based rule's next and last fire, as the planner knows them ({} otherwise)."""
        return dict(self.schedule(rule))

    def rule_history(self, name: str, limit: int, offset: int = 0) -> list[dict[str, Any]]:
        """A time-based rule's recorded occurrences, newest first (also of a removed rule)."""
        found = self.store.history(name, self._limit(limit), max(0, offset))
        if not found and offset == 0:
            self.rule(name)  # NotFound for a name that was never loaded
        return [
            {
                "scheduled_for": o.scheduled_for.isoformat(),
                "outcome": o.outcome,
                "reason": o.reason,
                "job_id": o.job_id,
                "note": o.note,
                "recorded_at": o.recorded_at.isoformat(),
            }
            for o in found
        ]

    def count_history(self, name: str) -> int:
        """How many occurrences of a rule are recorded (the total behind a page of history)."""
        return self.store.count_history(name)

    def rule_next(self, name: str, after: datetime | None, count: int) -> list[dict[str, Any]]:
        """The next `count` fires of a time-based rule, from its stored anchor."""
        rule = self.rule(name)
        now = self.clock.now()
        state = self.store.rule_states().get(name)
        anchor = state.anchor if state and state.anchor else now
        return rule_fires(rule, anchor, after or now, max(1, min(count, 1000)))

    # ---- telemetry ----------------------------------------------------------------------------

    def watch(self, rule: str | None, kind: str | None) -> Watcher:
        """Subscribe to lifecycle events of `rule` and `kind` (UsageError for an unknown kind)."""
        return self.bus.watch(rule=rule, kind=kind)

    def unwatch(self, watcher: Watcher) -> None:
        """End a subscription (its stream ended)."""
        self.bus.unwatch(watcher)

    def metrics(self) -> bytes:
        """The Prometheus text exposition of the daemon's metrics now."""
        return self._metrics.exposition()

    # ---- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Daemon facts for `timeos status`."""
        now = self.clock.now()
        info = dict(self.info)
        for key in ("socket", "database"):  # absolute: the daemon's cwd is not the reader's
            value = info.get(key)
            if isinstance(value, str) and value and "://" not in value:
                info[key] = str(Path(value).absolute())
        return {
            **info,
            "up": True,
            "started_at": self.started_at.isoformat(),
            "uptime_seconds": round((now - self.started_at).total_seconds(), 3),
            "now": now.isoformat(),
            "rules": len(self._rules.rules),
            "actions": len(self._rules.actions),
            # Absolute: the daemon's working directory is not the reader's.
            "rule_files": [str(Path(p).absolute()) for p in self.rule_paths],
            "reloads": self.reloads,
        }

    def health(self) -> dict[str, Any]:
        """Overall healthy/degraded/unhealthy, a status per component, and job counts."""
        facts = self.store.facts()
        components: dict[str, dict[str, Any]] = {
            "database": self._database_health(facts),
            "lateness": self._lateness_health(),
        }
        if "daemons" in facts:  # a shared database: every daemon beating, on the same rules
            components["daemons"] = daemons_health(facts["daemons"], self.rules_fingerprint)
        if self.last_reload_error:
            components["rules"] = {
                "status": "degraded",
                "message": "last reload rejected; previous rules still active",
            }
        else:
            components["rules"] = {
                "status": "healthy",
                "message": f"{len(self._rules.rules)} rule(s) loaded",
            }
        for name, probe in self.health_probes.items():
            status, message, *extra = probe()
            components[name] = {"status": status, "message": message, **(extra[0] if extra else {})}
        states = [c["status"] for c in components.values()]
        overall = (
            "unhealthy"
            if "unhealthy" in states
            else "degraded"
            if "degraded" in states
            else "healthy"
        )
        try:
            counts = self.store.counts_by_status()
        except TimeOSError:
            counts = {}
        return {"status": overall, "components": components, "jobs": counts}

    def _database_health(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        # SELECT 1 answers on a full disk or while another process holds the write lock, so the
        # outcome of the last real write decides; the next successful write clears a failure.
        last = self.store.last_write
        try:
            self.store.ping()
        except TimeOSError as exc:
            status, message = "unhealthy", exc.message
        else:
            if last is not None and not last.ok:
                status = "unhealthy"
                message = f"last write failed at {last.at.isoformat()}: {last.error}"
            else:
                status, message = "healthy", self.store.location
        if "wal_bytes" in facts:
            message += f"; WAL {facts['wal_bytes'] / 1_048_576:.1f} MiB"
        return {
            "status": status,
            "message": message,
            **facts,
            "last_write_ok": last.ok if last else None,
            "last_write_at": last.at.isoformat() if last else None,
        }

    def _lateness_health(self) -> dict[str, Any]:
        # How late the longest-overdue waiting job is: the symptom a monitor cares about,
        # whatever the cause (busy workers, a stalled loop, a queue behind an overlap).
        now = self.clock.now()
        limits = limits_in_force(self.rules)
        try:
            # Jobs a rate limit holds back are late by design, not because we fell behind.
            if limits:
                due = self.store.oldest_overdue_unheld(limits, now)
            else:
                due = self.store.oldest_overdue(now)
        except TimeOSError as exc:
            return {"status": "unhealthy", "message": exc.message, "seconds": None}
        late = (now - due).total_seconds() if due is not None else 0.0
        if due is None:
            message = "no waiting job is overdue"
        else:
            message = f"oldest overdue job was due {late:.0f}s ago (due {due.isoformat()})"
        status = "degraded" if late > LATENESS_DEGRADED.total_seconds() else "healthy"
        if status == "degraded":
            message += f", over {LATENESS_DEGRADED.total_seconds():.0f}s"
        return {"status": status, "message": message, "seconds": round(late, 3)}

    # ---- retention ----------------------------------------------------------------------------

    async def cleanup(
        self,
        *,
        older_than: timedelta | None = None,
        statuses: Sequence[str] = (),
        events: bool = False,
        dry_run: bool = False,
        vacuum: bool = False,
    ) -> dict[str, Any]:
        """Remove (or count, `dry_run`) what is older than `older_than`, else than retention.

        Neither `statuses` nor `events`: succeeded and cancelled jobs and events. Otherwise only
        the jobs in `statuses` and, with `events`, events. Occurrences and attempts go with
        their jobs. `vacuum` then rewrites the file in a thread (writes wait for it meanwhile).
        """
        if dry_run and vacuum:
            raise UsageError("--vacuum with --dry-run: a dry run changes nothing")
        chosen = [s for s in (_status(s) for s in statuses) if s is not None]
        if not chosen and not events:
            chosen, events = [JobStatus.SUCCEEDED, JobStatus.CANCELLED], True
        plan = self.pruner.plan(
            self.clock.now(), older_than=older_than, statuses=chosen, events=events
        )
        if dry_run:
            counts = self.store.count_prunable(plan)
        else:
            counts = await self.pruner.prune(plan)
            if vacuum:
                await asyncio.to_thread(self.store.vacuum)
        return {
            "dry_run": dry_run,
            "events": counts.events,
            "jobs": counts.jobs,
            "attempts": counts.attempts,
            "occurrences": counts.occurrences,
        }

    def _limit(self, limit: int) -> int:
        if limit < 1 or limit > self.limits.max_list_limit:
            raise UsageError(f"limit must be 1..{self.limits.max_list_limit}, got {limit}")
        return limit


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Run `function` in a daemon thread and await it; any BaseException it raises comes back.

    Not asyncio.to_thread: a call stuck in user code would hold up timeosd's exit (asyncio.run
    joins the default executor), and a SystemExit from the thread must reach the caller as an
    ordinary exception, not end the event loop.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def work() -> None:
        ok: bool
        value: Any
        try:
            ok, value = True, function(*args)
        except Exception as exc:
            ok, value = False, exc
        except BaseException as exc:  # an awaited SystemExit would stop the whole loop
            ok, value = False, RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            loop.call_soon_threadsafe(settle, ok, value)
        except RuntimeError:
            pass  # the loop is gone (daemon shut down): nobody waits for this result

    threading.Thread(target=work, name="timeos-reload", daemon=True).start()
    return await future


def _status(status: str | None) -> JobStatus | None:
    if status is None:
        return None
    try:
        return JobStatus(status)
    except ValueError:
        raise UsageError(f"unknown status {status!r}; one of: {', '.join(JobStatus)}") from None
