"""timeosd's settings: flags > TIMEOS_* > the config file > defaults, with where each came from."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from timeos.daemon.config import SETTINGS, config_path, resolve
from timeos.daemon.http import ListenAddress
from timeos.daemon.main import app, quick_options
from timeos.errors import UsageError


def _file(tmp: Path, text: str) -> tuple[Path, bool]:
    path = tmp / "timeosd.yaml"
    path.write_text(text)
    return path, True


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(
    tmp_path: Path,
) -> None:
    config = _file(tmp_path, "workers: 2\ngrace: 5s\nsynchronous: FULL\nlog-format: json\n")
    env = {"TIMEOS_WORKERS": "3", "TIMEOS_GRACE": "7s"}
    settings = resolve({"workers": "4"}, env, config)
    assert settings["workers"] == 4 and settings.values["workers"].source == "flag"
    assert settings["grace"] == timedelta(seconds=7)
    assert settings.values["grace"].origin == "TIMEOS_GRACE"
    assert settings["synchronous"] == "FULL"
    assert settings.values["synchronous"].origin == f"{tmp_path}/timeosd.yaml:3:14"
    assert settings["log-level"] == "info" and settings.values["log-level"].source == "default"
    assert settings.file == tmp_path / "timeosd.yaml"


def test_every_setting_has_a_flag_a_variable_and_a_file_key() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert all(s.env == "TIMEOS_" + s.name.upper().replace("-", "_") for s in SETTINGS)
    for name in ("rules", "db", "socket", "workers", "grace", "synchronous", "log-level"):
        assert name in names
    for name in ("log-format", "max-payload-bytes", "http", "http-token-file"):
        assert name in names


def test_paths_in_the_file_are_relative_to_the_file(tmp_path: Path) -> None:
    config = _file(tmp_path, "rules: [a.yaml, /abs/b.yaml]\ndb: var/t.db\nhttp: '[::1]:0'\n")
    settings = resolve({}, {}, config)
    assert settings["rules"] == [tmp_path / "a.yaml", Path("/abs/b.yaml")]
    assert settings["db"] == tmp_path / "var/t.db"
    assert settings["http"] == ListenAddress("::1", 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wokers: 3\n", ":1:1: unknown key 'wokers' (did you mean 'workers'?)"),
        ("workers: 2\nworkers: 3\n", ":2:1: duplicate key 'workers'"),
        ("workers: lots\n", ":1:10: workers 'lots': must be a whole number >= 1"),
        ("http: example.com:80\n", ":1:7: http 'example.com:80': 'example.com' is not an IP"),
        ("log-level: [debug]\n", ":1:12: log-level must be a single value"),
        ("- workers\n", ":1:1: the config file must be a mapping"),
        ("workers: [\n", ":2:1: "),
    ],
    ids=["typo", "duplicate", "not-a-number", "hostname", "list", "not-a-mapping", "syntax"],
)
def test_problems_in_the_file_name_file_line_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        resolve({}, {}, _file(tmp_path, text))
    assert f"{tmp_path}/timeosd.yaml{message}" in caught.value.message


def test_bad_flags_and_variables_name_where_the_value_came_from(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        env = {"TIMEOS_SYNCHRONOUS": "sometimes", "TIMEOS_HTTP": "8080"}
        resolve({"workers": "0", "grace": "soon"}, env, (tmp_path / "none.yaml", False))
    assert caught.value.message.splitlines() == [
        "--workers '0': must be a whole number >= 1",
        "--grace 'soon': bad duration 'soon': use a number and unit, e.g. "
        "30s, 15m, 2h, 2d, 1w, 1h30m",
        "TIMEOS_SYNCHRONOUS='sometimes': use NORMAL or FULL",
        "TIMEOS_HTTP='8080': use HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
    ]


def test_a_missing_default_file_is_fine_and_a_missing_named_one_is_an_error(
    tmp_path: Path,
) -> None:
    assert resolve({}, {}, (tmp_path / "absent.yaml", False)).file is None
    with pytest.raises(UsageError, match="absent.yaml: cannot read file"):
        resolve({}, {}, (tmp_path / "absent.yaml", True))


@pytest.mark.parametrize(
    ("flag", "environ", "expected"),
    [
        (Path("/x.yaml"), {"TIMEOS_CONFIG": "/y.yaml"}, (Path("/x.yaml"), True)),
        (None, {"TIMEOS_CONFIG": "/y.yaml"}, (Path("/y.yaml"), True)),
        (None, {"CONFIGURATION_DIRECTORY": "/etc/t:/o"}, (Path("/etc/t/timeosd.yaml"), False)),
        (None, {}, (Path("/etc/timeos/timeosd.yaml"), False)),
    ],
    ids=["flag", "env", "systemd", "etc"],
)
def test_which_config_file_is_read(
    flag: Path | None, environ: dict[str, str], expected: tuple[Path, bool]
) -> None:
    assert config_path(flag, environ) == expected


def test_an_unset_word_turns_off_a_value_the_file_set(tmp_path: Path) -> None:
    settings = resolve({"http": "off"}, {}, _file(tmp_path, "http: 127.0.0.1:8080\n"))
    assert settings["http"] is None and settings.values["http"].source == "flag"


def test_print_config_shows_each_value_and_its_source_and_exits_0(tmp_path: Path) -> None:
    config, _ = _file(tmp_path, "workers: 2\n")
    env = {"TIMEOS_LOG_LEVEL": "debug", "TIMEOS_CONFIG": ""}
    args = ["--config", str(config), "--print-config", "--grace", "1m"]
    text = CliRunner().invoke(app, args, env=env)
    assert text.exit_code == 0, text.output
    lines = {line.split()[0]: line.split()[1:] for line in text.stdout.splitlines()[1:]}
    assert lines["workers"] == ["2", "file", f"{config}:1:10"]
    assert lines["grace"] == ["1m", "flag", "--grace"]
    assert lines["log-level"] == ["debug", "env", "TIMEOS_LOG_LEVEL"]
    assert lines["http"] == ["off", "default"]
    assert lines["keep-events"] == ["90d", "default"]  # as people write it, not 12w6d
    assert lines["keep-jobs"] == ["30d", "default"]
    as_json = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    assert body["config_file"] == str(config)
    assert body["settings"]["workers"] == {"value": 2, "source": "file", "from": f"{config}:1:10"}
    assert body["settings"]["http"] == {"value": None, "source": "default", "from": None}


def test_timeosd_with_a_bad_config_file_exits_2_before_touching_anything(tmp_path: Path) -> None:
    config, _ = _file(tmp_path, "databse: x.db\n")
    db = tmp_path / "t.db"
    result = CliRunner().invoke(
        app, ["--config", str(config), "--db", str(db)], env={"TIMEOS_CONFIG": ""}
    )
    assert result.exit_code == 2
    assert f"timeosd: error: {config}:1:1: unknown key 'databse'" in result.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--rules", "a.yaml", "--rules=b.yaml", "--db", "t.db", "--socket", "t.sock"],
        ["--workers", "2", "--grace=5s", "--http-read-only", "--config", "c.yaml"],
        ["--log-level=debug", "--log-format", "json", "--print-config", "--json"],
        ["--http", "127.0.0.1:0", "--http-token-file", "tok", "--keep-jobs", "2d"],
        ["--workers", "2", "--workers", "3"],  # the last one wins, as in click
        ["--version"],
    ],
    ids=["none", "paths", "switch-config", "print-config", "http", "repeated", "version"],
)
def test_timeosd_parses_a_well_formed_command_line_without_typer_exactly_as_typer(argv) -> None:
    typer_given = typer.main.get_command(app).make_context("timeosd", list(argv)).params
    assert quick_options(argv) == typer_given


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["--bogus"],
        ["--rules"],
        ["stray"],
        ["--rules", ""],
        ["--rules", "-x"],
        ["--work", "2"],  # click takes no abbreviations
        ["--version", "--"],
    ],
)
def test_timeosd_leaves_help_and_anything_odd_to_typer(argv) -> None:
    assert quick_options(argv) is None


@pytest.mark.parametrize(
    ("flags", "env", "db"),
    [
        ({"db": "postgresql://u@db.example/timeos"}, {}, "postgresql://u@db.example/timeos"),
        ({}, {"TIMEOS_DB": "postgres://u@h/x"}, "postgres://u@h/x"),
        ({}, {"DATABASE_URL": "postgresql://u@h/x", "HOME": "/h"}, "postgresql://u@h/x"),
        ({}, {"DATABASE_URL": "mysql://u@h/x", "HOME": "/h"},
         Path("/h/.local/state/timeos/timeos.db")),
        ({"db": "var/t.db"}, {}, Path("var/t.db")),
    ],
    ids=["flag-url", "env-url", "database-url", "other-database-url-ignored", "file"],
)  # fmt: skip
def test_db_is_a_postgresql_url_kept_whole_or_a_sqlite_path(tmp_path, flags, env, db) -> None:
    settings = resolve(flags, env, (tmp_path / "none.yaml", False))
    assert settings["db"] == db
