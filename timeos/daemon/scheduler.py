"""The scheduler loop: sleep until the earliest due job, claim by priority, run with N workers.

It is woken early when an earlier job is inserted, so there is no polling interval. It also asks
the occurrence planner (time-based rules) when it next has work. Attempts' ends are kept until
the next pass and written in its claim's transaction, a batch at a time.
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
from timeos.errors import StoreError
from timeos.model import (
    ActionResult,
    Finished,
    Job,
    JobStatus,
    Outcome,
    OverlapPolicy,
    RuleSet,
    Verdict,
)
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

    def finished(self) -> Finished:
        return Finished(self.job, self.result, self.now, self.verdict)


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
        # Attempts' ends not yet stored: written by the next pass, in its claim's transaction
        # (and kept, retried every pass, while the store refuses them).
        self.unrecorded: list[_Outcome] = []
        self._refused: set[tuple[str, int]] = set()  # (job, attempt) logged as not recorded
        self.last_error: str | None = None
        # Called from the loop itself, at least every `heartbeat_every` seconds (the systemd
        # watchdog): a loop that stops turning stops the heartbeat, and systemd restarts us.
        self.heartbeat = heartbeat
        self.heartbeat_every = timedelta(seconds=heartbeat_every) if heartbeat_every else None
        self._beat_at: float | None = None
        # The limits in force, with the rules they were computed from (rules/limits.py).
        self._limits: tuple[RuleSet, LimitsInForce] | None = None
        # Time-based rules, and those of them that run one job at a time, by rules in force.
        self._timed: tuple[RuleSet, frozenset[str], frozenset[str]] | None = None
        # The rules' ${VAR} values, hidden in every stored result (forms built once per reload).
        self._redact = Redactor(lambda: self.rules().secrets)
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
            try:
                self._store(now, 0)
            except StoreError:
                pass  # kept in self.unrecorded: the loop's first pass writes them
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
            self._store_last()

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
        """One pass: plan time-based rules, store attempts' ends and claim what is due (one
        transaction); return when to look again."""
        timed, exclusive = self._time_based()
        if any(o.job.rule in timed for o in self.unrecorded):
            # The planner reads whether a time-based rule has a job running (overlap): it must
            # see the ends of that rule's runs first.
            self._store(now, 0)
        deadline = self.planner.plan(now) if self.planner else None
        free = self.workers - len(self.running)
        if free <= 0:
            if self.unrecorded:
                self._store(now, 0)
            return deadline
        # Time-based rules with overlap skip/queue run one job at a time.
        busy = {job.rule for job in self.running_jobs.values()} & exclusive
        limits = self._limits_in_force()
        jobs = self._store(now, free, busy, exclusive, limits)
        if len(jobs) == free:
            return _AGAIN  # there may be more due: claim again once a worker frees up
        busy |= {job.rule for job in jobs} & exclusive
        # With limits: also when a held-back rule or action gets its next token.
        due = self.store.next_due_at(blocked=busy, limits=limits, now=now)
        if due is not None and (deadline is None or due < deadline):
            deadline = due
        return deadline

    def _store(
        self,
        now: datetime,
        free: int,
        busy: Collection[str] = (),
        exclusive: Collection[str] = (),
        limits: LimitsInForce | None = None,
    ) -> list[Job]:
        """Write the ends kept since the last pass, claim up to `free` due jobs and start them,
        all in one transaction; the jobs started. On StoreError the ends are kept, none is
        claimed, and the pass fails."""
        ends = self.unrecorded
        try:
            claim = self.store.record_and_claim(
                [o.finished() for o in ends], now, free, busy, exclusive, limits
            )
        except StoreError as exc:  # e.g. database locked by a backup, disk full
            # Not dropped: a job left `running` would block its rule's overlap check for good.
            for outcome in ends:  # each once, not on every pass that fails again
                key = (outcome.job.id, outcome.job.attempts)
                if key not in self._refused:
                    self._refused.add(key)
                    log.error(
                        "job result not recorded; will retry",
                        extra=fields(**_job_fields(outcome.job), error=str(exc)),
                    )
            raise
        except Exception:
            if not ends:
                raise
            # Not the store refusing: one end the batch cannot take (a bug) must not hold up
            # the others, or every later claim. Each on its own; one that fails so is dropped.
            log.exception("job results not written together; writing them one at a time")
            kept = [o for o in ends if not self._store_one(o)]
            self.unrecorded = kept + self.unrecorded[len(ends) :]
            if kept:
                raise StoreError(f"{len(kept)} job result(s) not yet recorded") from None
            return self._store(now, free, busy, exclusive, limits)
        self._refused.clear()
        self.unrecorded = self.unrecorded[len(ends) :]
        # The claimed jobs start first: they are `running` in the store now, and an
        # announcement that fails (it may read the store) must not leave them never started.
        for job in claim.jobs:
            self._start(job, claim.event_types.get(job.event_id) if job.event_id else None)
        for outcome, written in zip(ends, claim.written, strict=True):
            if written:
                self._announce_safely(outcome)
            else:
                self._dropped(outcome)
        return claim.jobs

    def _announce_safely(self, outcome: _Outcome) -> None:
        """Announce a written end; one that fails is logged, never raised: the end is stored,
        and the pass's claimed jobs are already running."""
        try:
            self._announce(outcome)
        except Exception:
            log.exception(
                "job end stored but not announced", extra=fields(**_job_fields(outcome.job))
            )

    def _store_one(self, outcome: _Outcome) -> bool:
        """Write one end on its own: False if the store refused it (kept to retry)."""
        try:
            claim = self.store.record_and_claim([outcome.finished()], outcome.now, 0)
        except StoreError:
            return False
        except Exception:
            log.exception("job result dropped", extra=fields(**_job_fields(outcome.job)))
            return True
        if claim.written[0]:
            self._announce_safely(outcome)
        else:
            self._dropped(outcome)
        return True

    def _dropped(self, outcome: _Outcome) -> None:
        log.warning(
            "job result dropped: the attempt is no longer the running one",
            extra=fields(**_job_fields(outcome.job)),
        )

    def _store_last(self) -> None:
        """At shutdown, after the drain: write the ends still kept. Any that cannot be written
        leave their jobs `running`, and the next start runs them again (recover())."""
        if not self.unrecorded:
            return
        try:
            self._store(self.clock.now(), 0)
        except StoreError:
            log.error(
                "job result(s) not recorded at shutdown; they run again on the next start",
                extra=fields(count=len(self.unrecorded)),
            )

    def _time_based(self) -> tuple[frozenset[str], frozenset[str]]:
        """The time-based rules in force, and those of them that run one job at a time."""
        rules = self.rules()
        if self._timed is None or self._timed[0] is not rules:
            timed = frozenset(r.name for r in rules.rules if r.time_based)
            exclusive = frozenset(
                r.name for r in rules.rules if r.time_based and r.overlap is not OverlapPolicy.ALLOW
            )
            self._timed = (rules, timed, exclusive)
        return self._timed[1], self._timed[2]

    def _limits_in_force(self) -> LimitsInForce:
        """The rate limits and concurrency of the rules in force (recomputed when they change)."""
        rules = self.rules()
        if self._limits is None or self._limits[0] is not rules:
            self._limits = (rules, limits_in_force(rules))
        return with_busy(self._limits[1], self.runner.lingering.counts)

    def _start(self, job: Job, event_type: str | None) -> None:
        now = self.clock.now()
        task = asyncio.create_task(self._execute(job, event_type), name=f"job-{job.id}")
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

    async def _execute(self, job: Job, event_type: str | None) -> None:
        rules = self.rules()
        action = rules.actions.get(job.action)
        started = self.clock.now()
        if log.isEnabledFor(logging.DEBUG):  # the fields cost more than the line when it is off
            log.debug("job started", extra=fields(**_job_fields(job)))
        try:
            try:
                if action is None:
                    result = ActionResult(
                        Outcome.PERMANENT,
                        f"action {job.action!r} is not defined in the loaded rules",
                    )
                else:
                    result = await self.runner.run(action, self._context(job, event_type))
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
                    self.unrecorded.append(_Outcome(job, result, now, killed(job, now), ms))
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

    def _context(self, job: Job, event_type: str | None) -> ActionContext:
        """What the action is told; `event_type` came with the claim (None: no event, or gone)."""
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
        result = _without_secrets(result, rules.secrets, self._redact)
        policy = retry_policy_for(rules, job)
        notify = failure_action_for(rules, job)
        verdict = after_attempt(job, result, policy, now, self.rng, end, notify)
        # By the injected clock, like everything else; a clock stepped back reads as 0.
        ms = max(0, (now - started) // timedelta(milliseconds=1)) if started else None
        self.unrecorded.append(_Outcome(job, result, now, verdict, ms, started))

    def _announce(self, outcome: _Outcome) -> None:
        """Log and publish how a stored attempt ended (`job.succeeded`, or `job.failed` and
        where it went)."""
        job, result, verdict = outcome.job, outcome.result, outcome.verdict
        status = verdict.status
        # A success is the common case and needs no one's attention: its line is debug (the
        # attempt, its duration and output are stored; /metrics counts it). The rest stay info.
        level = logging.DEBUG if status is JobStatus.SUCCEEDED else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "job finished",
                extra=fields(
                    **_job_fields(job),
                    outcome=str(result.outcome),
                    status=str(status),
                    duration_ms=outcome.duration_ms,
                    retry_at=verdict.retry_at.isoformat() if verdict.retry_at else None,
                    error=result.error,
                ),
            )
        if verdict.notice is not None:
            log.info("job %s: on_failure action %r queued", job.id, verdict.notice.action)
            self.wake.set()
        ids = {"job_id": job.id, "rule": job.rule, "event_id": job.event_id}
        duration = _ms(outcome.now - outcome.started) if outcome.started else None
        if status is JobStatus.SUCCEEDED:
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
        if status is JobStatus.DEAD:
            self.publish("job.dead", **ids, attempt=job.attempts, error=result.error)
        elif status in (JobStatus.RETRYING, JobStatus.PENDING):
            self.publish(
                "job.retrying",
                **ids,
                attempt=job.attempts,
                error=result.error,
                next_at=verdict.perform_at.isoformat(),
            )
        if status in (JobStatus.DEAD, JobStatus.CANCELLED):  # its chain went with it
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


def _without_secrets(
    result: ActionResult, secrets: frozenset[str], redact: Redactor
) -> ActionResult:
    """The result with every ${VAR} value of the rules hidden: a server that echoes a header
    back must not put it in the stored error, the watch stream or an on_failure payload."""
    if not secrets:
        return result
    return replace(
        result,
        error=redact(result.error) if result.error else result.error,
        output=redact(result.output) if result.output else result.output,
        stderr=redact(result.stderr) if result.stderr else result.stderr,
    )
