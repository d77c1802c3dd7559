"""One static bearer token mapped to one subject, compared in constant time."""

import hashlib
import hmac

from imagegate.access.identity import Verified, verified
from imagegate.core.ids import Subject

TOKEN_SUBJECT_PREFIX = "token:"  # noqa: S105 - a label, not a secret


class StaticBearerVerifier:
    """Accepts exactly one token. Holds only its SHA-256, so a memory dump of the
    verifier does not reveal it, and compares digests in constant time."""

    def __init__(self, token: str, subject: Subject) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self._subject = subject

    async def verify(self, token: str) -> Verified | None:
        candidate = hashlib.sha256(token.encode()).digest()
        if not hmac.compare_digest(candidate, self._digest):
            return None
        return verified(self._subject)
