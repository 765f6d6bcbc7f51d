"""The HTTP API in-process (ASGI, no socket): its OpenAPI document, its answers, 404 and 405."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from harness import verdict
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.applications import Starlette
from starlette.routing import Route

from timeos.clock import FakeClock
from timeos.daemon.api import build_app
from timeos.daemon.service import Service
from timeos.engine import Limits
from timeos.model import ActionResult, JobStatus, Outcome
from timeos.rules.loader import load_rules
from timeos.store.sqlite.store import SqliteStore

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday
API = Path(__file__).parent.parent / "timeos" / "daemon" / "api.py"

RULES = """
actions:
  noop:
    command: ["true"]
rules:
  - name: welcome
    on_event: user_signup
    perform: noop
    retry: {max_attempts: 1}
  - name: nightly
    cron: "0 3 * * *"
    timezone: Europe/Berlin
    perform: noop
"""


class Api:
    """One Service over a real SQLite store, served in-process through the ASGI interface."""

    def __init__(self, tmp: Path) -> None:
        rules = tmp / "rules.yaml"
        rules.write_text(textwrap.dedent(RULES))
        self.store = SqliteStore(tmp / "t.db")
        self.clock = FakeClock(T0)
        self.service = Service(
            store=self.store,
            clock=self.clock,
            rules=load_rules([rules], {}),
            rule_paths=[rules],
            loader=lambda paths: load_rules(paths, {}),
            limits=Limits(),
        )
        self.app: Starlette = build_app(self.service)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        async def go() -> httpx2.Response:
            transport = httpx2.ASGITransport(app=self.app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://timeos") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(go())

    def dead_job(self) -> str:
        """Emit an event whose job then fails for good; return the dead job's id."""
        job_id = self.call("POST", "/v1/events", json={"type": "user_signup"}).json()["jobs"][0]
        (job,) = self.store.claim_due(T0, 1)
        assert job.id == job_id
        self.store.finish(
            job, ActionResult(Outcome.PERMANENT, "boom"), T0, verdict(job, JobStatus.DEAD)
        )
        return job_id


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    yield a
    a.store.close()


def _document(api: Api) -> dict[str, Any]:
    response = api.call("GET", "/openapi.json")
    assert response.status_code == 200
    return response.json()


def _served(app: Starlette) -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.include_in_schema
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever GET is served
    }


def test_openapi_json_is_a_valid_openapi_3_1_document(api):
    doc = _document(api)
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises on the first violation


def test_every_served_route_is_in_the_document_and_every_operation_is_served(api):
    doc = _document(api)
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert documented == _served(api.app)
    assert len(documented) == 30
    assert api.call("HEAD", "/v1/status").status_code == 200  # one route per path keeps HEAD


def test_every_path_and_query_parameter_is_declared(api):
    doc = _document(api)
    for path, operations in doc["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, op in operations.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, f"{method.upper()} {path}"
    # Every query parameter the handlers read is declared on some operation.
    source = API.read_text()
    read = set(re.findall(r'query_params\.get\("(\w+)"|q\.get\("(\w+)"', source))
    read_names = {a or b for a, b in read} | set(
        re.findall(r'_int_param\(request, "(\w+)"', source)
    )
    declared = {
        p["name"]
        for ops in doc["paths"].values()
        for op in ops.values()
        for p in op.get("parameters", [])
        if p["in"] == "query"
    }
    assert (
        read_names
        == declared
        == {"type", "status", "rule", "event", "order", "limit", "offset"}
        | {
            "after",
            "count",
            "since",
            "until",
        }
    )


def test_every_error_response_uses_the_shared_error_envelope(api):
    doc = _document(api)
    envelope = doc["components"]["schemas"]["Error"]
    assert envelope["required"] == ["error"]
    assert envelope["properties"]["error"]["required"] == ["code", "message"]
    assert set(envelope["properties"]["error"]["properties"]) == {"code", "message", "problems"}
    for path, operations in doc["paths"].items():
        for op in operations.values():
            statuses = set(op["responses"])
            assert "500" in statuses, path
            for status, response in op["responses"].items():
                if (path, status) == ("/v1/health", "503"):
                    continue  # a monitor's answer, not an error: the Health body, checked below
                if int(status) >= 400:
                    assert response == {"$ref": f"#/components/responses/{status}"}
    unhealthy = doc["paths"]["/v1/health"]["get"]["responses"]["503"]
    assert unhealthy["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }
    for response in doc["components"]["responses"].values():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    assert "requestBody" in doc["paths"]["/v1/events"]["post"]
    assert "requestBody" in doc["paths"]["/v1/jobs/cancel"]["post"]


def test_every_answer_matches_the_schema_documented_for_its_status(api):
    doc = _document(api)
    dead = api.dead_job()
    dead_event = api.store.get_job(dead).event_id
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/events", {"json": {"type": "user_signup", "idempotency_key": "k"}}),
        ("POST", "/v1/events", {"json": {"type": "user_signup", "idempotency_key": "k"}}),
        ("POST", "/v1/events", {"json": {"payload": {}}}),
        ("POST", "/v1/events", {"json": {"type": "user_signup", "idempotency_key": "k",
                                         "payload": {"other": 1}}}),
        ("POST", "/v1/events/batch", {"json": {"events": [{"type": "user_signup"}]}}),
        ("POST", "/v1/events/batch", {"json": {"events": [{"type": "bad type"}]}}),
        ("GET", "/v1/events", {"params": {"limit": 5}}),
        ("GET", "/v1/events", {"params": {"since": "2026-01-01T00:00Z",
                                          "until": "2027-01-01T00:00Z"}}),
        ("POST", f"/v1/events/{dead_event}/replay", {"json": {"dry_run": True}}),
        ("POST", f"/v1/events/{dead_event}/replay", {}),
        ("POST", "/v1/events/NOPE/replay", {}),
        ("POST", "/v1/jobs/cancel-matching", {"json": {"rule": "welcome"}}),
        ("POST", "/v1/jobs/cancel-matching", {"json": {"rule": "welcome", "status": "dead"}}),
        ("POST", "/v1/dlq/retry", {"json": {"all": True}}),
        ("POST", "/v1/dlq/retry", {"json": {}}),
        ("POST", "/v1/dlq/delete", {"json": {"ids": ["NOPE"]}}),
        ("GET", "/v1/events", {"params": {"limit": "x"}}),
        ("GET", f"/v1/events/{api.store.get_job(dead).event_id}", {}),
        ("GET", "/v1/events/NOPE", {}),
        ("GET", "/v1/jobs", {"params": {"status": "pending"}}),
        ("GET", "/v1/jobs", {"params": {"status": "bogus"}}),
        ("GET", f"/v1/jobs/{dead}", {}),
        ("GET", "/v1/jobs/NOPE", {}),
        ("POST", "/v1/jobs/cancel", {"json": {"ids": [dead, "NOPE"]}}),
        ("POST", "/v1/jobs/cancel", {"json": {"ids": []}}),
        ("GET", "/v1/dlq", {}),
        ("POST", f"/v1/dlq/{dead}/retry", {}),
        ("POST", f"/v1/dlq/{dead}/retry", {}),  # no longer dead: 409
        ("DELETE", f"/v1/dlq/{dead}", {}),  # pending, not dead: 409
        ("DELETE", f"/v1/dlq/{api.dead_job()}", {}),
        ("DELETE", "/v1/dlq/NOPE", {}),
        ("GET", "/v1/rules", {}),
        ("GET", "/v1/rules/nightly", {}),
        ("GET", "/v1/rules/welcome", {}),
        ("GET", "/v1/rules/nope", {}),
        ("GET", "/v1/rules/nightly/history", {}),
        ("GET", "/v1/rules/nope/history", {}),
        ("GET", "/v1/rules/nightly/next", {"params": {"count": 2, "after": "2026-03-01T00:00Z"}}),
        ("GET", "/v1/rules/welcome/next", {}),
        ("POST", "/v1/rules/nightly/disable", {"json": {"for": "1h"}}),
        ("POST", "/v1/rules/nightly/disable", {"json": {"for": "soon"}}),  # 400
        ("POST", "/v1/rules/nope/disable", {}),
        ("POST", "/v1/rules/nightly/enable", {}),
        ("POST", "/v1/rules/nope/enable", {}),
        ("POST", "/v1/rules/welcome/overrides", {"json": {"priority": 5,
                                                          "rate_limit": "10/minute"}}),
        ("POST", "/v1/rules/welcome/overrides", {"json": {"rate_limit": "10/week"}}),  # 400
        ("POST", "/v1/rules/nope/overrides", {"json": {"priority": 1}}),
        ("GET", "/v1/rules/welcome", {}),
        ("DELETE", "/v1/rules/welcome/overrides", {}),
        ("DELETE", "/v1/rules/nope/overrides", {}),
        ("POST", "/v1/rules/nightly/run", {}),
        ("POST", "/v1/rules/welcome/run", {"json": {"payload": {"user_id": "7"}}}),
        ("POST", "/v1/rules/welcome/run", {"json": {"payload": [1]}}),  # 400
        ("POST", "/v1/rules/nope/run", {}),
        ("POST", "/v1/reload", {}),
        ("GET", "/v1/status", {}),
        ("GET", "/v1/health", {}),
        ("POST", "/v1/cleanup", {"json": {"dry_run": True}}),
        ("POST", "/v1/cleanup", {"json": {"statuses": ["pending"]}}),  # 400
        ("POST", "/v1/cleanup", {"json": {"older_than": "0s", "statuses": ["succeeded"]}}),
        ("GET", "/v1/watch", {"params": {"type": "job.nope"}}),  # a stream's answer: see test_watch
        ("GET", "/metrics", {}),
        ("GET", "/openapi.json", {}),
    ]  # fmt: skip
    seen: set[tuple[str, str, int]] = set()
    for method, url, kwargs in calls:
        response = api.call(method, url, **kwargs)
        path = _template(doc, url)
        responses = doc["paths"][path][method.lower()]["responses"]
        status = str(response.status_code)
        assert status in responses, f"{method} {url} answered undocumented {status}"
        documented = responses[status]
        if "$ref" in documented:
            documented = doc["components"]["responses"][status]
        ((media, content),) = documented["content"].items()
        assert response.headers["content-type"].split(";")[0] == media, f"{method} {url}"
        body = response.json() if media == "application/json" else response.text
        jsonschema.Draft202012Validator(
            {**content["schema"], "components": doc["components"]}
        ).validate(body)
        seen.add((method, path, response.status_code))
    operations = {(m, p) for m, p, _ in seen}
    assert operations == _served(api.app)
    assert {s for _, _, s in seen} >= {200, 201, 400, 404, 409}


def _template(doc: dict[str, Any], url: str) -> str:
    """The documented path template that `url` matches (literal segments win, as routed)."""
    candidates = []
    for path in doc["paths"]:
        pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path))
        if re.fullmatch(pattern, url):
            candidates.append(path)
    return min(candidates, key=lambda p: p.count("{"))


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("DELETE", "/v1/events", "GET, HEAD, POST"),
        ("PUT", "/v1/events/ABC", "GET, HEAD"),
        ("GET", "/v1/dlq/ABC/retry", "POST"),
        ("GET", "/v1/reload", "POST"),
        ("POST", "/v1/dlq/ABC", "DELETE"),
        ("PATCH", "/v1/status", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
    ],
    ids=["delete-events", "put-event", "get-dlq-retry", "get-reload", "post-dlq-job",
         "patch-status", "post-openapi"],
)  # fmt: skip
def test_a_wrong_method_answers_405_with_the_error_envelope_and_allow(api, method, url, allow):
    response = api.call(method, url)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    assert method in error["message"] and allow in error["message"]


def test_a_known_path_with_a_wrong_method_is_405_but_an_unknown_path_stays_404(api):
    assert api.call("DELETE", "/v1/events").status_code == 405
    response = api.call("DELETE", "/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "/v1/nothing-here" in response.json()["error"]["message"]


def test_an_emit_answer_has_every_field_its_schema_requires_and_no_other(api):
    schema = _document(api)["components"]["schemas"]["EmitResult"]
    answer = api.call("POST", "/v1/events", json={"type": "t", "payload": {}}).json()
    # cancelled and debounced are always sent: clients may rely on them (cancel_on, debounce)
    assert set(schema["required"]) == set(answer) == set(schema["properties"])
