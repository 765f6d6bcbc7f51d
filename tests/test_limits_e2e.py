"""Rate limits and concurrency through a real timeosd on its fake clock and the real CLI: a
file's limit delays (never drops) jobs and survives a restart; a `rules set` override is
enforced and shown with its source."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from harness import Daemon, wait_until


def _rules(tmp: Path) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(
        textwrap.dedent(
            """
            actions:
              act:
                command: ["true"]
            rules:
              - name: mail
                on_event: signup
                perform: act
                rate_limit: 2/minute
            """
        )
    )
    return path


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, _rules(tmp_path), fake_clock="2026-03-02T09:00:00Z").start()
    yield d
    d.stop()


def _statuses(daemon: Daemon, rule: str) -> list[str]:
    return sorted(j["status"] for j in daemon.cli_json("jobs", "list", "--rule", rule))


def _succeeded(daemon: Daemon, rule: str, count: int) -> None:
    wait_until(
        lambda: _statuses(daemon, rule).count("succeeded") == count,
        what=f"{count} {rule} jobs to succeed",
    )


def test_a_rate_limit_delays_jobs_records_the_delay_and_holds_across_a_restart(daemon):
    ids = [daemon.cli_json("emit", "signup")["jobs"][0] for _ in range(5)]
    _succeeded(daemon, "mail", 2)  # the burst: one minute's worth
    assert _statuses(daemon, "mail") == ["pending"] * 3 + ["succeeded"] * 2
    daemon.advance("30s")
    _succeeded(daemon, "mail", 3)
    delayed = daemon.cli_json("jobs", "show", ids[2])["attempt_history"][0]
    assert delayed["delayed_ms"] == 30_000
    assert delayed["delayed_by"] == "rule 'mail' (rate_limit 2/minute, burst 2)"
    shown = daemon.cli("jobs", "show", ids[2]).stdout
    assert "30s by rule 'mail' (rate_limit 2/minute, burst 2)" in shown
    # A restart (the fake clock starts again at 09:00) finds the bucket empty, not full.
    daemon.stop()
    daemon.start()
    assert daemon.cli("reload").returncode == 0
    assert _statuses(daemon, "mail") == ["pending"] * 2 + ["succeeded"] * 3
    daemon.advance("1m")
    _succeeded(daemon, "mail", 5)
    rule = daemon.cli_json("rules", "show", "mail")
    assert (rule["rate_limit"], rule["burst"], rule["concurrency"]) == ("2/minute", 2, None)


def test_a_rules_set_override_is_enforced_shown_with_its_source_and_reset(daemon):
    out = daemon.cli("rules", "set", "mail", "--rate-limit", "1/hour", "--concurrency", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "mail: rate-limit 1/hour\nmail: concurrency 1\n"
    for _ in range(3):
        daemon.cli_json("emit", "signup")
    _succeeded(daemon, "mail", 1)
    daemon.advance("10m")
    assert daemon.cli("status").returncode == 0  # a round trip: the loop had its chance
    assert _statuses(daemon, "mail") == ["pending"] * 2 + ["succeeded"]
    piped = daemon.cli("rules", "show", "mail").stdout
    assert "rate_limit\t1/hour (override; file: 2/minute)" in piped
    assert "burst\t1 (override; file: 2)" in piped
    assert "concurrency\t1 (override)" in piped
    assert daemon.cli("rules", "reset", "mail").returncode == 0
    _succeeded(daemon, "mail", 3)  # the file's 2/minute again, with tokens refilled since 09:00
    shown = daemon.cli_json("rules", "show", "mail")["overrides"]["rate_limit"]
    assert shown == {"value": "2/minute", "from": "file", "file": "2/minute"}
