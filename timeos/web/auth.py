"""Who may use the dashboard: the login cookie, the CSRF token and the Origin check.

The cookie holds a value derived from the bearer token (HMAC), never the token itself, so a
leaked cookie does not give API access; the CSRF token is derived the same way with another label.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit

COOKIE = "timeos_ui"
COOKIE_PATH = "/ui"


def _derive(token: bytes, label: bytes) -> str:
    return hmac.new(token, b"timeos-ui:" + label, hashlib.sha256).hexdigest()


class Credentials:
    """The values derived from one bearer token, and the checks against them."""

    def __init__(self, token: bytes) -> None:
        self.token = token
        self.session = _derive(token, b"session")
        self.csrf = _derive(token, b"csrf")

    def token_matches(self, given: str) -> bool:
        """Whether a pasted token is the daemon's (constant time)."""
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token)

    def session_valid(self, cookie: str | None) -> bool:
        """Whether a login cookie was issued for this token."""
        return cookie is not None and hmac.compare_digest(cookie.encode(), self.session.encode())

    def csrf_valid(self, given: str | None) -> bool:
        """Whether a form's CSRF field is this token's."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


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
