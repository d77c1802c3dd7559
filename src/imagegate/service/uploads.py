"""Uploads: an image comes in over HTTP, through a signed, single-use link, and becomes
an asset of the link's subject.

`create_link` records a ticket for the caller and signs its URL. The upload itself
(`receive`) streams the body into a staging file under the byte cap, checks it like any
input (magic bytes, the pixel cap before decoding, a full decode), removes location
metadata unless the operator keeps it (core.metadata), and stores it, within the
owner's `max_stored_bytes`, marked as an upload. Any refusal leaves nothing stored and
no staging file behind.
"""

import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from imagegate.access.policy import Caller
from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.core.cpu import FairShare, fed_while_read, run_cpu, taking_turns
from imagegate.core.errors import ImageRejected, InvalidRequest
from imagegate.core.ids import UploadId, new_upload_id
from imagegate.core.images import ImageInfo, inspect_image
from imagegate.core.metadata import apply_edits, location_edits
from imagegate.core.metrics import Metrics
from imagegate.core.staging import StagedBlob
from imagegate.service.links import LinkCheck, LinkSigner
from imagegate.service.quota import keep_until, limits_for, stored_bytes_exceeded
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Asset, AssetMeta, UploadLedger, UploadTicket

UPLOAD_RELAY = "upload"
"""What an uploaded asset names as its relay."""

_FILENAME = re.compile(r"[^\w.\- ]+")


@dataclass(frozen=True)
class UploadLink:
    url: str
    expires_at: int
    max_bytes: int
    filename: str | None

    @property
    def curl(self) -> str:
        """A ready command line: `curl -T FILE 'URL'` (the URL quoted for a shell)."""
        return f"curl -T {_shell_word(self.filename or 'photo.png')} '{self.url}'"


def _shell_word(name: str) -> str:
    return name if re.fullmatch(r"[\w.\-]+", name) else "'" + name.replace("'", "") + "'"


def clean_filename(name: str | None) -> str | None:
    """A caller's file name, kept only as a label: its last part, printable, short."""
    if name is None:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _FILENAME.sub("_", base).strip(" .")[:120]
    return cleaned or None


class Uploads:
    def __init__(
        self,
        settings: Settings,
        assets: AssetStore,
        tickets: UploadLedger,
        signer: LinkSigner,
        clock: Clock,
        fair: FairShare | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._assets = assets
        self._tickets = tickets
        self._signer = signer
        self._clock = clock
        self._fair = fair
        self._metrics = metrics or Metrics()

    @property
    def max_bytes(self) -> int:
        return self._settings.max_image_bytes

    async def create_link(
        self, caller: Caller, filename: str | None, ttl_seconds: int | None
    ) -> UploadLink:
        """A link that uploads one image as the caller's, until it expires."""
        limit = self._settings.upload_ttl_seconds
        ttl = limit if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= limit:
            raise InvalidRequest(f"ttl_seconds must be between 1 and {limit}")
        limits = limits_for(caller.identity, self._settings.quotas)
        stored_limit = limits.max_stored_bytes
        if stored_limit is not None:
            stored = await self._assets.stored_bytes(caller.subject)
            if stored >= stored_limit:
                raise stored_bytes_exceeded(stored, stored_limit)
        now = self._clock.now()
        expires_at = int(now) + ttl
        name = clean_filename(filename)
        ticket = UploadTicket(
            new_upload_id(), caller.subject, expires_at, name, stored_limit, limits.retention_days
        )
        await self._tickets.create(ticket, now)
        signed = self._signer.sign_upload(ticket.id, expires_at)
        return UploadLink(signed.url, expires_at, self.max_bytes, name)

    def check(self, upload_id: str, exp: str, sig: str) -> LinkCheck:
        return self._signer.check_upload(upload_id, exp, sig, self._clock.now())

    async def claim(self, upload_id: UploadId) -> UploadTicket | None:
        """The ticket, used up now; None if it was used (or is unknown or expired)."""
        return await self._tickets.claim(upload_id, self._clock.now())

    async def release(self, upload_id: UploadId) -> None:
        """The link works again: its upload failed on our side."""
        await self._tickets.release(upload_id)

    async def receive(self, ticket: UploadTicket, body: AsyncIterator[bytes]) -> Asset:
        """Store the body as the ticket owner's image. TooLarge, ImageRejected or
        QuotaExceeded when it can't be; nothing is left behind then."""
        staged = self._stage()
        try:
            with taking_turns(self._fair, ticket.owner):
                # Written, hashed and checked in a worker thread while more arrives.
                rest = await fed_while_read(body, staged.write_all)
                await run_cpu(staged.write_all, rest)
                staged.finish()
                staged, info = await self._clean(staged)
            meta = AssetMeta(
                relay=UPLOAD_RELAY,
                prompt="",
                params={
                    "upload": True,
                    **({"filename": ticket.filename} if ticket.filename else {}),
                },
            )
            now = self._clock.now()
            asset = await self._assets.add(
                ticket.owner,
                staged,
                info,
                meta,
                now,
                ticket.stored_limit,
                keep_until(ticket.retention_days, now),
            )
            self._metrics.stored("uploaded", asset.byte_size)
            return asset
        finally:
            staged.discard()  # a no-op once committed

    def _stage(self) -> StagedBlob:
        """A staging file that checks a PNG as it is written (under the pixel cap)."""
        staged = self._assets.stage()
        staged.pixel_cap = self._settings.max_image_pixels
        staged.check_as_png()
        return staged

    def _inspect(self, staged: StagedBlob) -> ImageInfo:
        return inspect_image(
            staged.path,
            max_bytes=self.max_bytes,
            max_pixels=self._settings.max_image_pixels,
            png_whole=staged.png_whole,
        )

    async def _clean(self, staged: StagedBlob) -> tuple[StagedBlob, ImageInfo]:
        """The upload inspected and, unless kept by the operator, without location
        metadata (a new staging file then; the first is discarded)."""
        info = await run_cpu(self._inspect, staged)
        if not self._settings.strip_location:
            return staged, info
        try:
            edits = await run_cpu(location_edits, staged.path, info.format)
        except (struct.error, ValueError, IndexError, OSError):
            raise ImageRejected(
                f"{info.format.value} image: its metadata could not be read, so its "
                "location could not be removed"
            ) from None
        if not edits:
            return staged, info
        cleaned = self._stage()
        try:
            await run_cpu(apply_edits, staged.path, edits, cleaned.write)
            cleaned.finish()
            cleaned_info = await run_cpu(self._inspect, cleaned)
        except BaseException:
            cleaned.discard()
            raise
        staged.discard()
        return cleaned, cleaned_info
