"""Real timeosd processes sharing one PostgreSQL database: jobs emitted to either daemon run once,
by one of them, and a daemon killed with `kill -9` mid-run loses nothing when it comes back."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from harness import Daemon, wait_until
from stores import PG_URL, backend_fixture

RULES = """\
actions:
  record:
    command: ["./record.sh", "{runs}"]
    timeout: 30s
rules:
  - {{name: work, on_event: work, perform: record}}
"""
RECORD = '#!/bin/sh\necho "$TIMEOS_JOB_ID" >> "$1"\nsleep 0.3\n'


@pytest.fixture
def shared(request, tmp_path: Path):
    """A fresh schema on the test server, as a `--db` URL, and the rules every daemon loads."""
    request.param = "postgres"
    gen = backend_fixture(request)
    next(gen)  # skips (or fails under CI) without a server
    schema = f"e2e_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    runs = tmp_path / "runs.txt"
    runs.touch()
    script = tmp_path / "record.sh"
    script.write_text(RECORD)
    script.chmod(0o755)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(runs=runs))
    yield f"{PG_URL}?options=-csearch_path%3D{schema}", rules, runs
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _daemon(tmp: Path, name: str, url: str, rules: Path) -> Daemon:
    (tmp / name).mkdir()
    d = Daemon(tmp / name, rules, workers=3)
    d.db = url  # type: ignore[assignment]
    return d.start()


def _emit(d: Daemon, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        ids += d.client.call("POST", "/v1/events", {"type": "work"})["jobs"]
    return ids


def _succeeded(d: Daemon, ids: list[str]) -> bool:
    # 503 while degraded (a daemon killed on purpose stays listed): the counts are there too.
    counts = d.client.request("GET", "/v1/health", accept=(503,)).body["jobs"]
    return counts["succeeded"] == len(ids)


def test_two_daemons_share_the_work_and_run_each_job_once(shared, tmp_path):
    url, rules, runs = shared
    a, b = _daemon(tmp_path, "a", url, rules), _daemon(tmp_path, "b", url, rules)
    try:
        ids = _emit(a, 15) + _emit(b, 15)
        wait_until(lambda: _succeeded(a, ids), 60, "every job to succeed")
        ran = Counter(runs.read_text().split())
        assert sorted(ran) == sorted(ids) and set(ran.values()) == {1}
        health = b.client.call("GET", "/v1/health")
        daemons = health["components"]["database"]["daemons"]
        assert len(daemons) == 2 and all(d["alive"] for d in daemons)
    finally:
        a.stop()
        b.stop()


def test_a_daemon_killed_mid_run_reruns_only_what_it_was_running(shared, tmp_path):
    url, rules, runs = shared
    a, b = _daemon(tmp_path, "a", url, rules), _daemon(tmp_path, "b", url, rules)
    try:
        ids = _emit(a, 20)
        wait_until(lambda: len(runs.read_text().split()) >= 4, 30, "some jobs to start")
        a.kill9()  # its running jobs stay `running`, claimed by a
        a.start()  # the same socket: the same daemon id, so it recovers its own jobs
        wait_until(lambda: _succeeded(b, ids), 60, "every job to succeed")
        ran = Counter(runs.read_text().split())
        assert sorted(ran) == sorted(ids)  # none lost
        interrupted = set()
        for job in ids:
            history = b.client.call("GET", f"/v1/jobs/{job}")["attempt_history"]
            if any(x["outcome"] == "interrupted" for x in history):
                interrupted.add(job)
        assert interrupted  # the kill caught a run: recovery had something to do
        # Only a job the killed daemon was running ran again; nothing ran more than twice.
        assert {job for job, n in ran.items() if n > 1} <= interrupted
        assert max(ran.values()) <= 2
    finally:
        a.stop()
        b.stop()


TICK_RULES = """\
actions:
  noop:
    command: ["true"]
rules:
  - {name: tick, every: 1s, perform: noop, overlap: allow}
"""


def test_every_occurrence_of_a_1s_rule_fires_once_across_a_leader_kill(shared, tmp_path):
    url, _, _ = shared
    rules = tmp_path / "tick.yaml"
    rules.write_text(TICK_RULES)
    leader = _daemon(tmp_path, "a", url, rules)  # first to start: it takes the lead
    follower = _daemon(tmp_path, "b", url, rules)

    def fired() -> list[str]:
        page = follower.client.call("GET", "/v1/rules/tick/history?limit=500")
        return [o["scheduled_for"] for o in page["occurrences"] if o["outcome"] == "fired"]

    try:
        wait_until(lambda: len(fired()) >= 3, 30, "the leader to fire")
        leader.kill9()
        before = len(fired())
        wait_until(lambda: len(fired()) >= before + 5, 30, "the follower to take the lead")
        page = follower.client.call("GET", "/v1/rules/tick/history?limit=500")
        seen = sorted(o["scheduled_for"] for o in page["occurrences"])
        assert len(seen) == len(set(seen))  # one record per occurrence
        assert all(o["outcome"] == "fired" for o in page["occurrences"])  # none missed
        instants = [datetime.fromisoformat(s) for s in seen]
        gaps = {b - a for a, b in zip(instants, instants[1:], strict=False)}
        assert gaps == {timedelta(seconds=1)}  # every second, none skipped across the kill
    finally:
        leader.stop()
        follower.stop()


SLOW_RULES = """\
actions:
  slow:
    command: ["./slow.sh", "{runs}"]
    timeout: 60s
rules:
  - {{name: slow, on_event: slow, perform: slow}}
"""


def test_the_leader_rescues_the_jobs_of_a_daemon_that_died_without_a_restart(shared, tmp_path):
    url, _, runs = shared
    script = tmp_path / "slow.sh"
    script.write_text('#!/bin/sh\necho "$TIMEOS_JOB_ID" >> "$1"\nsleep 2\n')
    script.chmod(0o755)
    rules = tmp_path / "slow.yaml"
    rules.write_text(SLOW_RULES.format(runs=runs))
    leader = _daemon(tmp_path, "a", url, rules)
    doomed = _daemon(tmp_path, "b", url, rules)
    try:
        ids = []
        for _ in range(8):
            ids += doomed.client.call("POST", "/v1/events", {"type": "slow"})["jobs"]
        wait_until(lambda: len(runs.read_text().split()) >= 5, 30, "both daemons to run jobs")
        doomed.kill9()  # never restarted: its running jobs wait for the leader's rescue
        # Lease 15 s, then the leader's next rescue pass (every 10 s), then a 2 s rerun.
        wait_until(lambda: _succeeded(leader, ids), 60, "every job to succeed")
        interrupted = [
            job
            for job in ids
            if any(
                x["outcome"] == "interrupted"
                for x in leader.client.call("GET", f"/v1/jobs/{job}")["attempt_history"]
            )
        ]
        assert interrupted  # b was running some when it died; the leader ran them again
    finally:
        leader.stop()
        doomed.stop()


def test_three_daemons_under_emit_load_lose_nothing_when_one_is_killed(shared, tmp_path):
    url, rules, runs = shared
    daemons = [_daemon(tmp_path, name, url, rules) for name in ("a", "b", "c")]
    ids: list[str] = []
    stop = threading.Event()

    def load() -> None:  # emits into the survivors, one event every 50 ms, until stopped
        n = 0
        while not stop.is_set():
            target = daemons[1 + n % 2]
            ids.extend(target.client.call("POST", "/v1/events", {"type": "work"})["jobs"])
            n += 1
            stop.wait(0.05)

    emitter = threading.Thread(target=load)
    try:
        ids += _emit(daemons[0], 10)
        emitter.start()
        wait_until(lambda: len(runs.read_text().split()) >= 8, 30, "all three to run jobs")
        daemons[0].kill9()  # mid-run, under load; never restarted
        wait_until(lambda: len(ids) >= 60, 30, "more load after the kill")
        stop.set()
        emitter.join(10)
        wait_until(lambda: _succeeded(daemons[1], ids), 90, "every job to succeed")
        ran = Counter(runs.read_text().split())
        assert set(ran) == set(ids)  # none lost
        for job, count in ran.items():
            if count > 1:  # run again only after the dead daemon's interrupted attempt
                history = daemons[1].client.call("GET", f"/v1/jobs/{job}")["attempt_history"]
                assert [x["outcome"] for x in history][:-1] == ["interrupted"] * (count - 1)
    finally:
        stop.set()
        for d in daemons:
            d.stop()


def test_health_degrades_naming_a_daemon_on_other_rules_until_it_reloads_the_same(shared, tmp_path):
    url, rules, _ = shared
    other = tmp_path / "other.yaml"
    other.write_text(rules.read_text() + "  - {name: extra, on_event: extra, perform: record}\n")
    a, b = _daemon(tmp_path, "a", url, rules), _daemon(tmp_path, "b", url, other)
    b_id = f"{socket.gethostname()}:{b.socket}"
    try:
        result = a.cli("health", "--json")
        assert result.returncode == 1, result.stderr  # degraded
        health = json.loads(result.stdout)
        daemons = health["components"]["daemons"]
        assert daemons["status"] == "degraded" and daemons["different_rules"] == [b_id]
        assert f"daemon {b_id} " in daemons["message"]
        listed = {d["id"]: d for d in health["components"]["database"]["daemons"]}
        assert len(listed) == 2 and all(d["alive"] for d in listed.values())
        assert listed[b_id]["fingerprint"] != daemons["fingerprint"]
        # The table a person reads names both daemons and their rules.
        table = a.cli("health")
        assert table.returncode == 1 and b_id in table.stdout and "heartbeat" in table.stdout
        # An empty list's hint reads the job counts from health, degraded (503) or not.
        dead = a.cli("jobs", "list", "--status", "dead")
        assert dead.returncode == 0 and "no job is dead" in dead.stderr, dead.stderr

        other.write_text(rules.read_text())
        assert b.cli("reload").returncode == 0
        assert a.cli("health").returncode == 0  # the same rules again: healthy
        b.stop()  # a clean stop leaves the table: still healthy, one daemon listed
        health = json.loads(a.cli("health", "--json").stdout)
        assert health["status"] == "healthy"
        a_id = f"{socket.gethostname()}:{a.socket}"
        assert [d["id"] for d in health["components"]["database"]["daemons"]] == [a_id]
    finally:
        a.stop()
        b.stop()
