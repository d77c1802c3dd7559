"""One static bearer token mapped to one subject, compared in constant time."""

import hashlib
import hmac

from fastmcp.server.auth import AccessToken, TokenVerifier

from imagegate.auth.identity import caller_token
from imagegate.ids import Subject

TOKEN_SUBJECT_PREFIX = "token:"  # noqa: S105 - a label, not a secret


class StaticBearerVerifier(TokenVerifier):
    """Accepts exactly one token. Holds only its SHA-256, so a memory dump of the
    verifier does not reveal it, and compares digests in constant time."""

    def __init__(self, token: str, subject: Subject) -> None:
        super().__init__()
        self._digest = hashlib.sha256(token.encode()).digest()
        self._subject = subject

    async def verify_token(self, token: str) -> AccessToken | None:
        candidate = hashlib.sha256(token.encode()).digest()
        if not hmac.compare_digest(candidate, self._digest):
            return None
        return caller_token(self._subject)
