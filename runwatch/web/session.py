"""The dashboard's sessions and CSRF tokens, both made from the HTTP token.

A browser cannot send ``Authorization: Bearer``, so a person gives the token once to the login form and gets a
session cookie: ``EXPIRY.NONCE.MAC``, the MAC an HMAC-SHA256 of the expiry and the nonce under a key derived from
the token. Nothing is kept on the server: a session outlives a restart of the daemon, and changing the token ends
every session at once. The cookie is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's
page sends it), and its name carries the port, so two daemons on one machine never overwrite each other's.

Every form that writes carries a CSRF token, the HMAC of the session's nonce under another derived key, checked in
constant time. With ``SameSite=Strict`` and the Origin check a forged form is refused twice over; the CSRF token
also refuses a form posted by a page that could read the cookie's name but not its value.

Without a token there is no session: writes stay off, as for the API (README: Dashboard, API and monitoring).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["LIFETIME", "Sessions"]

LIFETIME = 12 * 3600  # seconds a session lasts; the login form is one paste of the token away


class Sessions:
    """Make and check sessions and CSRF tokens for one server."""

    def __init__(self, token: str | None, port: int, clock: Callable[[], float] = time.time) -> None:
        self.enabled = token is not None
        secret = (token or "").encode()
        self._session_key = hmac.new(secret, b"runwatch dashboard session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret, b"runwatch dashboard csrf", hashlib.sha256).digest()
        self._token = secret
        self.cookie = f"runwatch_session_{port}"
        self._clock = clock

    def login(self, given: str) -> str | None:
        """A new session's cookie value when ``given`` is the token, else None."""
        if not self.enabled or not hmac.compare_digest(given.strip().encode(), self._token):
            return None
        expiry = str(int(self._clock()) + LIFETIME)
        nonce = secrets.token_urlsafe(18)
        return f"{expiry}.{nonce}.{self._mac(self._session_key, f'{expiry}.{nonce}')}"

    def valid(self, cookie: str | None) -> bool:
        """Whether ``cookie`` is a session this token made and it has not expired."""
        if not self.enabled or not cookie:
            return False
        expiry, _, rest = cookie.partition(".")
        nonce, _, mac = rest.partition(".")
        if not expiry.isdigit() or not nonce or not mac:
            return False
        if not hmac.compare_digest(mac, self._mac(self._session_key, f"{expiry}.{nonce}")):
            return False
        return int(expiry) > self._clock()

    def csrf(self, cookie: str | None) -> str:
        """The CSRF token of a valid session's forms ("" without one)."""
        if not self.valid(cookie):
            return ""
        return self._mac(self._csrf_key, (cookie or "").split(".")[1])

    def csrf_ok(self, cookie: str | None, given: str | None) -> bool:
        expected = self.csrf(cookie)
        return bool(expected) and given is not None and hmac.compare_digest(expected, given)

    @staticmethod
    def _mac(key: bytes, text: str) -> str:
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
