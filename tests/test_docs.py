"""Docs are tested: commands, rule keys and error codes are all documented; seams stay honest."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from timeos.cli.app import app
from timeos.errors import ALL_ERRORS
from timeos.rules import action_specs as rule_actions
from timeos.rules import loader as rules
from timeos.rules.limits import LIMIT_KEYS

ROOT = Path(__file__).parent.parent
MAN1 = (ROOT / "man" / "timeos.1").read_text()
MAN5 = (ROOT / "man" / "timeos-rules.5").read_text()
README = (ROOT / "README.md").read_text()


def _commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, command: Any) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, command))

    walk("", root)
    return found


COMMANDS = _commands()


def test_the_cli_has_every_command_the_issues_name():
    names = {name for name, _ in COMMANDS}
    assert names >= {
        "emit",
        "events list",
        "events show",
        "jobs list",
        "jobs show",
        "jobs cancel",
        "dlq list",
        "dlq retry",
        "dlq delete",
        "rules list",
        "rules show",
        "rules check",
        "rules history",
        "reload",
        "status",
        "health",
        "next",
        "watch",
    }


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_is_in_the_man_page_and_readme_and_its_help_ends_with_an_example(
    name, command
):
    man_name = name.replace("-", r"\-")
    assert re.search(rf"\.B {re.escape(man_name)}\b", MAN1), f"{name} missing from man/timeos.1"
    assert f"timeos {name}" in README, f"{name} missing from README.md"
    help_text = (command.help or "").strip()
    assert help_text.splitlines()[-1].startswith("Example: timeos"), name


RULE_KEYS = sorted(
    set(rules.TOP_KEYS)
    | set(rules.ACTION_KEYS)
    | set(rules.RULE_KEYS)
    | set(rules.RETRY_KEYS)
    | set(rules.DST_KEYS)
    | set(LIMIT_KEYS)
)


@pytest.mark.parametrize("key", RULE_KEYS)
def test_every_rule_key_is_in_timeos_rules_5(key):
    assert re.search(rf"^\.B {key}$", MAN5, re.M), f"{key} missing from man/timeos-rules.5"


def test_http_keys_are_documented():
    for key in rule_actions.HTTP_KEYS:
        assert f"\\fB{key}\\fR" in MAN5


def test_error_codes_are_unique_and_documented():
    codes = [cls.code for cls in ALL_ERRORS]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert f"\\fB{code}\\fR" in MAN1, f"error code {code} missing from man/timeos.1"


def test_the_error_tree_drawn_in_errors_py_matches_the_classes():
    import timeos.errors as errors

    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        found = re.match(r"^[├└]── (\w+)\s+(\w+)\s+(\d)\s+(\d{3})", line)
        if found:
            drawn[found[1]] = (found[2], int(found[3]), int(found[4]))
    actual = {
        cls.__name__: (cls.code, cls.exit_code, cls.http_status)
        for cls in ALL_ERRORS
        if cls is not errors.TimeOSError
    }
    assert drawn == actual
    assert all(cls.__bases__ == (errors.TimeOSError,) for cls in ALL_ERRORS[1:])


def _risky_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if name in ("eval", "exec", "pickle.loads", "yaml.load", "os.system"):
            found.append(f"{node.lineno}: {name}()")
        for kw in node.keywords:
            if kw.arg == "shell" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{node.lineno}: shell=")
    return found


def test_no_shell_eval_or_unsafe_yaml_in_the_package():
    offenders = [
        f"{p.relative_to(ROOT)}:{hit}"
        for p in (ROOT / "timeos").rglob("*.py")
        for hit in _risky_calls(ast.parse(p.read_text()))
    ]
    assert offenders == []


def test_the_fast_emit_path_accepts_exactly_the_options_typer_declares():
    from timeos.cli.emit import FLAG_OPTIONS, VALUE_OPTIONS

    (emit,) = [c for n, c in COMMANDS if n == "emit"]
    declared = {o for p in emit.params for o in p.opts if o.startswith("--")}
    assert declared == set(VALUE_OPTIONS) | set(FLAG_OPTIONS)
