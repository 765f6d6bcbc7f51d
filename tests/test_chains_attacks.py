"""Attacks on chains (issue 8 part 2) beyond tests/test_chains.py: retention against `dlq retry`
revival, random outcomes against "never before its parent succeeded" and "nothing waits forever",
and `jobs cancel --rule --status blocked`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from timeos.clock import FakeClock
from timeos.daemon.service import Service
from timeos.engine import Limits, Retention, after_attempt, prune_plan, retry_policy_for
from timeos.model import (
    Action,
    ActionKind,
    ActionResult,
    EventTrigger,
    JobStatus,
    Outcome,
    PythonSpec,
    RetryPolicy,
    Rule,
    RuleSet,
)
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _act(name: str, attempts: int = 1) -> Action:
    return Action(
        name,
        ActionKind.PYTHON,
        PythonSpec(f"t:{name}", lambda payload, ctx: None),
        retry=RetryPolicy(max_attempts=attempts),
    )


CHAIN = RuleSet(
    (
        Rule("pay", EventTrigger("paid"), "charge", then=("receipt", "ledger")),
        Rule("thank", EventTrigger("paid", offset=timedelta(minutes=5)), "mail", after="pay"),
    ),
    {n: _act(n, 2) for n in ("charge", "receipt", "ledger", "mail")},
)


class Rig:
    def __init__(self, store: SqliteStore, rules: RuleSet = CHAIN) -> None:
        self.store, self.rules, self.clock = store, rules, FakeClock(T0)
        self.service = Service(
            store=store,
            clock=self.clock,
            rules=rules,
            rule_paths=[Path("rules.yaml")],
            loader=lambda paths: rules,
            limits=Limits(),
            on_change=lambda: None,
            info={"version": "test", "pid": 1},
        )

    def finish(self, job, outcome: Outcome):
        now = self.clock.now()
        result = ActionResult(outcome, None if outcome is Outcome.SUCCEEDED else "boom")
        verdict = after_attempt(
            job, result, retry_policy_for(self.rules, job), now, random.Random(1)
        )
        return self.store.finish(job, result, now, verdict)


@pytest.fixture
def rig(backend, tmp_path):
    store = backend.open(tmp_path / "t.db")
    yield Rig(store)
    store.close()


def test_retention_keeps_a_dead_parents_cancelled_chain_so_dlq_retry_can_revive_it(rig) -> None:
    charge, receipt, ledger, thank = rig.service.emit("paid", {}).job_ids
    (job,) = rig.store.claim_due(T0, 10)
    rig.finish(job, Outcome.PERMANENT)  # dead: the chain is cancelled
    assert rig.store.get_job(receipt).status is JobStatus.CANCELLED
    rig.clock.advance(timedelta(days=60))  # past the 30 days cancelled jobs are kept
    plan = prune_plan(Retention(), rig.rules, rig.clock.now())
    while rig.store.prune_batch(plan, 500)[1]:
        pass
    rig.service.dlq_retry(charge)  # "this chain should still happen"
    statuses = [rig.store.get_job(i).status for i in (receipt, ledger, thank)]
    assert statuses == [JobStatus.BLOCKED] * 3


def test_random_outcomes_never_run_a_child_before_its_parent_and_nothing_waits_forever(
    rig,
) -> None:
    rng = random.Random(8)
    for _ in range(30):
        rig.service.emit("paid", {})
    for _ in range(400):
        rig.clock.advance(timedelta(minutes=rng.choice([0, 1, 5])))
        now = rig.clock.now()
        for job in rig.store.claim_due(now, rng.randint(1, 5)):
            for parent in job.depends_on:
                assert rig.store.get_job(parent).status is JobStatus.SUCCEEDED, job
            outcome = rng.choice([Outcome.SUCCEEDED] * 4 + [Outcome.FAILED, Outcome.PERMANENT])
            rig.finish(job, outcome)
        roll = rng.random()
        if roll < 0.05:
            dead = rig.store.list_jobs(status=JobStatus.DEAD, limit=5)
            if dead:
                rig.service.dlq_retry(rng.choice(dead).id)
        elif roll < 0.08:
            waiting = rig.store.list_jobs(status=JobStatus.PENDING, limit=5)
            if waiting:
                rig.service.cancel([rng.choice(waiting).id])
    # Drain: everything ends (succeeded, cancelled or dead); nothing is blocked for good.
    for _ in range(200):
        rig.clock.advance(timedelta(hours=1))
        for job in rig.store.claim_due(rig.clock.now(), 100):
            rig.finish(job, Outcome.SUCCEEDED)
    counts = rig.store.counts_by_status()
    assert counts["blocked"] == counts["pending"] == counts["retrying"] == 0, counts
    for job in rig.store.list_jobs(status=JobStatus.CANCELLED, limit=10_000):
        for parent in job.depends_on:
            status = rig.store.get_job(parent).status
            assert status is not JobStatus.SUCCEEDED or job.last_error is None, job


def test_cancel_by_rule_and_status_blocked_takes_only_blocked_jobs_and_their_chains(rig) -> None:
    first = rig.service.emit("paid", {}).job_ids
    out = rig.service.cancel_matching(rule="pay", status="blocked", event_id=None, kill=False)
    assert out["cancelled"] == 2 and set(out["ids"]) == set(first[1:3])
    assert rig.store.get_job(first[0]).status is JobStatus.PENDING
    thank = rig.store.get_job(first[3])
    assert thank.status is JobStatus.CANCELLED and first[2] in (thank.last_error or "")
    (job,) = rig.store.claim_due(T0, 10)
    rig.finish(job, Outcome.SUCCEEDED)  # its cancelled children stay cancelled
    assert rig.store.counts_by_status()["pending"] == 0


def test_a_deleted_dead_parent_lets_its_cancelled_chain_be_pruned(rig) -> None:
    charge, *rest = rig.service.emit("paid", {}).job_ids
    (job,) = rig.store.claim_due(T0, 10)
    rig.finish(job, Outcome.PERMANENT)
    rig.clock.advance(timedelta(days=60))
    plan = prune_plan(Retention(), rig.rules, rig.clock.now())
    assert rig.store.count_prunable(plan).jobs == 0
    rig.service.dlq_delete(charge)
    for _ in range(3):  # one generation of the chain per pass
        rig.store.prune_batch(plan, 500)
    assert rig.store.count_jobs() == 0


def test_after_itself_and_a_cross_file_cycle_are_each_reported_once(tmp_path) -> None:
    from timeos.errors import RulesError
    from timeos.rules.loader import load_rules

    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(
        "actions:\n  m: {command: [/bin/true]}\nrules:\n"
        "  - {name: a, on_event: x, perform: m, after: b}\n"
    )
    two.write_text(
        "rules:\n"
        "  - {name: b, on_event: x, perform: m, after: a}\n"
        "  - {name: c, on_event: x, perform: m, after: c}\n"
    )
    with pytest.raises(RulesError) as caught:
        load_rules([one, two], {}, import_python=False)
    assert str(caught.value).splitlines() == [
        f"{one}:4:47: rule 'a': after: cycle a -> b -> a",
        f"{two}:3:47: rule 'c': after names the rule itself",
    ]


def test_a_chain_whose_rule_and_action_a_reload_removed_still_ends(rig) -> None:
    """Jobs are snapshots: after a reload drops `thank` and its action, the blocked job is still
    released by its parent, then ends dead (its action is gone), never waiting forever."""
    import asyncio

    from timeos.actions import ActionRunner
    from timeos.daemon.scheduler import Scheduler

    charge, receipt, ledger, thank = rig.service.emit("paid", {}).job_ids
    pay_only = RuleSet(
        (CHAIN.rules[0],), {n: CHAIN.actions[n] for n in ("charge", "receipt", "ledger")}
    )
    runner = ActionRunner(environ={}, emitter=None)  # type: ignore[arg-type]
    scheduler = Scheduler(store=rig.store, clock=rig.clock, runner=runner, rules=lambda: pay_only)

    async def go() -> None:
        for _ in range(20):
            rig.clock.advance(timedelta(minutes=1))
            scheduler._tick(rig.clock.now())
            if scheduler.running:
                await asyncio.gather(*scheduler.running.values())

    asyncio.run(go())
    statuses = [rig.store.get_job(i).status for i in (charge, receipt, ledger, thank)]
    assert statuses == [JobStatus.SUCCEEDED] * 3 + [JobStatus.DEAD]
    assert "not defined" in (rig.store.get_job(thank).last_error or "")
