"""timeosd's settings: one table (name, parser, default, env var, flag) and how a value is chosen.

Precedence: a flag, then its `TIMEOS_*` variable, then the config file (`--config`, else
`$CONFIGURATION_DIRECTORY/timeosd.yaml` under systemd, else /etc/timeos/timeosd.yaml), then the
default. A new setting is one more row in SETTINGS: its flag, variable and file key follow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from timeos import paths
from timeos.daemon.http import ListenAddress, parse_listen
from timeos.engine import MAX_IDEMPOTENCY_KEY, MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from timeos.errors import UsageError
from timeos.model import FOREVER
from timeos.rules.source import Invalid, Map, Node, Scalar, Seq, check_keys, read_document
from timeos.store.urls import is_database_url, redacted
from timeos.timefmt import format_duration, parse_duration

CONFIG_ENV = "TIMEOS_CONFIG"

Parser = Callable[[str], Any]  # text -> value; ValueError(reason) when the text is no good


def _count(low: int) -> Parser:
    def parse(text: str) -> int:
        if not (text.isascii() and text.strip().isdigit()) or int(text) < low:
            raise ValueError(f"must be a whole number >= {low}")
        return int(text)

    return parse


def _choice(*values: str) -> Parser:
    def parse(text: str) -> str:
        for value in values:
            if text.strip().lower() == value.lower():
                return value
        raise ValueError(f"use {', '.join(values[:-1])} or {values[-1]}")

    return parse


def _duration(text: str) -> timedelta:
    try:
        value = parse_duration(text.strip())
    except UsageError as exc:
        raise ValueError(exc.message) from None
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")
    return Path(text)


def _db(text: str) -> Path | str:
    """A SQLite file, or a PostgreSQL URL (kept as text: a Path would fold its `//`)."""
    if text.strip().startswith(("postgresql://", "postgres://")):
        return text.strip()
    return _path(text)


def _keep(text: str) -> timedelta:
    """A keep time: a positive duration, or `never` (kept for good)."""
    return FOREVER if text.strip().lower() == "never" else _duration(text)


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


def _listen(text: str) -> ListenAddress:
    return parse_listen(text)


def _show(value: Any) -> Any:
    """A setting's value as --print-config shows it (and its JSON)."""
    if value == FOREVER:
        return "never"
    if isinstance(value, timedelta):
        # Whole days as days (`90d`, as people write keep times), not `12w6d`.
        if value > timedelta(0) and value % timedelta(days=1) == timedelta(0) and value.days % 7:
            return f"{value.days}d"
        return format_duration(value)
    if isinstance(value, list | tuple):
        return [_show(v) for v in value]
    if isinstance(value, Path | ListenAddress):
        return str(value)
    if is_database_url(value):
        return redacted(value)
    return value


@dataclass(frozen=True, slots=True)
class Setting:
    """One daemon setting: the file key is `name`, the flag `--name`, the variable `env`."""

    name: str
    parse: Parser
    default: Callable[[Mapping[str, str]], Any]  # from the environment (systemd directories)
    env: str | None
    help: str
    many: bool = False  # repeatable flag, os.pathsep-separated variable, a list in the file
    path: bool = False  # relative paths in the file are relative to the file's directory
    unset: str = "none"  # the word that means "no value" (where the default is None)
    metavar: str = "TEXT"
    switch: bool = False  # a switch: `--name` alone on the command line, true/false elsewhere

    def read(self, text: str) -> Any:
        """Parse one value as written in a flag, a variable or the file."""
        if text.strip().lower() == self.unset and self.default({}) is None:
            return None
        return self.parse(text)

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


def _const(value: Any) -> Callable[[Mapping[str, str]], Any]:
    return lambda environ: value


def _default_rules(environ: Mapping[str, str]) -> list[Path]:
    return paths.default_rules({k: v for k, v in environ.items() if k != "TIMEOS_RULES"})


def _default_db(environ: Mapping[str, str]) -> Path | str:
    url = environ.get("DATABASE_URL", "")
    if url.startswith(("postgresql://", "postgres://")):  # the convention of hosted PostgreSQL
        return url
    return paths.default_db({k: v for k, v in environ.items() if k != "TIMEOS_DB"})


def _default_socket(environ: Mapping[str, str]) -> Path:
    # system_socket=None: a daemon started by hand never takes over /run/timeos's socket.
    return paths.default_socket(
        {k: v for k, v in environ.items() if k != "TIMEOS_SOCKET"}, system_socket=None
    )


# fmt: off
SETTINGS: tuple[Setting, ...] = (
    Setting("rules", _path, _default_rules, "TIMEOS_RULES",
            "Rules file or directory of *.yaml (repeatable).",
            many=True, path=True, metavar="PATH"),
    Setting("db", _db, _default_db, "TIMEOS_DB",
            "SQLite database file, or postgresql://USER@HOST/DB (several daemons share one; "
            "default $DATABASE_URL when it is one).", path=True, metavar="PATH|URL"),
    Setting("socket", _path, _default_socket, "TIMEOS_SOCKET",
            "Unix socket to serve on.", path=True, metavar="PATH"),
    Setting("workers", _count(1), _const(4), "TIMEOS_WORKERS",
            "Actions run at once.", metavar="N"),
    Setting("grace", _duration, _const(timedelta(seconds=30)), "TIMEOS_GRACE",
            "Shutdown grace period for running actions.", metavar="DURATION"),
    Setting("synchronous", _choice("NORMAL", "FULL"), _const("NORMAL"), "TIMEOS_SYNCHRONOUS",
            "SQLite durability: NORMAL survives a crash of timeosd; FULL survives power loss.",
            metavar="NORMAL|FULL"),
    Setting("log-level", _choice("debug", "info", "warning", "error"), _const("info"),
            "TIMEOS_LOG_LEVEL", "debug, info, warning or error.", metavar="LEVEL"),
    Setting("log-format", _choice("text", "json"), _const("text"), "TIMEOS_LOG_FORMAT",
            "text: one line per record with key=value fields; json: one object per line.",
            metavar="text|json"),
    Setting("max-payload-bytes", _count(1), _const(MAX_PAYLOAD_BYTES), "TIMEOS_MAX_PAYLOAD_BYTES",
            "Largest accepted payload.", metavar="N"),
    Setting("max-payload-depth", _count(1), _const(MAX_PAYLOAD_DEPTH), "TIMEOS_MAX_PAYLOAD_DEPTH",
            "Deepest accepted payload nesting.", metavar="N"),
    Setting("max-key-length", _count(1), _const(MAX_IDEMPOTENCY_KEY), "TIMEOS_MAX_KEY_LENGTH",
            "Longest accepted idempotency key.", metavar="N"),
    Setting("request-timeout", _duration, _const(timedelta(seconds=10)), "TIMEOS_REQUEST_TIMEOUT",
            "Time a client has to send a whole request.", metavar="DURATION"),
    Setting("max-connections", _count(8), _const(None), "TIMEOS_MAX_CONNECTIONS",
            "Connections held at once (auto: from RLIMIT_NOFILE).",
            unset="auto", metavar="N|auto"),
    Setting("http", _listen, _const(None), "TIMEOS_HTTP",
            "Also serve the API on TCP HOST:PORT ([::1]:PORT; port 0 picks one; off).",
            unset="off", metavar="HOST:PORT"),
    Setting("http-token-file", _path, _const(None), "TIMEOS_HTTP_TOKEN_FILE",
            "File holding the bearer token the TCP listener requires.",
            path=True, metavar="PATH"),
    Setting("http-read-only", _flag, _const(False), "TIMEOS_HTTP_READ_ONLY",
            "Serve the web dashboard (/ui/ on --http) view-only: its buttons are hidden and "
            "state-changing requests refused.", switch=True, metavar="true|false"),
    Setting("keep-events", _keep, _const(timedelta(days=90)), "TIMEOS_KEEP_EVENTS",
            "Keep events this long (never: for good).", metavar="DURATION|never"),
    Setting("keep-jobs", _keep, _const(timedelta(days=30)), "TIMEOS_KEEP_JOBS",
            "Keep succeeded and cancelled jobs this long; a rule's retention: overrides.",
            metavar="DURATION|never"),
)
# fmt: on
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A setting's value and where it came from: flag, env, file or default (and exactly where)."""

    value: Any
    source: str
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting, resolved; `file` is the config file read (None if there was none)."""

    values: Mapping[str, Resolved]
    file: Path | None

    def __getitem__(self, name: str) -> Any:
        return self.values[name].value

    def describe(self) -> dict[str, Any]:
        """The JSON of --print-config --json."""
        return {
            "config_file": str(self.file) if self.file else None,
            "settings": {
                name: {"value": _show(r.value), "source": r.source, "from": r.origin or None}
                for name, r in self.values.items()
            },
        }

    def render(self) -> str:
        """The text of --print-config: one setting per line, its value, where it came from."""
        rows = []
        for name, r in self.values.items():
            shown = _show(r.value)
            text = os.pathsep.join(shown) if isinstance(shown, list) else str(shown)
            text = BY_NAME[name].unset if r.value is None else text
            rows.append((name, text, f"{r.source} {r.origin}".strip()))
        width = [max(len(row[i]) for row in rows) for i in (0, 1)]
        head = f"# config file: {self.file or 'none'}"
        return "\n".join([head, *(f"{a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows)])


def needing_http(config: Config) -> list[str]:
    """Warnings for TCP-listener settings given while --http is off (they do nothing then)."""
    if config["http"] is not None:
        return []
    given = [
        f"{name} (from {r.source}{' ' + r.origin if r.origin else ''})"
        for name in ("http-token-file", "http-read-only")
        if (r := config.values[name]).source != "default" and r.value
    ]
    if not given:
        return []
    return [
        f"{', '.join(given)} set but --http is off: no TCP listener and no dashboard is "
        "served; add --http 127.0.0.1:PORT (TIMEOS_HTTP, http:) to serve them"
    ]


def config_path(flag: Path | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file to read and whether it was asked for (then it must exist)."""
    if flag is not None:
        return flag, True
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]), True
    if environ.get("CONFIGURATION_DIRECTORY"):
        return Path(environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "timeosd.yaml", False
    return Path("/etc/timeos/timeosd.yaml"), False


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], config: tuple[Path, bool]
) -> Config:
    """Choose each setting: flag > TIMEOS_* > config file > default; report every problem."""
    problems: list[str] = []
    path, required = config
    from_file, read = _read_file(path, required, problems)
    values: dict[str, Resolved] = {}
    for setting in SETTINGS:
        given = flags.get(setting.attr)
        text = environ.get(setting.env) if setting.env else None
        try:
            if given not in (None, [], ()):
                values[setting.name] = Resolved(_from_flag(setting, given), "flag", setting.flag)
            elif text:  # an empty variable counts as unset, as a shell user expects
                values[setting.name] = Resolved(_from_env(setting, text), "env", str(setting.env))
            elif setting.name in from_file:
                values[setting.name] = from_file[setting.name]
            else:
                values[setting.name] = Resolved(setting.default(environ), "default")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError("\n".join(problems))
    return Config(values, path if read else None)


def _from_flag(setting: Setting, given: Any) -> Any:
    texts = list(given) if setting.many else [given]
    parsed = []
    for text in texts:
        try:
            parsed.append(setting.read(str(text)))
        except ValueError as exc:
            raise ValueError(f"{setting.flag} {str(text)!r}: {exc}") from None
    return parsed if setting.many else parsed[0]


def _from_env(setting: Setting, text: str) -> Any:
    parts = [p for p in text.split(os.pathsep) if p] if setting.many else [text]
    try:
        parsed = [setting.read(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"{setting.env}={text!r}: {exc}") from None
    return parsed if setting.many else parsed[0]


def _read_file(path: Path, required: bool, problems: list[str]) -> tuple[dict[str, Resolved], bool]:
    if not required and not path.exists():
        return {}, False  # no config file is a fine way to run
    document, invalid = read_document(path, str(path))
    problems.extend(str(p) for p in invalid)
    if document is None or document.root is None:
        return {}, document is not None
    root = document.root
    if not isinstance(root, Map):
        problems.append(f"{root.loc}: the config file must be a mapping of setting: value")
        return {}, True
    problems.extend(str(p) for p in check_keys(root, list(BY_NAME)))
    found: dict[str, Resolved] = {}
    for entry in root.entries:
        setting = BY_NAME.get(entry.key.text)
        if setting is None:
            continue
        try:
            value = _from_node(setting, entry.value, path.parent)
        except Invalid as exc:
            problems.append(str(exc))
            continue
        found[setting.name] = Resolved(value, "file", str(entry.value.loc))
    return found, True


def _from_node(setting: Setting, node: Node, base: Path) -> Any:
    nodes: Sequence[Node] = node.items if setting.many and isinstance(node, Seq) else [node]
    parsed = []
    for item in nodes:
        if not isinstance(item, Scalar) or item.kind == "null":
            expected = "a value or a list of values" if setting.many else "a single value"
            raise Invalid(item.loc, f"{setting.name} must be {expected}")
        try:
            value = setting.read(item.text)
        except ValueError as exc:
            raise Invalid(item.loc, f"{setting.name} {item.text!r}: {exc}") from None
        if setting.path and isinstance(value, Path):
            value = base / value  # absolute stays absolute
        parsed.append(value)
    return parsed if setting.many else parsed[0]
