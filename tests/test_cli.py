"""The `timeos` CLI in-process: argument checks, payload reading, the socket client's edge cases."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from harness import cli

from timeos.cli.app import app
from timeos.cli.emit import DEFAULT_MAX_PAYLOAD_BYTES, payload_cap, read_payload
from timeos.cli.entry import main
from timeos.engine import MAX_PAYLOAD_BYTES
from timeos.errors import PayloadError, UsageError

BAD = "caf\udce9"  # b"caf\xe9" as Python hands it over from argv (surrogateescape)

# One non-UTF-8 argument in every command, in a positional or an option value.
EVERY_COMMAND = [
    ("emit", BAD),
    ("emit", "x", "--payload", BAD),
    ("emit", "x", "--idempotency-key", BAD),
    ("emit", "x", "--occurred-at", BAD),
    ("emit-batch", "--socket", "x", "--bogus" + BAD),
    ("events", "list", "--type", BAD),
    ("events", "list", "--since", BAD),
    ("events", "show", BAD),
    ("events", "replay", BAD),
    ("jobs", "list", "--rule", BAD),
    ("jobs", "show", BAD),
    ("jobs", "output", BAD),
    ("jobs", "cancel", "01J", BAD),
    ("dlq", "list", "--rule", BAD),
    ("dlq", "retry", BAD),
    ("dlq", "retry", "--all", "--rule", BAD),
    ("dlq", "delete", BAD),
    ("rules", "list", "--json", BAD),
    ("rules", "show", BAD),
    ("rules", "history", BAD),
    ("rules", "check", "--json", "--bogus" + BAD),
    ("rules", "disable", "x", "--for", BAD),
    ("rules", "enable", BAD),
    ("rules", "set", "x", "--rate-limit", BAD),
    ("rules", "reset", BAD),
    ("rules", "run", "x", "--payload", BAD),
    ("reload", BAD),
    ("status", BAD),
    ("health", BAD),
    ("cleanup", "--older-than", BAD),
    ("next", "--cron", BAD),
    ("next", BAD, "--rules", "rules.yaml"),
    ("watch", "--rule", BAD),
]


def _command_paths() -> set[str]:
    found: set[str] = set()

    def walk(command: object, prefix: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            found.add(prefix.strip())
            return
        for name, sub in subcommands.items():
            walk(sub, f"{prefix} {name}")

    walk(typer.main.get_command(app), "")
    return found


def test_the_non_utf8_table_covers_every_command() -> None:
    groups = {"events", "jobs", "dlq", "rules"}
    covered = {" ".join(a[:2]) if a[0] in groups else a[0] for a in EVERY_COMMAND}
    assert covered == _command_paths()


@pytest.mark.parametrize(
    "args", EVERY_COMMAND, ids=[" ".join(a[:2]) + f"-{i}" for i, a in enumerate(EVERY_COMMAND)]
)
def test_non_utf8_argument_is_a_usage_error_naming_it(
    args: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--socket", str(tmp_path / "none.sock")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    if "--json" in args:  # the error is the API's error object then
        error = json.loads(err)["error"]
        assert error["code"] == "usage"
        err = f"Error: {error['message']}"
    position = list(args).index(next(a for a in args if "\udce9" in a)) + 1
    assert f"Error: argument {position} " in err
    assert "caf\\xe9' is not valid UTF-8" in err
    assert "Traceback" not in err


def test_non_utf8_file_names_stay_usable_as_paths(tmp_path: Path) -> None:
    result = cli("rules", "check", str(tmp_path / BAD))  # a real process: real argv bytes
    assert result.returncode == 1
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_non_utf8_argument_from_a_real_argv_exits_2(tmp_path: Path) -> None:
    result = cli("emit", BAD, "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 2
    assert result.stderr == (
        "Error: argument 2 'caf\\xe9' is not valid UTF-8; arguments must be UTF-8 text"
        " (paths aside)\n"
    )


class _EndlessZeros(io.RawIOBase):
    """A stdin like /dev/zero that fails the test once far more than any cap has been read."""

    def __init__(self) -> None:
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.served > 16 * DEFAULT_MAX_PAYLOAD_BYTES:
            raise AssertionError(f"read {self.served} bytes of an endless stdin")
        size = len(buffer)
        buffer[:size] = bytes(size)
        self.served += size
        return size


def test_payload_from_endless_stdin_stops_just_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zeros = _EndlessZeros()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(zeros)))
    with pytest.raises(PayloadError) as caught:
        read_payload("-", None)
    assert caught.value.message.startswith(
        "--payload - (stdin): more than 1048576 bytes, over the payload limit"
    )
    assert zeros.served <= DEFAULT_MAX_PAYLOAD_BYTES + 64 * 1024


def test_payload_file_over_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"a": "x" * 2000}))
    with pytest.raises(PayloadError) as caught:
        read_payload(None, path, 1000)
    assert caught.value.message.startswith(f"--payload-file {path}: more than 1000 bytes")
    assert read_payload(None, path, 3000) == {"a": "x" * 2000}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 1024 * 1024), ({"TIMEOS_MAX_PAYLOAD_BYTES": "4194304"}, 4 * 1024 * 1024)],
    ids=["default-is-the-daemons-default", "environment-raises-it"],
)
def test_payload_cap_follows_the_environment(environ: dict[str, str], expected: int) -> None:
    assert payload_cap(environ) == expected


def test_payload_cap_rejects_a_non_number() -> None:
    with pytest.raises(UsageError, match="TIMEOS_MAX_PAYLOAD_BYTES='1M' must be a whole number"):
        payload_cap({"TIMEOS_MAX_PAYLOAD_BYTES": "1M"})


def test_cli_default_cap_is_the_daemons_default() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == MAX_PAYLOAD_BYTES


@pytest.mark.parametrize(
    ("args", "code", "exit_code"),
    [
        (("emit", "test", "--payload", "[1]", "--json"), "invalid_payload", 1),
        (("emit", "test", "--json", "--payload-file", "/nonexist"), "invalid_payload", 1),
        (("emit", "--json", "test", "--occurred-at", "yesterday"), "invalid_payload", 1),
        (("emit", "test", "--json"), "daemon_unreachable", 3),
        (("emit", BAD, "--json"), "usage", 2),
        (("--json", "emit", "test", "--payload", "[1]"), "invalid_payload", 1),
    ],
    ids=["payload-not-object", "payload-file", "occurred-at", "unreachable", "non-utf8", "before"],
)
def test_emit_errors_with_json_anywhere_are_the_api_error_object(
    args: tuple[str, ...],
    code: str,
    exit_code: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--socket", str(tmp_path / "none.sock")])
    assert exited.value.code == exit_code
    captured = capsys.readouterr()
    error = json.loads(captured.err)["error"]
    assert error["code"] == code and error["message"]
    assert captured.out == ""


@pytest.mark.parametrize(
    ("name", "problem"),
    [("nonexist", "no such file"), (".", "is a directory")],
    ids=["missing", "directory"],
)
def test_payload_file_errors_name_the_file_and_the_problem(
    name: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    with pytest.raises(PayloadError) as caught:
        read_payload(None, path)
    assert caught.value.message == f"--payload-file {path}: {problem}"


def test_a_number_too_long_to_convert_says_so_without_pythons_hint() -> None:
    with pytest.raises(PayloadError) as caught:
        read_payload('{"n": ' + "1" * 5000 + "}", None)
    assert caught.value.message == "--payload: number too long (over 4300 digits)"
