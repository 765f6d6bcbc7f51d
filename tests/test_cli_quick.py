"""`timeos emit`'s quick path (cli/quick.py) against the typer app: same output, same exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import Daemon, cli

from timeos.cli import quick

ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
DEEP = '{"a": ' + "[" * 40 + "1" + "]" * 40 + "}"  # deeper than timeosd takes (32)
# The typer app's road, as `timeos` took it before the quick path existed.
TYPER = "import sys; from timeos.cli.app import main; sys.argv[0] = 'timeos'; main()"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    rules = tmp / "rules.yaml"
    rules.write_text(
        textwrap.dedent(
            """
            actions:
              note: {emit: noted}
            rules:
              - {name: r, on_event: e, perform: note, offset: 1h}
              - name: reminder
                on_event: order
                offset: 1h
                perform: note
                cancel_on: [{event: paid, match: payload.order}]
            """
        )
    )
    running = Daemon(tmp, rules).start()
    try:
        yield running
    finally:
        running.stop()


def _both(
    daemon: Daemon, *args: str, key: str | None = None, before: tuple[str, ...] = ()
) -> list[tuple[int, str, str]]:
    """Run `args` by the real `timeos` (quick path) and by the typer app; ids made alike.

    `before` is emitted (by typer's road) ahead of each run; `key` gets each road's name.
    """
    env = _env(daemon)
    runs = []
    for road, argv in (("quick", ["timeos"]), ("typer", [sys.executable, "-c", TYPER])):
        if before:
            setup = subprocess.run([sys.executable, "-c", TYPER, *before], env=env, timeout=30)
            assert setup.returncode == 0
        extra = ("--idempotency-key", f"{key}-{road}") if key else ()
        if road == "quick":
            done = cli(*args, *extra, env=env)
        else:
            done = subprocess.run(
                [*argv, *args, *extra], capture_output=True, text=True, timeout=30, env=env
            )
        runs.append((done.returncode, _alike(done.stdout, road), _alike(done.stderr, road)))
    return runs


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("emit", "e"), None),
        (("emit", "e", "--payload", '{"n": 1, "s": "\u00e9\u65e5"}'), None),
        (("emit", "--json", "e", "--payload={}"), None),
        (("emit", "e"), "dup"),  # run twice below: the second is a duplicate
        (("emit", "bad type!"), None),
        (("emit", "bad type!", "--json"), None),
        (("emit", "e", "--idempotency-key", "timeos:job:x"), None),
        (("emit", "e", "--payload", DEEP), None),
        (("emit", "paid", "--payload", '{"order": 7}'), None),
    ],
    ids=["plain", "payload", "json", "duplicate", "bad-type", "bad-type-json", "reserved-key",
         "too-deep", "cancels"],
)  # fmt: skip
def test_the_quick_path_answers_as_the_typer_app_does(daemon: Daemon, args, key) -> None:
    # Something for cancel_on to cancel, on each road.
    before = ("emit", "order", "--payload", '{"order": 7}') if args[1] == "paid" else ()
    first = _both(daemon, *args, key=key, before=before)
    assert first[0] == first[1]
    if key:
        again = _both(daemon, *args, key=key)
        assert again[0] == again[1] and "duplicate" in again[0][2]


def test_a_conflicting_idempotency_key_is_the_same_error_on_both_roads(daemon: Daemon) -> None:
    for road in ("quick", "typer"):
        assert cli("emit", "e", "--idempotency-key", f"c-{road}", env=_env(daemon)).returncode == 0
    runs = _both(daemon, "emit", "e", "--payload", '{"other": 1}', key="c")
    assert runs[0] == runs[1] and runs[0][0] == 1 and "idempotency" in runs[0][2]


def test_the_quick_path_takes_a_plain_emit_itself(daemon: Daemon, capsys) -> None:
    env = _env(daemon)
    assert quick.emit(["emit", "e", "--payload", '{"n": 2}'], env) == 0
    assert ULID.fullmatch(capsys.readouterr().out.strip())


@pytest.mark.parametrize(
    "argv",
    [
        ["emit"],
        ["emit", "--help"],
        ["emit", "e", "-h"],
        ["emit", "e", "f"],
        ["emit", "e", "--json", "--json"],
        ["emit", "e", "--payload"],
        ["emit", "e", "--payload", ""],
        ["emit", "e", "--payload", "-"],
        ["emit", "e", "--payload", "--json"],
        ["emit", "e", "--payload", "{}", "--payload", "{}"],
        ["emit", "e", "--payload-file", "p.json"],
        ["emit", "e", "--occurred-at", "2026-01-01T00:00Z"],
        ["emit", "e", "--payload", '{"a": NaN}'],
        ["emit", "e", "--payload", "[1]"],
        ["emit", "e", "--payload", '{"a": "\udce9"}'],
        ["emit", "e", "--payload", '{"a": 1e999}'],
        ["emit", "-x"],
        ["emit", "e", "--socket", "/nonexistent/timeos.sock"],
        ["jobs", "list"],
    ],
)
def test_the_quick_path_hands_on_before_sending_anything_it_does_not_take_plainly(
    daemon: Daemon, argv: list[str], capsys
) -> None:
    assert quick.emit(argv, _env(daemon)) is None
    assert capsys.readouterr() == ("", "")


def test_an_unreachable_daemon_is_reported_as_before(tmp_path: Path) -> None:
    missing = str(tmp_path / "nobody.sock")
    quick_road = cli("emit", "e", "--socket", missing)
    typer_road = subprocess.run(
        [sys.executable, "-c", TYPER, "emit", "e", "--socket", missing],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert quick_road.returncode == typer_road.returncode == 3
    assert quick_road.stderr == typer_road.stderr and "not running" in quick_road.stderr


def _alike(text: str, road: str) -> str:
    return ULID.sub("<ID>", text).replace(f"-{road}", "-<road>")


def _env(daemon: Daemon) -> dict[str, str]:
    return {**daemon.env, "TIMEOS_SOCKET": str(daemon.socket)}


NEXT_CASES = [
    ["next", "--cron", "30 2 * * *", "--tz", "America/New_York", "--count", "3"],
    ["next", "--cron=0 0 29 2 *", "--after", "2026-01-01T00:00Z", "--count", "2"],
    ["next", "--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--json", "--count=2"],
    ["next", "--cron", "61 * * * *"],
    ["next", "--cron", "* * * * *", "--tz", "Mars/Base"],
    ["next", "--cron", "0 0 * * *", "--after", "yesterday", "--json"],
]


@pytest.mark.parametrize(
    "argv",
    NEXT_CASES,
    ids=["zone", "leap-day-after", "json", "bad-cron", "bad-zone", "bad-after-json"],
)
def test_next_into_a_pipe_answers_as_the_typer_app_does(argv: list[str]) -> None:
    quick_road = cli(*argv)
    typer_road = subprocess.run(
        [sys.executable, "-c", TYPER, *argv], capture_output=True, text=True, timeout=30
    )
    assert quick_road.returncode == typer_road.returncode
    # The from_now column counts from each run's own clock: compare the rest.
    assert _without_from_now(quick_road.stdout) == _without_from_now(typer_road.stdout)
    assert quick_road.stderr == typer_road.stderr


def _without_from_now(tsv: str) -> list[list[str]]:
    rows = [line.split("\t") for line in tsv.splitlines()]
    at = rows[0].index("from_now") if rows and "from_now" in rows[0] else None
    return [[v for i, v in enumerate(row) if i != at] for row in rows]


@pytest.mark.parametrize(
    "argv",
    [
        ["next", "--cron"],
        ["next", "weekly", "--rules", "rules.yaml"],
        ["next", "--cron", "* * * * *", "--count", "0"],
        ["next", "--cron", "* * * * *", "--count", "1001"],
        ["next", "--cron", "* * * * *", "--utc"],
        ["next", "--cron", "* * * * *", "--help"],
        ["next", "--cron", "* * * * *", "--cron", "0 * * * *"],
    ],
)
def test_next_hands_on_what_it_does_not_take_plainly(argv: list[str], capsys) -> None:
    assert quick.next_fires(argv, {}) is None
    assert capsys.readouterr() == ("", "")


_PROBE = """
import json, sys
from timeos.cli.entry import main
sys.argv = ["timeos", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = ("typer", "rich", "argparse", "asyncio", "dataclasses", "typing", "pathlib",
         "timeos.cli.client", "timeos.cli.app")
sys.stderr.write("LOADED=" + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n")
"""


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["emit", "e", "--payload", '{"n": 1}'], []),
        # The cron code's model is made of dataclasses and typing; the client and typer stay out.
        (["next", "--cron", "*/5 * * * *"], ["dataclasses", "pathlib", "typing"]),
    ],
    ids=["emit", "next"],
)
def test_the_quick_paths_leave_typer_and_the_heavy_modules_unloaded(
    daemon: Daemon, argv: list[str], loaded: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(daemon),
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED=")]
    assert line, proc.stderr
    assert json.loads(line[0][len("LOADED=") :]) == loaded
