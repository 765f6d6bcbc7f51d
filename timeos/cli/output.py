"""Printing sheets and panels: TSV when stdout is a pipe or file, fitted rich tables on a terminal.

The footer of a paged table (`showing N of M`) and hints about empty results go to stderr when
stdout is a pipe, so `timeos events list | wc -l` counts rows and nothing else.
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Mapping
from datetime import UTC
from typing import IO, Any

from timeos.cli.render import STATUS_STYLES, Panel
from timeos.cli.table import (
    Sheet,
    View,
    cell_text,
    escape_tsv,
    table_width,
    to_rich,
    to_tsv,
    visible,
)
from timeos.clock import system_zone, zone_label


def make_view(
    *,
    utc: bool,
    wide: bool,
    headers: bool,
    environ: Mapping[str, str],
    stream: IO[str] | None = None,
) -> View:
    """How to show output on `stream` (default stdout): its zone, TTY-ness and width."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    width = shutil.get_terminal_size().columns if tty else 80
    zone = UTC if utc else system_zone(environ)
    return View(zone=zone, tty=tty, width=max(width, 20), wide=wide, headers=headers)


def view_label(view: View) -> str:
    """The name of the view's zone, for headers that say which zone a column is in."""
    return zone_label(view.zone)


def render_sheet(sheet: Sheet, view: View, *, color: bool = False) -> str:
    """The sheet as text for `view`: TSV, or a rich table fitted to the terminal's width."""
    if not view.tty:
        return to_tsv(sheet, view)
    return _rich_text(to_rich(sheet, view, STATUS_STYLES), table_width(sheet, view), color)


def render_panel(panel: Panel, view: View, *, color: bool = False) -> str:
    """A panel: `name<TAB>value` lines into pipes; a titled list and its tables on a terminal."""
    if not view.tty:
        lines = [
            f"{name}\t{escape_tsv(cell_text(value, kind, view))}\n"
            for name, kind, value in panel.fields
        ]
        out = "".join(lines)
        for sheet in panel.sheets:
            out += "\n" + to_tsv(sheet, view)
        if panel.text is not None:
            out += "\n" + visible(panel.text, keep_newlines=True) + "\n"
        return out
    from rich.table import Table
    from rich.text import Text

    # Every value is shown with its control characters escaped (see table.visible): they may
    # come from any client of the socket.
    fields = Table(title=visible(panel.title), show_header=False, title_justify="left", box=None)
    fields.add_column(style="bold", no_wrap=True)
    fields.add_column(overflow="fold")
    for name, kind, value in panel.fields:
        style = STATUS_STYLES.get(str(value), "") if kind == "status" else ""
        fields.add_row(name, Text(visible(cell_text(value, kind, view)), style=style))
    out = _rich_text(fields, view.width, color)
    for sheet in panel.sheets:
        out += _rich_text(to_rich(sheet, view, STATUS_STYLES), table_width(sheet, view), color)
    if panel.text is not None:
        title = Text(visible(panel.text_title or ""), style="bold")
        out += _rich_text(title, view.width, color)
        out += visible(panel.text, keep_newlines=True) + "\n"
    return out


def print_sheet(sheet: Sheet, view: View) -> None:
    """Print a sheet to stdout and, when it is one page of more, `showing N of M` after it."""
    sys.stdout.write(render_sheet(sheet, view, color=view.tty and _color_ok()))
    footer = sheet.footer()
    if footer:
        (sys.stdout if view.tty else sys.stderr).write(footer + "\n")


def print_panel(panel: Panel, view: View) -> None:
    """Print a panel to stdout."""
    sys.stdout.write(render_panel(panel, view, color=view.tty and _color_ok()))


def hint(message: str) -> None:
    """Say why a result is empty, on stderr (the exit code stays 0)."""
    sys.stderr.write(message + "\n")


def _rich_text(renderable: Any, width: int, color: bool) -> str:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="auto" if color else None,
        soft_wrap=False,
        highlight=False,
    )
    console.print(renderable)
    return buffer.getvalue()


def _color_ok() -> bool:
    import os

    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
