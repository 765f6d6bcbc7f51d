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
# ...unless the terminal has no room for that: then down to one character and the ellipsis
# before it is hidden (a hidden column says nothing; "m…" says there is a note to see).
MIN_VISIBLE = 2


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


# Every C0 and C1 control character and DEL, as the escape that names it: a value stored by any
# socket client must not reach a terminal as an escape sequence (clear screen, set the title).
_CONTROLS = {
    code: {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}.get(code, f"\\x{code:02x}")
    for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))
}
_VISIBLE = str.maketrans(_CONTROLS)
_VISIBLE_BLOCK = str.maketrans({k: v for k, v in _CONTROLS.items() if k != 0x0A})
_ESCAPES = str.maketrans({0x5C: "\\\\", **_CONTROLS})


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control characters shown, not obeyed: ESC as `\\x1b`, tab as `\\t`.

    `keep_newlines`: for multi-line blocks (an output tail), where line breaks stay breaks.
    """
    return text.translate(_VISIBLE_BLOCK if keep_newlines else _VISIBLE)


def escape_tsv(text: str) -> str:
    """Keep one value in one field, free of controls: backslash, tab, newline and CR become
    `\\\\ \\t \\n \\r`, any other control character `\\xNN`."""
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


def overhead(columns: int, *, boxed: bool = True) -> int:
    """Characters a table spends around `columns` columns: rich's default box (borders and
    padding), or without a box two spaces between columns."""
    return 3 * columns + 1 if boxed else 2 * max(columns - 1, 0)


@dataclass(frozen=True, slots=True)
class Layout:
    """Which columns a terminal table shows, how wide, and whether it has a box."""

    shown: list[int]
    widths: list[int]
    boxed: bool = True

    def width(self) -> int:
        """The characters one line of the table takes."""
        return sum(self.widths) + overhead(len(self.shown), boxed=self.boxed)


def layout(sheet: Sheet, view: View) -> Layout:
    """Fit the sheet to `view.width` (see _fit): boxed when that loses nothing, else unboxed.

    Without a box each column costs 2 characters instead of 3, which at 80 columns is the room
    for one more time column. A terminal too narrow even for the columns kept whole gets lines
    longer than its width (it wraps them) rather than a table without them.
    """
    shown = [i for i, c in enumerate(sheet.columns) if view.wide or not c.wide_only]
    texts = [
        [_one_line(cell_text(v, c.kind, view)) for c, v in zip(sheet.columns, row, strict=True)]
        for row in sheet.rows
    ]
    natural = {i: max([len(sheet.columns[i].header), *(len(r[i]) for r in texts)]) for i in shown}
    if view.wide:
        return Layout(shown, [natural[i] for i in shown])
    boxed = _fit(sheet, view.width, shown, natural, boxed=True)
    soft = {i: _soft_floor(sheet, natural, i) for i in shown}
    if boxed.shown == shown and all(w >= soft[i] for i, w in zip(shown, boxed.widths, strict=True)):
        if boxed.width() <= view.width:
            return boxed
    return _fit(sheet, view.width, shown, natural, boxed=False)


def fit(sheet: Sheet, view: View) -> tuple[list[int], list[int]]:
    """Which columns to show and how wide: (indexes, widths) for a terminal of `view.width`."""
    found = layout(sheet, view)
    return found.shown, found.widths


def _soft_floor(sheet: Sheet, natural: dict[int, int], i: int) -> int:
    return min(natural[i], max(MIN_SHRUNK, len(sheet.columns[i].header)))


def _fit(
    sheet: Sheet, width: int, shown: list[int], natural: dict[int, int], *, boxed: bool
) -> Layout:
    """Shorten free-text columns, least important first, to MIN_SHRUNK, then to MIN_VISIBLE;
    hide them (least important first) only when even that does not fit, and give any width
    that frees back to the others. Ids, types, times, statuses and numbers stay whole."""
    shown = list(shown)
    widths = dict(natural)
    free = sorted(
        (i for i in shown if sheet.columns[i].kind not in WHOLE_KINDS),
        key=lambda i: (sheet.columns[i].importance, -i),
    )

    def excess() -> int:
        return sum(widths[i] for i in shown) + overhead(len(shown), boxed=boxed) - width

    for floor in (lambda i: _soft_floor(sheet, natural, i), lambda i: min(natural[i], MIN_VISIBLE)):
        for i in free:
            if excess() <= 0:
                break
            widths[i] = max(floor(i), widths[i] - excess())
    for i in free:
        if excess() <= 0:
            break
        shown.remove(i)
    for i in reversed(free):  # width freed by hiding goes back, most important first
        if i in shown and excess() < 0:
            widths[i] = min(natural[i], widths[i] - excess())
    return Layout(shown, [widths[i] for i in shown], boxed)


def to_rich(sheet: Sheet, view: View, styles: dict[str, str]) -> Any:
    """A rich Table fitted to the terminal (see layout); statuses coloured by `styles`."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    fitted = layout(sheet, view)
    table = Table(
        title=visible(sheet.title) or None,
        title_justify="left",
        box=box.HEAVY_HEAD if fitted.boxed else None,
        pad_edge=fitted.boxed,
        header_style="bold",
    )
    for i, width in zip(fitted.shown, fitted.widths, strict=True):
        column = sheet.columns[i]
        table.add_column(column.header, no_wrap=True, min_width=width, max_width=width)
    for row in sheet.rows:
        cells = []
        for i, width in zip(fitted.shown, fitted.widths, strict=True):
            column = sheet.columns[i]
            text = shorten(_one_line(cell_text(row[i], column.kind, view)), width)
            style = styles.get(str(row[i]), "") if column.kind == "status" else ""
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    return table


def table_width(sheet: Sheet, view: View) -> int:
    """The width to render the sheet at: the terminal's, or more when its whole columns need
    more (or with --wide), so rich never cuts what layout() keeps whole."""
    return max(view.width, layout(sheet, view).width())


def shorten(text: str, width: int) -> str:
    """Cut `text` to `width` characters, marking the cut with an ellipsis."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _one_line(text: str) -> str:
    # A terminal row stays one line, and control characters show instead of acting.
    return visible(text)
