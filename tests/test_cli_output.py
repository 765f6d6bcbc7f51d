"""The CLI's output for people and for scripts: TSV into pipes, fitted tables, one time format."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness import Daemon, cli

from timeos.cli.output import render_panel, render_sheet
from timeos.cli.preview import cli_zone
from timeos.cli.render import (
    event_panel,
    events_sheet,
    fires_sheet,
    health_panel,
    job_panel,
    jobs_sheet,
    output_tail,
    rule_panel,
    status_panel,
)
from timeos.cli.table import Sheet, View, escape_tsv, fit, format_time, visible
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
    [
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\\tb", "a\\\\tb"),
        ("a\r\n", "a\\r\\n"),
        ("k\x1b[2J\x1b]0;PWNED\x07x", "k\\x1b[2J\\x1b]0;PWNED\\x07x"),
        ("\x00\x7f\x9b\x85", "\\x00\\x7f\\x9b\\x85"),
        ("Zoë ✓", "Zoë ✓"),
    ],
    ids=["tab", "newline", "backslash", "crlf", "esc-and-bel", "nul-del-c1", "printable"],
)
def test_tsv_escapes_keep_one_value_in_one_field(raw, escaped):
    assert escape_tsv(raw) == escaped


KTM = ZoneInfo("Asia/Kathmandu")


def _kathmandu_next() -> Sheet:
    """The `timeos next --cron '30 2 * * *' --tz America/New_York` sheet seen from Kathmandu."""
    fires: list[dict[str, Any]] = [
        {"at": "2026-03-07T07:30:00+00:00", "zone": "America/New_York", "note": None},
        {
            "at": "2026-03-08T07:00:00+00:00",
            "zone": "America/New_York",
            "note": "moved from 02:30 by the DST gap",
        },
    ]
    return fires_sheet(fires, datetime(2026, 3, 6, tzinfo=UTC), "Asia/Kathmandu", KTM)


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 140], ids=lambda w: f"{w}cols")
def test_terminal_tables_never_drop_ids_statuses_or_times(width):
    sheet = jobs_sheet([_job(1), _job(2, status="pending")])
    out = render_sheet(sheet, View(zone=UTC, tty=True, width=width))
    for whole in ("01JD3Z8W7T0000000000000001", "pending", "2026-12-07 14:00:00+00:00"):
        assert whole in out, out
    longest = max(len(line.rstrip()) for line in out.splitlines())
    whole_columns = 26 + len("pending") + 25 + 2 * 2  # unboxed: two spaces between columns
    # A terminal too narrow for the whole columns gets longer lines (it wraps them); any
    # other fits its width.
    assert longest <= max(width, whole_columns), out


@pytest.mark.parametrize("width", [80, 100, 120], ids=lambda w: f"{w}cols")
def test_no_column_is_hidden_while_the_terminal_has_room(width):
    sheet = jobs_sheet([_job(1)])
    shown, widths = fit(sheet, View(zone=UTC, tty=True, width=width))
    assert [sheet.columns[i].key for i in shown] == [
        "id",
        "rule",
        "action",
        "status",
        "perform_at",
        "attempts",
        "last_error",
    ]
    out = render_sheet(sheet, View(zone=UTC, tty=True, width=width))
    assert all(len(line) <= width for line in out.splitlines()), out


def test_a_terminal_too_narrow_for_free_text_hides_it_and_keeps_the_rest_whole():
    sheet = jobs_sheet([_job(1)])
    shown, widths = fit(sheet, View(zone=UTC, tty=True, width=40))
    assert [sheet.columns[i].key for i in shown] == ["id", "status", "perform_at"]
    assert widths == [26, 6, 25]


@pytest.mark.parametrize(
    ("width", "dst"),
    [(40, None), (60, None), (80, "m…"), (120, "moved from 02:30 by the DST gap")],
    ids=["40cols", "60cols", "80cols", "120cols"],
)
def test_next_keeps_your_zone_and_shortens_the_dst_note_before_hiding_it(width, dst):
    out = render_sheet(_kathmandu_next(), View(zone=KTM, tty=True, width=width))
    assert "at (America/New_York)" in out and "Asia/Kathmandu" in out
    assert "2026-03-08 03:00:00-04:00" in out and "2026-03-08 12:45:00+05:45" in out
    assert "Sunday" in out and "in 2d 7h 0m" in out
    if dst is None:  # not even the whole columns fit: no room for a note
        assert "DST" not in out and "D…" not in out
    else:
        assert dst in out
        assert all(len(line) <= width for line in out.splitlines()), out


HOSTILE = "k\x1b[2J\x1b]0;PWNED\x07x\x9b\t"  # clear the screen, set the title, C1 CSI, tab
SHOWN = "k\\x1b[2J\\x1b]0;PWNED\\x07x\\x9b\\t"


def _controls(text: str, allowed: str = "\n") -> set[str]:
    return {c for c in text if c not in allowed and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)}


def _hostile_event() -> dict:
    return {
        "id": "01JD3Z8W7T0000000000000001",
        "type": "x",
        "occurred_at": "2026-12-07T14:00:00+00:00",
        "received_at": "2026-12-07T14:00:00+00:00",
        "idempotency_key": HOSTILE,
        "payload": {"note": HOSTILE},
        "jobs": [],
    }


@pytest.mark.parametrize("width", [80, 200], ids=["cut", "whole"])
def test_terminal_tables_show_control_characters_instead_of_sending_them(width):
    out = render_sheet(events_sheet([_hostile_event()]), View(tty=True, width=width, wide=True))
    assert _controls(out) == set()
    assert SHOWN in out


def test_terminal_panels_show_control_characters_and_blocks_keep_their_lines():
    event = render_panel(event_panel(_hostile_event()), View(tty=True, width=200))
    assert _controls(event) == set() and SHOWN in event
    attempt = {"number": 1, "started_at": "2026-12-07T14:00:00+00:00", "error": HOSTILE}
    job = _job(1, note=HOSTILE, attempt_history=[{**attempt, "output": f"one\n{HOSTILE}\n"}])
    for tty in (True, False):
        out = render_panel(job_panel(job), View(tty=tty, width=200))
        assert _controls(out, "\n" if tty else "\n\t") == set(), repr(out)  # TSV: tabs split
        assert f"one\n{SHOWN}\n" in out  # the output tail keeps its line breaks


def test_visible_names_every_control_character():
    assert visible("\x1b\x07\t\n\r\x7f\x80\x9f\xa0") == "\\x1b\\x07\\t\\n\\r\\x7f\\x80\\x9f\xa0"
    assert visible("a\nb\tc", keep_newlines=True) == "a\nb\\tc"
    # --json stays JSON: C0 controls are escaped by JSON itself, even without ensure_ascii.
    assert json.dumps(HOSTILE, ensure_ascii=False).count("\\u001b") == 2


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


def _health(database: dict[str, Any]) -> dict[str, Any]:
    ok = {"status": "healthy", "message": "ok"}
    return {"status": "degraded", "components": {"database": {**ok, **database}}, "jobs": {}}


def test_health_lists_the_daemons_sharing_a_database_and_sqlites_health_has_no_such_table():
    daemons = [
        {
            "id": f"{host}:/run/timeos.sock",
            "host": host,
            "pid": pid,
            "heartbeat_at": "2026-12-04T10:00:00+00:00",
            "alive": alive,
            "fingerprint": fingerprint,
        }
        for host, pid, alive, fingerprint in [
            ("h1", 11, True, "0123456789abcdef" * 4),
            ("h2", 22, False, None),
        ]
    ]
    out = render_panel(health_panel(_health({"daemons": daemons})), View(zone=NY, tty=False))
    lines = out.splitlines()
    assert "id\thost\tpid\theartbeat_at\talive\tfingerprint" in lines
    assert "h1:/run/timeos.sock\th1\t11\t2026-12-04T05:00:00-05:00\tyes\t0123456789ab" in lines
    assert "h2:/run/timeos.sock\th2\t22\t2026-12-04T05:00:00-05:00\tno\t" in lines
    sqlite = render_panel(health_panel(_health({"wal_bytes": 0})), View(tty=False))
    assert "heartbeat" not in sqlite and len(sqlite.split("\n\n")) == 3  # fields, 2 tables


def test_next_names_the_rules_zone_and_shows_the_viewers():
    fires = [{"at": "2026-12-07T07:30:00+00:00", "zone": "America/New_York", "note": None}]
    now = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    sheet = fires_sheet(fires, now, "Europe/Paris", ZoneInfo("Europe/Paris"))
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
                command: [sh, -c, 'for i in $(seq 1 30); do echo "line $i"; done; echo oops >&2']
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
    assert stderr.returncode == 0 and stderr.stdout == "oops\n"  # stored beside stdout
    assert daemon.cli_json("jobs", "output", job, "--stderr")["stderr"] == "oops\n"
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
    assert fires_sheet([], datetime(2026, 1, 1, tzinfo=UTC) + timedelta(0), "UTC", UTC).rows == []


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "show", ""),
        ("jobs", "output", ""),
        ("events", "show", ""),
        ("rules", "show", ""),
        ("rules", "history", ""),
        ("dlq", "retry", ""),
        ("jobs", "cancel", "01J", ""),
        ("next", ""),
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_an_empty_id_or_name_is_a_usage_error_naming_the_argument(args, tmp_path):
    result = cli(*args, "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 2, result.stderr
    named = {"show": "ID", "output": "ID", "retry": "ID...", "cancel": "ID...", "history": "NAME"}
    metavar = "RULE" if args[0] == "next" else named[args[1]]
    if args[:2] == ("rules", "show"):
        metavar = "NAME"
    assert f"Invalid value for '{metavar}': must not be empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_id_holding_a_slash_is_not_found_not_a_traceback(daemon):
    for args, message in [
        (("jobs", "show", "01J/"), "no job with id '01J/'"),
        (("jobs", "output", "a/b"), "no job with id 'a/b'"),
        (("events", "show", "x/"), "no event with id 'x/'"),
        (("rules", "show", "now/"), "no rule named 'now/' is loaded"),
    ]:
        result = daemon.cli(*args)
        assert (result.returncode, result.stderr) == (1, f"Error: {message}\n")


def test_emit_errors_from_the_daemon_are_json_with_json_after_the_command(daemon):
    assert daemon.cli("emit", "user_signup", "--idempotency-key", "k1").returncode == 0
    for args, code in [
        (("emit", "bad type!"), "invalid_payload"),
        (("emit", "user_signup", "--idempotency-key", "timeos:job:x"), "invalid_payload"),
        (
            ("emit", "user_signup", "--idempotency-key", "k1", "--payload", '{"a": 1}'),
            "idempotency_conflict",
        ),
    ]:
        result = daemon.cli(*args, "--json")
        assert result.returncode == 1 and result.stdout == ""
        error = json.loads(result.stderr)["error"]
        assert error["message"] and error["code"] == code, error


@pytest.mark.parametrize(
    ("rule_zone", "viewer", "shown"),
    [
        ("UTC", ZoneInfo("Etc/UTC"), False),
        ("UTC", UTC, False),
        ("Etc/UTC", ZoneInfo("UTC"), False),
        ("America/New_York", ZoneInfo("US/Eastern"), False),
        ("America/New_York", ZoneInfo("America/Toronto"), False),  # same offsets at these fires
        ("UTC", ZoneInfo("Europe/London"), True),  # +01:00 in July
    ],
    ids=["utc-etc-utc", "utc-utc", "etc-utc-utc", "alias", "same-offsets", "other-offset"],
)
def test_next_leaves_out_your_zone_when_it_shows_the_same_offsets(rule_zone, viewer, shown):
    fires = [
        {"at": "2026-07-07T07:30:00+00:00", "zone": rule_zone, "note": None},
        {"at": "2026-12-07T07:30:00+00:00", "zone": rule_zone, "note": None},
    ]
    sheet = fires_sheet(fires, datetime(2026, 7, 1, tzinfo=UTC), "label", viewer)
    assert ("yours" in [c.key for c in sheet.columns]) is shown


def test_a_piped_rule_starts_with_its_name_as_json_does():
    rule = {"name": "weekly", "enabled": True, "action": "a", "priority": 0, "trigger": "event"}
    out = render_panel(rule_panel(rule), View(tty=False))
    assert out.splitlines()[0] == "name\tweekly"


def _on_a_terminal(daemon: Daemon, *args: str) -> str:
    """Run the CLI with a pseudo-terminal as stdout and stderr; return what it wrote."""
    import os
    import pty

    from harness import _exe

    leader, follower = pty.openpty()
    env = {**daemon.env, "TIMEOS_SOCKET": str(daemon.socket), "COLUMNS": "200"}
    subprocess.run([*_exe("timeos"), *args], stdout=follower, stderr=follower, env=env, timeout=30)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    return out.decode()


def test_a_stored_escape_sequence_reaches_the_terminal_as_text(daemon):
    event = daemon.cli("emit", "x", "--idempotency-key", HOSTILE).stdout.strip()
    out = _on_a_terminal(daemon, "events", "show", event)
    assert SHOWN in out and "\x07" not in out and "\x1b[2J" not in out and "\x1b]0;" not in out
    piped = daemon.cli("events", "show", event).stdout
    assert f"idempotency key\t{SHOWN}\n" in piped
