"""Tests for timeos.rules (loader, source): rule files in, RuleSet or located problems out."""

from __future__ import annotations

import contextlib
import os
import time as clock
from datetime import time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from timeos.errors import RulesError
from timeos.model import (
    DEFAULT_ACTION_TIMEOUT,
    ActionKind,
    CommandSpec,
    CronTrigger,
    DstPolicy,
    EmitSpec,
    EventTrigger,
    FoldPolicy,
    GapPolicy,
    HttpSpec,
    IntervalTrigger,
    MissedPolicy,
    OverlapPolicy,
    PythonSpec,
    RetryPolicy,
    RuleSet,
)
from timeos.rules.conditions import CelCondition
from timeos.rules.loader import load_rules
from timeos.rules.source import MAX_RULES_FILE_BYTES
from timeos.time.cron import weekday_cron

EXAMPLE = """\
timezone: UTC
actions:
  send_welcome_email:
    command: ["./examples/send-email", "welcome"]
    timeout: 30s
  notify_billing:
    http: {url: "http://127.0.0.1:8080/hooks/billing", method: POST,
           headers: {Authorization: "Bearer ${BILLING_TOKEN}"}}
    timeout: 10s
    retry: {max_attempts: 5, backoff: 30s, max_backoff: 1h}
  score_user:
    python: "json:dumps"
  start_onboarding:
    emit: onboarding_started
rules:
  - name: welcome-email
    on_event: user_signup
    offset: 2d
    perform: send_welcome_email
  - name: premium-receipt
    on_event: payment_received
    offset: 24h
    when: payload.amount > 1000
    perform: notify_billing
    priority: 10
    retry: {max_attempts: 5, backoff: 30s, max_backoff: 1h}
    enabled: true
  - name: health-check
    every: 30m
    perform: start_onboarding
  - name: weekly-report
    every: monday
    at: "09:00"
    timezone: America/New_York
    perform: score_user
    dst: {gap: skip, fold: both}
    on_missed: all
    grace: 1h
    overlap: queue
  - name: backups
    cron: "0 */6 * * *"
    perform: send_welcome_email
  - name: follow-up
    on_event: order_shipped
    offset: 7d
    at: "10:00"
    timezone: payload.tz
    perform: start_onboarding
"""

# Two actions, then `rules:` on line 4: a rule appended below starts at line 5, column 5.
HEAD = """\
actions:
  mail: {command: [./send-email, welcome]}
  ping: {emit: pinged}
rules:
"""


def rule(*lines: str) -> str:
    """One rule of the `rules:` list, a key per line."""
    return "  - " + "\n    ".join(lines) + "\n"


def action(*lines: str) -> str:
    """An action called `a` with a key per line: `  a:` on its first line."""
    return "  a:\n" + "".join(f"    {line}\n" for line in lines)


# An action appended below starts at line 2 (`  a:`), its keys at line 3, column 5.
ACTION_HEAD = "actions:\n"
ACTION_TAIL = """\
rules:
  - name: r
    on_event: e
    perform: a
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in its own directory so problems read `rules.yaml:L:C`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name: str, text: str | bytes) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(text: str, environ: dict[str, str] | None = None, **options: bool) -> RuleSet:
    return load_rules([write("rules.yaml", text)], environ or {}, **options)


def problems(paths: list[Path], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(paths, environ or {})
    return [str(p) for p in caught.value.problems]


def problems_in(text: str | bytes, environ: dict[str, str] | None = None) -> list[str]:
    return problems([write("rules.yaml", text)], environ)


def assert_reported(found: list[str], where: str, message: str) -> None:
    at = [p for p in found if p.startswith(f"{where}: ")]
    assert any(message in p for p in at), f"no {message!r} at {where} in:\n" + "\n".join(found)


# ---- what a valid file turns into -------------------------------------------------------------


def test_example_file_loads_every_rule_and_action() -> None:
    ruleset = load(EXAMPLE, {"BILLING_TOKEN": "s3cret"})
    assert [r.name for r in ruleset.rules] == [
        "welcome-email", "premium-receipt", "health-check", "weekly-report", "backups", "follow-up",
    ]  # fmt: skip
    assert ruleset.sources == ("rules.yaml",)

    welcome = ruleset.rule("welcome-email")
    assert welcome is not None
    assert welcome.trigger == EventTrigger("user_signup", timedelta(days=2))
    assert welcome.action == "send_welcome_email"
    assert welcome.where == "rules.yaml:16:5"

    premium = ruleset.rule("premium-receipt")
    assert premium is not None
    assert premium.condition is not None
    assert premium.condition.source == "payload.amount > 1000"
    assert premium.condition.evaluate({"amount": 1500}, {}) is True
    assert premium.priority == 10
    assert premium.retry == RetryPolicy(5, timedelta(seconds=30), timedelta(hours=1))

    health = ruleset.rule("health-check")
    assert health is not None
    assert health.trigger == IntervalTrigger(timedelta(minutes=30))

    weekly = ruleset.rule("weekly-report")
    assert weekly is not None
    assert weekly.trigger == CronTrigger(weekday_cron(["monday"], time(9, 0)))
    assert weekly.timezone == ZoneInfo("America/New_York")
    assert weekly.dst == DstPolicy(GapPolicy.SKIP, FoldPolicy.BOTH)
    assert weekly.on_missed is MissedPolicy.ALL
    assert weekly.grace == timedelta(hours=1)
    assert weekly.overlap is OverlapPolicy.QUEUE

    backups = ruleset.rule("backups")
    assert backups is not None
    assert backups.trigger == CronTrigger("0 */6 * * *")

    follow = ruleset.rule("follow-up")
    assert follow is not None
    assert isinstance(follow.trigger, EventTrigger)
    assert follow.trigger.at == time(10, 0)
    assert follow.trigger.timezone_expr is not None
    assert follow.trigger.timezone_expr.source == "payload.tz"
    assert follow.timezone == ZoneInfo("UTC")  # the expression decides per event

    actions = ruleset.actions
    # A relative program resolves against the rules file's directory (the test's cwd here).
    sender = str(Path("examples/send-email").absolute())
    assert actions["send_welcome_email"].spec == CommandSpec((sender, "welcome"))
    assert actions["send_welcome_email"].timeout == timedelta(seconds=30)
    assert actions["send_welcome_email"].where == "rules.yaml:3:3"
    assert actions["notify_billing"].kind is ActionKind.HTTP
    assert actions["notify_billing"].spec == HttpSpec(
        "http://127.0.0.1:8080/hooks/billing", "POST", (("Authorization", "Bearer s3cret"),)
    )
    assert actions["score_user"].spec == PythonSpec("json:dumps", function=lambda: None)
    assert actions["start_onboarding"].spec == EmitSpec("onboarding_started")
    assert actions["start_onboarding"].timeout == DEFAULT_ACTION_TIMEOUT


def test_optional_rule_keys_take_their_defaults() -> None:
    rule = load(HEAD + "  - name: r\n    on_event: e\n    perform: mail\n").rules[0]
    assert (rule.priority, rule.enabled, rule.retry, rule.condition, rule.grace) == (
        0, True, None, None, None,
    )  # fmt: skip
    assert rule.timezone == ZoneInfo("UTC")
    assert rule.dst == DstPolicy()
    assert (rule.on_missed, rule.overlap) == (MissedPolicy.ONCE, OverlapPolicy.SKIP)
    assert rule.trigger == EventTrigger("e", timedelta(0))


@pytest.mark.parametrize(
    ("every", "at", "days", "at_time"),
    [
        ("monday", None, ["monday"], time(0, 0)),
        ("[monday, friday]", '"07:30"', ["monday", "friday"], time(7, 30)),
        ("weekday", '"09:00"', ["weekday"], time(9, 0)),
        ("weekend", '"23:59"', ["weekend"], time(23, 59)),
        ("Sunday", '"12:00"', ["sunday"], time(12, 0)),
    ],
    ids=["one-day-midnight-default", "list-of-days", "weekday", "weekend", "capitalised"],
)
def test_every_with_days_becomes_the_weekday_cron(
    every: str, at: str | None, days: list[str], at_time: time
) -> None:
    text = HEAD + f"  - name: r\n    every: {every}\n    perform: mail\n"
    if at:
        text += f"    at: {at}\n"
    assert load(text).rules[0].trigger == CronTrigger(weekday_cron(days, at_time))


@pytest.mark.parametrize(
    ("file_zone", "rule_zone", "expected"),
    [
        (None, None, "UTC"),
        ("Europe/Paris", None, "Europe/Paris"),
        ("Europe/Paris", "Asia/Tokyo", "Asia/Tokyo"),
        (None, "America/New_York", "America/New_York"),
    ],
    ids=["default-utc", "file-zone", "rule-zone-wins", "rule-zone-only"],
)
def test_rule_timezone_wins_over_file_timezone_which_wins_over_utc(
    file_zone: str | None, rule_zone: str | None, expected: str
) -> None:
    text = (f"timezone: {file_zone}\n" if file_zone else "") + HEAD
    text += "  - name: r\n    cron: '0 9 * * *'\n    perform: mail\n"
    if rule_zone:
        text += f"    timezone: {rule_zone}\n"
    assert load(text).rules[0].timezone == ZoneInfo(expected)


def test_event_rule_timezone_expression_keeps_the_file_zone_for_the_rule() -> None:
    text = "timezone: Europe/Berlin\n" + HEAD
    text += "  - name: r\n    on_event: e\n    timezone: payload.customer.tz\n    perform: mail\n"
    rule = load(text).rules[0]
    assert rule.timezone == ZoneInfo("Europe/Berlin")
    assert isinstance(rule.trigger, EventTrigger)
    zone_of = rule.trigger.timezone_expr
    assert isinstance(zone_of, CelCondition)
    assert zone_of.evaluate_value({"customer": {"tz": "Asia/Tokyo"}}, {}) == "Asia/Tokyo"


def test_directory_loads_yaml_and_yml_files_sorted_and_skips_others() -> None:
    write("rules.d/b.yml", HEAD + "  - name: b\n    on_event: e\n    perform: mail\n")
    write("rules.d/a.yaml", "rules:\n  - name: a\n    on_event: e\n    perform: ping\n")
    write("rules.d/.#a.yaml", "not: [valid")  # an editor lock file
    write("rules.d/notes.txt", "not yaml at all: [")
    ruleset = load_rules([Path("rules.d")], {})
    assert [r.name for r in ruleset.rules] == ["a", "b"]
    assert ruleset.sources == ("rules.d/a.yaml", "rules.d/b.yml")


def test_actions_are_shared_across_files_and_a_file_may_define_none() -> None:
    actions = write("actions.yaml", HEAD + "  - name: x\n    on_event: e\n    perform: mail\n")
    rules = write("more.yaml", "rules:\n  - name: y\n    every: 1h\n    perform: ping\n")
    ruleset = load_rules([actions, rules], {})
    assert sorted(ruleset.actions) == ["mail", "ping"]
    assert [(r.name, r.action) for r in ruleset.rules] == [("x", "mail"), ("y", "ping")]


def test_environment_variables_expand_in_command_url_and_headers() -> None:
    text = """\
actions:
  run: {command: ["${BIN}/tool", "--token=${TOKEN}"]}
  hook:
    http:
      url: "https://${HOST}/hook"
      method: put
      headers: {Authorization: "Bearer ${TOKEN}", X-Plain: "static"}
rules:
  - {name: a, on_event: e, perform: run}
  - {name: b, on_event: e, perform: hook}
"""
    environ = {"BIN": "/opt/app", "TOKEN": "t0k", "HOST": "example.com"}
    actions = load(text, environ).actions
    assert actions["run"].spec == CommandSpec(("/opt/app/tool", "--token=t0k"))
    assert actions["hook"].spec == HttpSpec(
        "https://example.com/hook", "PUT", (("Authorization", "Bearer t0k"), ("X-Plain", "static"))
    )


COMMANDS = """\
actions:
  here: {command: ["./bin/hello", "./not-resolved"]}
  up: {command: ["../tools/sync"]}
  var: {command: ["${TOOL}"]}
  bare: {command: [echo, hi]}
  absolute: {command: ["/usr/bin/env", "true"]}
rules:
  - {name: a, on_event: e, perform: here}
"""


def test_a_relative_command_resolves_against_the_directory_of_its_rules_file() -> None:
    conf = Path("conf").absolute()
    for given in (Path("conf/rules.yaml"), Path("conf")):  # a file, or a directory of them
        write("conf/rules.yaml", COMMANDS)
        actions = load_rules([given], {"TOOL": "libexec/tool"}).actions
        assert actions["here"].spec == CommandSpec((f"{conf}/bin/hello", "./not-resolved"))
        assert actions["up"].spec == CommandSpec((f"{conf}/../tools/sync",))
        assert actions["var"].spec == CommandSpec((f"{conf}/libexec/tool",))
        assert actions["bare"].spec == CommandSpec(("echo", "hi"))  # PATH, when it runs
        assert actions["absolute"].spec == CommandSpec(("/usr/bin/env", "true"))


def test_a_command_that_is_missing_or_not_executable_is_a_warning_not_an_error() -> None:
    conf = Path("conf").absolute()
    write("conf/bin/hello", "#!/bin/sh\n").chmod(0o755)
    write("conf/tools/plain", "not a program\n").chmod(0o644)
    write("path/tool", "#!/bin/sh\n").chmod(0o755)
    text = """\
actions:
  ok: {command: ["./bin/hello"]}
  on-path: {command: [tool, x]}
  gone: {command: ["./bin/gone"]}
  plain: {command: ["tools/plain"]}
  dir: {command: ["./bin"]}
  nowhere: {command: [no-such-program]}
rules:
  - {name: a, on_event: e, perform: ok}
"""
    rules = write("conf/rules.yaml", text)
    ruleset = load_rules([rules], {"PATH": str(Path("path").absolute())})
    assert len(ruleset.actions) == 6  # every action still loads
    assert [str(w) for w in ruleset.warnings] == [
        f"conf/rules.yaml:4:20: action 'gone': command './bin/gone' ({conf}/bin/gone) "
        "does not exist",
        f"conf/rules.yaml:5:21: action 'plain': command 'tools/plain' ({conf}/tools/plain) "
        "is not executable",
        f"conf/rules.yaml:6:19: action 'dir': command './bin' ({conf}/bin) is not executable",
        "conf/rules.yaml:7:23: action 'nowhere': command 'no-such-program' is not an executable "
        f"found on PATH ({Path('path').absolute()})",
    ]


def test_command_env_is_a_mapping_expanded_from_the_environment() -> None:
    text = """\
actions:
  run:
    command: ["./tool"]
    env: {API_TOKEN: "${TOKEN}", MODE: "batch-${STAGE}", EMPTY: ""}
rules:
  - {name: a, on_event: e, perform: run}
"""
    spec = load(text, {"TOKEN": "t0k", "STAGE": "prod"}).actions["run"].spec
    assert isinstance(spec, CommandSpec)
    assert spec.env == (("API_TOKEN", "t0k"), ("MODE", "batch-prod"), ("EMPTY", ""))
    assert "t0k" not in repr(spec)


def test_python_action_resolves_the_function() -> None:
    text = "actions:\n  a: {python: 'os.path:join'}\n" + ACTION_TAIL
    spec = load(text).actions["a"].spec
    assert isinstance(spec, PythonSpec)
    assert spec.function("a", "b") == "a/b"


def test_python_action_without_import_keeps_a_placeholder_that_raises() -> None:
    text = "actions:\n  a: {python: 'not_installed_anywhere:run'}\n" + ACTION_TAIL
    spec = load(text, import_python=False).actions["a"].spec
    assert isinstance(spec, PythonSpec)
    assert spec.target == "not_installed_anywhere:run"
    with pytest.raises(RuntimeError, match="was not imported"):
        spec.function()


def test_anchors_and_merge_keys_are_supported() -> None:
    text = """\
actions:
  mail: {command: [./send-email]}
rules:
  - &base
    name: a
    on_event: e
    perform: mail
    priority: 5
  - <<: *base
    name: b
    priority: 9
"""
    ruleset = load(text)
    assert [(r.name, r.action, r.priority, r.trigger) for r in ruleset.rules] == [
        ("a", "mail", 5, EventTrigger("e")),
        ("b", "mail", 9, EventTrigger("e")),
    ]


def test_retry_without_max_backoff_lifts_the_default_cap_for_a_long_backoff() -> None:
    text = HEAD + "  - name: r\n    on_event: e\n    perform: mail\n    retry: {backoff: 2h}\n"
    retry = load(text).rules[0].retry
    assert retry == RetryPolicy(3, timedelta(hours=2), timedelta(hours=2))


def test_when_true_literal_is_accepted() -> None:
    text = HEAD + "  - name: r\n    on_event: e\n    perform: mail\n    when: true\n"
    condition = load(text).rules[0].condition
    assert condition is not None
    assert condition.evaluate({}, {}) is True


# ---- problems inside one rule -----------------------------------------------------------------

RULE_CASES = [
    (
        "unknown-rule-key",
        rule("name: r", "on_event: e", "perfrom: mail"),
        "7:5",
        "rule 'r': unknown key 'perfrom' (did you mean 'perform'?)",
    ),
    (
        "unknown-retry-key",
        rule("name: r", "on_event: e", "perform: mail", "retry: {max_attempt: 3}"),
        "8:13",
        "rule 'r': retry: unknown key 'max_attempt' (did you mean 'max_attempts'?)",
    ),
    (
        "unknown-dst-key",
        rule("name: r", "every: monday", "perform: mail", "dst: {gapp: skip}"),
        "8:11",
        "rule 'r': dst: unknown key 'gapp' (did you mean 'gap'?)",
    ),
    (
        "unknown-action",
        rule("name: r", "on_event: e", "perform: mai"),
        "7:14",
        "rule 'r': unknown action 'mai' (did you mean 'mail'?)",
    ),
    (
        "missing-perform",
        rule("name: r", "on_event: e"),
        "5:5",
        "rule 'r': missing `perform:` (the name of the action to run)",
    ),
    (
        "missing-name",
        rule("on_event: e", "perform: mail"),
        "5:5",
        "rule #1: missing `name:`",
    ),
    (
        "name-yes",
        rule("name: yes", "on_event: e", "perform: mail"),
        "5:11",
        (
            "rule #1: name must be a string: YAML reads an unquoted yes as the boolean true; quote "
            'it: "yes"'
        ),
    ),
    (
        "duplicate-key",
        rule("name: r", "on_event: e", "perform: mail", "perform: ping"),
        "8:5",
        (
            "rule 'r': duplicate key 'perform' (first at line 7, column 5); YAML would silently "
            "keep only the last one"
        ),
    ),
    (
        "rule-not-mapping",
        rule("just-a-name"),
        "5:5",
        "rule #1: must be a mapping with name, a trigger and perform, got the text 'just-a-name'",
    ),
    (
        "no-trigger",
        rule("name: r", "perform: mail"),
        "5:5",
        "rule 'r': needs a trigger: one of on_event, every or cron",
    ),
    (
        "two-triggers",
        rule("name: r", "on_event: e", "every: 30m", "perform: mail"),
        "7:5",
        "rule 'r': has both on_event and every: use exactly one trigger",
    ),
    (
        "empty-event-type",
        rule("name: r", "on_event: ''", "perform: mail"),
        "6:15",
        "rule 'r': on_event must not be empty",
    ),
    (
        "offset-words",
        rule("name: r", "on_event: e", "offset: 2 days", "perform: mail"),
        "7:13",
        "rule 'r': offset: bad duration '2 days': use a number and unit",
    ),
    (
        "offset-negative",
        rule("name: r", "on_event: e", "offset: -5s", "perform: mail"),
        "7:13",
        "rule 'r': offset must not be negative, got '-5s'",
    ),
    (
        "offset-bare-number",
        rule("name: r", "on_event: e", "offset: 30", "perform: mail"),
        "7:13",
        "rule 'r': offset: bad duration '30'",
    ),
    (
        "offset-with-cron",
        rule("name: r", "cron: '0 * * * *'", "offset: 5m", "perform: mail"),
        "7:5",
        "rule 'r': offset only applies to on_event rules",
    ),
    (
        "every-zero",
        rule("name: r", "every: 0s", "perform: mail"),
        "6:12",
        "rule 'r': every must be greater than 0, got '0s'",
    ),
    (
        "every-funday",
        rule("name: r", "every: funday", "perform: mail"),
        "6:12",
        (
            "rule 'r': every 'funday' is neither a duration (30s, 15m, 2h, 1d) nor a day "
            "(monday..sunday, weekday, weekend) (did you mean 'sunday'?)"
        ),
    ),
    (
        "every-list-with-typo",
        rule("name: r", "every: [monday, fridya]", "perform: mail"),
        "6:21",
        "rule 'r': every 'fridya' is neither a duration",
    ),
    (
        "priority-text",
        rule("name: r", "on_event: e", "perform: mail", "priority: high"),
        "8:15",
        "rule 'r': priority must be a whole number, got the text 'high'",
    ),
    (
        "priority-bool",
        rule("name: r", "on_event: e", "perform: mail", "priority: true"),
        "8:15",
        "rule 'r': priority must be a whole number, got the boolean true",
    ),
    (
        "priority-float",
        rule("name: r", "on_event: e", "perform: mail", "priority: 1.5"),
        "8:15",
        "rule 'r': priority must be a whole number, got the number 1.5",
    ),
    (
        "at-unquoted-sexagesimal",
        rule("name: r", "on_event: e", "perform: mail", "at: 12:30"),
        "8:9",
        "rule 'r': at: YAML reads an unquoted 12:30 as the base-60 number 750; quote it: \"12:30\"",
    ),
    (
        "at-unquoted-string",
        rule("name: r", "on_event: e", "perform: mail", "at: 09:00"),
        "8:9",
        (
            "rule 'r': at: YAML reads some unquoted times as numbers (12:30 is 750); quote it: "
            '"09:00"'
        ),
    ),
    (
        "at-25-00",
        rule("name: r", "on_event: e", "perform: mail", "at: '25:00'"),
        "8:9",
        "rule 'r': at '25:00' is not a time: use HH:MM, 24-hour, from 00:00 to 23:59",
    ),
    (
        "at-9-5",
        rule("name: r", "on_event: e", "perform: mail", "at: '9:5'"),
        "8:9",
        "rule 'r': at '9:5' is not a time: use HH:MM",
    ),
    (
        "at-with-interval",
        rule("name: r", "every: 30m", "at: '09:00'", "perform: mail"),
        "7:5",
        "rule 'r': at does not apply to `every: <duration>`; use a day or cron",
    ),
    (
        "at-with-cron",
        rule("name: r", "cron: '0 9 * * *'", "at: '09:00'", "perform: mail"),
        "7:5",
        "rule 'r': at does not apply to cron: put the time in the expression",
    ),
    (
        "key-on-is-boolean",
        rule("name: r", "on: e", "perform: mail"),
        "6:5",
        (
            "rule 'r': unknown key 'on' (did you mean 'on_event' or 'on_missed'?); YAML reads an "
            "unquoted on as the boolean true"
        ),
    ),
    (
        "enabled-yes",
        rule("name: r", "on_event: e", "perform: mail", "enabled: yes"),
        "8:14",
        "rule 'r': enabled: use true or false, not 'yes'",
    ),
    (
        "enabled-y",
        rule("name: r", "on_event: e", "perform: mail", "enabled: y"),
        "8:14",
        "rule 'r': enabled must be true or false, got the text 'y'",
    ),
    (
        "unknown-timezone",
        rule("name: r", "every: 1h", "perform: mail", "timezone: Europe/Pariss"),
        "8:15",
        "rule 'r': unknown timezone 'Europe/Pariss' (did you mean 'Europe/Paris'?)",
    ),
    (
        "timezone-expression-on-time-rule",
        rule("name: r", "every: 1h", "perform: mail", "timezone: payload.tz"),
        "8:15",
        "rule 'r': unknown timezone 'payload.tz'",
    ),
    (
        "event-timezone-neither-zone-nor-expression",
        rule("name: r", "on_event: e", "perform: mail", "timezone: Amerca/New_York"),
        "8:15",
        (
            "rule 'r': timezone 'Amerca/New_York' is neither a known IANA zone (did you mean "
            "'America/New_York'?) nor an expression over payload or event"
        ),
    ),
    (
        "bad-cron",
        rule("name: r", "cron: '61 * * * *'", "perform: mail"),
        "6:11",
        "rule 'r': cron '61 * * * *'",
    ),
    (
        "cron-four-fields",
        rule("name: r", "cron: '* * * *'", "perform: mail"),
        "6:11",
        "rule 'r': cron '* * * *' has 4 fields",
    ),
    (
        "when-syntax-plain",
        rule("name: r", "on_event: e", "perform: mail", "when: payload.amount >"),
        "8:27",
        "rule 'r': when 'payload.amount >': invalid expression: the expression ends too early",
    ),
    (
        "when-syntax-quoted",
        rule("name: r", "on_event: e", "perform: mail", 'when: "payload.amount > > 3"'),
        "8:29",
        "rule 'r': when 'payload.amount > > 3': invalid expression: extraneous input '>'",
    ),
    (
        "when-unknown-variable-in-block",
        rule(
            "name: r",
            "on_event: e",
            "perform: mail",
            "when: |",
            "  payload.a > 1 &&",
            "    paylod.b < 2",
        ),
        "10:9",
        "unknown variable 'paylod' (did you mean 'payload'?)",
    ),
    (
        "when-folded-plain",
        rule("name: r", "on_event: e", "perform: mail", "when: payload.a > 1 &&", "  evnt.b < 2"),
        "9:7",
        "unknown variable 'evnt' (did you mean 'event'?)",
    ),
    (
        "on-missed-on-event-rule",
        rule("name: r", "on_event: e", "perform: mail", "on_missed: all"),
        "8:5",
        "rule 'r': on_missed only applies to time-based rules (every, cron)",
    ),
    (
        "grace-zero",
        rule("name: r", "every: 1h", "perform: mail", "grace: 0s"),
        "8:12",
        "rule 'r': grace must be greater than 0, got '0s'",
    ),
    (
        "overlap-typo",
        rule("name: r", "every: 1h", "perform: mail", "overlap: skipp"),
        "8:14",
        "rule 'r': overlap must be one of skip, queue, allow, got 'skipp' (did you mean 'skip'?)",
    ),
    (
        "on-missed-off",
        rule("name: r", "every: 1h", "perform: mail", "on_missed: off"),
        "8:16",
        "rule 'r': on_missed must be a string: YAML reads an unquoted off as the boolean false",
    ),
    (
        "dst-gap-value",
        rule("name: r", "every: monday", "perform: mail", "dst: {gap: later}"),
        "8:16",
        "rule 'r': dst.gap must be one of run_after, skip, got 'later'",
    ),
    (
        "retry-zero-attempts",
        rule("name: r", "on_event: e", "perform: mail", "retry: {max_attempts: 0}"),
        "8:27",
        "rule 'r': retry.max_attempts must be 1..1000, got 0",
    ),
    (
        "retry-backoff-zero",
        rule("name: r", "on_event: e", "perform: mail", "retry: {backoff: 0s}"),
        "8:22",
        "rule 'r': retry.backoff must be greater than 0, got '0s'",
    ),
    (
        "retry-max-below-backoff",
        rule("name: r", "on_event: e", "perform: mail", "retry: {backoff: 1h, max_backoff: 30s}"),
        "8:26",
        "rule 'r': retry.max_backoff (30s) must be at least retry.backoff (1h)",
    ),
    (
        "retry-not-mapping",
        rule("name: r", "on_event: e", "perform: mail", "retry: 3"),
        "8:12",
        "rule 'r': retry must be a mapping of keys to values, got the number 3",
    ),
]


@pytest.mark.parametrize(
    ("rule", "where", "message"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
def test_rule_problem_is_reported_at_its_location(rule: str, where: str, message: str) -> None:
    assert_reported(problems_in(HEAD + rule), f"rules.yaml:{where}", message)


# ---- problems inside one action ---------------------------------------------------------------

ACTION_CASES = [
    (
        "unknown-action-key",
        action("emit: x", "timeut: 5s"),
        "4:5",
        "action 'a': unknown key 'timeut' (did you mean 'timeout'?)",
    ),
    (
        "unknown-http-key",
        action("http: {url: 'http://h/', methd: GET}"),
        "3:30",
        "action 'a': http: unknown key 'methd' (did you mean 'method'?)",
    ),
    (
        "unknown-action-retry-key",
        action("emit: x", "retry: {backof: 1s}"),
        "4:13",
        "action 'a': retry: unknown key 'backof' (did you mean 'backoff'?)",
    ),
    (
        "action-not-mapping",
        "  a: just-text\n",
        "2:6",
        (
            "action 'a': must be a mapping with one of command, http, python, emit, got the text "
            "'just-text'"
        ),
    ),
    (
        "no-kind",
        "  a: {timeout: 5s}\n",
        "2:6",
        "action 'a': needs one of command, http, python, emit",
    ),
    (
        "two-kinds",
        "  a: {emit: x, command: [x]}\n",
        "2:16",
        "action 'a': has both emit and command: use one",
    ),
    (
        "empty-command",
        action("command: []"),
        "3:14",
        "action 'a': command must not be an empty list: give at least the program",
    ),
    (
        "command-string",
        action("command: ./send-email welcome"),
        "3:14",
        (
            "action 'a': command must be an argv list, not a string: write command: "
            '["./send-email", "welcome"]'
        ),
    ),
    (
        "command-non-string-item",
        action("command: [sleep, 5]"),
        "3:22",
        "action 'a': command[1] must be a string, got the number 5; quote it: \"5\"",
    ),
    (
        "command-nested-list",
        action("command: [[a]]"),
        "3:15",
        "action 'a': command[0] must be a string, got a list",
    ),
    (
        "command-unset-variable",
        action("command: [./x, '${API_KEY}']"),
        "3:20",
        "action 'a': command[1] uses ${API_KEY}, which is not set in the environment",
    ),
    (
        "timeout-zero",
        action("emit: x", "timeout: 0s"),
        "4:14",
        "action 'a': timeout must be greater than 0, got '0s'",
    ),
    (
        "timeout-without-unit",
        action("emit: x", "timeout: 30"),
        "4:14",
        "action 'a': timeout: bad duration '30': use a number and unit",
    ),
    (
        "emit-NO-is-boolean",
        action("emit: NO"),
        "3:11",
        (
            "action 'a': emit must be a string: YAML reads an unquoted NO as the boolean false; "
            'quote it: "NO"'
        ),
    ),
    (
        "http-ftp-url",
        action("http: {url: 'ftp://host/x'}"),
        "3:17",
        "action 'a': http.url 'ftp://host/x' must be an http:// or https:// URL with a host",
    ),
    (
        "http-url-without-host",
        action("http: {url: 'http:///x'}"),
        "3:17",
        "action 'a': http.url 'http:///x' must be an http:// or https:// URL with a host",
    ),
    (
        "http-missing-url",
        action("http: {method: GET}"),
        "3:11",
        "action 'a': http needs a url",
    ),
    (
        "http-bad-method",
        action("http: {url: 'http://h/', method: FETCH}"),
        "3:38",
        "action 'a': http.method must be one of GET, POST, PUT, PATCH, DELETE, got 'FETCH'",
    ),
    (
        "http-unset-variable-in-url",
        action("http: {url: 'http://${HOOK_HOST}/x'}"),
        "3:17",
        "action 'a': http.url uses ${HOOK_HOST}, which is not set in the environment",
    ),
    (
        "http-unset-variable-in-header",
        action("http: {url: 'http://h/', headers: {Authorization: 'Bearer ${TOKEN}'}}"),
        "3:55",
        "action 'a': http.headers.Authorization uses ${TOKEN}, which is not set in the environment",
    ),
    (
        "http-unclosed-variable",
        action("http: {url: 'http://${HOST/x'}"),
        "3:17",
        "action 'a': http.url: unclosed ${ in 'http://${HOST/x'",
    ),
    (
        "http-header-line-break",
        action("http: {url: 'http://h/', headers: {X-Evil: '${EVIL}'}}"),
        "3:48",
        "action 'a': http.headers.X-Evil must not contain a line break",
    ),
    (
        "env-on-an-http-action",
        action("http: {url: 'http://h/'}", "env: {A: b}"),
        "4:5",
        "action 'a': env applies only to command actions, not http",
    ),
    (
        "env-not-a-mapping",
        action("command: [x]", "env: [A=b]"),
        "4:10",
        "action 'a': env must be a mapping",
    ),
    (
        "env-bad-name",
        action("command: [x]", "env: {BAD-NAME: b}"),
        "4:11",
        "action 'a': env: 'BAD-NAME' is not a valid variable name (letters, digits, _)",
    ),
    (
        "env-reserved-name",
        action("command: [x]", "env: {TIMEOS_JOB_ID: b}"),
        "4:11",
        "action 'a': env: TIMEOS_JOB_ID is set by timeosd for each run",
    ),
    (
        "env-unset-variable",
        action("command: [x]", "env: {TOKEN: '${NO_SUCH_TOKEN}'}"),
        "4:18",
        "action 'a': env.TOKEN uses ${NO_SUCH_TOKEN}, which is not set in the environment",
    ),
    (
        "env-number-value",
        action("command: [x]", "env: {PORT: 8080}"),
        "4:17",
        "action 'a': env.PORT must be a string",
    ),
    (
        "python-not-module-function",
        action("python: myapp.scoring"),
        "3:13",
        (
            "action 'a': python must be 'module:function' (e.g. 'myapp.scoring:score_user'), got "
            "'myapp.scoring'"
        ),
    ),
    (
        "python-missing-module",
        action("python: 'no_such_module_for_timeos:f'"),
        "3:13",
        (
            "action 'a': python 'no_such_module_for_timeos:f': cannot import "
            "'no_such_module_for_timeos': ModuleNotFoundError"
        ),
    ),
    (
        "python-missing-attribute",
        action("python: 'os.path:joinn'"),
        "3:13",
        (
            "action 'a': python 'os.path:joinn': 'os.path' has no attribute 'joinn' (did you mean "
            "'join'?)"
        ),
    ),
    (
        "python-not-callable",
        action("python: 'os:sep'"),
        "3:13",
        "action 'a': python 'os:sep': 'os.sep' is not callable",
    ),
    (
        "action-name-boolean",
        "  yes: {emit: x}\n",
        "2:3",
        "action 'yes': an action name must be text: YAML reads an unquoted yes as the boolean true",
    ),
]


@pytest.mark.parametrize(
    ("action", "where", "message"), [c[1:] for c in ACTION_CASES], ids=[c[0] for c in ACTION_CASES]
)
def test_action_problem_is_reported_at_its_location(action: str, where: str, message: str) -> None:
    found = problems_in(ACTION_HEAD + action + ACTION_TAIL, {"EVIL": "x\r\nHost: evil"})
    assert_reported(found, f"rules.yaml:{where}", message)


def test_python_import_that_raises_is_a_load_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write("timeos_test_broken_hooks.py", "raise RuntimeError('database is down')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = problems_in(
        ACTION_HEAD + "  a: {python: 'timeos_test_broken_hooks:run'}\n" + ACTION_TAIL
    )
    assert_reported(
        found,
        "rules.yaml:2:15",
        "action 'a': python 'timeos_test_broken_hooks:run': cannot import "
        "'timeos_test_broken_hooks': RuntimeError: database is down",
    )


@pytest.mark.parametrize(
    ("module", "body", "raised"),
    [
        (
            "timeos_test_argparse_hooks",
            "import argparse\nargparse.ArgumentParser().parse_args(['--no-such-flag'])\n",
            "SystemExit: 2",
        ),
        ("timeos_test_exit_hooks", "raise SystemExit(3)\n", "SystemExit: 3"),
        ("timeos_test_interrupt_hooks", "raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    ],
    ids=["argparse-at-import", "sys-exit", "keyboard-interrupt"],
)
def test_python_module_that_exits_at_import_is_a_load_error_not_an_exit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str, body: str, raised: str
) -> None:
    write(f"{module}.py", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = problems_in(ACTION_HEAD + f"  a: {{python: '{module}:run'}}\n" + ACTION_TAIL)
    assert_reported(
        found,
        "rules.yaml:2:15",
        f"action 'a': python '{module}:run': cannot import '{module}': {raised}",
    )


def test_python_module_that_hangs_at_import_times_out_naming_the_module(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    write("timeos_test_hanging_hooks.py", f"open({str(gate)!r}).read()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = ACTION_HEAD + "  a: {python: 'timeos_test_hanging_hooks:run'}\n" + ACTION_TAIL
    try:
        with pytest.raises(RulesError) as caught:
            load_rules([write("rules.yaml", text)], {}, import_timeout=0.2)
    finally:
        release(gate)
    assert_reported(
        [str(p) for p in caught.value.problems],
        "rules.yaml:2:15",
        "action 'a': python 'timeos_test_hanging_hooks:run': import of module "
        "'timeos_test_hanging_hooks' timed out after 0.2s",
    )


def release(fifo: Path) -> None:
    """Let a reader blocked on `fifo` go: open it for writing and close it (EOF)."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_problem_messages_never_show_an_expanded_secret() -> None:
    text = ACTION_HEAD + "  a: {http: {url: 'ftp://${TOKEN}@host/'}}\n" + ACTION_TAIL
    found = problems_in(text, {"TOKEN": "hunter2"})
    assert found == [
        "rules.yaml:2:19: action 'a': http.url 'ftp://${TOKEN}@host/' must be an http:// or "
        "https:// URL with a host"
    ]
    assert "hunter2" not in found[0]


# ---- problems with the file as a whole --------------------------------------------------------

FILE_CASES = [
    (
        "empty-file",
        "",
        "1:1",
        "file is empty: a rules file needs a `rules:` list with at least one rule",
    ),
    (
        "only-comments",
        "# rules go here\n# (none yet)\n",
        "1:1",
        "file is empty: a rules file needs a `rules:` list with at least one rule",
    ),
    (
        "no-rules-key",
        "actions:\n  a: {emit: x}\n",
        "1:1",
        "no `rules:` key: a rules file needs a list of rules",
    ),
    (
        "rules-not-a-list",
        "rules: {name: r}\n",
        "1:8",
        "`rules:` must be a list of rules, got a mapping",
    ),
    (
        "rules-empty-list",
        "rules: []\n",
        "1:8",
        "`rules:` is empty: a rules file must contain at least one rule",
    ),
    (
        "rules-null",
        "rules:\n",
        "1:7",
        "`rules:` must be a list of rules, got nothing (null)",
    ),
    (
        "top-level-list",
        "- name: r\n",
        "1:1",
        "a rules file must be a mapping with `rules:`, got a list",
    ),
    (
        "unknown-top-key",
        "rule:\n  - name: r\n",
        "1:1",
        "unknown key 'rule' (did you mean 'rules'?)",
    ),
    (
        "unknown-file-timezone",
        "timezone: Mars/Base\nrules: []\n",
        "1:11",
        "unknown timezone 'Mars/Base'",
    ),
    (
        "actions-not-a-mapping",
        "actions: [a]\nrules: []\n",
        "1:10",
        "actions must be a mapping of keys to values, got a list",
    ),
    (
        "duplicate-top-key",
        "rules: []\nrules: []\n",
        "2:1",
        "duplicate key 'rules' (first at line 1, column 1)",
    ),
    (
        "duplicate-action-in-file",
        "actions:\n  a: {emit: x}\n  a: {emit: y}\nrules: []\n",
        "3:3",
        "duplicate key 'a' (first at line 2, column 3)",
    ),
    (
        "yaml-syntax-error",
        "rules:\n  - name: [oops\n",
        "3:1",
        (
            "YAML syntax error: expected ',' or ']', but got '<stream end>' (while parsing a flow "
            "sequence)"
        ),
    ),
    (
        "unquoted-cron-star",
        "rules:\n  - name: r\n    cron: * * * * *\n",
        "3:12",
        'a value starting with * must be quoted, e.g. cron: "*/5 * * * *"',
    ),
    (
        "tab-indentation",
        "rules:\n\t- name: r\n",
        "2:1",
        "indent with spaces, not tabs",
    ),
    (
        "python-object-tag",
        "rules: !!python/object/apply:os.system ['true']\n",
        "1:8",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    (
        "control-character",
        "rules: \x07\n",
        "1:8",
        "character #x0007 is not allowed in YAML",
    ),
    (
        "two-documents",
        "rules: []\n---\nrules: []\n",
        "2:1",
        "YAML syntax error: but found another document (expected a single document in the stream)",
    ),
    (
        "undefined-alias",
        "rules: *nothing\n",
        "1:8",
        "YAML syntax error: found undefined alias 'nothing'",
    ),
    (
        "alias-cycle",
        "rules: &loop [*loop]\n",
        "1:8",
        "an alias refers to a node that contains it (a cycle)",
    ),
]


@pytest.mark.parametrize(
    ("text", "where", "message"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_file_problem_is_reported_at_its_location(text: str, where: str, message: str) -> None:
    assert_reported(problems_in(text), f"rules.yaml:{where}", message)


def test_non_utf8_file_is_an_error_naming_the_file_and_byte() -> None:
    found = problems_in(b"rules:\n  - name: caf\xe9\n")
    assert found == ["rules.yaml:2:14: file is not valid UTF-8 (byte 0xe9 at offset 20)"]


def test_billion_laughs_fails_fast_with_a_clear_error() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append("rules: *a9")
    started = clock.perf_counter()
    found = problems_in("\n".join(lines) + "\n")
    elapsed = clock.perf_counter() - started
    assert len(found) == 1
    assert "expands to more than 100000 nodes through anchors and aliases" in found[0]
    assert elapsed < 0.5, f"took {elapsed:.2f}s"


def test_deep_nesting_is_an_error_not_a_recursion_crash() -> None:
    # 1000 levels is far past where PyYAML's recursive composer would raise RecursionError.
    found = problems_in("rules: " + "[" * 1000 + "]" * 1000 + "\n")
    assert found == ["rules.yaml:1:71: YAML nesting is too deep (limit 64 levels)"]


# ---- across files -----------------------------------------------------------------------------


def test_duplicate_rule_names_across_files_name_both_locations() -> None:
    first = write("a.yaml", HEAD + rule("name: welcome", "on_event: e", "perform: mail"))
    second = write(
        "b.yaml",
        "rules:\n"
        + rule("name: other", "on_event: e", "perform: ping")
        + rule("name: welcome", "every: 1h", "perform: ping"),
    )
    assert problems([first, second]) == [
        "b.yaml:5:5: rule 'welcome': duplicate rule name; first defined at a.yaml:5:5"
    ]


def test_duplicate_action_names_across_files_name_both_locations() -> None:
    first = write("a.yaml", HEAD + "  - name: x\n    on_event: e\n    perform: mail\n")
    second = write(
        "b.yaml", "actions:\n  mail: {emit: m}\nrules:\n  - {name: y, on_event: e, perform: mail}\n"
    )
    assert problems([first, second]) == [
        "b.yaml:2:3: action 'mail': defined twice; first defined at a.yaml:2:3"
    ]


def test_every_problem_in_every_file_is_reported_in_file_order() -> None:
    first = write(
        "a.yaml", HEAD + "  - name: x\n    on_event: e\n    perform: nope\n    priority: high\n"
    )
    second = write("b.yaml", "")
    third = write("c.yaml", "rules: []\n")
    found = problems([first, second, third])
    assert found == [
        "a.yaml:7:14: rule 'x': unknown action 'nope'",
        "a.yaml:8:15: rule 'x': priority must be a whole number, got the text 'high'",
        "b.yaml:1:1: file is empty: a rules file needs a `rules:` list with at least one rule",
        "c.yaml:1:8: `rules:` is empty: a rules file must contain at least one rule",
    ]


def test_missing_path_is_an_error() -> None:
    assert problems([Path("nowhere.yaml")]) == ["nowhere.yaml: no such file or directory"]


def test_directory_without_yaml_files_is_an_error() -> None:
    write("rules.d/README.txt", "nothing here")
    assert problems([Path("rules.d")]) == ["rules.d: directory has no .yaml files"]


def test_no_paths_at_all_is_an_error() -> None:
    assert problems([]) == ["<rules>: no rule files given"]


def test_rules_error_carries_problems_for_the_wire() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules([write("rules.yaml", "rules: []\n")], {})
    error = caught.value
    assert error.code == "rules_invalid"
    assert [(p.where, p.message) for p in error.problems] == [
        ("rules.yaml:1:8", "`rules:` is empty: a rules file must contain at least one rule")
    ]
    body = error.to_wire()["error"]
    assert isinstance(body, dict)
    assert body["problems"] == [str(error.problems[0])]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("    priority: 99999999999999999999", "priority must be within ±2147483647"),
        ("    retry: {max_attempts: 5000}", "retry.max_attempts must be 1..1000, got 5000"),
        ("    offset: 99999999999w", "longer than 100 years"),
        ('    on_event: "also bad!"', "is not an event type"),
        ('    name: "team/reports"', "no slashes"),
    ],
    ids=["priority", "attempts", "offset", "event-type", "slash-in-name"],
)
def test_numbers_and_names_that_would_break_at_run_time_are_load_errors(tmp_path, line, message):
    path = tmp_path / "rules.yaml"
    name = "" if "name:" in line else "    name: r\n"
    body = 'actions:\n  a: {command: ["true"]}\nrules:\n  -\n' + name + "    perform: a\n"
    if "on_event" not in line:
        body += "    on_event: x\n"
    path.write_text(body + line + "\n")
    with pytest.raises(RulesError) as err:
        load_rules([path], {})
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
        (lambda p: p.write_bytes(b"#" * (MAX_RULES_FILE_BYTES + 1)), "over the limit"),
    ],
    ids=["fifo", "device", "huge"],
)
def test_a_rules_path_that_is_not_a_small_plain_file_is_a_located_error(make, message):
    # A FIFO used to block the reader (and a daemon's reload, and so its shutdown) until some
    # writer came; /dev/zero used to grow the reader's memory without end.
    path = Path("rules.yaml")
    make(path)
    with pytest.raises(RulesError) as caught:
        load_rules([path], {})
    assert message in str(caught.value) and "rules.yaml" in str(caught.value)
