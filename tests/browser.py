"""A real timeosd with its TCP listener and dashboard, and Debian's chromium driven by Playwright.

Shared by tests/test_web_browser.py and bench/screenshots.py (which measures page weight).
Chromium is /usr/bin/chromium from apt (never `playwright install`: no browser download here).
"""

from __future__ import annotations

import os
import shutil
import socket
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import Daemon

# TIMEOS_CHROMIUM points elsewhere (and, set to a missing path, shows the skip/fail behaviour).
CHROMIUM = Path(
    os.environ.get("TIMEOS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-token-0123456789"


def missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    return None


def rules_text(flag: Path) -> str:
    """Rules for the dashboard: a job that succeeds, one that fails until `flag` exists, a cron."""
    return textwrap.dedent(
        f"""\
        timezone: UTC
        actions:
          echo:
            command: ["cat"]
            timeout: 10s
          needs_flag:
            command: ["test", "-e", "{flag}"]
            timeout: 10s
            retry: {{max_attempts: 1}}
        rules:
          - name: greet
            on_event: signup
            perform: echo
          - name: flaky
            on_event: flaky
            perform: needs_flag
          - name: nightly
            cron: "30 2 * * *"
            timezone: America/New_York
            perform: echo
          - name: pulse
            every: 15m
            perform: echo
        """
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    """A running daemon with the dashboard on `base`, and the flag file its flaky rule needs."""

    daemon: Daemon
    base: str
    flag: Path
    console: list[str] = field(default_factory=list)

    def login(self, page: Any) -> None:
        page.goto(f"{self.base}/ui/login")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{self.base}/ui/")


def start_site(tmp: Path, extra_args: tuple[str, ...] = ()) -> Site:
    """Start timeosd on a free loopback port with a private token file."""
    flag = tmp / "flag"
    rules = tmp / "rules.yaml"
    rules.write_text(rules_text(flag))
    token_file = tmp / "http-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    args = ("--http", f"127.0.0.1:{port}", "--http-token-file", str(token_file), *extra_args)
    daemon = Daemon(tmp, rules, extra_args=args).start()
    return Site(daemon, f"http://127.0.0.1:{port}", flag)


def launch(playwright: Any) -> Any:
    """Debian's chromium, headless."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
    )


def watch_console(page: Any, into: list[str]) -> None:
    """Collect console errors and uncaught exceptions (CSP violations show up as errors)."""
    page.on("console", lambda m: into.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: into.append(f"pageerror: {e}"))
