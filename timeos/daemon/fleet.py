"""What health says about the daemons sharing a database: each must beat within the lease and
run the same rules (fingerprint) as this one; a cleanly stopped daemon has left the table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHORT = 12  # hex digits of a fingerprint in a message: enough to tell two apart


def daemons_health(daemons: Sequence[Mapping[str, Any]], fingerprint: str) -> dict[str, Any]:
    """The `daemons` health component: degraded, naming them, when a registered daemon stopped
    beating (past the lease) or a live one runs rules of another fingerprint than ours.

    This daemon's own row counts too: a late beat of ours lets the leader rescue our running
    jobs, and a stale fingerprint of ours is what the others compare against.
    """
    stopped = [d for d in daemons if not d["alive"]]
    different = [d for d in daemons if d["alive"] and d["fingerprint"] != fingerprint]
    problems = [
        f"daemon {d['id']} on {d['host']} stopped heart-beating (last at {d['heartbeat_at']})"
        for d in stopped
    ] + [
        f"daemon {d['id']} on {d['host']} runs different rules"
        f" ({_short(d['fingerprint'])}, here {_short(fingerprint)})"
        for d in different
    ]
    alive = sum(1 for d in daemons if d["alive"])
    if problems:
        status, message = "degraded", "; ".join(problems)
    else:
        status, message = "healthy", f"{alive} daemon(s) alive, all on rules {_short(fingerprint)}"
    return {
        "status": status,
        "message": message,
        "fingerprint": fingerprint,
        "stopped": [d["id"] for d in stopped],
        "different_rules": [d["id"] for d in different],
    }


def _short(fingerprint: str | None) -> str:
    return fingerprint[:SHORT] if fingerprint else "not reported"
