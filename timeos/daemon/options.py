"""timeosd's typer app: `--help`, usage errors, and any command line main.quick_options leaves.

One flag per row of config.SETTINGS, so the help, the config file and the variables agree.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from timeos.daemon import config
from timeos.daemon.main import serve

app = typer.Typer(add_completion=False, rich_markup_mode=None)


def _options() -> inspect.Signature:
    """serve()'s flags: one per row of config.SETTINGS, then the ones that are not settings."""
    params: list[tuple[str, Any, Any]] = []
    for setting in config.SETTINGS:
        kind: Any = list[str] | None if setting.many else str | None
        env = f" Env: {setting.env}." if setting.env else ""
        if setting.switch:  # a switch: absent is None (not False), so the env and file still count
            option = typer.Option(f"{setting.flag}/", help=f"{setting.help}{env}")
            params.append((setting.attr, Annotated[bool | None, option], None))
            continue
        option = typer.Option(setting.flag, help=f"{setting.help}{env}", metavar=setting.metavar)
        params.append((setting.attr, Annotated[kind, option], None))
    params += [
        ("config", Annotated[Path | None, typer.Option("--config", help=(
            "Config file (default /etc/timeos/timeosd.yaml, or $CONFIGURATION_DIRECTORY/"
            "timeosd.yaml). Env: TIMEOS_CONFIG."))], None),
        ("print_config", Annotated[bool, typer.Option(
            "--print-config", help="Print each setting, its value and where it came from.")],
         False),
        ("json", Annotated[bool, typer.Option("--json", help="With --print-config: JSON.")],
         False),
        ("version", Annotated[bool, typer.Option("--version", help="Print the version.")], False),
    ]  # fmt: skip
    return inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
         for n, a, d in params]
    )  # fmt: skip


serve.__signature__ = _options()  # type: ignore[attr-defined]
app.command()(serve)
