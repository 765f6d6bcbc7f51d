"""The timeosd composition root in-process: start-up errors, the database lock, the socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from timeos.daemon.main import app


def test_module_that_exits_at_import_stops_start_up_with_a_message_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "timeos_test_cli_at_import.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--nope'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "actions:\n  hook: {python: 'timeos_test_cli_at_import:run'}\n"
        "rules:\n  - {name: r, on_event: e, perform: hook}\n"
    )
    args = ["--rules", str(rules), "--db", str(tmp_path / "t.db")]
    result = CliRunner().invoke(app, [*args, "--socket", str(tmp_path / "run" / "t.sock")])
    assert result.exit_code == 1, result.output
    assert (
        f"timeosd: error: {rules}:2:18: action 'hook': python 'timeos_test_cli_at_import:run': "
        "cannot import 'timeos_test_cli_at_import': SystemExit: 2"
    ) in result.stderr
    assert not (tmp_path / "t.db").exists()  # rules are checked before the database is touched
