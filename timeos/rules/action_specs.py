"""Read the `actions:` of a rules file: command argv, http requests, python targets, ${VAR}.

rules.py drives the walk over the file; this module turns one action's YAML into its spec.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit

from timeos.model import COMMAND_RUN_VARIABLES, CommandSpec, HttpSpec, PythonSpec
from timeos.rules.source import (
    Invalid,
    Loc,
    Map,
    Node,
    Scalar,
    Seq,
    check_keys,
    describe,
    expect_map,
    expect_str,
    suggest,
    wrong_type,
)

HTTP_KEYS = ("url", "method", "headers")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_TARGET = re.compile(rf"({_DOTTED}):({_DOTTED})")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
DEFAULT_IMPORT_TIMEOUT = 30.0

T = TypeVar("T")


class Scope:
    """Collects the problems of one rule or action, each prefixed with its name."""

    def __init__(self, problems: list[Invalid], prefix: str) -> None:
        self.problems = problems
        self.prefix = prefix
        self.count = 0

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(Invalid(loc, self.prefix + message))
        self.count += 1

    def read(
        self, mapping: Map, key: str, parse: Callable[[Node, str], T], label: str = ""
    ) -> T | None:
        """Parse `mapping[key]` (called `label` in messages) if present; on a problem, None."""
        node = mapping.get(key)
        if node is None:
            return None
        try:
            return parse(node, label or key)
        except Invalid as exc:
            self.add(exc.loc, exc.message)
            return None

    def keys(self, mapping: Map, allowed: Sequence[str] | None, section: str = "") -> None:
        for problem in check_keys(mapping, allowed):
            self.add(problem.loc, f"{section}{problem.message}")


class SpecReader:
    """Builds action specs; knows the daemon's environment and whether to import python targets."""

    def __init__(
        self,
        environ: Mapping[str, str],
        import_python: bool,
        import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
    ) -> None:
        self.environ = environ
        self.import_python = import_python
        self.import_timeout = import_timeout
        self.secrets: set[str] = set()  # what ${VAR}s expanded to, for the log to hide

    def command(self, node: Node, what: str, base: Path) -> CommandSpec:
        """Read an argv; a program path with a slash that is relative resolves against `base`."""
        if isinstance(node, Scalar) and node.kind == "str":
            # A shell string would need a shell to split it; argv lists never meet one.
            try:
                example = json.dumps(shlex.split(node.text))
            except ValueError:
                example = '["./program", "arg"]'
            message = f"command must be an argv list, not a string: write command: {example}"
            raise Invalid(node.loc, message)
        if not isinstance(node, Seq):
            raise Invalid(node.loc, f"command must be an argv list, got {describe(node)}")
        if not node.items:
            raise Invalid(node.loc, "command must not be an empty list: give at least the program")
        argv = []
        for i, item in enumerate(node.items):
            if not isinstance(item, Scalar) or item.kind != "str":
                raise wrong_type(item, f"command[{i}]", "a string")
            argv.append(self.expand(item, f"command[{i}]", item.text))
        if not argv[0].strip():
            raise Invalid(node.items[0].loc, "command[0] (the program) must not be empty")
        # Like execvp: a name without a slash is looked up on PATH when run; a path is a path,
        # and a relative one means next to the rules file, not wherever the daemon was started.
        if "/" in argv[0] and not os.path.isabs(argv[0]):
            argv[0] = str(base / argv[0])
        return CommandSpec(tuple(argv))

    def program_problem(self, written: str, program: str) -> str | None:
        """Say why `program` could not be started now (missing, not executable), or None."""
        if "/" not in program:
            search = self.environ.get("PATH", os.defpath)
            if shutil.which(program, path=search) is None:
                return f"command {written!r} is not an executable found on PATH ({search})"
            return None
        shown = repr(written) if written == program else f"{written!r} ({program})"
        path = Path(program)
        if not path.exists():
            return f"command {shown} does not exist"
        if not path.is_file() or not os.access(path, os.X_OK):
            return f"command {shown} is not executable"
        return None

    def http(self, node: Node, scope: Scope) -> HttpSpec:
        http = expect_map(node, "http")
        scope.keys(http, HTTP_KEYS, "http: ")
        url_node = http.get("url")
        if url_node is None:
            raise Invalid(http.loc, "http needs a url")
        written = expect_str(url_node, "http.url")
        url = self.expand(url_node, "http.url", written)
        try:
            parts = urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:  # show the URL as written: the expanded one may carry a secret
            message = f"http.url {written!r} must be an http:// or https:// URL with a host"
            raise Invalid(url_node.loc, message)
        method = scope.read(http, "method", _method, "http.method") or "POST"
        header_map = scope.read(http, "headers", expect_map, "http.headers")
        if header_map is not None:
            scope.keys(header_map, None, "http.headers: ")
        headers: list[tuple[str, str]] = []
        for entry in header_map.entries if header_map else ():
            try:
                headers.append((entry.key.text, self.header(entry.key, entry.value)))
            except Invalid as exc:
                scope.add(exc.loc, exc.message)
        return HttpSpec(url, method, tuple(headers))

    def header(self, key: Scalar, node: Node) -> str:
        what = f"http.headers.{key.text}"
        if key.kind != "str" or not _HEADER_NAME.fullmatch(key.text):
            raise Invalid(key.loc, f"http.headers: {key.text!r} is not a valid header name")
        value = self.expand(node, what, expect_str(node, what))
        if "\r" in value or "\n" in value:  # from a ${VAR}: it would split the request
            raise Invalid(node.loc, f"{what} must not contain a line break")
        return value

    def env(self, node: Node, scope: Scope) -> tuple[tuple[str, str], ...]:
        """A command's `env:` mapping of NAME: value, values ${VAR}-expanded like headers."""
        try:
            mapping = expect_map(node, "env")
        except Invalid as exc:
            scope.add(exc.loc, exc.message)
            return ()
        scope.keys(mapping, None, "env: ")
        env: list[tuple[str, str]] = []
        for entry in mapping.entries:
            try:
                env.append((entry.key.text, self.variable(entry.key, entry.value)))
            except Invalid as exc:
                scope.add(exc.loc, exc.message)
        return tuple(env)

    def variable(self, key: Scalar, node: Node) -> str:
        name = key.text
        if key.kind != "str" or not _VAR_NAME.fullmatch(name):
            message = f"env: {name!r} is not a valid variable name (letters, digits, _)"
            raise Invalid(key.loc, message)
        if name in COMMAND_RUN_VARIABLES:
            raise Invalid(key.loc, f"env: {name} is set by timeosd for each run")
        what = f"env.{name}"
        # An empty value is a legitimate setting (FOO=""), unlike an empty header.
        if not isinstance(node, Scalar) or node.kind != "str":
            raise wrong_type(node, what, "a string")
        value = self.expand(node, what, node.text)
        if "\0" in value:  # execve cannot pass it
            raise Invalid(node.loc, f"{what} must not contain a NUL character")
        return value

    def python(self, node: Node, what: str) -> PythonSpec:
        target = expect_str(node, "python").strip()
        match = _TARGET.fullmatch(target)
        if match is None:
            example = "'module:function' (e.g. 'myapp.scoring:score_user')"
            raise Invalid(node.loc, f"python must be {example}, got {target!r}")
        if not self.import_python:
            return PythonSpec(target, _not_imported(target))
        module, attrs = match.groups()
        try:
            obj: Any = import_module(module, self.import_timeout)
        except ImportFailed as exc:
            raise Invalid(node.loc, f"python {target!r}: {exc}") from None
        owner = module
        for part in attrs.split("."):
            if not hasattr(obj, part):
                hint = suggest(part, [n for n in dir(obj) if not n.startswith("_")])
                raise Invalid(
                    node.loc, f"python {target!r}: {owner!r} has no attribute {part!r}{hint}"
                )
            obj, owner = getattr(obj, part), f"{owner}.{part}"
        if not callable(obj):
            raise Invalid(node.loc, f"python {target!r}: {owner!r} is not callable")
        return PythonSpec(target, obj)

    def expand(self, node: Node, what: str, source: str) -> str:
        """Substitute ${VAR} from the environment; an unset or malformed variable is an error."""
        missing: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if not _VAR_NAME.fullmatch(name):
                raise Invalid(node.loc, f"{what}: ${{{name}}} is not a valid variable name")
            if name not in self.environ:
                missing.append(f"${{{name}}}")
            value = self.environ.get(name, "")
            if value:
                self.secrets.add(value)
            return value

        result = _VAR.sub(substitute, source)
        if "${" in _VAR.sub("", source):
            raise Invalid(node.loc, f"{what}: unclosed ${{ in {source!r}")
        if missing:
            names = ", ".join(missing)
            raise Invalid(node.loc, f"{what} uses {names}, which is not set in the environment")
        return result


class ImportFailed(Exception):
    """A python action's module raised while being imported, or did not finish in time."""


def import_module(name: str, timeout: float) -> ModuleType:
    """Import `name` in a thread of its own; report what it raises, give up after `timeout` s.

    Importing runs the user's code, and any of it can end the daemon or hang it: argparse at
    import raises SystemExit, a module may wait for the network. In a daemon thread, SystemExit
    and KeyboardInterrupt stay in that thread, and a stuck import is abandoned rather than
    awaited (it keeps its module lock, so importing that module again times out too).
    """
    outcome: list[tuple[bool, Any]] = []  # (imported, module or exception)
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append((True, importlib.import_module(name)))
        except BaseException as exc:  # user code: whatever it raises is reported, never re-raised
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=work, name=f"timeos-import-{name}", daemon=True).start()
    if not done.wait(timeout):
        raise ImportFailed(f"import of module {name!r} timed out after {timeout:g}s")
    ok, value = outcome[0]
    if ok:
        return value
    problem = f"cannot import {name!r}: {type(value).__name__}: {value}"
    if isinstance(value, SystemExit):
        problem += " (the module exits when imported; guard its script code with __main__)"
    raise ImportFailed(problem)


def _method(node: Node, what: str) -> str:
    method = expect_str(node, what).upper()
    if method not in HTTP_METHODS:
        raise Invalid(node.loc, f"{what} must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
    return method


def _not_imported(target: str) -> Callable[..., Any]:
    def placeholder(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"python action {target!r} was not imported (import_python=False)")

    return placeholder
