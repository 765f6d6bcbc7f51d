"""Runtime rule overrides in the SQLite store (`timeos rules disable/enable/set/reset`), and
when each rule last created a job (`rules list` LAST).

Schema 6 adds the rule_overrides table; the overrides themselves are computed in
rules/overrides.py, this module only reads and writes them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from timeos.model import RuleOverride
from timeos.store.sqlite.connection import Connection
from timeos.timefmt import from_micros, to_micros

_COLUMNS = (
    "rule, enabled, disabled_at, disabled_until, priority, rate_limit, concurrency, updated_at"
)


class RuleOverrides(Connection):
    """Rule override rows on top of the connection (SqliteStore inherits these)."""

    def rule_overrides(self) -> dict[str, RuleOverride]:
        """Every stored rule override, by rule name."""
        rows = self._read(f"SELECT {_COLUMNS} FROM rule_overrides")
        return {r[0]: _override(r) for r in rows}

    def save_rule_override(self, override: RuleOverride) -> None:
        """Store a rule's override, replacing the one it had."""
        with self._tx() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO rule_overrides ({_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    override.rule,
                    None if override.enabled is None else int(override.enabled),
                    _micros(override.disabled_at),
                    _micros(override.disabled_until),
                    override.priority,
                    override.rate_limit,
                    override.concurrency,
                    _micros(override.updated_at),
                ),
            )

    def last_job_created(self, rule: str) -> datetime | None:
        """When the newest job of `rule` was created (None: none is stored)."""
        rows = self._read("SELECT MAX(created_at) FROM jobs WHERE rule = ?", (rule,))
        return from_micros(rows[0][0]) if rows and rows[0][0] is not None else None


def _micros(value: datetime | None) -> int | None:
    return to_micros(value) if value is not None else None


def _instant(value: Any) -> datetime | None:
    return from_micros(value) if value is not None else None


def _override(row: tuple[Any, ...]) -> RuleOverride:
    return RuleOverride(
        rule=row[0],
        enabled=None if row[1] is None else bool(row[1]),
        disabled_at=_instant(row[2]),
        disabled_until=_instant(row[3]),
        priority=row[4],
        rate_limit=row[5],
        concurrency=row[6],
        updated_at=_instant(row[7]),
    )
