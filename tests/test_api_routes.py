"""The HTTP API driven in-process through httpx2's ASGI transport: no socket, no subprocess."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from harness import verdict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timeos.clock import FakeClock
from timeos.daemon.api import build_app
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.model import ActionResult, JobStatus, Outcome
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
RULES_YAML = """\
timezone: UTC
actions:
  act: {command: [cat]}
rules:
  - {name: welcome, on_event: user_signup, perform: act}
  - {name: follow-up, on_event: user_signup, offset: 2d, perform: act, retry: {max_attempts: 2}}
  - name: nightly
    cron: "30 2 * * *"
    timezone: America/New_York
    perform: act
"""
MAX_PAYLOAD = 2048


class Api:
    """A Service over a real store in tmp_path, and its Starlette app called in-process."""

    def __init__(self, tmp: Path, store: SqliteStore | None = None) -> None:
        self.rules_path = tmp / "rules.yaml"
        self.rules_path.write_text(RULES_YAML)
        self.store = store or SqliteStore(tmp / "t.db")
        self.clock = FakeClock(T0)
        self.service = Service(
            store=self.store,
            clock=self.clock,
            rules=load_rules([self.rules_path], {}),
            rule_paths=[self.rules_path],
            loader=lambda paths: load_rules(paths, {}),
            limits=Limits(max_payload_bytes=MAX_PAYLOAD, max_list_limit=100),
            schedule=lambda rule: (
                {"next_fire": "2026-03-03T07:30:00+00:00"} if rule.time_based else {}
            ),
        )
        self.app = build_app(self.service, [Route("/v1/_test/ping", _ping, methods=["GET"])])

    def request(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        return asyncio.run(_send(self.app, method, path, **kwargs))

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json()

    def error(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> str:
        """Assert the JSON error envelope; return its message."""
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        return error["message"]


async def _send(app: Starlette, method: str, path: str, **kwargs: Any) -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://timeosd") as client:
        return await client.request(method, path, **kwargs)


async def _ping(request: Request) -> JSONResponse:
    return JSONResponse({"pong": True})


@pytest.fixture
def api(backend, tmp_path):
    # Every route on each store backend: the same answers from SQLite and PostgreSQL.
    a = Api(tmp_path, backend.open(tmp_path / "t.db"))
    yield a
    a.store.close()


def _signup(api: Api, **body: Any) -> dict[str, Any]:
    return api.ok("POST", "/v1/events", 201, json={"type": "user_signup", **body})


def _dead_follow_up(api: Api) -> str:
    event_id = _signup(api, payload={"user_id": "1"})["id"]
    job = api.store.list_jobs(rule="follow-up", event_id=event_id)[0]
    (claimed,) = api.store.claim_due(job.perform_at, 1, blocked=["welcome"])
    api.store.finish(
        claimed, ActionResult(Outcome.FAILED, "boom"), T0, verdict(claimed, JobStatus.DEAD)
    )
    return job.id


# ---- events -----------------------------------------------------------------------------------


def test_post_event_answers_201_with_its_jobs_then_200_for_a_duplicate(api):
    body = {"payload": {"user_id": "1"}, "idempotency_key": "k1"}
    first = _signup(api, **body)
    assert first["duplicate"] is False and len(first["jobs"]) == 2
    again = api.ok("POST", "/v1/events", 200, json={"type": "user_signup", **body})
    assert again == {
        "id": first["id"],
        "duplicate": True,
        "jobs": [],
        "cancelled": [],
        "debounced": [],
    }


def test_post_event_with_the_same_key_and_another_payload_is_409(api):
    _signup(api, payload={"user_id": "1"}, idempotency_key="k1")
    body = {"type": "user_signup", "payload": {"user_id": "2"}, "idempotency_key": "k1"}
    assert "k1" in api.error("POST", "/v1/events", 409, "idempotency_conflict", json=body)


def test_post_event_honours_occurred_at(api):
    event_id = _signup(api, occurred_at="2026-03-01T08:00:00Z")["id"]
    event = api.ok("GET", f"/v1/events/{event_id}")
    assert event["occurred_at"] == "2026-03-01T08:00:00+00:00"
    assert event["received_at"] == "2026-03-02T09:00:00+00:00"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "request body"),
        (b"[1, 2]", "object"),
        (b'{"payload": {}}', "needs a string field 'type'"),
        (b'{"type": "e", "payload": [1]}', "payload must be a JSON object, got list"),
        (b'{"type": "e", "payload": "x"}', "got str"),
        (b'{"type": "e", "idempotency_key": 7}', "idempotency_key must be a string"),
        (b'{"type": "e", "occurred_at": "yesterday"}', "occurred_at"),
        (b'{"type": "has space"}', "event type"),
        (b'{"type": "e", "payload": ' + b"[" * 80 + b"]" * 80 + b"}", "levels deep"),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "no-type",
        "payload-list",
        "payload-string",
        "key-not-string",
        "bad-occurred-at",
        "bad-type",
        "too-deep",
    ],
)
def test_bad_event_bodies_are_400_with_the_error_envelope(api, content, fragment):
    message = api.error("POST", "/v1/events", 400, "invalid_payload", content=content)
    assert fragment in message
    assert api.store.list_events() == []


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"type": "e", "payload": {"blob": "x" * MAX_PAYLOAD}}).encode(),
        b'{"type": "e", "pad": "' + b"x" * (MAX_PAYLOAD + 70 * 1024) + b'"}',
    ],
    ids=["payload-over-limit", "body-over-cap"],
)
def test_oversize_events_are_400_and_name_the_limit(api, content):
    message = api.error("POST", "/v1/events", 400, "invalid_payload", content=content)
    assert "over the limit" in message
    assert api.store.list_events() == []


def test_list_events_filters_by_type_and_show_lists_its_jobs(api):
    signup = _signup(api)
    api.clock.advance(timedelta(seconds=1))
    view = api.ok("POST", "/v1/events", 201, json={"type": "page_view"})
    assert [e["id"] for e in api.ok("GET", "/v1/events")["events"]] == [view["id"], signup["id"]]
    only = api.ok("GET", "/v1/events", params={"type": "user_signup"})["events"]
    assert [e["id"] for e in only] == [signup["id"]]
    assert api.ok("GET", "/v1/events", params={"limit": 1})["events"][0]["id"] == view["id"]
    shown = api.ok("GET", f"/v1/events/{signup['id']}")
    assert sorted(shown["jobs"]) == sorted(signup["jobs"])
    assert shown["type"] == "user_signup" and shown["payload"] == {}
    api.error("GET", "/v1/events/nope", 404, "not_found")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": "abc"}, "'limit' must be a whole number"),
        ({"limit": "0"}, "limit must be 1..100, got 0"),
        ({"limit": "101"}, "got 101"),
        ({"offset": "-1"}, "'offset' must be a whole number"),
        ({"limit": "9" * 10}, "below 10^9"),
    ],
    ids=["not-a-number", "zero", "over-max", "negative-offset", "huge"],
)
def test_bad_list_parameters_are_400_usage_errors(api, params, fragment):
    assert fragment in api.error("GET", "/v1/jobs", 400, "usage", params=params)


# ---- jobs -------------------------------------------------------------------------------------


def test_list_jobs_filters_by_status_rule_and_event(api):
    first = _signup(api)["id"]
    second = _signup(api)["id"]
    api.store.claim_due(T0, 10)  # both "welcome" jobs start running

    def jobs(**params: str) -> list[tuple[str, str, str]]:
        found = api.ok("GET", "/v1/jobs", params=params)["jobs"]
        return sorted((j["rule"], j["status"], j["event_id"]) for j in found)

    assert jobs(status="running") == sorted([("welcome", "running", e) for e in (first, second)])
    assert jobs(rule="follow-up", event=second) == [("follow-up", "pending", second)]
    assert len(jobs(event=first)) == 2
    assert "unknown status" in api.error("GET", "/v1/jobs?status=done", 400, "usage")


def test_job_detail_includes_the_attempt_history(api):
    _signup(api)
    (job,) = api.store.claim_due(T0, 1)
    api.store.finish(
        job,
        ActionResult(Outcome.FAILED, "boom", "out", stderr="err"),
        T0 + timedelta(seconds=2),
        verdict(job, JobStatus.RETRYING, T0 + timedelta(minutes=1)),
    )
    shown = api.ok("GET", f"/v1/jobs/{job.id}")
    assert (shown["status"], shown["attempts"], shown["last_error"]) == ("retrying", 1, "boom")
    assert shown["perform_at"] == "2026-03-02T09:01:00+00:00"
    assert shown["attempt_history"] == [
        {
            "number": 1,
            "started_at": "2026-03-02T09:00:00+00:00",
            "ended_at": "2026-03-02T09:00:02+00:00",
            "outcome": "failed",
            "error": "boom",
            "output": "out",
            "stderr": "err",
            "delayed_ms": None,
            "delayed_by": None,
        }
    ]
    listed = api.ok("GET", "/v1/jobs", params={"rule": "welcome"})["jobs"][0]
    assert "attempt_history" not in listed  # only the detail view carries it
    api.error("GET", "/v1/jobs/nope", 404, "not_found")


def test_cancel_answers_per_id(api):
    _signup(api)
    (running,) = api.store.claim_due(T0, 1)
    (waiting,) = api.store.list_jobs(status=JobStatus.PENDING)
    results = api.ok("POST", "/v1/jobs/cancel", json={"ids": [running.id, waiting.id]})["results"]
    assert [(r["id"], r["cancelled"], r["status"]) for r in results] == [
        (running.id, False, "running"),
        (waiting.id, True, "cancelled"),
    ]
    assert "running" in results[0]["error"] and results[1]["error"] is None


@pytest.mark.parametrize(
    "body", [{}, {"ids": []}, {"ids": "j1"}, {"ids": [1]}], ids=["none", "empty", "str", "int"]
)
def test_cancel_without_a_list_of_ids_is_400(api, body):
    assert "'ids'" in api.error("POST", "/v1/jobs/cancel", 400, "usage", json=body)


def test_dlq_lists_retries_and_deletes_dead_jobs(api):
    job_id = _dead_follow_up(api)
    other = _dead_follow_up(api)
    assert {j["id"] for j in api.ok("GET", "/v1/dlq")["jobs"]} == {job_id, other}
    retried = api.ok("POST", f"/v1/dlq/{job_id}/retry")
    assert (retried["status"], retried["attempts"], retried["max_attempts"]) == ("pending", 1, 3)
    assert [j["id"] for j in api.ok("GET", "/v1/dlq")["jobs"]] == [other]
    api.error("DELETE", f"/v1/dlq/{job_id}", 409, "invalid_state")  # pending again
    assert api.ok("DELETE", f"/v1/dlq/{other}") == {"id": other, "deleted": True}
    api.error("GET", f"/v1/jobs/{other}", 404, "not_found")
    api.error("POST", "/v1/dlq/nope/retry", 404, "not_found")


# ---- rules ------------------------------------------------------------------------------------


def test_rules_list_and_show_merge_the_planners_schedule(api):
    rules = api.ok("GET", "/v1/rules")["rules"]
    assert [r["name"] for r in rules] == ["welcome", "follow-up", "nightly"]
    nightly = api.ok("GET", "/v1/rules/nightly")
    assert nightly["trigger"] == "cron" and nightly["cron"] == "30 2 * * *"
    assert nightly["timezone"] == "America/New_York"
    assert nightly["next_fire"] == "2026-03-03T07:30:00+00:00"
    follow_up = api.ok("GET", "/v1/rules/follow-up")
    assert (follow_up["trigger"], follow_up["offset"]) == ("event", "2d")
    assert follow_up["retry"]["max_attempts"] == 2 and "next_fire" not in follow_up
    assert "ghost" in api.error("GET", "/v1/rules/ghost", 404, "not_found")


def test_rule_history_and_next(api):
    assert api.ok("GET", "/v1/rules/nightly/history") == {"rule": "nightly", "occurrences": []}
    api.error("GET", "/v1/rules/ghost/history", 404, "not_found")
    params = {"after": "2026-03-07T12:00:00Z", "count": 2}
    answer = api.ok("GET", "/v1/rules/nightly/next", params=params)
    assert [(f["local"], f["note"]) for f in answer["fires"]] == [
        ("2026-03-08T03:00:00-04:00", "moved from 02:30 by the DST gap"),
        ("2026-03-09T02:30:00-04:00", None),
    ]
    assert "events" in api.error("GET", "/v1/rules/welcome/next", 400, "usage")
    api.error("GET", "/v1/rules/nightly/next?after=soon", 400, "usage")


def test_reload_answers_the_rule_count_and_a_bad_file_is_422_with_problems(api):
    assert api.ok("POST", "/v1/reload") == {"reloaded": True, "rules": 3, "warnings": []}
    api.rules_path.write_text(RULES_YAML.replace("perform: act}", "perform: nope}", 1))
    response = api.request("POST", "/v1/reload")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "rules_invalid"
    assert len(error["problems"]) == 1 and "nope" in error["problems"][0]
    assert error["problems"][0].startswith(f"{api.rules_path}:5:")
    assert len(api.ok("GET", "/v1/rules")["rules"]) == 3  # the old rules keep running


# ---- status, errors, schema -------------------------------------------------------------------


def test_status_and_health(api, backend):
    status = api.ok("GET", "/v1/status")
    assert status["up"] is True and status["rules"] == 3 and status["now"] == T0.isoformat()
    health = api.ok("GET", "/v1/health")
    assert health["status"] == "healthy"
    shared = {"daemons"} if backend.name == "postgres" else set()  # tests/test_fleet.py
    assert set(health["components"]) == {"database", "rules", "lateness"} | shared


def test_unknown_route_is_404_with_the_error_envelope(api):
    message = api.error("GET", "/v1/nothing", 404, "not_found")
    assert message == "no API route GET /v1/nothing"


def test_wrong_method_on_a_known_route_answers_405_naming_the_allowed_ones(api):
    message = api.error("DELETE", "/v1/events", 405, "method_not_allowed")
    assert message == "DELETE is not allowed on /v1/events; allowed: GET, HEAD, POST"


class BrokenStore(SqliteStore):
    """A store with a bug: an exception that is not a TimeOSError escapes it."""

    def list_events(self, **kwargs: Any) -> Any:
        raise RuntimeError("cursor gone")


def test_an_unexpected_exception_is_a_500_envelope_and_the_app_keeps_serving(tmp_path):
    api = Api(tmp_path, BrokenStore(tmp_path / "t.db"))
    message = api.error("GET", "/v1/events", 500, "error")
    assert message == "internal error: RuntimeError: cursor gone"
    assert api.ok("GET", "/v1/status")["up"] is True
    api.store.close()


def test_extra_routes_are_served(api):
    assert api.ok("GET", "/v1/_test/ping") == {"pong": True}


def test_openapi_schema_parses_and_lists_every_route(api):
    schema = api.ok("GET", "/openapi.json")
    assert schema["openapi"] == "3.1.0" and schema["info"]["title"] == "TimeOS"
    assert set(schema["paths"]["/v1/events"]) == {"get", "post"}
    assert schema["paths"]["/v1/events"]["post"]["summary"].startswith("Emit an event")
    assert "delete" in schema["paths"]["/v1/dlq/{id}"]
    assert "/v1/_test/clock" not in schema["paths"]


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs/", "/v1/events/", "/v1/rules/", "/v1/status/", "/v1/rules/nightly/history/"],
    ids=["jobs", "events", "rules", "status", "history"],
)
def test_a_trailing_slash_is_404_not_found_never_a_redirect(api, path):
    response = api.request("GET", path, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers
    assert response.json()["error"] == {"code": "not_found", "message": f"no API route GET {path}"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/jobs/a%2Fb", "no job with id 'a/b'"),
        ("/v1/jobs/a%2F", "no job with id 'a/'"),
        ("/v1/events/%2F", "no event with id '/'"),
        ("/v1/rules/a%2Fb/history", "no rule named 'a/b' is loaded"),
        ("/v1/rules/a%2Fb%252F", "no rule named 'a/b%2F' is loaded"),
        ("/v1/dlq/x%2Fy/retry", "no job with id 'x/y'"),
    ],
    ids=["job", "job-trailing", "event", "rule-history", "literal-percent", "dlq-retry"],
)
def test_an_id_holding_a_slash_stays_one_segment_and_is_not_found(api, path, message):
    assert api.error("POST" if path.endswith("retry") else "GET", path, 404, "not_found") == message


def test_a_number_too_long_is_400_without_pythons_hint(api):
    content = '{"type": "user_signup", "payload": {"n": ' + "9" * 5000 + "}}"
    message = api.error("POST", "/v1/events", 400, "invalid_payload", content=content)
    assert message == "request body: number too long (over 4300 digits)"
