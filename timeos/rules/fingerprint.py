"""A rule set's fingerprint: a stable hash of what the rules do, for daemons sharing a database
to compare (health degrades when one runs different rules)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from timeos.model import RuleSet

# Where a rule or action was defined (file:line:col) says nothing about what it does, and the
# rule files' path differs between machines.
_IGNORED = frozenset({"where"})
SECRET = "${secret}"


def fingerprint(rules: RuleSet) -> str:
    """Return the SHA-256 (hex) of the rule set's canonical form.

    Rules and actions are taken by name (file order and file paths do not count), and only the
    fields their equality compares (not a cron's display label, a python action's loaded
    function or a runtime disable). A value a ${VAR} expanded to is hashed as a placeholder:
    no secret feeds a hash stored in the shared database.
    """
    secrets = sorted((s for s in rules.secrets if s), key=len, reverse=True)
    canonical = {
        "rules": sorted((_plain(r, secrets) for r in rules.rules), key=lambda r: r["name"]),
        "actions": {name: _plain(rules.actions[name], secrets) for name in sorted(rules.actions)},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any, secrets: list[str]) -> Any:
    """`value` as JSON-able data, the same for equal values."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, SECRET)
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, secrets)
    if isinstance(value, timedelta):
        return ["timedelta", value.total_seconds()]
    if isinstance(value, datetime | date | time):
        return [type(value).__name__, value.isoformat()]
    if isinstance(value, ZoneInfo):
        return ["zone", value.key]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "__type__": type(value).__name__,
            **{
                f.name: _plain(getattr(value, f.name), secrets)
                for f in dataclasses.fields(value)
                if f.compare and f.name not in _IGNORED
            },
        }
    if isinstance(value, Mapping):
        return {str(k): _plain(v, secrets) for k, v in sorted(value.items())}
    if isinstance(value, tuple | list | frozenset | set):
        items = [_plain(v, secrets) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    source = getattr(value, "source", None)
    if isinstance(source, str):  # a compiled condition: its expression's text
        return ["condition", _plain(source, secrets)]
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")
