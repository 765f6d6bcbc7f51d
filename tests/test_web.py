"""The dashboard in process: a Service over a real store and a FakeClock, requests through
Starlette's test client. Escaping, login, CSRF and Origin refusals, read-only, CSP headers."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_service import Rig, _dead_follow_up

from timeos.store.sqlite.store import SqliteStore
from timeos.web.app import CSP, HERE, Dashboard, WithDashboard, asset_url
from timeos.web.auth import COOKIE, MAX_SESSIONS, Credentials, same_origin

TOKEN = b"s3cret-token-for-tests"
BASE = "http://127.0.0.1:8080"
ORIGIN = {"origin": BASE}
HTML_PAGES = ["/ui/", "/ui/jobs", "/ui/dlq", "/ui/events", "/ui/rules", "/ui/rules/nightly"]


async def _api(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    store = SqliteStore(tmp_path / "t.db")
    yield Rig(store)
    store.close()


def _client(
    rig: Rig,
    *,
    read_only: bool = False,
    token: bytes | None = TOKEN,
    dashboard: Dashboard | None = None,
) -> TestClient:
    dashboard = dashboard or Dashboard(rig.service, token, read_only=read_only)
    return TestClient(WithDashboard(_api, dashboard), base_url=BASE, follow_redirects=False)


def _login(client: TestClient) -> TestClient:
    reply = client.post("/ui/login", data={"token": TOKEN.decode()}, headers={"origin": BASE})
    assert reply.status_code == 303
    return client


def _csrf(client: TestClient, path: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def test_pages_need_a_login_and_the_cookie_holds_a_derived_value_not_the_token(rig: Rig) -> None:
    client = _client(rig)
    reply = client.get("/ui/jobs")
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/login?next=%2Fui%2Fjobs"
    wrong = client.post("/ui/login", data={"token": "nope"}, headers={"origin": BASE})
    assert wrong.status_code == 401 and "wrong token" in wrong.text
    good = client.post(
        "/ui/login", data={"token": TOKEN.decode(), "next": "/ui/jobs"}, headers={"origin": BASE}
    )
    assert good.status_code == 303 and good.headers["location"] == "/ui/jobs"
    cookie = good.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert TOKEN.decode() not in cookie
    assert "Max-Age=43200" in cookie  # a login lasts 12 hours
    for path in HTML_PAGES:
        assert client.get(path).status_code == 200, path


def test_login_never_redirects_off_the_dashboard(rig: Rig) -> None:
    client = _client(rig)
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/jobs"):
        reply = client.post(
            "/ui/login", data={"token": TOKEN.decode(), "next": target}, headers={"origin": BASE}
        )
        assert reply.headers["location"] == "/ui/", target


def test_every_page_sends_a_strict_csp_without_unsafe_inline(rig: Rig) -> None:
    client = _login(_client(rig))
    for path in [*HTML_PAGES, "/ui/login", "/ui/static/app.js"]:
        reply = client.get(path)
        assert reply.headers["content-security-policy"] == CSP, path
        assert "unsafe" not in reply.headers["content-security-policy"]
        assert reply.headers["x-content-type-options"] == "nosniff"
    page = client.get("/ui/").text
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    assert re.findall(r"<script[^>]*>", page) == [
        f'<script src="{asset_url(name)}" defer>'
        for name in ("vendor/htmx-2.0.11.min.js", "vendor/htmx-ext-sse-2.2.4.min.js", "app.js")
    ]


def test_a_script_payload_is_shown_as_text_on_every_page_it_reaches(rig: Rig) -> None:
    evil = "<script>alert(1)</script>"
    result = rig.service.emit("user_signup", {"name": evil, evil: "key"})
    client = _login(_client(rig))
    for path in ("/ui/events", f"/ui/events/{result.event_id}", f"/ui/jobs/{result.job_ids[0]}"):
        page = client.get(path).text
        assert evil not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path


def test_a_state_change_without_login_csrf_or_same_origin_is_refused(rig: Rig) -> None:
    dead = _dead_follow_up(rig)
    client = _client(rig)
    form = {"id": dead}
    no_login = client.post("/ui/dlq/retry", data=form, headers={"origin": BASE})
    assert no_login.status_code == 401
    _login(client)
    csrf = _csrf(client, "/ui/dlq")
    no_csrf = client.post("/ui/dlq/retry", data=form, headers={"origin": BASE})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    wrong_csrf = client.post(
        "/ui/dlq/retry", data={**form, "csrf": "0" * 64}, headers={"origin": BASE}
    )
    assert wrong_csrf.status_code == 403
    elsewhere = client.post(
        "/ui/dlq/retry", data={**form, "csrf": csrf}, headers={"origin": "http://evil.example"}
    )
    assert elsewhere.status_code == 403 and "did not come from" in elsewhere.text
    no_origin = client.post("/ui/dlq/retry", data={**form, "csrf": csrf})
    assert no_origin.status_code == 403
    assert rig.service.get_job(dead).status == "dead"  # none of them did anything
    ok = client.post("/ui/dlq/retry", data={**form, "csrf": csrf}, headers={"origin": BASE})
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/dlq?done=retried"
    assert rig.service.get_job(dead).status == "pending"


def test_read_only_hides_the_buttons_and_refuses_state_changes(rig: Rig) -> None:
    dead = _dead_follow_up(rig)
    dashboard = Dashboard(rig.service, TOKEN, read_only=True)
    client = _login(
        TestClient(WithDashboard(_api, dashboard), base_url=BASE, follow_redirects=False)
    )
    page = client.get("/ui/dlq").text
    assert dead in page and 'action="/ui/dlq/retry"' not in page and "read-only" in page
    assert dashboard.credentials is not None
    csrf = dashboard.credentials.csrf(client.cookies[COOKIE])
    reply = client.post("/ui/dlq/retry", data={"id": dead, "csrf": csrf}, headers={"origin": BASE})
    assert reply.status_code == 403 and "read-only" in reply.text
    assert rig.service.get_job(dead).status == "dead"
    rule_page = client.get("/ui/rules/nightly").text
    assert "/disable" not in rule_page and "/run" not in rule_page


def test_without_a_token_file_the_dashboard_says_how_to_enable_it(rig: Rig) -> None:
    reply = _client(rig, token=None).get("/ui/")
    assert reply.status_code == 403 and "--http-token-file" in reply.text


def test_the_api_beside_the_dashboard_is_untouched(rig: Rig) -> None:
    assert _client(rig).get("/v1/jobs").status_code == 204  # went to the API app


def test_overview_counts_jobs_by_status(rig: Rig) -> None:
    _dead_follow_up(rig)
    rig.service.emit("user_signup", {"user_id": "2"})
    page = _login(_client(rig)).get("/ui/").text
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', page))
    assert counts["dead"] == "1" and counts["pending"] == "3"


def test_jobs_filter_by_status_rule_and_time_range(rig: Rig) -> None:
    rig.service.emit("user_signup", {"user_id": "1"})
    client = _login(_client(rig))
    both = client.get("/ui/jobs?status=pending").text
    assert both.count('<tr data-job="') == 2
    one = client.get("/ui/jobs?rule=follow-up").text
    assert one.count('<tr data-job="') == 1
    # welcome is due now (T0), follow-up in two days: the range keeps only the first.
    early = client.get("/ui/jobs?since=2026-03-02T00:00Z&until=2026-03-03T00:00Z").text
    assert early.count('<tr data-job="') == 1 and ">welcome<" in early
    bad = client.get("/ui/jobs?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.text


def test_dry_run_replay_shows_what_would_be_created_and_creates_nothing(rig: Rig) -> None:
    result = rig.service.emit("user_signup", {"user_id": "1"})
    client = _login(_client(rig))
    csrf = _csrf(client, f"/ui/events/{result.event_id}")
    before = rig.service.count_jobs(status=None, rule=None, event_id=None)
    reply = client.post(
        f"/ui/events/{result.event_id}/replay",
        data={"csrf": csrf, "dry_run": "1"},
        headers={"origin": BASE},
    )
    assert reply.status_code == 200 and "2 job(s) would be created" in reply.text
    assert rig.service.count_jobs(status=None, rule=None, event_id=None) == before
    real = client.post(
        f"/ui/events/{result.event_id}/replay", data={"csrf": csrf}, headers={"origin": BASE}
    )
    assert real.status_code == 303
    assert rig.service.count_jobs(status=None, rule=None, event_id=None) == before + 2


def test_rule_buttons_disable_enable_and_run(rig: Rig) -> None:
    client = _login(_client(rig))
    csrf = _csrf(client, "/ui/rules/pulse")
    assert (
        client.post("/ui/rules/pulse/disable", data={"csrf": csrf}, headers=ORIGIN).status_code
        == 303
    )
    assert not rig.service.rule("pulse").enabled
    assert (
        client.post("/ui/rules/pulse/enable", data={"csrf": csrf}, headers=ORIGIN).status_code
        == 303
    )
    assert rig.service.rule("pulse").enabled
    ran = client.post("/ui/rules/pulse/run", data={"csrf": csrf}, headers=ORIGIN)
    assert ran.status_code == 303 and ran.headers["location"].startswith("/ui/jobs/")


def test_a_missing_job_is_a_404_page(rig: Rig) -> None:
    reply = _login(_client(rig)).get("/ui/jobs/nope")
    assert reply.status_code == 404 and "nope" in reply.text


def test_rules_page_shows_next_fires_with_the_rule_zone(rig: Rig) -> None:
    page = _login(_client(rig)).get("/ui/rules/nightly").text
    assert "2026-03-03 02:30:00 America/New_York" in page
    # Sunday 8 March 2026: 02:30 does not exist in New York; the page says where it went.
    assert "2026-03-08 03:00:00 America/New_York</td><td>moved from 02:30 by the DST gap" in page


@pytest.mark.parametrize(
    ("origin", "referer", "host", "ok"),
    [
        ("http://127.0.0.1:8080", None, "127.0.0.1:8080", True),
        (None, "http://127.0.0.1:8080/ui/dlq", "127.0.0.1:8080", True),
        ("http://127.0.0.1:8081", None, "127.0.0.1:8080", False),
        ("null", None, "127.0.0.1:8080", False),
        (None, None, "127.0.0.1:8080", False),
        ("javascript://127.0.0.1:8080", None, "127.0.0.1:8080", False),
    ],
    ids=["origin", "referer-fallback", "other-port", "null-origin", "neither", "odd-scheme"],
)
def test_same_origin(origin: str | None, referer: str | None, host: str, ok: bool) -> None:
    assert same_origin(origin, referer, host) is ok


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        (None, None, None, False),
        (True, None, None, True),
        (None, "yes", None, True),
        (None, None, "true", True),
        (None, "off", "true", False),
    ],
    ids=["default", "flag", "env", "file", "env-over-file"],
)
def test_read_only_comes_from_the_flag_the_env_or_the_file(
    tmp_path, flag: bool | None, env: str | None, file: str | None, expected: bool
) -> None:
    from timeos.daemon.config import resolve

    config = tmp_path / "timeosd.yaml"
    config.write_text(f"http-read-only: {file}\n" if file else "")
    environ = {"TIMEOS_HTTP_READ_ONLY": env} if env else {}
    settings = resolve({"http_read_only": flag}, environ, (config, True))
    assert settings["http-read-only"] is expected


def test_a_bad_read_only_value_names_where_it_came_from(tmp_path) -> None:
    from timeos.daemon.config import resolve
    from timeos.errors import UsageError

    config = tmp_path / "timeosd.yaml"
    config.write_text("http-read-only: maybe\n")
    with pytest.raises(UsageError, match=r"timeosd.yaml:1:17: http-read-only 'maybe': use true"):
        resolve({}, {}, (config, True))


def test_timeosd_serves_the_dashboard_on_tcp_only_and_read_only_when_told(tmp_path) -> None:
    import http.client

    from browser import TOKEN as REAL_TOKEN
    from browser import start_site

    site = start_site(tmp_path, ("--http-read-only",))
    try:
        host, port = site.base.removeprefix("http://").split(":")

        def call(method: str, path: str, body: str = "", cookie: str = "") -> Any:
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            headers = {"Origin": site.base, "Content-Type": "application/x-www-form-urlencoded"}
            if cookie:
                headers["Cookie"] = cookie
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            reply.text = reply.read().decode()  # type: ignore[attr-defined]
            conn.close()
            return reply

        login = call("POST", "/ui/login", f"token={REAL_TOKEN}")
        assert login.status == 303
        cookie = login.getheader("set-cookie").split(";")[0]
        page = call("GET", "/ui/dlq", cookie=cookie)
        assert page.status == 200 and "read-only" in page.text and "/ui/dlq/retry" not in page.text
        refused = call("POST", "/ui/rules/greet/disable", "csrf=x", cookie=cookie)
        assert refused.status == 403 and "read-only" in refused.text
        # The API beside it still wants the bearer token; the socket serves no /ui/.
        assert call("GET", "/v1/jobs", cookie=cookie).status == 401
        assert site.daemon.client.call("GET", "/v1/rules")["rules"][0]["enabled"] is True
        with pytest.raises(Exception, match="no API route GET /ui/"):
            site.daemon.client.call("GET", "/ui/")
    finally:
        site.daemon.stop()


def test_jobs_page_in_pages_keeping_the_filters(rig: Rig) -> None:
    for n in range(6):
        rig.service.emit("user_signup", {"user_id": str(n)})  # 12 jobs; the rig's pages hold 10
    client = _login(_client(rig))
    first = client.get("/ui/jobs?status=pending").text
    assert first.count('<tr data-job="') == 10 and "1–10 of 12" in first
    link = re.search(r'href="([^"]+)" rel="next"', first)
    assert link and "status=pending" in link.group(1) and "offset=10" in link.group(1)
    second = client.get(link.group(1).replace("&amp;", "&")).text
    assert second.count('<tr data-job="') == 2 and 'rel="prev"' in second


def test_assets_are_compressed_and_pages_are_not(rig: Rig) -> None:
    client = _login(_client(rig))
    gzip = {"accept-encoding": "gzip"}
    htmx = client.get("/ui/static/vendor/htmx-2.0.11.min.js", headers=gzip)
    assert htmx.status_code == 200 and htmx.headers["content-encoding"] == "gzip"
    assert (
        int(htmx.headers["content-length"]) < 20_000 and "max-age" in htmx.headers["cache-control"]
    )
    page = client.get("/ui/jobs?rule=x", headers=gzip)
    assert "content-encoding" not in page.headers and page.headers["cache-control"] == "no-store"


def test_a_jobs_parents_and_children_show_when_its_json_has_them(rig: Rig) -> None:
    """Job dependencies come from another branch: shown when job_json has them, absent is fine."""
    from types import SimpleNamespace

    from timeos.web.app import templates

    base = {
        "id": "J1", "rule": "r", "action": "a", "status": "blocked", "priority": 0,
        "perform_at": None, "attempts": 0, "max_attempts": 1, "event_id": None,
        "last_error": None, "note": None, "scheduled_for": None, "created_at": None,
        "updated_at": None, "payload": {}, "attempt_history": [],
    }  # fmt: skip
    request = SimpleNamespace(url=SimpleNamespace(path="/ui/jobs/J1"))
    page = templates().get_template("job.html")
    plain = page.render(
        request=request, job=base, payload={}, csrf="c", logged_in=True, path="/ui/jobs/J1"
    )
    assert "Parents" not in plain and "Children" not in plain
    linked = {
        **base,
        "parents": [{"id": "P<1>", "status": "succeeded"}],
        "children": ["C1"],
        "depends_on": ["P<1>"],
    }
    html = page.render(
        request=request, job=linked, payload={}, csrf="c", logged_in=True, path="/ui/jobs/J1"
    )
    assert '<a href="/ui/jobs/P%3C1%3E"><code>P&lt;1&gt;</code></a>' in html
    assert '<a href="/ui/jobs/C1"><code>C1</code></a>' in html
    assert "Depends on" not in html and "Children" in html  # parents say more than ids
    only_ids = page.render(
        request=request, job={**base, "depends_on": ["P2"]}, payload={}, csrf="c",
        logged_in=True, path="/ui/jobs/J1",
    )  # fmt: skip
    assert "Depends on" in only_ids and '<a href="/ui/jobs/P2">' in only_ids


def test_a_chained_jobs_page_links_its_parent_and_child(tmp_path) -> None:
    from dataclasses import replace

    from test_service import ACT, RULES

    from timeos.daemon.service import Service
    from timeos.engine import Limits
    from timeos.model import Rule, RuleSet

    chained = Rule("pair", replace(RULES.rules[0].trigger), "act", then=("act",))
    store = SqliteStore(tmp_path / "c.db")
    try:
        rig = Rig(store)
        rig.service = Service(
            store=store, clock=rig.clock, rules=RuleSet((chained,), {"act": ACT}),
            rule_paths=[], loader=lambda paths: RuleSet((), {}), limits=Limits(),
        )  # fmt: skip
        first, second = rig.service.emit("user_signup", {}).job_ids
        client = _login(_client(rig))
        parent_page = client.get(f"/ui/jobs/{first}").text
        assert "Children" in parent_page and f'<a href="/ui/jobs/{second}">' in parent_page
        child_page = client.get(f"/ui/jobs/{second}").text
        assert "Parents" in child_page and f'<a href="/ui/jobs/{first}">' in child_page
        assert "badge-blocked" in child_page
    finally:
        store.close()


def test_rule_page_shows_the_limits_in_force_and_their_source(rig: Rig) -> None:
    client = _login(_client(rig))
    page = client.get("/ui/rules/pulse").text
    assert '<dt>Rate limit</dt><dd><span class="muted">none</span>' in page
    rig.service.set_rule("pulse", rate_limit="3/minute", concurrency=2)
    page = client.get("/ui/rules/pulse").text
    assert '3/minute, burst 3 <span class="muted">(override)</span>' in page
    assert '<dt>Concurrency</dt><dd>2 <span class="muted">(override)</span>' in page
    assert "3/minute; ≤2 at once" in client.get("/ui/rules").text


def test_a_job_cancelled_by_an_event_links_to_it_escaped(rig: Rig) -> None:
    from types import SimpleNamespace

    from timeos.web.app import templates

    job = {
        "id": "J1", "rule": "r", "action": "a", "status": "cancelled", "priority": 0,
        "perform_at": None, "attempts": 0, "max_attempts": 1, "event_id": None,
        "last_error": None, "note": None, "scheduled_for": None, "created_at": None,
        "updated_at": None, "payload": {}, "attempt_history": [], "cancelled_by": "E<1>",
    }  # fmt: skip
    request = SimpleNamespace(url=SimpleNamespace(path="/ui/jobs/J1"))
    page = templates().get_template("job.html")
    html = page.render(
        request=request, job=job, payload={}, csrf="c", logged_in=True, path="/ui/jobs/J1"
    )
    assert '<a href="/ui/events/E%3C1%3E"><code>E&lt;1&gt;</code></a> (cancel_on)' in html
    plain = page.render(
        request=request,
        job={**job, "cancelled_by": None},
        payload={},
        csrf="c",
        logged_in=True,
        path="/ui/jobs/J1",
    )
    assert "Cancelled by" not in plain


def test_a_huge_login_body_is_refused_as_it_arrives_not_buffered_whole(rig: Rig) -> None:
    # /ui/login takes a body from anyone who can reach the port (a forged Origin is one header):
    # a 300 MB body once made timeosd hold 600 MB. It must stop reading past the form limit.
    app = WithDashboard(_api, Dashboard(rig.service, TOKEN))
    chunk, chunks = 65536, 100
    read = []
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": b"x" * chunk, "more_body": len(read) < chunks}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/ui/login",
        "raw_path": b"/ui/login",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"origin", BASE.encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and b"over the limit" in sent[1]["body"]
    assert len(read) < chunks
    declared = _client(rig).post(
        "/ui/login",
        content=b"x" * 70000,
        headers={**ORIGIN, "content-type": "application/x-www-form-urlencoded"},
    )
    assert declared.status_code == 400


def test_a_login_that_is_not_a_form_is_a_400_saying_so(rig: Rig) -> None:
    reply = _client(rig).post("/ui/login", json={"token": TOKEN.decode()}, headers=ORIGIN)
    assert reply.status_code == 400 and "urlencoded" in reply.text
    assert reply.headers["content-security-policy"] == CSP


def test_every_dashboard_answer_has_the_security_headers_and_no_store(rig: Rig) -> None:
    # Not only rendered pages: a button's redirect, Starlette's own 404 and 405 as well.
    dead = _dead_follow_up(rig)
    client = _login(_client(rig))
    csrf = _csrf(client, "/ui/dlq")
    answers = {
        "retry": client.post("/ui/dlq/retry", data={"id": dead, "csrf": csrf}, headers=ORIGIN),
        "404": client.get("/ui/no-such-page"),
        "405": client.post("/ui/jobs", data={"csrf": csrf}, headers=ORIGIN),
        "slash": client.get("/ui"),
    }
    assert answers["retry"].status_code == 303 and answers["404"].status_code == 404
    assert answers["405"].status_code == 405
    for name, reply in answers.items():
        assert reply.headers.get("content-security-policy") == CSP, name
        assert reply.headers.get("x-frame-options") == "DENY", name
        assert reply.headers.get("cache-control") == "no-store", name
    asset = client.get("/ui/static/app.js")
    assert asset.headers["cache-control"] == "max-age=86400"
    assert asset.headers["content-security-policy"] == CSP
    assert len(asset.headers.get_list("content-security-policy")) == 1


def test_a_dry_run_pages_live_region_refreshes_from_the_event_page(rig: Rig) -> None:
    # The dry run is rendered in answer to POST .../replay; its live region once re-fetched that
    # URL with GET on every update: a 405 (and a console error) instead of fresh jobs.
    result = rig.service.emit("user_signup", {"user_id": "1"})
    client = _login(_client(rig))
    csrf = _csrf(client, f"/ui/events/{result.event_id}")
    page = client.post(
        f"/ui/events/{result.event_id}/replay", data={"csrf": csrf, "dry_run": "1"}, headers=ORIGIN
    ).text
    targets = re.findall(r'hx-get="([^"]+)"', page)
    assert targets == [f"/ui/events/{result.event_id}"]
    assert client.get(targets[0]).status_code == 200


def test_live_regions_refresh_from_a_relative_url_keeping_the_query(rig: Rig) -> None:
    # An absolute hx-get (request.url) names uvicorn's scheme and the Host header: http://
    # behind a TLS proxy, which the browser blocks as mixed content and by connect-src 'self'.
    client = _login(_client(rig))
    for path in [*HTML_PAGES, "/ui/jobs?status=dead&offset=0", "/ui/dlq?rule=nightly"]:
        targets = re.findall(r'hx-get="([^"]+)"', client.get(path).text)
        assert targets, path
        for target in targets:
            assert target.startswith("/ui/"), (path, target)
    assert (
        'hx-get="/ui/jobs?status=dead&amp;offset=0"'
        in client.get("/ui/jobs?status=dead&offset=0").text
    )


def test_time_filters_take_minus_a_duration_as_the_readme_and_placeholders_say(rig: Rig) -> None:
    # README: "since/until: ISO 8601 or -1h", and the fields' placeholders say "-1h": it was
    # refused as "not an ISO 8601 date-time".
    rig.service.emit("user_signup", {"user_id": "1"})  # welcome due now, follow-up in 2 days
    client = _login(_client(rig))
    recent = client.get("/ui/jobs?since=-1h")
    assert recent.status_code == 200 and recent.text.count('<tr data-job="') == 2
    assert client.get("/ui/jobs?until=-1m").text.count('<tr data-job="') == 0
    assert client.get("/ui/events?since=-1h").text.count('<tr data-event="') == 1
    rig.clock.advance(timedelta(hours=2))
    assert client.get("/ui/events?since=-1h").text.count('<tr data-event="') == 0
    assert client.get("/ui/events?since=-3h").text.count('<tr data-event="') == 1
    bad = client.get("/ui/jobs?since=-1x")
    assert bad.status_code == 400 and "since" in bad.text and "-DURATION" in bad.text
    iso = client.get("/ui/jobs?since=yesterday")
    assert iso.status_code == 400 and "-1h" in iso.text


def test_log_out_ends_the_session_for_every_copy_of_the_cookie(rig: Rig) -> None:
    # The cookie was HMAC(token, "session"): the same for every login, never expiring, and Log
    # out only asked the browser to forget it. Cookies ignore the port, so any server on
    # 127.0.0.1 the admin visits receives it; a copy must die with Log out.
    dashboard = Dashboard(rig.service, TOKEN)
    client = _login(_client(rig, dashboard=dashboard))
    stolen = client.cookies[COOKIE]
    thief = _client(rig, dashboard=dashboard)
    thief.cookies.set(COOKIE, stolen, path="/ui")
    assert thief.get("/ui/jobs").status_code == 200
    out = client.post("/ui/logout", headers=ORIGIN)
    assert out.status_code == 303 and out.headers["location"] == "/ui/login"
    assert thief.get("/ui/jobs").status_code == 303  # back to the login page


def test_a_session_expires_after_twelve_hours(rig: Rig) -> None:
    client = _login(_client(rig))
    rig.clock.advance(timedelta(hours=11, minutes=59))
    assert client.get("/ui/").status_code == 200
    rig.clock.advance(timedelta(minutes=2))
    reply = client.get("/ui/")
    assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


def test_each_login_gets_its_own_session_and_csrf_token(rig: Rig) -> None:
    dead = _dead_follow_up(rig)
    dashboard = Dashboard(rig.service, TOKEN)
    first = _login(_client(rig, dashboard=dashboard))
    second = _login(_client(rig, dashboard=dashboard))
    assert first.cookies[COOKIE] != second.cookies[COOKIE]
    csrf_first, csrf_second = _csrf(first, "/ui/dlq"), _csrf(second, "/ui/dlq")
    assert csrf_first != csrf_second
    crossed = second.post("/ui/dlq/retry", data={"id": dead, "csrf": csrf_first}, headers=ORIGIN)
    assert crossed.status_code == 403 and rig.service.get_job(dead).status == "dead"


def test_sessions_held_at_once_are_capped(rig: Rig) -> None:
    creds = Credentials(TOKEN)
    now = rig.clock.now()
    first = creds.open_session(now)
    for _ in range(MAX_SESSIONS):
        creds.open_session(now)
    assert len(creds.sessions) == MAX_SESSIONS and not creds.session_valid(first, now)


def test_logging_in_lands_on_the_page_asked_for_with_its_query(rig: Rig) -> None:
    client = _client(rig)
    asked = client.get("/ui/jobs?status=dead&rule=nightly")
    assert (
        asked.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Ddead%26rule%3Dnightly"
    )
    form = client.get(asked.headers["location"]).text
    assert 'name="next" value="/ui/jobs?status=dead&amp;rule=nightly"' in form
    reply = client.post(
        "/ui/login",
        data={"token": TOKEN.decode(), "next": "/ui/jobs?status=dead&rule=nightly"},
        headers=ORIGIN,
    )
    assert reply.headers["location"] == "/ui/jobs?status=dead&rule=nightly"


def test_the_login_page_sends_a_logged_in_browser_on(rig: Rig) -> None:
    # Not a second session for nothing: a logged-in browser (the back button, a bookmark of
    # the login page) goes where `next` says.
    client = _login(_client(rig))
    reply = client.get("/ui/login?next=/ui/rules")
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/rules"
    assert client.get("/ui/login?next=https://evil.example/").headers["location"] == "/ui/"


def test_a_live_refresh_after_the_session_ended_sends_the_page_to_log_in(rig: Rig) -> None:
    # htmx follows a 303 inside its XHR and swaps the login page's (missing) #live in: the
    # region went blank when the session expired. HX-Redirect moves the whole page instead.
    client = _login(_client(rig))
    rig.clock.advance(timedelta(hours=13))
    reply = client.get("/ui/jobs?status=dead", headers={"hx-request": "true"})
    assert reply.status_code == 204
    assert reply.headers["hx-redirect"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Ddead"
    plain = client.get("/ui/jobs")
    assert plain.status_code == 303 and "hx-redirect" not in plain.headers


def test_asset_urls_carry_a_hash_of_their_contents(rig: Rig) -> None:
    # Assets are cached for a day: an upgraded daemon's app.js must not meet yesterday's copy.
    page = _login(_client(rig)).get("/ui/").text
    for name in ("app.css", "app.js", "vendor/htmx-2.0.11.min.js"):
        digest = hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:12]
        assert f'"/ui/static/{name}?v={digest}"' in page, name
    assert 'src="/ui/static/app.js"' not in page
    assert _client(rig).get(asset_url("app.js")).status_code == 200


def test_the_live_stream_ends_once_its_session_is_logged_out(rig: Rig) -> None:
    # The session was checked only when /ui/live opened: a stream from a cookie logged out (or
    # expired) since kept pushing every job id and event kind.
    dashboard = Dashboard(rig.service, TOKEN)
    client = _login(_client(rig, dashboard=dashboard))
    cookie = client.cookies[COOKIE]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/ui/live",
        "raw_path": b"/ui/live",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "headers": [(b"host", b"127.0.0.1:8080"), (b"cookie", f"{COOKIE}={cookie}".encode())],
    }
    bodies: list[bytes] = []
    ended = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await ended.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message.get("body", b""))
            if not message.get("more_body"):
                ended.set()

    async def run() -> None:
        stream = asyncio.ensure_future(WithDashboard(_api, dashboard)(scope, receive, send))
        while not bodies:
            await asyncio.sleep(0)
        rig.service.bus.publish("job.succeeded", job_id="J1")
        while not any(b"J1" in b for b in bodies):
            await asyncio.sleep(0)
        assert dashboard.credentials is not None
        dashboard.credentials.close_session(cookie)  # Log out, from another tab
        rig.service.bus.publish("job.succeeded", job_id="J2")
        await asyncio.wait_for(stream, 5)

    asyncio.run(run())
    assert ended.is_set()
    assert any(b"J2" in b for b in bodies)  # that last update still went: its refresh logs out
    assert b"event: end\n" in b"".join(bodies)  # the page's sse-close: closed, not cut


def test_dashboard_settings_without_http_are_named_in_a_warning(tmp_path) -> None:
    # --http-token-file and --http-read-only without --http did nothing, silently: the user
    # who set them waited for a dashboard that was never served.
    from timeos.daemon.config import needing_http, resolve

    config = tmp_path / "timeosd.yaml"
    config.write_text("http-token-file: tok\n")
    settings = resolve({"http_read_only": True}, {}, (config, True))
    [warning] = needing_http(settings)
    assert "http-token-file (from file" in warning and "timeosd.yaml:1:" in warning
    assert "http-read-only (from flag --http-read-only)" in warning and "--http" in warning
    served = resolve({"http_read_only": True, "http": "127.0.0.1:0"}, {}, (config, True))
    assert needing_http(served) == []
    assert needing_http(resolve({}, {}, (tmp_path / "none.yaml", False))) == []


def _luminance(hex_colour: str) -> float:
    digits = hex_colour[1:]
    if len(digits) == 3:  # #fff
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_focus_outline_contrasts_3_to_1_with_the_page(rig: Rig) -> None:
    # WCAG 2.1 AA 1.4.11: a focus indicator needs 3:1 against what surrounds it. The amber
    # #f59e0b outline was 2.1:1 on white, so keyboard users could barely see where they were.
    css = (HERE / "static" / "app.css").read_text()
    found = re.search(r":focus-visible[^{]*\{[^}]*outline: \d+px solid (#[0-9a-fA-F]{6})", css)
    assert found, "no focus-visible outline in app.css"
    variables = dict(re.findall(r"--(\w+): (#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b", css))
    for background in (variables["bg"], variables["soft"]):
        assert _contrast(found.group(1), background) >= 3, (found.group(1), background)
