"""`timeos cleanup` / POST /v1/cleanup, and health for monitors: the lateness component, 503 when
not healthy, and `timeos health` exit codes 0/1/2."""

from __future__ import annotations

import json
import textwrap
from datetime import timedelta

import pytest
from harness import Daemon, cli, wait_until
from test_api_routes import Api
from test_client import reply, serve  # noqa: F401  (a fixture)

from timeos.model import ActionResult, JobStatus, Outcome, Verdict

KEYS = ["dry_run", "events", "jobs", "attempts", "occurrences"]


@pytest.fixture
def api(tmp_path):
    a = Api(tmp_path)
    yield a
    a.store.close()


def _ran(api: Api, status: JobStatus = JobStatus.SUCCEEDED) -> str:
    """A signup whose `welcome` job ran to `status` now; the follow-up job stays pending."""
    event_id = api.ok("POST", "/v1/events", 201, json={"type": "user_signup"})["id"]
    (job,) = api.store.claim_due(api.clock.now(), 1, blocked=["follow-up"])
    result = ActionResult(Outcome.SUCCEEDED if status is JobStatus.SUCCEEDED else Outcome.FAILED)
    api.store.finish(job, result, api.clock.now(), Verdict(status, job.perform_at, 1, 0))
    return event_id


# ---- lateness and 503 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late", "status"),
    [
        (timedelta(0), "healthy"),
        (timedelta(seconds=60), "healthy"),
        (timedelta(seconds=61), "degraded"),
    ],
    ids=["due-now", "at-the-threshold", "past-it"],
)
def test_lateness_degrades_when_a_waiting_job_is_overdue_past_a_minute(api, late, status) -> None:
    api.ok("POST", "/v1/events", 201, json={"type": "user_signup"})  # `welcome` due now
    api.clock.advance(late)
    response = api.request("GET", "/v1/health")
    body = response.json()
    assert body["components"]["lateness"]["status"] == status
    assert body["components"]["lateness"]["seconds"] == late.total_seconds()
    assert body["status"] == status
    assert response.status_code == (200 if status == "healthy" else 503)


def test_nothing_overdue_is_healthy_lateness_of_zero(api) -> None:
    lateness = api.ok("GET", "/v1/health")["components"]["lateness"]
    assert lateness == {"status": "healthy", "message": "no waiting job is overdue", "seconds": 0.0}


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [("healthy", 200, 0), ("degraded", 503, 1), ("unhealthy", 503, 2)],
    ids=["healthy", "degraded", "unhealthy"],
)
def test_timeos_health_exits_0_1_2_and_prints_the_503_body(serve, status, code, exit_code):  # noqa: F811
    body = {"status": status, "components": {}, "jobs": {}}
    client, _ = serve(reply(code, body))
    result = cli("health", "--json", "--socket", str(client.socket_path))
    assert result.returncode == exit_code, result.stderr
    assert json.loads(result.stdout) == body


# ---- cleanup through the API ------------------------------------------------------------------


def test_cleanup_removes_only_what_retention_no_longer_keeps_and_dry_run_counts_it(api) -> None:
    _ran(api)
    api.clock.advance(timedelta(days=31))
    dry = api.ok("POST", "/v1/cleanup", json={"dry_run": True})
    # The follow-up job is still pending (due 2 days after the signup, long ago): its event stays.
    assert dry == {"dry_run": True, "events": 0, "jobs": 1, "attempts": 1, "occurrences": 0}
    assert list(dry) == KEYS
    assert api.store.count_jobs() == 2
    done = api.ok("POST", "/v1/cleanup", json={})
    assert done == {**dry, "dry_run": False}
    assert [j.rule for j in api.store.list_jobs()] == ["follow-up"]


@pytest.mark.parametrize(
    ("body", "counts"),
    [
        ({"older_than": "1h", "statuses": ["dead"]}, {"jobs": 1, "attempts": 1}),
        ({"older_than": "1h", "events": True}, {"events": 0}),  # its dead job still needs it
        ({"older_than": "1h"}, {}),  # dead jobs are not among the default statuses
    ],
    ids=["dead-with-status", "events-only", "default-statuses"],
)
def test_cleanup_chooses_kinds_by_status_and_events(api, body, counts) -> None:
    _ran(api, JobStatus.DEAD)
    api.clock.advance(timedelta(hours=2))
    result = api.ok("POST", "/v1/cleanup", json=body)
    assert result == {
        "dry_run": False,
        "events": 0,
        "jobs": 0,
        "attempts": 0,
        "occurrences": 0,
        **counts,
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"statuses": ["pending"]}, "cannot clean up pending jobs"),
        ({"statuses": ["dead"]}, "dead jobs are kept until deleted; give --older-than"),
        ({"older_than": "soon"}, "older_than: bad duration 'soon'"),
        ({"dry_run": True, "vacuum": True}, "--vacuum with --dry-run"),
        ({"events": "yes"}, "events must be true or false"),
    ],
    ids=["waiting", "dead-needs-older-than", "bad-duration", "dry-vacuum", "not-a-bool"],
)
def test_cleanup_refuses_what_it_must_not_do(api, body, message) -> None:
    assert api.error("POST", "/v1/cleanup", 400, "usage", json=body).startswith(message)


def test_cleanup_vacuum_gives_the_space_back(api) -> None:
    for _ in range(200):
        api.ok("POST", "/v1/events", 201, json={"type": "other", "payload": {"x": "y" * 2000}})
    api.clock.advance(timedelta(days=91))
    before = api.store.file_bytes()
    result = api.ok("POST", "/v1/cleanup", json={"events": True, "vacuum": True})
    assert result["events"] == 200
    assert api.store.file_bytes() < before / 4


# ---- end to end -------------------------------------------------------------------------------


def test_timeos_cleanup_end_to_end_with_per_rule_retention(tmp_path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        textwrap.dedent(
            """
            actions:
              ok: {command: ["true"]}
            rules:
              - {name: short, on_event: ping, perform: ok, retention: 1d}
              - {name: long, on_event: ping, perform: ok}
            """
        )
    )
    d = Daemon(tmp_path, rules, fake_clock="2026-03-02T09:00:00Z").start()
    try:
        jobs = d.cli_json("emit", "ping")["jobs"]
        for job_id in jobs:
            d.wait_job(job_id, "succeeded")
        d.advance("2d")
        # The daemon's own pass (due a minute after start) applies the rule's 1-day retention.
        wait_until(lambda: [j["rule"] for j in d.cli_json("jobs", "list")] == ["long"])
        dry = d.cli("cleanup", "--older-than", "1d", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout) == {
            "dry_run": True, "events": 1, "jobs": 1, "attempts": 1, "occurrences": 0,
        }  # fmt: skip
        assert d.cli_json("cleanup") == {  # the configured 30 days keep the `long` job
            "dry_run": False, "events": 0, "jobs": 0, "attempts": 0, "occurrences": 0,
        }  # fmt: skip
        people = d.cli("cleanup", "--older-than", "1d", "--status", "succeeded", "--events")
        assert people.returncode == 0, people.stderr
        assert people.stdout.splitlines()[1:] == [
            "events\t1", "jobs\t1", "attempts\t1", "occurrences\t0",
        ]  # fmt: skip
        assert d.cli_json("jobs", "list") == []
        bad = d.cli("cleanup", "--status", "pending")
        assert bad.returncode == 2 and "cannot clean up pending jobs" in bad.stderr
        assert d.cli("cleanup", "--older-than", "soon").returncode == 2
    finally:
        d.stop()


def test_a_dry_run_counts_the_events_its_dead_jobs_stop_holding(api) -> None:
    # Removing a dead job frees its event in the same run; the dry run used to count the event
    # as still held (a review saw 4 counted and 7 removed).
    _ran(api, JobStatus.DEAD)
    (follow_up,) = api.store.list_jobs(status=JobStatus.PENDING)
    api.store.cancel(follow_up.id, api.clock.now())  # now only the dead job holds the event
    api.clock.advance(timedelta(hours=2))
    body = {"older_than": "1h", "statuses": ["dead"], "events": True}
    dry = api.ok("POST", "/v1/cleanup", json={**body, "dry_run": True})
    done = api.ok("POST", "/v1/cleanup", json=body)
    assert done == {**dry, "dry_run": False}
    assert done["jobs"] == 1 and done["events"] == 1
