"""Tables that suit where they go: TSV for pipes, width-fitted rich tables for terminals.

A `Sheet` holds raw values from the API; `View` says how to show them (zone, TTY or not, width,
`--wide`, `--no-headers`). Formatting of every cell kind lives here, so times and booleans read
the same in every command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

# time: an instant shown in the viewer's zone; zoned: an instant shown in the offset it carries
# (a rule's local time in `timeos next`).
Kind = Literal["id", "text", "time", "zoned", "status", "bool", "int", "json"]

# Kinds people copy or scan by: never shortened, never dropped to fit a terminal.
WHOLE_KINDS = frozenset({"id", "time", "zoned", "status", "bool", "int"})
MIN_SHRUNK = 8  # a shortened column keeps at least this many characters (ellipsis included)


@dataclass(frozen=True, slots=True)
class View:
    """How output is shown: where times are rendered and what the terminal can hold."""

    zone: tzinfo = UTC
    tty: bool = False
    width: int = 80
    wide: bool = False
    headers: bool = True


@dataclass(frozen=True, slots=True)
class Column:
    """One column: the API field it shows, its header and kind, and how much it matters.

    `importance`: the lower, the sooner it is shortened (then dropped) to fit a terminal.
    `wide_only`: shown on a terminal only with --wide (TSV always has every column).
    """

    key: str
    header: str
    kind: Kind = "text"
    importance: int = 5
    wide_only: bool = False


@dataclass(slots=True)
class Sheet:
    """A table of raw API values, with an optional title and the total behind a page."""

    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    total: int | None = None
    offset: int = 0

    def footer(self) -> str | None:
        """`showing N of M` when the rows are one page of more."""
        if self.total is None or (self.total <= len(self.rows) and self.offset == 0):
            return None
        start = f", from offset {self.offset}" if self.offset else ""
        return f"showing {len(self.rows)} of {self.total}{start} (see --limit and --offset)"


def format_time(value: str | datetime | None, view: View, *, keep_offset: bool = False) -> str:
    """An instant in the view's zone with its offset: `2026-12-07 09:00:00-05:00` for people,
    full ISO 8601 (`2026-12-07T09:00:00.123456-05:00`) for pipes. `keep_offset`: show it in
    the offset it carries instead."""
    if value is None or value == "":
        return "-" if view.tty else ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = when if keep_offset else when.astimezone(view.zone)
    if not view.tty:
        return local.isoformat()
    return local.isoformat(sep=" ", timespec="seconds")


def format_bool(value: Any) -> str:
    """Booleans read the same everywhere."""
    return "yes" if value else "no"


def cell_text(value: Any, kind: Kind, view: View) -> str:
    """One cell as text, before any escaping or shortening."""
    if kind in ("time", "zoned"):
        return format_time(value, view, keep_offset=kind == "zoned")
    if kind == "bool":
        return format_bool(value)
    if value is None:
        return "-" if view.tty else ""
    if isinstance(value, bool):
        return format_bool(value)
    if kind == "json" or isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def escape_tsv(text: str) -> str:
    """Keep one value in one field: backslash, tab, newline and CR become `\\\\ \\t \\n \\r`."""
    return text.translate(_ESCAPES)


def to_tsv(sheet: Sheet, view: View) -> str:
    """Header line (unless --no-headers) and one line per row: every column, nothing cut."""
    lines = []
    if view.headers:
        lines.append("\t".join(c.key for c in sheet.columns))
    for row in sheet.rows:
        lines.append(
            "\t".join(
                escape_tsv(cell_text(v, c.kind, view))
                for c, v in zip(sheet.columns, row, strict=True)
            )
        )
    return "".join(line + "\n" for line in lines)


def overhead(columns: int) -> int:
    """Characters rich's default box spends around `columns` columns (borders and padding)."""
    return 3 * columns + 1


def fit(sheet: Sheet, view: View) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide: (indexes, widths) for a terminal of `view.width`.

    Natural widths when they fit (or with --wide); else the least important shortenable columns
    are cut, down to MIN_SHRUNK, then dropped. Ids, times, statuses and numbers are never cut;
    only a terminal too narrow for them drops some (ids never).
    """
    shown = [i for i, c in enumerate(sheet.columns) if view.wide or not c.wide_only]
    texts = [
        [_one_line(cell_text(v, c.kind, view)) for c, v in zip(sheet.columns, row, strict=True)]
        for row in sheet.rows
    ]
    natural = {i: max([len(sheet.columns[i].header), *(len(r[i]) for r in texts)]) for i in shown}
    widths = dict(natural)
    if not view.wide:
        by_importance = sorted(
            (i for i in shown if sheet.columns[i].kind not in WHOLE_KINDS),
            key=lambda i: (sheet.columns[i].importance, -i),
        )

        def excess() -> int:
            return sum(widths[i] for i in shown) + overhead(len(shown)) - view.width

        for i in by_importance:
            if excess() <= 0:
                break
            floor = min(natural[i], max(MIN_SHRUNK, len(sheet.columns[i].header)))
            widths[i] = max(floor, widths[i] - excess())
        # Still too wide: drop what was shortened, then (a very narrow terminal) whole columns
        # other than ids, least important first.
        last_resort = sorted(
            (i for i in shown if sheet.columns[i].kind in WHOLE_KINDS - {"id"}),
            key=lambda i: (sheet.columns[i].importance, -i),
        )
        for i in [*by_importance, *last_resort]:
            if excess() <= 0 or len(shown) == 1:
                break
            shown.remove(i)
    return shown, [widths[i] for i in shown]


def to_rich(sheet: Sheet, view: View, styles: dict[str, str]) -> Any:
    """A rich Table fitted to the terminal (see fit); statuses coloured by `styles`."""
    from rich.table import Table
    from rich.text import Text

    shown, widths = fit(sheet, view)
    table = Table(title=sheet.title or None, title_justify="left")
    for i, width in zip(shown, widths, strict=True):
        column = sheet.columns[i]
        table.add_column(column.header, no_wrap=True, min_width=width, max_width=width)
    for row in sheet.rows:
        cells = []
        for i, width in zip(shown, widths, strict=True):
            column = sheet.columns[i]
            text = shorten(_one_line(cell_text(row[i], column.kind, view)), width)
            style = styles.get(str(row[i]), "") if column.kind == "status" else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    return table


def natural_width(sheet: Sheet, view: View) -> int:
    """The width the sheet needs with every shown column whole (for --wide)."""
    shown, widths = fit(sheet, View(view.zone, view.tty, 10**6, True, view.headers))
    return sum(widths) + overhead(len(shown)) + 1


def shorten(text: str, width: int) -> str:
    """Cut `text` to `width` characters, marking the cut with an ellipsis."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _one_line(text: str) -> str:
    # A terminal row stays one line: show line breaks the way TSV does.
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
