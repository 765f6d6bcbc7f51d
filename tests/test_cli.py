"""The `timeos` CLI in-process: argument checks, payload reading, the socket client's edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from harness import cli

from timeos.cli.app import app
from timeos.cli.entry import main

BAD = "caf\udce9"  # b"caf\xe9" as Python hands it over from argv (surrogateescape)

# One non-UTF-8 argument in every command, in a positional or an option value.
EVERY_COMMAND = [
    ("emit", BAD),
    ("emit", "x", "--payload", BAD),
    ("emit", "x", "--idempotency-key", BAD),
    ("emit", "x", "--occurred-at", BAD),
    ("events", "list", "--type", BAD),
    ("events", "show", BAD),
    ("jobs", "list", "--rule", BAD),
    ("jobs", "show", BAD),
    ("jobs", "cancel", "01J", BAD),
    ("dlq", "list", "--rule", BAD),
    ("dlq", "retry", BAD),
    ("dlq", "delete", BAD),
    ("rules", "list", "--json", BAD),
    ("rules", "show", BAD),
    ("rules", "history", BAD),
    ("rules", "check", "--json", "--bogus" + BAD),
    ("reload", BAD),
    ("status", BAD),
    ("health", BAD),
    ("next", "--cron", BAD),
    ("next", BAD, "--rules", "rules.yaml"),
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
