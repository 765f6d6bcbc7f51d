"""Job dependencies in the SQLite store (chains, `after:`): the job_deps edges and what a
parent's end does to its blocked children, always inside the transaction that wrote that end.

Schema 8 adds job_deps(parent, child, wait) and jobs.depends_on. A parent that succeeded makes
its children due (`wait` after its end); one that ended dead or cancelled cancels them, and
their children in turn; `dlq retry` of the parent blocks them again. Nothing here decides when
a job runs beyond adding the stored wait to the parent's end.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from timeos.model import NewJob
from timeos.store.sqlite.connection import Connection
from timeos.timefmt import to_micros

MICROSECOND = timedelta(microseconds=1)
# A job (the row `jobs`) whose every parent succeeded: it may leave `blocked`.
_ALL_SUCCEEDED = (
    "NOT EXISTS (SELECT 1 FROM job_deps AS e JOIN jobs AS p ON p.id = e.parent"
    " WHERE e.child = jobs.id AND p.status != 'succeeded')"
)


def parent_error(parent: str, status: str) -> str:
    """The last_error of a job cancelled because its parent ended `status`."""
    return f"parent job {parent} ended {status}"


def _cascaded_from(parent: str) -> str:
    """A LIKE pattern matching parent_error(parent, ...): how revival finds what a cascade did."""
    return f"parent job {parent} ended %"


def links(jobs: Sequence[NewJob], ids: Sequence[str | None]) -> list[tuple[str, str, int]]:
    """The (parent, child, wait in µs) edges of `jobs` once stored under `ids`."""
    edges: list[tuple[str, str, int]] = []
    for index, job in enumerate(jobs):
        child = ids[index]
        if job.after and child is not None:
            parent = ids[index - job.after]
            if parent is not None:
                edges.append((parent, child, job.wait // MICROSECOND))
    return edges


def depends_on(job: NewJob, index: int, ids: Sequence[str | None]) -> str | None:
    """The depends_on column of `jobs[index]`: its parent's id as a JSON list, or NULL."""
    if not job.after:
        return None
    parent = ids[index - job.after]
    return json.dumps([parent]) if parent is not None else None


class Deps(Connection):
    """Dependency edges and their effects on top of the connection (SqliteStore inherits)."""

    def _link(self, conn: sqlite3.Connection, edges: Sequence[tuple[str, str, int]]) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO job_deps (parent, child, wait) VALUES (?, ?, ?)", edges
        )

    def _settle(self, conn: sqlite3.Connection, parent: str, status: str, now: datetime) -> None:
        """Apply `parent` ending `status` to its blocked children (transitively for a cascade)."""
        stamp = to_micros(now)
        # Children first, by the edge's primary key, then each by id: a `status = 'blocked'`
        # test in the same statement lets SQLite walk every blocked job (35 finishes/s with
        # 50,000 blocked, against thousands this way; bench/chains.py).
        if status == "succeeded":
            edges = conn.execute(
                "SELECT child, wait FROM job_deps WHERE parent = ?", (parent,)
            ).fetchall()
            for child, wait in edges:
                conn.execute(
                    "UPDATE jobs SET status = 'pending', perform_at = ?, updated_at = ?"
                    f" WHERE id = ? AND status = 'blocked' AND {_ALL_SUCCEEDED}",
                    (stamp + int(wait), stamp, child),
                )
            return
        if status not in ("dead", "cancelled"):
            return
        todo = [(parent, status)]
        while todo:
            current, ended = todo.pop()
            children = conn.execute(
                "SELECT child FROM job_deps WHERE parent = ?", (current,)
            ).fetchall()
            for (child,) in children:
                cur = conn.execute(
                    "UPDATE jobs SET status = 'cancelled', last_error = ?, updated_at = ?"
                    " WHERE id = ? AND status = 'blocked'",
                    (parent_error(current, ended), stamp, child),
                )
                if cur.rowcount:
                    todo.append((str(child), "cancelled"))

    def _all_parents_succeeded(self, conn: sqlite3.Connection, child: str) -> bool:
        row = conn.execute(
            f"SELECT 1 FROM jobs WHERE id = ? AND {_ALL_SUCCEEDED}", (child,)
        ).fetchone()
        return row is not None

    def _revive(self, conn: sqlite3.Connection, parent: str, now: datetime) -> None:
        """`dlq retry` of `parent`: the children its end cancelled wait on it again."""
        stamp = to_micros(now)
        todo = [parent]
        while todo:
            current = todo.pop()
            children = conn.execute(
                "SELECT child FROM job_deps WHERE parent = ?", (current,)
            ).fetchall()
            for (child,) in children:
                cur = conn.execute(
                    "UPDATE jobs SET status = 'blocked', last_error = NULL, updated_at = ?"
                    " WHERE id = ? AND status = 'cancelled' AND last_error LIKE ?",
                    (stamp, child, _cascaded_from(current)),
                )
                if cur.rowcount:
                    todo.append(str(child))

    def settle_blocked(self, now: datetime) -> int:
        """Settle blocked jobs whose parent already ended or is gone (crash recovery): so no
        job waits forever on a parent that will never end again. Returns how many changed."""
        changed = 0
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT d.parent, d.child, d.wait, p.status, p.updated_at"
                " FROM jobs c INDEXED BY jobs_blocked JOIN job_deps d ON d.child = c.id"
                " LEFT JOIN jobs p ON p.id = d.parent WHERE c.status = 'blocked'"
            ).fetchall()
            for parent, child, wait, status, ended in rows:
                still = conn.execute("SELECT status FROM jobs WHERE id = ?", (child,)).fetchone()
                if still is None or still[0] != "blocked":
                    continue  # settled by an earlier row's cascade
                if status == "succeeded" and self._all_parents_succeeded(conn, child):
                    conn.execute(
                        "UPDATE jobs SET status = 'pending', perform_at = ?, updated_at = ?"
                        " WHERE id = ?",
                        (int(ended) + int(wait), to_micros(now), child),
                    )
                elif status in ("dead", "cancelled"):
                    self._settle(conn, parent, status, now)
                else:
                    continue
                changed += 1
            # A parent removed (dlq delete, cleanup) takes its edges with it: its children can
            # never be released, so they end like a cascade would have ended them.
            orphans = conn.execute(
                "UPDATE jobs SET status = 'cancelled', updated_at = ?, last_error = 'parent job '"
                " || COALESCE(json_extract(depends_on, '$[0]'), '?') || ' no longer exists'"
                " WHERE status = 'blocked'"
                " AND NOT EXISTS (SELECT 1 FROM job_deps WHERE child = jobs.id) RETURNING id",
                (to_micros(now),),
            ).fetchall()
            for (orphan,) in orphans:
                self._settle(conn, str(orphan), "cancelled", now)
        return changed + len(orphans)

    def cascaded(self, parent: str) -> list[tuple[str, str, str | None]]:
        """(id, rule, event id) of the jobs `parent`'s end cancelled, transitively: for telling
        watchers and metrics after the write."""
        found: list[tuple[str, str, str | None]] = []
        todo = [parent]
        while todo:
            current = todo.pop()
            rows = self._read(
                "SELECT c.id, c.rule, c.event_id FROM job_deps d JOIN jobs c ON c.id = d.child"
                " WHERE d.parent = ? AND c.status = 'cancelled' AND c.last_error LIKE ?",
                (current, _cascaded_from(current)),
            )
            for child, rule, event_id in rows:
                found.append((str(child), str(rule), event_id))
                todo.append(str(child))
        return found

    def chain_ids(self, job_id: str) -> tuple[list[str], list[str]]:
        """(parent ids, child ids) of one job."""
        parents = self._read(
            "SELECT parent FROM job_deps WHERE child = ? ORDER BY parent", (job_id,)
        )
        children = self._read(
            "SELECT child FROM job_deps WHERE parent = ? ORDER BY child", (job_id,)
        )
        return [str(r[0]) for r in parents], [str(r[0]) for r in children]
