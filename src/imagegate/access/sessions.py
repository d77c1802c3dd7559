"""Browser sessions of the web gallery: signed cookies, nothing kept on the server.

A sealed value is `base64url(JSON) "." base64url(HMAC-SHA256)`, under a key derived
from the link key with a purpose of its own, so that no other signed value of
imagegate (a link, a login's state) passes for a session. It is signed, not
encrypted: a session names the person to themselves, and holds no token.

The session cookie holds whose it is (the subject and groups the provider's token gave
at login), when it ends, and a random id from which each form's CSRF token is derived;
a page elsewhere can't know it. Logging out deletes the cookie in that browser; a copy
taken before keeps working until it ends (`[gallery].session_hours`), since the server
keeps no list of sessions.
"""

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from imagegate.access.identity import Identity
from imagegate.core.ids import Subject

MAX_SEALED_CHARS = 4000
"""Longer than a browser keeps in one cookie: refused unread."""

SESSION = "session"
LOGIN = "login"


@dataclass(frozen=True)
class Session:
    subject: Subject
    groups: frozenset[str]
    expires_at: int
    id: str

    @property
    def identity(self) -> Identity:
        return Identity(self.subject, self.groups)


class SessionTooLarge(ValueError):
    """The identity doesn't fit in a cookie (thousands of characters of groups)."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._key = hmac.new(key, b"imagegate gallery v1", hashlib.sha256).digest()

    def _mac(self, purpose: str, body: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\0{body}".encode(), hashlib.sha256).digest()
        return _b64(digest)

    def seal(self, purpose: str, payload: dict[str, Any], expires_at: int) -> str:
        body = _b64(json.dumps({**payload, "exp": expires_at}, separators=(",", ":")).encode())
        return f"{body}.{self._mac(purpose, body)}"

    def unseal(self, purpose: str, value: str, now: float) -> dict[str, Any] | None:
        """The payload, if `value` was sealed for `purpose` and has not expired."""
        if len(value) > MAX_SEALED_CHARS or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        if not _same(mac, self._mac(purpose, body)):
            return None
        try:
            payload: object = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        expires_at = payload.get("exp")
        if not isinstance(expires_at, int) or now >= expires_at:
            return None
        return payload

    def session(self, identity: Identity, now: float, lifetime_seconds: float) -> str:
        """A new session's cookie value."""
        payload = {
            "sub": identity.subject,
            "groups": sorted(identity.groups),
            "sid": secrets.token_urlsafe(16),
        }
        sealed = self.seal(SESSION, payload, int(now + lifetime_seconds))
        if len(sealed) > MAX_SEALED_CHARS:
            raise SessionTooLarge(
                f"{len(identity.groups)} groups don't fit in a browser session; ask the "
                "provider's administrator to send fewer in this client's tokens"
            )
        return sealed

    def read_session(self, value: str, now: float) -> Session | None:
        payload = self.unseal(SESSION, value, now)
        if payload is None:
            return None
        subject, groups, sid = payload.get("sub"), payload.get("groups"), payload.get("sid")
        if not isinstance(subject, str) or not isinstance(sid, str):
            return None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return None
        return Session(Subject(subject), frozenset(groups), payload["exp"], sid)

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.id)

    def csrf_ok(self, session: Session, token: str) -> bool:
        return _same(token, self.csrf_token(session))


def _same(given: str, expected: str) -> bool:
    # Bytes: compare_digest refuses a str with characters outside ASCII.
    return hmac.compare_digest(given.encode(), expected.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
