"""The scheduler loop: sleep until the earliest due job, claim by priority, run with N workers.

It is woken early when an earlier job is inserted, so there is no polling interval. It also asks
the occurrence planner (time-based rules) when it next has work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from timeos.actions import ActionContext, ActionRunner
from timeos.clock import Clock
from timeos.daemon.logs import Redactor, fields
from timeos.daemon.telemetry import Publish, no_publish
from timeos.engine import AttemptEnd, after_attempt, failure_action_for, killed, retry_policy_for
from timeos.errors import NotFound, StoreError
from timeos.model import ActionResult, Job, JobStatus, Outcome, OverlapPolicy, RuleSet, Verdict
from timeos.rules.limits import LimitsInForce, limits_in_force, with_busy
from timeos.store.protocol import Store

log = logging.getLogger("timeos.scheduler")

ERROR_PAUSE = 1.0  # seconds to wait after a failed pass before the next one
MIN_SLEEP = timedelta(milliseconds=5)
_AGAIN = datetime.min.replace(tzinfo=UTC)  # sentinel: claim again right away
_AWAKE = datetime.max.replace(tzinfo=UTC)  # sentinel: the loop is not sleeping


@dataclass(frozen=True, slots=True)
class _Outcome:
    """An attempt's result and where it sends the job, waiting to be stored."""

    job: Job
    result: ActionResult
    now: datetime
    verdict: Verdict
    duration_ms: int | None = None  # None: not timed (a run a previous daemon started)
    started: datetime | None = None  # when this attempt began (None: recovered after a crash)


class Planner(Protocol):
    def plan(self, now: datetime) -> datetime | None:
        """Create due occurrences' jobs; return when it next needs to run (None: never)."""
        ...


class Scheduler:
    """Claims due jobs and runs them; one instance per daemon, on the daemon's event loop."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        runner: ActionRunner,
        rules: Callable[[], RuleSet],
        workers: int = 4,
        grace: float = 30.0,
        planner: Planner | None = None,
        rng: random.Random | None = None,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float | None = None,
        publish: Publish = no_publish,
    ) -> None:
        self.store = store
        self.clock = clock
        self.runner = runner
        self.rules = rules
        self.workers = workers
        self.grace = grace
        self.planner = planner
        self.rng = rng or random.Random()
        self.publish = publish
        self.started: dict[str, datetime] = {}  # job id -> when its running attempt began
        self.wake = asyncio.Event()
        # While the loop sleeps: until when (None: until woken). Unset (_AWAKE) while it is
        # not sleeping: it will look at the store before it sleeps again.
        self.asleep_until: datetime | None = _AWAKE
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running: dict[str, asyncio.Task[None]] = {}
        self.running_jobs: dict[str, Job] = {}
        self.killing: set[str] = set()  # jobs `jobs cancel --kill` stopped: recorded cancelled
        self.stopping = False
        self.loop_alive = False
        self.last_tick: datetime | None = None
        self.errors = 0
        self.unrecorded: list[_Outcome] = []  # results the store refused; retried every pass
        self.last_error: str | None = None
        # Called from the loop itself, at least every `heartbeat_every` seconds (the systemd
        # watchdog): a loop that stops turning stops the heartbeat, and systemd restarts us.
        self.heartbeat = heartbeat
        self.heartbeat_every = timedelta(seconds=heartbeat_every) if heartbeat_every else None
        self._beat_at: float | None = None
        # The limits in force, with the rules they were computed from (rules/limits.py).
        self._limits: tuple[RuleSet, LimitsInForce] | None = None
        # A timed-out python thread that ends frees a concurrency slot: look again then.
        runner.lingering.on_end = self.poke

    @property
    def asleep(self) -> bool:
        """Whether the loop is waiting on the clock (health: idle is not stuck)."""
        return self.asleep_until is not _AWAKE

    def poke(self, due: datetime | None = None) -> None:
        """Wake the loop now (a job was inserted, a rule reloaded, the clock moved); with `due`
        (a new job's perform_at), only if that is before the loop's current deadline.

        Safe from any thread (an emit-batch stores its events in a worker thread).
        """
        loop = self._loop
        if loop is not None:
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if not on_loop:
                loop.call_soon_threadsafe(self.poke, due)
                return
        # Most emits create jobs due later than something already waiting: waking for them
        # cost an empty claim pass (a transaction) per emit, 4-6% of an emit's CPU.
        until = self.asleep_until
        if due is None or until is _AWAKE or until is None or due < until:
            self.wake.set()

    def recover(self) -> int:
        """Record jobs left running by a dead daemon as interrupted; retry or dead-letter them;
        settle blocked jobs whose parent already ended."""
        now = self.clock.now()
        jobs = self.store.running_jobs()
        for job in jobs:
            result = ActionResult(
                Outcome.INTERRUPTED, "interrupted: timeosd stopped during the run"
            )
            self._record(job, result, now, AttemptEnd.CRASHED)
        if jobs:
            log.warning(
                "recovered job(s) left running by a previous daemon", extra=fields(count=len(jobs))
            )
        # Chains: a blocked job whose parent already ended (or is gone) is settled now, so no
        # job waits forever on a parent that will never end again.
        settled = self.store.settle_blocked(now)
        if settled:
            log.warning(
                "settled blocked job(s) whose parent had ended", extra=fields(count=settled)
            )
        return len(jobs)

    async def run(self) -> None:
        """Loop until stop(); then drain running actions within the grace period."""
        self.loop_alive = True
        self._loop = asyncio.get_running_loop()
        try:
            while not self.stopping:
                self.wake.clear()
                now = self.clock.now()
                self.last_tick = now
                self._beat()
                try:
                    deadline = self._tick(now)
                    self.last_error = None
                except Exception as exc:  # e.g. the database locked by a backup: keep going
                    log.exception("scheduler pass failed; retrying in %.0fs", ERROR_PAUSE)
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    # From the clock as it is now: a pass that failed slowly (a locked database
                    # waits out busy_timeout, 5 s) would otherwise leave a deadline already past,
                    # and the loop would spin without ever yielding to the API.
                    deadline = self.clock.now() + timedelta(seconds=ERROR_PAUSE)
                if deadline is _AGAIN:
                    await asyncio.sleep(0)  # let the API and finished jobs in, then claim more
                    continue
                if deadline is not None and deadline <= now:
                    deadline = now + MIN_SLEEP  # never spin on a deadline already past
                if self.heartbeat_every is not None:
                    beat = now + self.heartbeat_every
                    deadline = beat if deadline is None else min(deadline, beat)
                self.asleep_until = deadline
                try:
                    await self.clock.sleep_until(deadline, self.wake)
                finally:
                    self.asleep_until = _AWAKE
        finally:
            self.loop_alive = False
            await self._drain()

    def _beat(self) -> None:
        if self.heartbeat is None:
            return
        mono = self.clock.monotonic()
        # Under load the loop turns thousands of times a second; half the period is enough.
        every = self.heartbeat_every.total_seconds() if self.heartbeat_every else 0.0
        if self._beat_at is None or mono - self._beat_at >= every / 2:
            self._beat_at = mono
            try:
                self.heartbeat()
            except Exception:  # a status line must never stop the scheduler
                log.exception("scheduler heartbeat failed")

    def _tick(self, now: datetime) -> datetime | None:
        """One pass: plan time-based rules, claim what is due; return when to look again."""
        if self.unrecorded:
            self.unrecorded = [o for o in self.unrecorded if not self._write(o)]
            if self.unrecorded:
                raise StoreError(f"{len(self.unrecorded)} job result(s) not yet recorded")
        deadline = self.planner.plan(now) if self.planner else None
        free = self.workers - len(self.running)
        if free > 0:
            # Time-based rules with overlap skip/queue run one job at a time.
            exclusive = {
                r.name
                for r in self.rules().rules
                if r.time_based and r.overlap is not OverlapPolicy.ALLOW
            }
            busy = {job.rule for job in self.running_jobs.values()} & exclusive
            limits = self._limits_in_force()
            jobs = self.store.claim_due(now, free, blocked=busy, exclusive=exclusive, limits=limits)
            for job in jobs:
                self._start(job)
            if len(jobs) == free:
                return _AGAIN  # there may be more due: claim again once a worker frees up
            busy |= {job.rule for job in jobs} & exclusive
            # With limits: also when a held-back rule or action gets its next token.
            due = self.store.next_due_at(blocked=busy, limits=limits, now=now)
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        return deadline

    def _limits_in_force(self) -> LimitsInForce:
        """The rate limits and concurrency of the rules in force (recomputed when they change)."""
        rules = self.rules()
        if self._limits is None or self._limits[0] is not rules:
            self._limits = (rules, limits_in_force(rules))
        return with_busy(self._limits[1], self.runner.lingering.counts)

    def _start(self, job: Job) -> None:
        now = self.clock.now()
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = task
        self.running_jobs[job.id] = job
        self.started[job.id] = now
        self.publish(
            "job.started",
            job_id=job.id,
            rule=job.rule,
            event_id=job.event_id,
            attempt=job.attempts,
            lateness_ms=_ms(now - job.perform_at),
        )

    async def _execute(self, job: Job) -> None:
        rules = self.rules()
        action = rules.actions.get(job.action)
        started = self.clock.now()
        log.debug("job started", extra=fields(**_job_fields(job)))
        try:
            try:
                if action is None:
                    result = ActionResult(
                        Outcome.PERMANENT,
                        f"action {job.action!r} is not defined in the loaded rules",
                    )
                else:
                    result = await self.runner.run(action, self._context(job))
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if job.id in self.killing and not self.stopping:
                    # `timeos jobs cancel --kill`: the action (a command: its whole process
                    # group) was stopped on purpose. Cancelled, not interrupted: no retry.
                    now = self.clock.now()
                    result = ActionResult(
                        Outcome.INTERRUPTED, "killed: cancelled by timeos jobs cancel --kill"
                    )
                    ms = max(0, (now - started) // timedelta(milliseconds=1))
                    self._write(_Outcome(job, result, now, killed(job, now), ms))
                    return
                if task is not None and task.cancelling():
                    # Our own graceful shutdown killed it: it runs again on the next start.
                    result = ActionResult(
                        Outcome.INTERRUPTED, "interrupted: timeosd shut down mid-run"
                    )
                    self._record(job, result, self.clock.now(), AttemptEnd.SHUTDOWN, started)
                    raise
                # The action's own code was cancelled (not by us): an ordinary failure.
                result = ActionResult(Outcome.FAILED, "CancelledError: the action was cancelled")
            except Exception as exc:  # the daemon must keep serving; record and carry on
                log.exception("job failed unexpectedly", extra=fields(**_job_fields(job)))
                result = ActionResult(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
            self._record(job, result, self.clock.now(), started=started)
        finally:
            self._forget(job)  # whatever happened, the worker slot is free again
            self.wake.set()

    def _forget(self, job: Job) -> None:
        self.running.pop(job.id, None)
        self.running_jobs.pop(job.id, None)
        self.started.pop(job.id, None)
        self.killing.discard(job.id)

    def kill(self, job_ids: Collection[str]) -> list[str]:
        """Stop the running actions of `job_ids` (the ones running here); they are recorded
        cancelled when their task ends. The ids of those it stopped."""
        stopped = []
        for job_id in job_ids:
            task = self.running.get(job_id)
            if task is not None and not task.done() and job_id not in self.killing:
                self.killing.add(job_id)
                task.cancel()
                stopped.append(job_id)
        if stopped:
            log.info("killing running jobs on request", extra=fields(count=len(stopped)))
        return stopped

    def _context(self, job: Job) -> ActionContext:
        event_type = None
        if job.event_id is not None:
            try:
                event_type = self.store.get_event(job.event_id).type
            except NotFound:
                event_type = None
        return ActionContext(
            job_id=job.id,
            rule=job.rule,
            action=job.action,
            event_id=job.event_id,
            event_type=event_type,
            attempt=job.attempts,
            scheduled_for=job.scheduled_for or job.perform_at,
            payload=job.payload,
        )

    def _record(
        self,
        job: Job,
        result: ActionResult,
        now: datetime,
        end: AttemptEnd = AttemptEnd.RAN,
        started: datetime | None = None,
    ) -> None:
        rules = self.rules()
        result = _without_secrets(result, rules.secrets)
        policy = retry_policy_for(rules, job)
        notify = failure_action_for(rules, job)
        verdict = after_attempt(job, result, policy, now, self.rng, end, notify)
        # By the injected clock, like everything else; a clock stepped back reads as 0.
        ms = max(0, (now - started) // timedelta(milliseconds=1)) if started else None
        self._write(_Outcome(job, result, now, verdict, ms, started))

    def _write(self, outcome: _Outcome) -> bool:
        """Store one attempt's outcome; on failure keep it to retry on the next pass."""
        job, result = outcome.job, outcome.result
        try:
            done = self.store.finish(job, result, outcome.now, outcome.verdict)
        except StoreError as exc:  # e.g. database locked by a backup, disk full
            # Not dropped: a job left `running` would block its rule's overlap check for good.
            if outcome not in self.unrecorded:
                log.error(
                    "job result not recorded; will retry",
                    extra=fields(**_job_fields(job), error=str(exc)),
                )
                self.unrecorded.append(outcome)
            return False
        except Exception:  # not the store failing (e.g. the attempt is no longer the running one)
            log.exception("job result dropped", extra=fields(**_job_fields(job)))
            return True
        retry_at = done.perform_at.isoformat() if done.status is JobStatus.RETRYING else None
        log.info(
            "job finished",
            extra=fields(
                **_job_fields(job),
                outcome=str(result.outcome),
                status=str(done.status),
                duration_ms=outcome.duration_ms,
                retry_at=retry_at,
                error=result.error,
            ),
        )
        if outcome.verdict.notice is not None:
            log.info("job %s: on_failure action %r queued", job.id, outcome.verdict.notice.action)
            self.wake.set()
        self._announce(outcome, done)
        return True

    def _announce(self, outcome: _Outcome, done: Job) -> None:
        """Publish how the attempt ended (`job.succeeded`, or `job.failed` and where it went)."""
        job, result = outcome.job, outcome.result
        ids = {"job_id": job.id, "rule": job.rule, "event_id": job.event_id}
        duration = _ms(outcome.now - outcome.started) if outcome.started else None
        if done.status is JobStatus.SUCCEEDED:
            self.publish("job.succeeded", **ids, attempt=job.attempts, duration_ms=duration)
            return
        self.publish(
            "job.failed",
            **ids,
            attempt=job.attempts,
            error=result.error,
            outcome=str(result.outcome),
            duration_ms=duration,
        )
        if done.status is JobStatus.DEAD:
            self.publish("job.dead", **ids, attempt=job.attempts, error=result.error)
        elif done.status in (JobStatus.RETRYING, JobStatus.PENDING):
            self.publish(
                "job.retrying",
                **ids,
                attempt=job.attempts,
                error=result.error,
                next_at=done.perform_at.isoformat(),
            )
        if done.status in (JobStatus.DEAD, JobStatus.CANCELLED):  # its chain went with it
            for child, rule, event_id in self.store.cascaded(job.id):
                self.publish("job.cancelled", job_id=child, rule=rule, event_id=event_id)

    def stop(self) -> None:
        """Stop claiming; run() drains and returns."""
        self.stopping = True
        self.wake.set()

    async def _drain(self) -> None:
        if not self.running:
            return
        tasks = list(self.running.values())
        log.info("waiting for running jobs", extra=fields(count=len(tasks), grace_s=self.grace))
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "killed jobs still running after the grace period",
                extra=fields(count=len(pending)),
            )
            await asyncio.gather(*pending, return_exceptions=True)


def _job_fields(job: Job) -> dict[str, object]:
    """The fields every log line about one job carries."""
    return {
        "job_id": job.id,
        "rule": job.rule,
        "action": job.action,
        "event_id": job.event_id,
        "attempt": job.attempts,
    }


def _ms(delta: timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)


def _without_secrets(result: ActionResult, secrets: frozenset[str]) -> ActionResult:
    """The result with every ${VAR} value of the rules hidden: a server that echoes a header
    back must not put it in the stored error, the watch stream or an on_failure payload."""
    if not secrets:
        return result
    redact = Redactor(lambda: secrets)
    return replace(
        result,
        error=redact(result.error) if result.error else result.error,
        output=redact(result.output) if result.output else result.output,
        stderr=redact(result.stderr) if result.stderr else result.stderr,
    )
