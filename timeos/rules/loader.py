"""Load rule files (YAML) into a validated RuleSet, reporting every problem as file:line:col.

The YAML reading and the generic typed readers live in yamlsource.py; this module knows the schema.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from timeos.errors import Problem, RulesError, ScheduleError
from timeos.model import (
    DEFAULT_ACTION_TIMEOUT,
    DEFAULT_RETRY,
    FOREVER,
    Action,
    ActionKind,
    ActionSpec,
    CommandSpec,
    CronTrigger,
    DstPolicy,
    EmitSpec,
    EventTrigger,
    FoldPolicy,
    GapPolicy,
    IntervalTrigger,
    MissedPolicy,
    OverlapPolicy,
    RetryPolicy,
    Rule,
    RuleSet,
    Trigger,
)
from timeos.payload import EVENT_TYPE
from timeos.rules import chains
from timeos.rules.action_specs import DEFAULT_IMPORT_TIMEOUT, Scope, SpecReader
from timeos.rules.conditions import CelCondition, ConditionSyntax, compile_condition
from timeos.rules.correlation import read_cancel_on, read_debounce
from timeos.rules.limits import LIMIT_KEYS, read_limits
from timeos.rules.source import (
    Document,
    Invalid,
    Loc,
    Map,
    Node,
    Scalar,
    Seq,
    describe,
    expect_bool,
    expect_choice,
    expect_duration,
    expect_int,
    expect_map,
    expect_str,
    expect_time,
    read_document,
    suggest,
    yaml11_hint,
)
from timeos.time.cron import compile_cron, weekday_cron
from timeos.timefmt import format_duration

TOP_KEYS = ("timezone", "actions", "rules")
ACTION_KINDS = ("command", "http", "python", "emit")
ACTION_KEYS = (*ACTION_KINDS, "env", "timeout", "retry", "on_failure")
TRIGGER_KEYS = ("on_event", "every", "cron")
TIME_ONLY_KEYS = ("on_missed", "grace", "overlap")
EVENT_ONLY_KEYS = ("cancel_on", "debounce")  # correlation.py
RULE_KEYS = (
    "name", *TRIGGER_KEYS, "offset", "at", "when", "timezone", "perform", "priority", "retry",
    "enabled", "dst", *TIME_ONLY_KEYS, "retention", "on_failure", "after", *EVENT_ONLY_KEYS,
)  # fmt: skip
RETRY_KEYS = ("max_attempts", "backoff", "max_backoff", "jitter")
DST_KEYS = ("gap", "fold")
MAX_ATTEMPTS = 1000
RULE_NAME = re.compile(r"[\w.:@ -]{1,200}")
MIN_EVERY = timedelta(seconds=1)
PRIORITY_BOUND = 2**31 - 1
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_NAMES = (*DAYS, *(d[:3] for d in DAYS), "weekday", "weekend")


T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def load_rules(
    paths: Sequence[Path],
    environ: Mapping[str, str],
    *,
    import_python: bool = True,
    import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
) -> RuleSet:
    """Load rule files and directories of them; raise RulesError listing every problem found."""
    collector = _Collector(environ, import_python, import_timeout)
    files = collector.files_in(paths)
    for path in files:
        document, problems = read_document(path, str(path))
        collector.problems.extend(problems)
        if document is not None:
            collector.load(document)
    return collector.finish(tuple(str(path) for path in files))


class _Collector:
    """State across all files: actions and rule names are global, so some checks run at the end."""

    def __init__(
        self, environ: Mapping[str, str], import_python: bool, import_timeout: float
    ) -> None:
        self.specs = SpecReader(environ, import_python, import_timeout)
        self.problems: list[Invalid] = []
        self.order: dict[str, int] = {}  # file -> position, to sort problems
        self.actions: dict[str, Action] = {}
        self.action_where: dict[str, Loc] = {}  # invalid actions too: no cascade of "unknown"
        self.rules: list[Rule] = []
        self.rule_where: dict[str, Loc] = {}
        self.performs: list[tuple[Scope, Scalar]] = []
        self.on_failures: list[tuple[Scope, Scalar]] = []  # checked like performs, at the end
        self.afters: dict[str, tuple[Scope, Loc]] = {}  # rule -> where its `after:` is
        self.warnings: list[Invalid] = []  # reported, never a reason to refuse the rules

    def files_in(self, paths: Sequence[Path]) -> list[Path]:
        """Expand directories to their *.yaml / *.yml files, sorted; report missing paths."""
        if not paths:
            self.problems.append(Invalid(Loc("<rules>"), "no rule files given"))
        found: dict[Path, Path] = {}
        for path in paths:
            self.order.setdefault(str(path), len(self.order))
            if path.is_dir():
                # Dotfiles are skipped: editors leave lock files such as `.#rules.yaml` mid-edit.
                members = sorted(
                    p
                    for p in path.iterdir()
                    if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
                )
                if not members:
                    self.problems.append(Invalid(Loc(str(path)), "directory has no .yaml files"))
            elif path.exists():
                members = [path]
            else:
                self.problems.append(Invalid(Loc(str(path)), "no such file or directory"))
                members = []
            for member in members:
                found.setdefault(member.resolve(), member)
                self.order.setdefault(str(member), len(self.order))
        return list(found.values())

    def load(self, doc: Document) -> None:
        """Read one document's timezone, actions and rules."""
        top = Scope(self.problems, "")
        whole = Loc(doc.file, 1, 1)
        # A file truncated mid-edit must fail the reload, never silently drop every rule.
        if doc.root is None:
            top.add(
                whole, "file is empty: a rules file needs a `rules:` list with at least one rule"
            )
            return
        if not isinstance(doc.root, Map):
            got = describe(doc.root)
            top.add(doc.root.loc, f"a rules file must be a mapping with `rules:`, got {got}")
            return
        root = doc.root
        top.keys(root, TOP_KEYS)
        zone = top.read(root, "timezone", _zone) or ZoneInfo("UTC")
        actions = top.read(root, "actions", expect_map)
        if actions is not None:
            top.keys(actions, None)
        # A command's relative program is relative to the file that names it (decisions.md).
        base = Path(doc.file).absolute().parent
        for entry in actions.entries if actions else ():
            self._action(entry.key, entry.value, base)
        rules = root.get("rules")
        if rules is None:
            top.add(whole, "no `rules:` key: a rules file needs a list of rules")
        elif not isinstance(rules, Seq):
            top.add(rules.loc, f"`rules:` must be a list of rules, got {describe(rules)}")
        elif not rules.items:
            top.add(rules.loc, "`rules:` is empty: a rules file must contain at least one rule")
        for index, item in enumerate(rules.items if isinstance(rules, Seq) else (), start=1):
            self._rule(doc, item, index, zone)

    def finish(self, sources: tuple[str, ...]) -> RuleSet:
        """Cross-check `perform:` names, then return the RuleSet or raise every problem."""
        for scope, node in self.performs:
            if node.text not in self.action_where:
                hint = suggest(node.text, sorted(self.action_where))
                scope.add(node.loc, f"unknown action {node.text!r}{hint}")
        for scope, node in self.on_failures:
            if node.text not in self.action_where:
                hint = suggest(node.text, sorted(self.action_where))
                scope.add(node.loc, f"on_failure: unknown action {node.text!r}{hint}")
        for name, message in chains.problems(self.rules, self.rule_where):
            scope, loc = self.afters[name]
            scope.add(loc, message)
        if self.problems:
            ordered = self._sorted(self.problems)
            raise RulesError([Problem(str(p.loc), p.message) for p in ordered])
        warnings = tuple(Problem(str(w.loc), w.message) for w in self._sorted(self.warnings))
        secrets = frozenset(self.specs.secrets)
        return RuleSet(tuple(self.rules), dict(self.actions), sources, warnings, secrets)

    def _sorted(self, found: list[Invalid]) -> list[Invalid]:
        unique = {(p.loc, p.message): p for p in found}.values()
        return sorted(unique, key=lambda p: (self.order.get(p.loc.file, -1), p.loc.line, p.loc.col))

    # ---- actions ------------------------------------------------------------------------------

    def _action(self, key: Scalar, node: Node, base: Path) -> None:
        name = key.text
        scope = Scope(self.problems, f"action {name!r}: ")
        if key.kind != "str" or not name.strip():
            scope.add(key.loc, f"an action name must be text: {yaml11_hint(key) or 'quote it'}")
        first = self.action_where.setdefault(name, key.loc)
        if first.file != key.loc.file:  # within one file the duplicate key is already reported
            scope.add(key.loc, f"defined twice; first defined at {first}")
        if not isinstance(node, Map):
            one_of = ", ".join(ACTION_KINDS)
            scope.add(node.loc, f"must be a mapping with one of {one_of}, got {describe(node)}")
            return
        scope.keys(node, (*ACTION_KEYS, *LIMIT_KEYS))  # limits: rules/limits.py
        kinds = _present(node, ACTION_KINDS)
        if not kinds:
            scope.add(node.loc, f"needs one of {', '.join(ACTION_KINDS)}")
        elif len(kinds) > 1:
            scope.add(node.key_loc(kinds[1]), f"has both {kinds[0]} and {kinds[1]}: use one")
        timeout = scope.read(node, "timeout", _positive) or DEFAULT_ACTION_TIMEOUT
        retry = self._retry(node, scope)
        on_failure = self._on_failure(node, scope)
        rate, concurrency = read_limits(node, scope)
        if len(kinds) != 1:
            return
        readers: dict[str, Callable[[Node, str], ActionSpec]] = {
            "command": lambda n, k: self.specs.command(n, k, base),
            "http": lambda n, k: self.specs.http(n, scope),
            "python": self.specs.python,
            "emit": lambda n, k: EmitSpec(_event_type(n, "emit")),
        }
        spec = scope.read(node, kinds[0], readers[kinds[0]])
        env_node = node.get("env")
        if env_node is not None and kinds[0] != "command":
            scope.add(node.key_loc("env"), f"env applies only to command actions, not {kinds[0]}")
        elif env_node is not None:
            env = self.specs.env(env_node, scope)
            if isinstance(spec, CommandSpec):
                spec = replace(spec, env=env)
        if scope.count == 0 and spec is not None:
            kind = ActionKind(kinds[0])
            self.actions[name] = Action(
                name, kind, spec, timeout, retry, str(key.loc), on_failure=on_failure,
                rate_limit=rate, concurrency=concurrency,
            )  # fmt: skip
            if isinstance(spec, CommandSpec):
                self._check_program(spec, node, scope.prefix)

    def _check_program(self, spec: CommandSpec, node: Map, prefix: str) -> None:
        """Warn when the program a command names is not there to run (yet)."""
        argv = node.get("command")
        assert isinstance(argv, Seq) and isinstance(argv.items[0], Scalar)  # read fine above
        problem = self.specs.program_problem(argv.items[0].text, spec.argv[0])
        if problem:
            self.warnings.append(Invalid(argv.items[0].loc, prefix + problem))

    def _on_failure(self, mapping: Map, scope: Scope) -> str | None:
        """An `on_failure:` action name; whether it exists is checked once every file is read."""
        name = scope.read(mapping, "on_failure", expect_str)
        node = mapping.get("on_failure")
        if name is not None and isinstance(node, Scalar):
            self.on_failures.append((scope, node))
        return name

    def _retry(self, mapping: Map, scope: Scope) -> RetryPolicy | None:
        node = scope.read(mapping, "retry", expect_map)
        if node is None:
            return None
        before = scope.count
        scope.keys(node, RETRY_KEYS, "retry: ")
        attempts = scope.read(node, "max_attempts", _attempts, "retry.max_attempts")
        backoff = scope.read(node, "backoff", _positive, "retry.backoff") or DEFAULT_RETRY.backoff
        given_max = scope.read(node, "max_backoff", _positive, "retry.max_backoff")
        jitter = scope.read(node, "jitter", _jitter, "retry.jitter")
        if given_max is not None and given_max < backoff:
            bounds = f"({format_duration(given_max)}) must be at least retry.backoff"
            message = f"retry.max_backoff {bounds} ({format_duration(backoff)})"
            scope.add(node.key_loc("max_backoff"), message)
        if scope.count > before:
            return None
        # Without max_backoff, a long backoff lifts the default cap rather than tripping over it.
        max_backoff = given_max or max(DEFAULT_RETRY.max_backoff, backoff)
        return RetryPolicy(
            attempts or DEFAULT_RETRY.max_attempts,
            backoff,
            max_backoff,
            DEFAULT_RETRY.jitter if jitter is None else jitter,
        )

    # ---- rules --------------------------------------------------------------------------------

    def _rule(self, doc: Document, node: Node, index: int, file_zone: ZoneInfo) -> None:
        scope = Scope(self.problems, f"rule #{index}: ")
        if not isinstance(node, Map):
            scope.add(
                node.loc,
                f"must be a mapping with name, a trigger and perform, got {describe(node)}",
            )
            return
        name = scope.read(node, "name", _rule_name)
        if node.get("name") is None:
            scope.add(node.loc, "missing `name:`")
        if name is not None:
            scope.prefix = f"rule {name!r}: "
            first = self.rule_where.setdefault(name, node.loc)
            if first != node.loc:
                scope.add(node.key_loc("name"), f"duplicate rule name; first defined at {first}")
        scope.keys(node, (*RULE_KEYS, *LIMIT_KEYS))
        triggers = _present(node, TRIGGER_KEYS)
        if not triggers:
            scope.add(node.loc, "needs a trigger: one of on_event, every or cron")
        elif len(triggers) > 1:
            both = f"{triggers[0]} and {triggers[1]}"
            scope.add(node.key_loc(triggers[1]), f"has both {both}: use exactly one trigger")
        event_rule = "on_event" in triggers
        if node.get("offset") is not None and triggers and not event_rule:
            scope.add(node.key_loc("offset"), "offset only applies to on_event rules")
        for key in TIME_ONLY_KEYS:
            if node.get(key) is not None and event_rule:
                scope.add(
                    node.key_loc(key), f"{key} only applies to time-based rules (every, cron)"
                )
        for key in EVENT_ONLY_KEYS:
            if node.get(key) is not None and triggers and not event_rule:
                scope.add(node.key_loc(key), f"{key} only applies to on_event rules")
        cancel_on = []
        cancel_node = node.get("cancel_on")
        for entry in read_cancel_on(doc, cancel_node) if cancel_node is not None else ():
            if isinstance(entry, Invalid):
                scope.add(entry.loc, entry.message)
            else:
                cancel_on.append(entry)
        debounce = scope.read(node, "debounce", read_debounce)

        performs = self._performs(node, scope)
        action = performs[0] if performs else None
        after = scope.read(node, "after", expect_str)
        if after is not None and name is not None:
            self.afters[name] = (scope, (node.get("after") or node).loc)
        if after is not None and debounce is not None:  # only a chain's head is debounced
            message = "debounce does not combine with after: debounce the rule it waits on"
            scope.add(node.key_loc("debounce"), message)
        priority = scope.read(node, "priority", _priority)
        retry = self._retry(node, scope)
        enabled = scope.read(node, "enabled", expect_bool)
        condition = scope.read(node, "when", lambda n, k: _when(doc, n))
        dst = self._dst(node, scope)
        on_missed = scope.read(node, "on_missed", _choice(MissedPolicy))
        grace = scope.read(node, "grace", _positive)
        overlap = scope.read(node, "overlap", _choice(OverlapPolicy))
        retention = scope.read(node, "retention", _retention)
        on_failure = self._on_failure(node, scope)
        rate, concurrency = read_limits(node, scope)
        zone, zone_expr = file_zone, None
        if event_rule:
            found = scope.read(node, "timezone", _event_zone)
            zone, zone_expr = (found, None) if isinstance(found, ZoneInfo) else (file_zone, found)
        else:
            zone = scope.read(node, "timezone", _zone) or file_zone
        trigger = self._trigger(node, triggers, scope, zone, dst, zone_expr)
        if scope.count or trigger is None or name is None or action is None:
            return
        self.rules.append(
            Rule(
                name, trigger, action, condition,
                priority=priority or 0,
                retry=retry,
                rate_limit=rate,
                concurrency=concurrency,
                timezone=zone,
                enabled=True if enabled is None else enabled,
                dst=dst,
                on_missed=on_missed or MissedPolicy.ONCE,
                grace=grace,
                overlap=overlap or OverlapPolicy.SKIP,
                where=str(node.loc),
                retention=retention,
                on_failure=on_failure,
                then=tuple(performs[1:]),
                after=after,
                cancel_on=tuple(cancel_on),
                debounce=debounce,
            )
        )  # fmt: skip

    def _performs(self, rule: Map, scope: Scope) -> list[str]:
        """`perform:`: one action's name, or a list of them run one after another."""
        node = rule.get("perform")
        if node is None:
            scope.add(rule.loc, "missing `perform:` (the name of the action to run)")
            return []
        if not isinstance(node, Seq):
            action = scope.read(rule, "perform", expect_str)
            if action is not None and isinstance(node, Scalar):
                self.performs.append((scope, node))
            return [action] if action is not None else []
        if not node.items:
            scope.add(node.loc, "perform: the list of actions is empty")
            return []
        names: list[str] = []
        for item in node.items:
            try:
                names.append(expect_str(item, "perform"))
            except Invalid as exc:
                scope.add(exc.loc, exc.message)
                continue
            assert isinstance(item, Scalar)  # expect_str accepted it
            self.performs.append((scope, item))
        return names if len(names) == len(node.items) else []

    def _dst(self, rule: Map, scope: Scope) -> DstPolicy:
        node = scope.read(rule, "dst", expect_map)
        if node is None:
            return DstPolicy()
        scope.keys(node, DST_KEYS, "dst: ")
        gap = scope.read(node, "gap", _choice(GapPolicy), "dst.gap")
        fold = scope.read(node, "fold", _choice(FoldPolicy), "dst.fold")
        return DstPolicy(gap or GapPolicy.RUN_AFTER, fold or FoldPolicy.FIRST)

    def _trigger(
        self,
        rule: Map,
        triggers: list[str],
        scope: Scope,
        zone: ZoneInfo,
        dst: DstPolicy,
        zone_expr: CelCondition | None,
    ) -> Trigger | None:
        at = scope.read(rule, "at", expect_time)
        has_at = rule.get("at") is not None
        if len(triggers) != 1:
            return None
        if triggers[0] == "on_event":
            event_type = scope.read(rule, "on_event", _event_type)
            offset = scope.read(rule, "offset", expect_duration) or timedelta(0)
            return EventTrigger(event_type, offset, at, zone_expr) if event_type else None
        if triggers[0] == "cron":
            if has_at:
                scope.add(
                    rule.key_loc("at"), "at does not apply to cron: put the time in the expression"
                )
            expression = scope.read(rule, "cron", expect_str)
            if expression is None:
                return None
            try:
                compile_cron(expression, zone, dst)
            except ScheduleError as exc:
                scope.add((rule.get("cron") or rule).loc, exc.message)
                return None
            return CronTrigger(expression)
        every = scope.read(rule, "every", _every)
        if isinstance(every, timedelta):
            if has_at:
                scope.add(
                    rule.key_loc("at"),
                    "at does not apply to `every: <duration>`; use a day or cron",
                )
            return IntervalTrigger(every)
        if every is None:
            return None
        try:
            when = at or time(0, 0)
            label = f"every {', '.join(every)} at {when:%H:%M}"
            return CronTrigger(weekday_cron(every, when), label)
        except ScheduleError as exc:
            scope.add(rule.key_loc("every"), exc.message)
            return None


# ---- value readers: (node, key) -> value, raising Invalid ---------------------------------------


def _present(mapping: Map, keys: Sequence[str]) -> list[str]:
    """The `keys` that `mapping` sets, in file order: a conflict is reported at the later one."""
    return list(dict.fromkeys(e.key.text for e in mapping.entries if e.key.text in keys))


def _positive(node: Node, what: str) -> timedelta:
    return expect_duration(node, what, positive=True)


def _retention(node: Node, what: str) -> timedelta:
    """How long a rule's finished jobs are kept: a positive duration, or `never` (keep them)."""
    if isinstance(node, Scalar) and node.kind == "str" and node.text.strip().lower() == "never":
        return FOREVER
    try:
        return expect_duration(node, what, positive=True)
    except Invalid as exc:
        raise Invalid(exc.loc, f"{exc.message} (or `never` to keep them)") from None


def _attempts(node: Node, what: str) -> int:
    value = expect_int(node, what)
    if not 1 <= value <= MAX_ATTEMPTS:
        raise Invalid(node.loc, f"{what} must be 1..{MAX_ATTEMPTS}, got {value}")
    return value


def _rule_name(node: Node, what: str) -> str:
    value = expect_str(node, what)
    # Names go into URLs (/v1/rules/NAME/history) and shell scripts: keep them plain.
    if not RULE_NAME.fullmatch(value):
        raise Invalid(
            node.loc,
            f"name {value!r} must be 1..200 of letters, digits, spaces and _ . : @ - (no slashes)",
        )
    return value


def _priority(node: Node, what: str) -> int:
    value = expect_int(node, what)
    if not -PRIORITY_BOUND <= value <= PRIORITY_BOUND:
        raise Invalid(node.loc, f"{what} must be within ±{PRIORITY_BOUND}, got {value}")
    return value


def _event_type(node: Node, what: str) -> str:
    value = expect_str(node, what)
    if len(value) > 200 or not EVENT_TYPE.fullmatch(value):
        raise Invalid(
            node.loc,
            f"{what} {value!r} is not an event type: 1..200 of letters, digits and _ . : -",
        )
    return value


def _jitter(node: Node, what: str) -> float:
    if isinstance(node, Scalar) and node.kind in ("int", "float"):
        assert isinstance(node.value, int | float)
        if 0 <= node.value <= 1:
            return float(node.value)
    raise Invalid(node.loc, f"{what} must be a number from 0 to 1, got {describe(node)}")


def _choice(enum: type[E]) -> Callable[[Node, str], E]:
    def read(node: Node, what: str) -> E:
        return enum(expect_choice(node, what, [member.value for member in enum]))

    return read


def _zone(node: Node, what: str) -> ZoneInfo:
    text = expect_str(node, what)
    zone = _find_zone(text)
    if zone is None:
        raise Invalid(node.loc, f"unknown timezone {text!r}{suggest(text, _zone_names())}")
    return zone


def _event_zone(node: Node, what: str) -> ZoneInfo | CelCondition:
    """An IANA zone name, or else a CEL expression giving one per event (`payload.tz`)."""
    text = expect_str(node, what)
    zone = _find_zone(text)
    if zone is not None:
        return zone
    try:
        return compile_condition(text)
    except ConditionSyntax as exc:
        hint = suggest(text, _zone_names())
        raise Invalid(
            node.loc,
            f"timezone {text!r} is neither a known IANA zone{hint} "
            f"nor an expression over payload or event ({exc.message})",
        ) from None


def _find_zone(text: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


@functools.cache
def _zone_names() -> list[str]:
    return sorted(available_timezones())


def _every(node: Node, what: str) -> timedelta | list[str]:
    """A duration (an interval) or one or more days (a weekday cron)."""
    if isinstance(node, Scalar) and node.kind in ("str", "int", "float"):
        if node.text.strip()[:1] in "-0123456789":
            every = expect_duration(node, what, positive=True)
            if every < MIN_EVERY:  # finer than this is a busy loop, not a schedule
                raise Invalid(node.loc, f"every {node.text!r} is shorter than the minimum of 1s")
            return every
    items = node.items if isinstance(node, Seq) else (node,)
    if not items:
        raise Invalid(node.loc, "every: the list of days is empty")
    days = []
    for item in items:
        text = expect_str(item, "every").strip().lower()
        if text not in DAY_NAMES:
            raise Invalid(
                item.loc,
                f"every {text!r} is neither a duration (30s, 15m, 2h, 1d) nor a day "
                f"(monday..sunday, weekday, weekend){suggest(text, DAYS + DAY_NAMES[-2:])}",
            )
        days.append(text)
    return days


def _when(doc: Document, node: Node) -> CelCondition:
    if isinstance(node, Scalar) and node.kind == "bool" and node.text.lower() in ("true", "false"):
        source = node.text.lower()
    else:
        source = expect_str(node, "when")
    try:
        return compile_condition(source)
    except ConditionSyntax as exc:
        assert isinstance(node, Scalar)  # expect_str accepted it
        where = doc.locate(node, exc.line, exc.column)
        raise Invalid(where, f"when {source!r}: {exc.message}") from None
