"""Read one YAML file into Scalar / Seq / Map nodes that remember their file:line:col.

Stricter than plain PyYAML: duplicate keys, alias bombs and YAML 1.1 surprises are reported.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Protocol

import yaml
from yaml.constructor import SafeConstructor

from timeos.errors import UsageError
from timeos.timefmt import parse_duration

MAX_NODES = 100_000  # expanded size: far above any real rules file, far below a billion laughs
MAX_DEPTH = 64

_TAG = "tag:yaml.org,2002:"
_KINDS = {f"{_TAG}{kind}": kind for kind in ("str", "int", "float", "bool", "null", "timestamp")}
_KINDS[f"{_TAG}merge"] = "str"  # a `<<` used as a value is just text
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class Loc:
    """A 1-based position in a file; line 0 means the file as a whole."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar with the value YAML 1.1 resolved it to and the text as written."""

    value: str | int | float | bool | None
    kind: str  # str, int, float, bool, null or timestamp (kept as text)
    text: str
    style: str  # "" plain, "'" or '"' quoted, "|" literal, ">" folded
    loc: Loc
    end: Loc

    @property
    def plain(self) -> bool:
        return self.style == ""


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Entry:
    key: Scalar
    value: Node


@dataclass(frozen=True, slots=True)
class Map:
    entries: tuple[Entry, ...]
    loc: Loc

    def get(self, key: str) -> Node | None:
        """Return the value stored under `key` (the last one, as YAML would), or None."""
        for entry in reversed(self.entries):
            if entry.key.text == key:
                return entry.value
        return None

    def key_loc(self, key: str) -> Loc:
        """Return where `key` is written, or the mapping's own position when it is absent."""
        for entry in reversed(self.entries):
            if entry.key.text == key:
                return entry.key.loc
        return self.loc


Node = Scalar | Seq | Map


class Invalid(Exception):
    """One problem with a value, located; raised by the expect_* readers."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(f"{loc}: {message}")
        self.loc = loc
        self.message = message


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed file: its root node (None if it holds no document) and its text for locating."""

    file: str
    root: Node | None
    lines: tuple[str, ...]

    def locate(self, scalar: Scalar, line: int, col: int) -> Loc:
        """Map a 1-based (line, col) inside `scalar`'s text to a file position (best effort)."""
        if scalar.style in ("|", ">"):
            # Block content starts on the line after the `|` / `>` header.
            first = scalar.loc.line  # 0-based index of the first content line
            # The end mark sits at column 0 of the line after the block when a newline ends it.
            last = scalar.end.line if scalar.end.col > 1 else scalar.end.line - 1
            content = [i for i in range(first, min(last, len(self.lines))) if self.lines[i].strip()]
            if not content:
                return scalar.loc
            body = self.lines[content[0]]
            indent = len(body) - len(body.lstrip(" "))
            if scalar.style == "|":
                return Loc(self.file, first + line, indent + col)
            return self._walk([(i, indent, len(self.lines[i]) - indent) for i in content], col)
        offset = 0 if scalar.plain else 1  # skip the opening quote
        if scalar.loc.line == scalar.end.line:
            return Loc(self.file, scalar.loc.line, scalar.loc.col + offset + col - 1)
        # A flow scalar folded over several lines: its lines were joined with single spaces.
        start = scalar.loc.line - 1
        head = self.lines[start][scalar.loc.col - 1 + offset :].rstrip()
        segments = [(start, scalar.loc.col - 1 + offset, len(head))]
        for i in range(start + 1, min(scalar.end.line, len(self.lines))):
            text = self.lines[i]
            stripped = text.strip()
            if stripped:
                segments.append((i, len(text) - len(text.lstrip()), len(stripped)))
        return self._walk(segments, col)

    def _walk(self, segments: list[tuple[int, int, int]], col: int) -> Loc:
        remaining = col
        for index, start, length in segments:
            if remaining <= length + 1:
                return Loc(self.file, index + 1, start + remaining)
            remaining -= length + 1
        index, start, length = segments[-1]
        return Loc(self.file, index + 1, start + length + 1)


MAX_RULES_FILE_BYTES = 4 * 1024 * 1024  # a rules file is a few KiB; this bounds a mistake


def _read_bounded(path: Path, whole: Loc) -> bytes:
    """The file's bytes, refusing what is not a plain file or is over MAX_RULES_FILE_BYTES.

    Opened non-blocking: a FIFO put where a rules file was would otherwise block a reload, and
    with it the daemon's shutdown, until some writer came along; /dev/zero would never end.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Invalid(
                whole, "not a regular file (a FIFO, device or socket); rules are plain files"
            )
        if info.st_size > MAX_RULES_FILE_BYTES:
            raise Invalid(
                whole, f"file is {info.st_size} bytes, over the limit of {MAX_RULES_FILE_BYTES}"
            )
        data = file.read(MAX_RULES_FILE_BYTES + 1)
    if len(data) > MAX_RULES_FILE_BYTES:  # it grew while we read
        raise Invalid(whole, f"file is over the limit of {MAX_RULES_FILE_BYTES} bytes")
    return data


def read_document(path: Path, name: str) -> tuple[Document | None, list[Invalid]]:
    """Read, decode and compose `path`; return the document (None if unusable) and its problems."""
    whole = Loc(name)
    try:
        data = _read_bounded(path, whole)
    except Invalid as exc:
        return None, [exc]
    except OSError as exc:
        return None, [Invalid(whole, f"cannot read file: {exc.strerror or exc}")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        message = f"file is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})"
        return None, [Invalid(Loc(name, line, col), message)]
    text = text.removeprefix("\ufeff")
    lines = tuple(text.splitlines())
    try:
        root = _compose(text, name)
    except Invalid as exc:
        return None, [exc]
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(name, exc, lines)]
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        loc = Loc(name, before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        return None, [Invalid(loc, f"character #x{exc.character:04x} is not allowed in YAML")]
    except yaml.YAMLError as exc:  # any other PyYAML failure, without a position
        return None, [Invalid(whole, f"YAML error: {exc}")]
    if root is None:
        return Document(name, None, lines), []
    try:
        _check_size(root, name)
    except Invalid as exc:
        return None, [exc]
    builder = _Builder(name)
    return Document(name, builder.node(root), lines), builder.problems


class _Loader(yaml.SafeLoader):
    """SafeLoader used only to compose nodes: we never construct arbitrary objects."""


def _compose(text: str, name: str) -> yaml.Node | None:
    # PyYAML composes recursively: a deeply nested file would end in a slow RecursionError. The
    # event stream is iterative, so measure the depth there first and stop at the limit.
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                message = f"YAML nesting is too deep (limit {MAX_DEPTH} levels)"
                raise Invalid(_loc(event.start_mark, name), message)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _syntax_problem(name: str, exc: yaml.MarkedYAMLError, lines: Sequence[str]) -> Invalid:
    mark = exc.problem_mark or exc.context_mark
    loc = _loc(mark, name)
    message = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.context and exc.problem:
        message += f" ({exc.context})"
    line = lines[mark.line] if mark and mark.line < len(lines) else ""
    if "alias" in str(exc.context) + str(exc.problem) and ": *" in line:
        message += '; a value starting with * must be quoted, e.g. cron: "*/5 * * * *"'
    elif "'\\t'" in str(exc.problem):
        message += "; indent with spaces, not tabs"
    return Invalid(loc, message)


class _Mark(Protocol):
    line: int  # 0-based
    column: int


def _loc(mark: _Mark | None, name: str) -> Loc:
    return Loc(name, mark.line + 1, mark.column + 1) if mark else Loc(name)


def _check_size(root: yaml.Node, name: str) -> None:
    """Reject alias bombs and cycles before anything walks the graph expanded."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        where = _loc(node.start_mark, name)
        if key in active:
            raise Invalid(where, "an alias refers to a node that contains it (a cycle)")
        if depth > MAX_DEPTH:
            raise Invalid(where, f"YAML nesting is too deep (limit {MAX_DEPTH} levels)")
        active.add(key)
        total = 1
        for child in _children(node):
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise Invalid(
                    where,
                    f"document expands to more than {MAX_NODES} nodes through anchors and "
                    "aliases (a 'billion laughs' file?); refusing to load it",
                )
        active.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


class _Builder:
    """Turn composed nodes into Scalar / Seq / Map, collecting problems instead of stopping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[Invalid] = []
        self._constructor = SafeConstructor()
        self._done: dict[int, Node] = {}  # an aliased node is converted (and checked) once

    def node(self, node: yaml.Node) -> Node:
        done = self._done.get(id(node))
        if done is not None:
            return done
        built: Node
        if isinstance(node, yaml.MappingNode):
            built = self._mapping(node)
        elif isinstance(node, yaml.SequenceNode):
            self._check_tag(node, "seq")
            built = Seq(tuple(self.node(item) for item in node.value), self._loc(node))
        elif isinstance(node, yaml.ScalarNode):
            built = self._scalar(node)
        else:  # the composer only makes the three kinds above
            raise TypeError(f"unexpected YAML node {node!r}")
        self._done[id(node)] = built
        return built

    def _loc(self, node: yaml.Node) -> Loc:
        return _loc(node.start_mark, self.name)

    def _check_tag(self, node: yaml.Node, kind: str) -> None:
        if node.tag != _TAG + kind:
            self.problems.append(Invalid(self._loc(node), f"unsupported YAML tag {node.tag!r}"))

    def _scalar(self, node: yaml.ScalarNode) -> Scalar:
        kind = _KINDS.get(node.tag)
        value: str | int | float | bool | None = node.value
        if kind is None:
            self.problems.append(Invalid(self._loc(node), f"unsupported YAML tag {node.tag!r}"))
            kind = "str"
        elif kind in ("int", "float", "bool", "null"):
            value = getattr(self._constructor, f"construct_yaml_{kind}")(node)
        style = node.style or ""
        return Scalar(
            value, kind, node.value, style, self._loc(node), _loc(node.end_mark, self.name)
        )

    def _mapping(self, node: yaml.MappingNode) -> Map:
        self._check_tag(node, "map")
        explicit: list[Entry] = []  # duplicates kept: check_keys reports them with context
        merged: list[Entry] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merged.extend(self._merge_sources(value_node))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    Invalid(
                        self._loc(key_node), "a mapping key must be text, not a list or mapping"
                    )
                )
                continue
            explicit.append(Entry(self._scalar(key_node), self.node(value_node)))
        seen = {entry.key.text for entry in explicit}
        # Merged keys (`<<: *defaults`) fill in only what the mapping does not set itself,
        # and an earlier merge source wins over a later one, as the YAML merge spec says.
        for entry in merged:
            if entry.key.text not in seen:
                seen.add(entry.key.text)
                explicit.append(entry)
        return Map(tuple(explicit), self._loc(node))

    def _merge_sources(self, node: yaml.Node) -> list[Entry]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        entries: list[Entry] = []
        for source in sources:
            built = self.node(source)
            if isinstance(built, Map):
                entries.extend(built.entries)
            else:
                self.problems.append(Invalid(self._loc(source), "`<<` can only merge mappings"))
        return entries


# ---- typed readers: turn a node into a Python value or raise Invalid ----------------------------


def describe(node: Node) -> str:
    """Name what a node holds, for messages: `a list`, `the number 750`, `the text 'x'`."""
    if isinstance(node, Seq):
        return "a list"
    if isinstance(node, Map):
        return "a mapping"
    if node.kind == "null":
        return "nothing (null)"
    if node.kind == "bool":
        return f"the boolean {str(node.value).lower()}"
    if node.kind in ("int", "float"):
        return f"the number {node.value}"
    if node.kind == "timestamp":
        return f"the date {node.text}"
    return f"the text {node.text!r}"


def yaml11_hint(scalar: Scalar) -> str:
    """Explain a plain scalar that YAML 1.1 read as something other than text ('' if it is text)."""
    if not scalar.plain or scalar.kind in ("str", "null"):
        return ""
    quote = f'quote it: "{scalar.text}"'
    reads = f"YAML reads an unquoted {scalar.text} as"
    if scalar.kind == "bool" and scalar.text.lower() not in ("true", "false"):
        return f"{reads} the boolean {str(scalar.value).lower()}; {quote}"
    if scalar.kind == "int" and ":" in scalar.text:
        return f"{reads} the base-60 number {scalar.value}; {quote}"
    return quote


def wrong_type(node: Node, what: str, expected: str) -> Invalid:
    """Build the problem for a value of the wrong type, explaining YAML 1.1 surprises."""
    hint = yaml11_hint(node) if isinstance(node, Scalar) else ""
    if hint.startswith("YAML"):
        return Invalid(node.loc, f"{what} must be {expected}: {hint}")
    message = f"{what} must be {expected}, got {describe(node)}"
    return Invalid(node.loc, f"{message}; {hint}" if hint else message)


def expect_str(node: Node, what: str) -> str:
    """Return the node's text if it is a non-empty string; explain YAML 1.1 surprises otherwise."""
    if isinstance(node, Scalar) and node.kind == "str":
        if not node.text.strip():
            raise Invalid(node.loc, f"{what} must not be empty")
        return node.text
    raise wrong_type(node, what, "a string")


def expect_bool(node: Node, what: str) -> bool:
    """Return a true/false scalar; reject yes/no/on/off, which only YAML 1.1 reads as booleans."""
    if isinstance(node, Scalar) and node.kind == "bool" and isinstance(node.value, bool):
        if node.text.lower() in ("true", "false"):
            return node.value
        raise Invalid(node.loc, f"{what}: use true or false, not {node.text!r}")
    raise Invalid(node.loc, f"{what} must be true or false, got {describe(node)}")


def expect_int(node: Node, what: str) -> int:
    """Return a plain decimal integer (not a bool, not 0x10, not the base-60 1:30)."""
    if (
        isinstance(node, Scalar)
        and node.kind == "int"
        and isinstance(node.value, int)
        and node.text.lstrip("+-").isdigit()
    ):
        return node.value
    raise Invalid(node.loc, f"{what} must be a whole number, got {describe(node)}")


def expect_map(node: Node, what: str) -> Map:
    """Return the node if it is a mapping."""
    if isinstance(node, Map):
        return node
    raise Invalid(node.loc, f"{what} must be a mapping of keys to values, got {describe(node)}")


def expect_choice(node: Node, what: str, values: Sequence[str]) -> str:
    """Return the node's text if it is one of `values`."""
    text = expect_str(node, what)
    if text not in values:
        hint = suggest(text, values)
        raise Invalid(node.loc, f"{what} must be one of {', '.join(values)}, got {text!r}{hint}")
    return text


def expect_duration(node: Node, what: str, *, positive: bool = False) -> timedelta:
    """Return a duration such as `30s` or `1h30m`: never negative, and > 0 when `positive`."""
    if not isinstance(node, Scalar) or node.kind in ("null", "bool"):
        example = "a duration such as 30s, 15m, 2h, 2d, 1w"
        raise Invalid(node.loc, f"{what} must be {example}, got {describe(node)}")
    text = node.text.strip()
    if text.startswith("-"):
        raise Invalid(node.loc, f"{what} must not be negative, got {text!r}")
    try:
        value = parse_duration(text)
    except UsageError as exc:  # the YAML boundary: give the problem its file:line:col
        raise Invalid(node.loc, f"{what}: {exc.message}") from None
    if positive and value <= timedelta(0):
        raise Invalid(node.loc, f"{what} must be greater than 0, got {text!r}")
    return value


def expect_time(node: Node, what: str) -> time:
    """Return a quoted 24-hour "HH:MM"; unquoted times are refused (YAML reads 12:30 as 750)."""
    if isinstance(node, Scalar) and node.plain and node.kind in ("str", "int"):
        hint = yaml11_hint(node) or (
            f'YAML reads some unquoted times as numbers (12:30 is 750); quote it: "{node.text}"'
        )
        raise Invalid(node.loc, f"{what}: {hint}")
    text = expect_str(node, what)
    match = _HHMM.fullmatch(text.strip())
    if match is None:
        message = f"{what} {text!r} is not a time: use HH:MM, 24-hour, from 00:00 to 23:59"
        raise Invalid(node.loc, message)
    return time(int(match.group(1)), int(match.group(2)))


def suggest(word: str, choices: Sequence[str]) -> str:
    """Return ` (did you mean 'x'?)` for a close match among `choices`, else ''."""
    # A prefix first: `on` (a key YAML 1.1 turned into true) means on_event, not the closer `cron`.
    close = [c for c in choices if len(word) >= 2 and c.startswith(word)][:2]
    close = close or difflib.get_close_matches(word, choices, n=1)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def check_keys(mapping: Map, allowed: Sequence[str] | None) -> list[Invalid]:
    """Report duplicate keys and, unless `allowed` is None, keys not in it (with a did-you-mean)."""
    problems = []
    first: dict[str, Loc] = {}
    for entry in mapping.entries:
        key = entry.key
        seen = first.setdefault(key.text, key.loc)
        if seen != key.loc:
            problems.append(
                Invalid(
                    key.loc,
                    f"duplicate key {key.text!r} (first at line {seen.line}, column {seen.col}); "
                    "YAML would silently keep only the last one",
                )
            )
        elif allowed is not None and (key.text not in allowed or key.kind != "str"):
            message = f"unknown key {key.text!r}{suggest(key.text, allowed)}"
            if key.kind == "bool" and key.plain:
                message += f"; {yaml11_hint(key)}"
            problems.append(Invalid(key.loc, message))
    return problems
