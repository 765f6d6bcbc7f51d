"""The CLI's output for people and for scripts: TSV into pipes, fitted tables, one time format."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from harness import Daemon, cli

from timeos.cli.output import render_panel, render_sheet
from timeos.cli.preview import cli_zone
from timeos.cli.render import (
    fires_sheet,
    jobs_sheet,
    output_tail,
    rule_panel,
    status_panel,
)
from timeos.cli.table import View, escape_tsv, fit, format_time
from timeos.clock import system_zone
from timeos.errors import UsageError

NY = ZoneInfo("America/New_York")


def _job(n: int, **extra) -> dict:
    job = {
        "id": f"01JD3Z8W7T00000000000000{n:02d}",
        "rule": "welcome-email-for-new-premium-customers",
        "action": "send_welcome_email_via_the_mail_gateway",
        "status": "dead",
        "priority": 0,
        "perform_at": "2026-12-07T14:00:00+00:00",
        "attempts": 3,
        "max_attempts": 3,
        "event_id": "01JD3Z8W7T0000000000000099",
        "last_error": "exit status 3: dependency not ready\nsecond line\twith a tab",
    }
    job.update(extra)
    return job


def test_piped_tables_are_tsv_with_full_values_and_iso_times():
    out = render_sheet(jobs_sheet([_job(1)]), View(zone=NY, tty=False))
    header, row = out.splitlines()
    assert header.split("\t")[:4] == ["id", "rule", "action", "status"]
    cells = row.split("\t")
    assert len(cells) == len(header.split("\t"))
    assert cells[1] == "welcome-email-for-new-premium-customers"  # never cut
    assert cells[5] == "2026-12-07T09:00:00-05:00"  # full ISO 8601, the viewer's zone
    assert cells[-1] == "exit status 3: dependency not ready\\nsecond line\\twith a tab"


def test_no_headers_drops_the_header_line():
    out = render_sheet(jobs_sheet([_job(1), _job(2)]), View(tty=False, headers=False))
    assert len(out.splitlines()) == 2
    assert out.startswith("01JD3Z8W7T0000000000000001\t")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a\tb", "a\\tb"), ("a\nb", "a\\nb"), ("a\\tb", "a\\\\tb"), ("a\r\n", "a\\r\\n")],
    ids=["tab", "newline", "backslash", "crlf"],
)
def test_tsv_escapes_keep_one_value_in_one_field(raw, escaped):
    assert escape_tsv(raw) == escaped


@pytest.mark.parametrize("width", [60, 80, 100, 140], ids=lambda w: f"{w}cols")
def test_terminal_tables_fit_the_width_and_keep_ids_and_times_whole(width):
    sheet = jobs_sheet([_job(1), _job(2, status="pending")])
    out = render_sheet(sheet, View(zone=UTC, tty=True, width=width))
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), out
    assert "01JD3Z8W7T0000000000000001" in out
    assert "pending" in out
    if width >= 80:
        assert "2026-12-07 14:00:00+00:00" in out


def test_the_least_important_column_is_shortened_first():
    sheet = jobs_sheet([_job(1)])
    shown, widths = fit(sheet, View(tty=True, width=150))
    keys = [sheet.columns[i].key for i in shown]
    width_of = dict(zip(keys, widths, strict=True))
    assert width_of["id"] == 26
    assert width_of["last_error"] == len("last error")  # importance 1: cut first
    assert width_of["action"] < len("send_welcome_email_via_the_mail_gateway")  # then 3
    assert width_of["rule"] == len("welcome-email-for-new-premium-customers")  # 6: whole


def test_wide_shows_every_column_uncut():
    sheet = jobs_sheet([_job(1)])
    out = render_sheet(sheet, View(tty=True, width=80, wide=True))
    for header in ("prio", "event", "last error"):
        assert header in out
    assert "send_welcome_email_via_the_mail_gateway" in out
    assert "…" not in out


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        (NY, "2026-12-07 09:00:00-05:00"),
        (ZoneInfo("Asia/Kolkata"), "2026-12-07 19:30:00+05:30"),
        (UTC, "2026-12-07 14:00:00+00:00"),
    ],
    ids=["new-york", "kolkata", "utc"],
)
def test_times_show_in_the_viewers_zone_with_the_offset(zone, expected):
    assert format_time("2026-12-07T14:00:00+00:00", View(zone=zone, tty=True)) == expected


def test_summer_and_winter_offsets_differ_in_the_same_zone():
    view = View(zone=NY, tty=True)
    assert format_time("2026-07-07T13:00:00+00:00", view).endswith("-04:00")
    assert format_time("2026-12-07T14:00:00+00:00", view).endswith("-05:00")


def test_paged_tables_say_showing_n_of_m():
    assert jobs_sheet([_job(1)], total=7).footer() == "showing 1 of 7 (see --limit and --offset)"
    assert jobs_sheet([_job(1)], total=1).footer() is None


def test_booleans_print_yes_and_no():
    rule = {"name": "r", "enabled": False, "action": "a", "priority": 0, "trigger": "event"}
    out = render_panel(rule_panel(rule), View(tty=False))
    assert "enabled\tno" in out.splitlines()


def test_status_shows_uptime_as_a_duration_and_paths():
    status = {
        "socket": "/run/timeos/timeos.sock",
        "database": "/var/lib/timeos/timeos.db",
        "rule_files": ["/etc/timeos/rules.yaml"],
        "uptime_seconds": 3 * 86400 + 4 * 3600 + 12 * 60 + 5.5,
        "started_at": "2026-12-04T10:00:00+00:00",
    }
    out = render_panel(status_panel(status), View(zone=NY, tty=False))
    assert "uptime\t3d 4h 12m 5s" in out.splitlines()
    assert "rule files\t/etc/timeos/rules.yaml" in out.splitlines()
    assert "started_at\t2026-12-04T05:00:00-05:00" in out.splitlines()


def test_next_names_the_rules_zone_and_shows_the_viewers():
    fires = [{"at": "2026-12-07T07:30:00+00:00", "zone": "America/New_York", "note": None}]
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    sheet = fires_sheet(fires, now, "Europe/Paris")
    out = render_sheet(sheet, View(zone=ZoneInfo("Europe/Paris"), tty=True, width=120))
    assert "at (America/New_York)" in out
    assert "2026-12-07 02:30:00-05:00" in out  # the rule's zone
    assert "2026-12-07 08:30:00+01:00" in out  # the viewer's
    assert "Monday" in out
    assert "in 1h 30m" in out


def test_output_tail_keeps_the_last_lines():
    output = "".join(f"line {i}\n" for i in range(1, 31))
    tail, cut = output_tail(output, 20)
    assert tail.splitlines()[0] == "line 11" and cut
    assert output_tail("one\n") == ("one", False)


def test_tz_gets_a_did_you_mean_and_local_means_the_system_zone():
    with pytest.raises(UsageError, match="did you mean 'America/New_York'"):
        cli_zone("America/New_Yrok", {})
    assert cli_zone("local", {"TZ": "Asia/Tokyo"}) == ZoneInfo("Asia/Tokyo")


def test_the_users_zone_comes_from_tz():
    assert system_zone({"TZ": "Europe/Berlin"}) == ZoneInfo("Europe/Berlin")
    assert system_zone({"TZ": ":Europe/Berlin"}) == ZoneInfo("Europe/Berlin")
    assert datetime(2026, 1, 1, tzinfo=UTC).astimezone(system_zone({})).utcoffset() is not None


# ---- shells -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_are_valid_shell(shell, tmp_path):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    exe = shutil.which("timeos", path=str(__import__("harness").BIN)) or "timeos"
    # shellingham picks the shell the command runs under; `; true` keeps it from exec'ing.
    script = subprocess.run(
        [shell, "-c", f"{exe} --show-completion; true"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "_TIMEOS_COMPLETE" in script
    path = tmp_path / f"timeos.{shell}"
    path.write_text(script)
    checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_completion_offers_commands_statuses_and_flags():
    def complete(words: str, cword: int) -> list[str]:
        env = {**__import__("os").environ, "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        env["_TIMEOS_COMPLETE"] = "complete_bash"
        return cli(env=env).stdout.split()

    assert "output" in complete("timeos jobs ", 2)
    assert complete("timeos jobs list --status de", 4) == ["dead"]
    assert "--no-headers" in complete("timeos jobs list --no", 3)


def test_dash_h_is_help():
    result = cli("jobs", "list", "-h")
    assert result.returncode == 0 and "--status" in result.stdout


def test_json_errors_are_the_api_error_object_on_stderr(tmp_path):
    result = cli("--json", "--socket", str(tmp_path / "none.sock"), "status")
    assert result.returncode == 3
    assert json.loads(result.stderr)["error"]["code"] == "daemon_unreachable"
    usage = cli("jobs", "list", "--limit", "0", "--json")
    assert usage.returncode == 2
    assert json.loads(usage.stderr)["error"]["code"] == "usage"


# ---- against a real daemon ----------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        textwrap.dedent(
            """
            actions:
              talk:
                command: [sh, -c, 'for i in $(seq 1 30); do echo "line $i"; done']
            rules:
              - name: now
                on_event: user_signup
                perform: talk
              - name: later
                on_event: user_signup
                offset: 1h
                perform: talk
            """
        )
    )
    d = Daemon(tmp_path, rules).start()
    yield d
    d.stop()


def test_pipes_get_one_line_per_row_that_grep_can_count(daemon):
    for n in range(3):
        assert daemon.cli("emit", "user_signup", "--payload", f'{{"n": "{n}\\t"}}').returncode == 0
    listed = daemon.cli("events", "list")
    assert listed.stdout.count("user_signup") == 3
    assert len(listed.stdout.splitlines()) == 4  # header + 3 rows
    paged = daemon.cli("events", "list", "--limit", "2", "--no-headers")
    assert len(paged.stdout.splitlines()) == 2
    assert "showing 2 of 3" in paged.stderr  # the footer stays out of the pipe


def test_jobs_list_shows_waiting_jobs_first_then_finished_newest_first(daemon):
    first = daemon.cli("emit", "user_signup").stdout.strip()
    second = daemon.cli("emit", "user_signup").stdout.strip()
    jobs = {e: daemon.cli_json("events", "show", e)["jobs"] for e in (first, second)}
    for e in (first, second):
        for j in jobs[e]:
            if daemon.job(j)["rule"] == "now":
                daemon.wait_job(j, "succeeded")
    rows = [line.split("\t") for line in daemon.cli("jobs", "list").stdout.splitlines()]
    header, rows = rows[0], rows[1:]
    status, updated = header.index("status"), {j["id"]: j for j in daemon.cli_json("jobs", "list")}
    assert [r[status] for r in rows] == ["pending", "pending", "succeeded", "succeeded"]
    waiting, done = [updated[r[0]] for r in rows[:2]], [updated[r[0]] for r in rows[2:]]
    assert waiting[0]["perform_at"] <= waiting[1]["perform_at"]
    assert done[0]["updated_at"] >= done[1]["updated_at"]
    # --json keeps perform_at order: the finished (earlier) jobs come first there.
    assert [j["status"] for j in daemon.cli_json("jobs", "list")][:2] == ["succeeded"] * 2


def test_jobs_output_prints_what_was_stored_and_show_prints_the_tail(daemon):
    event = daemon.cli("emit", "user_signup").stdout.strip()
    (job,) = [
        j
        for j in daemon.cli_json("events", "show", event)["jobs"]
        if daemon.job(j)["rule"] == "now"
    ]
    daemon.wait_job(job, "succeeded")
    out = daemon.cli("jobs", "output", job)
    assert out.returncode == 0
    assert out.stdout == "".join(f"line {i}\n" for i in range(1, 31))
    assert daemon.cli_json("jobs", "output", job, "--attempt", "1")["output"] == out.stdout
    missing = daemon.cli("jobs", "output", job, "--attempt", "2")
    assert missing.returncode == 1 and "no attempt 2" in missing.stderr
    stderr = daemon.cli("jobs", "output", job, "--stderr")
    assert stderr.returncode == 2 and "not stored separately" in stderr.stderr
    shown = daemon.cli("jobs", "show", job).stdout
    assert "line 30" in shown and "line 10\n" not in shown


def test_empty_results_say_why_on_stderr_and_exit_0(daemon):
    result = daemon.cli("jobs", "list", "--rule", "nwo")
    assert result.returncode == 0
    assert "no rule named 'nwo' is loaded (did you mean 'now'?)" in result.stderr
    dead = daemon.cli("jobs", "list", "--status", "dead")
    assert dead.returncode == 0 and "no job is dead" in dead.stderr
    dlq = daemon.cli("dlq", "list", "--rule", "nope", "--json")
    assert dlq.returncode == 0 and dlq.stdout.strip() == "[]" and "nope" in dlq.stderr


def test_global_options_work_before_the_command(daemon):
    env_free = cli("--socket", str(daemon.socket), "--json", "jobs", "list")
    assert env_free.returncode == 0, env_free.stderr
    assert json.loads(env_free.stdout) == []
    status = cli("--socket", str(daemon.socket), "--utc", "status")
    assert "uptime\t" in status.stdout
    assert f"socket\t{daemon.socket}" in status.stdout


def test_api_lists_send_their_total_in_a_header(daemon):
    for _ in range(3):
        daemon.cli("emit", "user_signup")
    reply = daemon.client.request("GET", "/v1/jobs", query={"limit": 2})
    assert len(reply.body["jobs"]) == 2 and reply.total() == 6
    assert daemon.client.request("GET", "/v1/events", query={"limit": 1}).total() == 3


def test_nothing_here_reads_the_clock(tmp_path):
    # Guard for the one relative time in these tests: fires_sheet takes `now` as an argument.
    assert fires_sheet([], datetime(2026, 1, 1, tzinfo=UTC) + timedelta(0), "UTC").rows == []
