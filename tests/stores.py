"""Both store backends for the tests: SQLite in tmp_path, PostgreSQL in a fresh schema.

The `backend` fixture (conftest.py) runs a test once per backend. PostgreSQL is the server at
$TIMEOS_TEST_PG_URL (default: the local one, database `test`); when it cannot be reached its
variants skip, saying why, unless CI=true or TIMEOS_TEST_PG is set: then they fail.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from timeos.store.sqlite.store import SqliteStore

PG_URL = os.environ.get("TIMEOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
_reachable: list[str | None] = []  # memo: None (reachable) or why not


def pg_required() -> bool:
    """True when a missing server must fail the PostgreSQL variants (CI, or asked for)."""
    return os.environ.get("CI") == "true" or bool(os.environ.get("TIMEOS_TEST_PG"))


def pg_unreachable() -> str | None:
    """Why the test server cannot be used (None: it can)."""
    if not _reachable:
        try:
            import psycopg

            with psycopg.connect(PG_URL, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _reachable.append(None)
        except Exception as exc:  # any reason at all: report it
            _reachable.append(f"no PostgreSQL at {PG_URL}: {str(exc).strip()[:200]}")
    return _reachable[0]


class Backend:
    """Opens stores of one backend; a path names one database (a schema on PostgreSQL), so
    opening it again is a restart on the same data."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.schemas: dict[str, str] = {}
        self.opened: list[Any] = []

    def __repr__(self) -> str:
        return self.name

    def open(self, path: Path | str, **kwargs: Any) -> SqliteStore:
        """A store at `path` (SQLite) or in the schema standing for `path` (PostgreSQL)."""
        if self.name == "sqlite":
            return SqliteStore(path, **kwargs)
        from timeos.store.postgres.store import PostgresStore

        kwargs.pop("synchronous", None)
        schema = self.schemas.setdefault(str(path), f"t_{uuid.uuid4().hex}")
        store = PostgresStore(PG_URL, schema_name=schema, **kwargs)
        self.opened.append(store)  # closed at the end if the test did not
        return store

    def cleanup(self) -> None:
        for store in self.opened:
            store.close()
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in self.schemas.values():
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def backend_fixture(request: pytest.FixtureRequest) -> Any:
    """The body of conftest's `backend` fixture."""
    name = request.param
    if name == "postgres":
        why = pg_unreachable()
        if why is not None:
            if pg_required():
                pytest.fail(f"{why} (CI=true or TIMEOS_TEST_PG set: PostgreSQL is required)")
            pytest.skip(why)
    backend = Backend(name)
    yield backend
    backend.cleanup()
