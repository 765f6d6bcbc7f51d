"""Compile and evaluate `when:` expressions (and `timezone: payload.tz`) with CEL, never Python."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from timeos.errors import ConditionFailed

VARIABLES = ("payload", "event")

_POSITION = re.compile(r"<input>:(\d+):(\d+): (?:Syntax error: )?([^\n]*)")
_EXPECTING = re.compile(r" expecting \{[^}]*\}")
# Identifiers bound by comprehension macros, e.g. `payload.items.exists(i, i > 3)`.
_BOUND = re.compile(r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class ConditionSyntax(Exception):
    """A `when:` that does not compile; `line`/`column` are 1-based inside the expression."""

    def __init__(self, message: str, column: int, line: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.line = line


# Not frozen: model.Condition declares `source` as a plain (settable) attribute, and mypy will not
# accept a read-only one for it. Nothing assigns to it; hashing goes by the source text.
@dataclass(slots=True, eq=True)
class CelCondition:
    """A compiled CEL expression over `payload` and `event`; equal when the source is equal.

    `variables` names the two values evaluate() binds (cancel_on's match: payload and origin).
    """

    source: str
    program: Any = field(compare=False, repr=False)
    variables: tuple[str, str] = field(default=VARIABLES, compare=False, repr=False)

    def __hash__(self) -> int:
        return hash(self.source)

    def evaluate(self, payload: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
        """Return the expression's bool; raise ConditionFailed on an error or a non-bool."""
        value = self.evaluate_value(payload, event)
        if not isinstance(value, bool):
            raise ConditionFailed(
                f"condition {self.source!r} gave {type(value).__name__} {value!r}, "
                "not true or false"
            )
        return value

    def evaluate_value(self, payload: Mapping[str, Any], event: Mapping[str, Any]) -> object:
        """Return whatever the expression yields; raise ConditionFailed on a runtime error."""
        try:
            first, second = self.variables
            return self.program.execute({first: dict(payload), second: dict(event)})
        # The CEL binding reports runtime problems as assorted builtin exceptions (KeyError,
        # TypeError, IndexError, ZeroDivisionError, RuntimeError, ValueError...), and one odd
        # payload must only make the condition false, never stop the engine.
        except Exception as exc:
            raise ConditionFailed(f"condition {self.source!r} failed: {_explain(exc)}") from None


def compile_condition(source: str, variables: tuple[str, str] = VARIABLES) -> CelCondition:
    """Compile a CEL expression over `variables`; raise ConditionSyntax (with its position) if
    it is invalid or names another variable."""
    try:
        program = cel.compile(source)
    except ValueError as exc:
        match = _POSITION.search(str(exc))
        if match is None:
            raise ConditionSyntax(f"invalid expression: {exc}", 1) from None
        detail = _EXPECTING.sub("", match.group(3)).strip()
        detail = detail.replace("mismatched input '<EOF>'", "the expression ends too early")
        raise ConditionSyntax(
            f"invalid expression: {detail}", int(match.group(2)), int(match.group(1))
        ) from None
    _check_variables(source, program.variables(), variables)
    return CelCondition(source, program, variables)


def _check_variables(source: str, names: list[str], allowed: tuple[str, str]) -> None:
    # CEL only notices an unknown variable when it runs; a typo such as `paylod` would make the
    # rule silently never match, so catch it at load time.
    bound = set(_BOUND.findall(source))
    positions = {name: _find(source, name) for name in names}
    for name in sorted(names, key=lambda n: positions[n]):
        if name in allowed or name in bound:
            continue
        start = positions[name]
        line = source.count("\n", 0, start) + 1
        column = start - (source.rfind("\n", 0, start) + 1) + 1
        hint = next((v for v in allowed if _close(name, v)), None)
        message = f"unknown variable {name!r}" + (f" (did you mean {hint!r}?)" if hint else "")
        raise ConditionSyntax(
            f"{message}; an expression can use only {allowed[0]} and {allowed[1]}", column, line
        )


def _find(source: str, name: str) -> int:
    found = re.search(rf"\b{re.escape(name)}\b", source)
    return found.start() if found else 0


def _close(a: str, b: str) -> bool:
    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.6


def _explain(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key {exc.args[0]!r}" if exc.args else "no such key"
    # The binding's messages run to a paragraph of advice; the first sentence says what happened.
    text = str(exc).split(". ")[0].rstrip(".")
    return text or type(exc).__name__
