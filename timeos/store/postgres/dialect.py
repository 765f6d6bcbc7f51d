"""The SQLite store's statements in PostgreSQL's dialect.

The store's queries are written once (store/sqlite/); the few SQLite idioms they use are
rewritten here, each by one rule below, before psycopg sees them. The statements are the store's
own constant text (values are always bound parameters), so the set of idioms is closed; the store
test suite runs every statement on both backends. String literals are never rewritten.
"""

from __future__ import annotations

import re
from functools import lru_cache

from timeos.store.postgres.schema import PRIMARY_KEYS

_LITERAL = re.compile(r"'(?:[^']|'')*'")
_INSERT = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.I)
_UPSERT = re.compile(
    r"INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\).*?ON CONFLICT\s*\([^)]*\)\s*DO UPDATE SET", re.I | re.S
)
# The first element of a JSON list held in a text column (spans a literal: rewritten first).
_JSON_FIRST = re.compile(r"json_extract\((\w+), '\$\[0\]'\)")
_RETURNING = re.compile(r"\sRETURNING\s", re.I)

# (pattern, replacement) applied outside string literals, in order.
_RULES: list[tuple[re.Pattern[str], str]] = [
    # Index hints: PostgreSQL's planner picks the index itself.
    (re.compile(r"\s+INDEXED\s+BY\s+\w+", re.I), ""),
    # `+column`: SQLite's "not an index term" marker; a no-op elsewhere.
    (re.compile(r"(?<=\s)\+(?=[A-Za-z_])"), ""),
    # Scalar MAX/MIN of two values (the aggregate takes one argument, never `x,`).
    (re.compile(r"\bMAX\(([\w.]+),", re.I), r"GREATEST(\1,"),
    (re.compile(r"\bMIN\(([\w.]+),", re.I), r"LEAST(\1,"),
    # A row's physical address, for DELETE ... WHERE rowid IN (SELECT rowid ... LIMIT n).
    (re.compile(r"\browid\b"), "ctid"),
]


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """Return `sql` (SQLite dialect, `?` parameters) as PostgreSQL (psycopg's `%s`)."""
    sql = _JSON_FIRST.sub(r"((\1)::json ->> 0)", _conflicts(sql))
    parts: list[str] = []
    at = 0
    for literal in _LITERAL.finditer(sql):
        parts.append(_code(sql[at : literal.start()]))
        parts.append(literal.group().replace("%", "%%"))
        at = literal.end()
    parts.append(_code(sql[at:]))
    return "".join(parts)


def _code(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text.replace("%", "%%").replace("?", "%s")


def _conflicts(sql: str) -> str:
    """INSERT OR IGNORE / OR REPLACE as ON CONFLICT clauses; bare columns of an upsert's SET
    qualified by the table (PostgreSQL finds `tokens` ambiguous beside `excluded.tokens`)."""
    found = _INSERT.match(sql)
    if found is not None:
        verb, table, columns = found.group(1).upper(), found.group(2), found.group(3)
        sql = f"INSERT INTO {table} ({columns})" + sql[found.end() :]
        if verb == "IGNORE":
            clause = " ON CONFLICT DO NOTHING"
        else:
            key = PRIMARY_KEYS[table]
            names = [c.strip() for c in columns.split(",")]
            rest = [c for c in names if c not in key]
            sets = ", ".join(f"{c} = excluded.{c}" for c in rest)
            clause = f" ON CONFLICT ({', '.join(key)}) DO " + (
                f"UPDATE SET {sets}" if rest else "NOTHING"
            )
        returning = _RETURNING.search(sql)
        if returning is None:
            return sql + clause
        return sql[: returning.start()] + clause + sql[returning.start() :]
    upsert = _UPSERT.search(sql)
    if upsert is None:
        return sql
    table = upsert.group(1)
    head, tail = sql[: upsert.end()], sql[upsert.end() :]
    for column in (c.strip() for c in upsert.group(2).split(",")):
        # A bare column not being assigned (`col =`) and not excluded.col / table.col.
        tail = re.sub(rf"(?<![\w.]){column}\b(?!\s*=[^=])", f"{table}.{column}", tail)
    return head + tail
