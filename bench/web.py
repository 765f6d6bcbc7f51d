"""The dashboard's figures: page weight (HTML + every asset the browser fetched) of each page,
a screenshot of each under docs/screenshots/, and (unless --no-tests) how long the browser tests
take. Needs /usr/bin/chromium and the playwright package, like tests/test_web_browser.py.

    python bench/web.py            # screenshots + weights + timed browser tests
    python bench/web.py --no-tests
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser import launch, missing, start_site, watch_console  # noqa: E402

from timeos.web.auth import COOKIE  # noqa: E402

SHOTS = REPO / "docs" / "screenshots"
ZONE = "Europe/Berlin"  # the screenshots show times converted to the browser's zone


def _seed(site: Any) -> dict[str, str]:
    """Some of everything: succeeded, dead and scheduled jobs, and an event with a nasty payload."""
    cli = site.daemon.cli
    ids: dict[str, str] = {}
    for n in range(3):
        payload = {"user": f"user-{n}", "plan": "pro", "tags": ["a", "b"], "nested": {"n": n}}
        out = cli("emit", "signup", "--payload", json.dumps(payload), "--json")
        ids["event"] = json.loads(out.stdout)["id"]
    out = cli("emit", "signup", "--payload", json.dumps({"name": "<script>alert(1)</script>"}),
              "--json")  # fmt: skip
    ids["script_event"] = json.loads(out.stdout)["id"]
    out = cli("emit", "flaky", "--payload", "{}", "--json")
    ids["dead"] = json.loads(out.stdout)["jobs"][0]
    site.daemon.wait_job(ids["dead"], "dead")
    return ids


def pages(ids: dict[str, str]) -> list[tuple[str, str]]:
    return [
        ("overview", "/ui/"),
        ("jobs", "/ui/jobs"),
        ("job", f"/ui/jobs/{ids['dead']}"),
        ("dead-letters", "/ui/dlq"),
        ("events", "/ui/events"),
        ("event", f"/ui/events/{ids['script_event']}"),
        ("rules", "/ui/rules"),
        ("rule", "/ui/rules/nightly"),
        ("login", "/ui/login"),
    ]


def weigh_and_shoot(shots: Path) -> dict[str, dict[str, int]]:
    from playwright.sync_api import sync_playwright

    shots.mkdir(parents=True, exist_ok=True)
    weights: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        site = start_site(Path(tmp))
        try:
            ids = _seed(site)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                # Log in once in a throwaway context; its session cookie opens the others.
                first = browser.new_context()
                site.login(first.new_page())
                session = next(c["value"] for c in first.cookies() if c["name"] == COOKIE)
                first.close()
                for name, path in pages(ids):
                    # A fresh context per page: a cold cache, so every asset counts.
                    context = browser.new_context(
                        viewport={"width": 1100, "height": 760}, timezone_id=ZONE
                    )
                    page = context.new_page()
                    errors: list[str] = []
                    watch_console(page, errors)
                    if name != "login":
                        # The login cookie set directly: a login page would warm the cache, and
                        # every page is measured as a first visit.
                        context.add_cookies([{"name": COOKIE, "value": session, "url": site.base}])
                    sizes: dict[str, int] = {}
                    wire: dict[str, int] = {}

                    def count(
                        response: Any, sizes: dict[str, int] = sizes, wire: dict[str, int] = wire
                    ) -> None:
                        if "/ui/live" in response.url or response.status >= 300:
                            return
                        try:
                            sizes[response.url] = len(response.body())
                            length = response.headers.get("content-length")
                            wire[response.url] = int(length) if length else len(response.body())
                        except Exception:  # a response navigated away from: not counted
                            pass

                    page.on("response", count)
                    page.goto(f"{site.base}{path}")
                    page.wait_for_load_state("networkidle")
                    if name != "login":
                        page.wait_for_selector("#connection.conn-live")
                    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                    html = sum(v for k, v in sizes.items() if "/ui/static/" not in k)
                    assets = sum(v for k, v in sizes.items() if "/ui/static/" in k)
                    weights[name] = {
                        "html": html,
                        "assets": assets,
                        "total": html + assets,
                        "transferred": sum(wire.values()),  # assets gzip-compressed
                    }
                    if errors:
                        raise SystemExit(f"{path}: console errors: {errors}")
                    context.close()
                # One phone-width shot of the overview.
                context = browser.new_context(
                    viewport={"width": 375, "height": 740}, timezone_id=ZONE
                )
                page = context.new_page()
                site.login(page)
                page.wait_for_selector("#connection.conn-live")
                page.screenshot(path=str(shots / "overview-phone.png"), full_page=True)
                browser.close()
        finally:
            site.daemon.stop()
    return weights


def time_tests() -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "tests/test_web_browser.py"],
        cwd=REPO,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit("the browser tests failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-tests", action="store_true", help="skip timing the browser tests")
    parser.add_argument("--shots", type=Path, default=SHOTS, help="where the screenshots go")
    args = parser.parse_args()
    why = missing()
    if why:
        raise SystemExit(f"bench/web.py: {why}")
    weights = weigh_and_shoot(args.shots)
    print(f"{'page':<14}{'HTML':>9}{'assets':>10}{'total':>10}{'on wire':>10}  (bytes, cold cache)")
    for name, w in weights.items():
        print(f"{name:<14}{w['html']:>9}{w['assets']:>10}{w['total']:>10}{w['transferred']:>10}")
    figures: dict[str, Any] = {"page_weight_bytes": weights}
    if not args.no_tests:
        seconds = time_tests()
        print(f"browser tests (tests/test_web_browser.py, one process): {seconds:.1f} s")
        figures["browser_tests_s"] = round(seconds, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
