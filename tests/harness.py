"""Start a real timeosd on a temporary socket and database; drive it with the real `timeos` CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timeos.cli.client import Client
from timeos.model import Job, JobStatus, Verdict

BIN = Path(sys.executable).parent


def _exe(name: str) -> list[str]:
    found = BIN / name
    if found.exists():
        return [str(found)]
    which = shutil.which(name)
    if which:
        return [which]
    module = "timeos.daemon" if name == "timeosd" else "timeos"
    return [sys.executable, "-m", module]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Daemon:
    """One timeosd process for a test."""

    def __init__(
        self,
        tmp: Path,
        rules: Path,
        *,
        fake_clock: str | None = None,
        workers: int = 4,
        extra_env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.extra_args = extra_args
        self.tmp = tmp
        self.rules = rules
        self.db = tmp / "timeos.db"
        self.socket = tmp / "run" / "timeos.sock"
        self.log = tmp / "timeosd.log"
        self.env = {**os.environ, **(extra_env or {})}
        self.env.pop("TIMEOS_SOCKET", None)
        if fake_clock:
            self.env["TIMEOS_FAKE_CLOCK"] = fake_clock
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(self.socket, timeout=10)

    def start(self, *, expect_ready: bool = True) -> Daemon:
        cmd = [
            *_exe("timeosd"),
            "--rules",
            str(self.rules),
            "--db",
            str(self.db),
            "--socket",
            str(self.socket),
            "--workers",
            str(self.workers),
            "--grace",
            "2s",
            *self.extra_args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, cwd=self.tmp)
        if expect_ready:
            wait_until(self._ready, what=f"timeosd to listen (log: {self.log.read_text()})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"timeosd exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            self.client.call("GET", "/v1/status")
            return True
        except Exception:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real `timeos` CLI against this daemon."""
        env = {**self.env, "TIMEOS_SOCKET": str(self.socket)}
        return subprocess.run(
            [*_exe("timeos"), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            cwd=self.tmp,
        )

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def advance(self, duration: str) -> str:
        """Move the daemon's fake clock forward."""
        return self.client.call("POST", "/v1/_test/clock", {"advance": duration})["now"]

    def set_clock(self, iso: str) -> str:
        return self.client.call("POST", "/v1/_test/clock", {"set": iso})["now"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.call("GET", f"/v1/jobs/{job_id}")

    def wait_job(self, job_id: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
        seen: list[str] = []

        def reached() -> dict[str, Any] | bool:
            job = self.job(job_id)
            seen.append(job["status"])
            return job["status"] == status and job

        try:
            return wait_until(reached, timeout, f"job {job_id} to be {status}")
        except AssertionError as exc:  # say where it went instead, not where it was at first
            raise AssertionError(f"{exc} (last seen {seen[-1] if seen else 'never'})") from None


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `timeos` CLI without a daemon (offline commands, unreachable-daemon checks)."""
    return subprocess.run(
        [*_exe("timeos"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        env=env or dict(os.environ),
    )


def verdict(job: Job, status: JobStatus, at: Any = None) -> Verdict:
    """A verdict moving `job` to `status` (at `at`, else its own perform_at), budget unchanged."""
    return Verdict(status, at or job.perform_at, job.max_attempts, job.backoff_base)
