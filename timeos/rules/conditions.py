"""Compile and evaluate `when:` expressions (and `timezone: payload.tz`) with CEL, never Python."""

from __future__ import annotations

import difflib
import functools
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

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
        program = cel_module().compile(source)
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


@functools.cache
def cel_module() -> ModuleType:
    """The CEL binding's compiled module, loaded on the first expression and without `cel`'s
    package __init__.

    That __init__ also imports the binding's interactive shell (`cel.cli`: typer, rich,
    prompt_toolkit, pygments; 400 modules and ~23 MB of RSS) which TimeOS never uses. Rules
    without CEL expressions load no CEL at all. Should the package's layout change, this falls
    back to a plain `import cel`.
    """
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("cel")  # finds the package without running its __init__
    for folder in (package.submodule_search_locations or []) if package else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = f"{folder}/cel{suffix}"
            spec = importlib.util.spec_from_file_location("cel.cel", path)
            if spec is None or spec.loader is None or not Path(path).is_file():
                continue
            try:
                module = importlib.util.module_from_spec(spec)  # the extension's init runs here
                sys.modules["cel.cel"] = module  # a later `import cel` reuses it, never twice
                spec.loader.exec_module(module)
            except Exception:  # not what we expect to find: the package's own way, below
                sys.modules.pop("cel.cel", None)
                break
            return module
    import cel

    return cel


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
