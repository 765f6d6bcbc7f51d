"""Database URLs as people may see them: without a password (no driver imported here)."""

from __future__ import annotations

import re

# postgresql://user:secret@host/db
_USERINFO = re.compile(r"(://[^:/@]*:)[^@/]*@")
# libpq's other places for it: ?password=secret&... and key=value conninfo (password=secret).
_PARAMETER = re.compile(r"(\bpassword=)('(?:[^'\\]|\\.)*'|[^&\s]*)", re.IGNORECASE)


def redacted(url: str) -> str:
    """`url` with any password replaced by ***, for status, health, logs and messages."""
    return _PARAMETER.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def is_database_url(value: object) -> bool:
    """Whether a setting's value is a PostgreSQL URL (which may carry a password)."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))
