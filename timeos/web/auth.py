"""Who may use the dashboard: login sessions, the CSRF token and the Origin check.

A login creates a random session id, kept in memory with an expiry and sent as an HttpOnly
cookie; Log out deletes it here, not only in the browser. The CSRF token is an HMAC of the
session id under the bearer token, so it differs per session and dies with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

COOKIE = "timeos_ui"
COOKIE_PATH = "/ui"
SESSION_TTL = timedelta(hours=12)  # a login lasts a working day, then the token is asked again
MAX_SESSIONS = 256  # logins kept at once; the oldest is dropped past this


class Credentials:
    """The daemon's bearer token and the dashboard sessions opened with it."""

    def __init__(self, token: bytes, ttl: timedelta = SESSION_TTL) -> None:
        self.token = token
        self.ttl = ttl
        self.sessions: OrderedDict[str, datetime] = OrderedDict()  # id -> expiry, oldest first

    def token_matches(self, given: str) -> bool:
        """Whether a pasted token is the daemon's (constant time)."""
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token)

    def open_session(self, now: datetime) -> str:
        """A new session id, valid until now + ttl."""
        session = secrets.token_urlsafe(32)
        self.sessions[session] = now + self.ttl
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    def close_session(self, cookie: str | None) -> None:
        """Log out: the session id is no longer accepted, wherever a copy of it is."""
        if cookie is not None:
            self.sessions.pop(cookie, None)

    def session_valid(self, cookie: str | None, now: datetime) -> bool:
        """Whether a login cookie names a session that is open and not expired."""
        expiry = self.sessions.get(cookie) if cookie is not None else None
        if expiry is None or cookie is None:
            return False
        if expiry <= now:
            del self.sessions[cookie]
            return False
        return True

    def csrf(self, session: str) -> str:
        """The CSRF token of one session."""
        return hmac.new(
            self.token, b"timeos-ui:csrf:" + session.encode(), hashlib.sha256
        ).hexdigest()

    def csrf_valid(self, session: str | None, given: str | None) -> bool:
        """Whether a form's CSRF field is its session's."""
        if not session or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.csrf(session).encode())


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Whether a state-changing request came from a page of this listener.

    Browsers send Origin on every POST; Referer is the fallback for the few that strip it. A
    request with neither is refused: a form on another site cannot be told apart from it.
    """
    source = origin if origin and origin != "null" else referer
    if not source or not host:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


FORM_LIMIT = 64 * 1024  # the dashboard's forms are a few fields; nothing bigger is accepted


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """An urlencoded form's fields (the first of each name); ValueError when it is not one.

    The dashboard posts only urlencoded forms, so no multipart parser (and no dependency on
    python-multipart) is needed.
    """
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ValueError("the dashboard accepts only urlencoded forms")
    if len(body) > FORM_LIMIT:
        raise ValueError(f"form of {len(body)} bytes is over {FORM_LIMIT}")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields
