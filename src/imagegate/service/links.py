"""Signed, expiring download and upload links. Pure: a key, an id, a clock reading.

A link is `{base}/files/{asset_id}.{ext}?exp={unix}&sig={hmac}`. The signature covers a
version tag, the asset id and the expiry, so neither can be changed; verifying needs the
key only, so any replica sharing the key can serve the link. Ids are never reused, so a
deleted asset's links stay dead.

Revoking an asset's links raises its link generation; a link made after that carries
the generation (`g=`, signed in), and one that carries an older generation (or none)
is refused as revoked. The route compares the two after it has found the asset.
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote

from imagegate.core.ids import AssetId, UploadId

_VERSION = b"imagegate-link-v1"
_UPLOAD = b"imagegate-upload-v1"
"""Another purpose, another tag: a download signature can't pass for an upload's."""


class LinkCheck(Enum):
    VALID = "valid"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: int


class LinkSigner:
    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("link signing key must be at least 16 bytes")
        self._key = key
        self._base_url = base_url.rstrip("/")

    def _signature(
        self,
        asset_id: str,
        expires_at: int,
        purpose: bytes = _VERSION,
        view: str = "",
        generation: int = 0,
    ) -> str:
        parts = [purpose, asset_id.encode(), str(expires_at).encode()]
        if view:  # a plain link signs exactly as it always did
            parts.append(view.encode())
        if generation:  # a link of an asset never revoked, too
            parts.append(f"g={generation}".encode())
        message = b"\n".join(parts)
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self,
        asset_id: AssetId,
        extension: str,
        expires_at: int,
        view: str = "",
        query: str = "",
        generation: int = 0,
    ) -> SignedLink:
        """A link; with a `view` (its canonical key, and `query`, its URL parameters)
        to a resized or converted copy, the view signed in too; with the asset's link
        `generation` once its links were revoked."""
        sig = self._signature(asset_id, expires_at, view=view, generation=generation)
        path = f"/files/{quote(asset_id)}.{quote(extension)}"
        extra = f"&{query}" if query else ""
        if generation:
            extra += f"&g={generation}"
        return SignedLink(f"{self._base_url}{path}?exp={expires_at}{extra}&sig={sig}", expires_at)

    def sign_upload(self, upload_id: UploadId, expires_at: int) -> SignedLink:
        sig = self._signature(upload_id, expires_at, _UPLOAD)
        path = f"/uploads/{quote(upload_id)}"
        return SignedLink(f"{self._base_url}{path}?exp={expires_at}&sig={sig}", expires_at)

    def check_upload(self, upload_id: str, exp: str, sig: str, now: float) -> LinkCheck:
        return self.check(upload_id, exp, sig, now, _UPLOAD)

    def check(
        self,
        asset_id: str,
        exp: str,
        sig: str,
        now: float,
        purpose: bytes = _VERSION,
        view: str = "",
        generation: str = "",
    ) -> LinkCheck:
        """Signature first (a tampered expiry is a forgery, not an expiry), then time.
        `generation` is the link's `g` parameter, as given."""
        # isdigit() alone accepts '²' and other digits that int() refuses.
        if not (exp.isascii() and exp.isdigit()) or len(exp) > 12:
            return LinkCheck.BAD_SIGNATURE
        if generation and not (_is_number(generation) and int(generation) > 0):
            return LinkCheck.BAD_SIGNATURE
        expected = self._signature(asset_id, int(exp), purpose, view, int(generation or 0))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            return LinkCheck.BAD_SIGNATURE
        if now >= int(exp):
            return LinkCheck.EXPIRED
        return LinkCheck.VALID


def _is_number(text: str) -> bool:
    """A number as `sign` writes it: ASCII digits, no leading zero, not too long."""
    return text.isascii() and text.isdigit() and len(text) <= 9 and text == str(int(text))
