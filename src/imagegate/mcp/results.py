"""Shape tool results: the structured content models read, and a short text fallback.

Codex and Claude Code hand a model the structured content and little else, so it holds
everything, compactly: fields that are empty or unknown are left out. The text block is
for clients without structured content: a heading and one line per image, with a
Markdown image where there is a link, then a resource link per image (`image://` URIs
that `resources/read` reads, mcp.resources).
"""

import base64
import re
from datetime import UTC, datetime
from typing import Any

from mcp_types import ImageContent, ResourceLink, TextContent
from pydantic import BaseModel, Field

from imagegate.service.images import Published
from imagegate.storage.interfaces import Asset

_ALT_UNSAFE = re.compile(r"[\[\]\(\)\\\r\n`*_<>!]+")


class ImageRecord(BaseModel):
    asset_id: str
    url: str | None = None
    """A signed download link (HTTP), or a file:// URL (stdio); none in listings."""
    expires_at: str | None = None
    path: str | None = None
    """stdio: the image's local file."""
    saved_to: str | None = None
    """stdio: the copy written where `save_to` asked."""
    width: int
    height: int
    mime_type: str
    bytes: int
    relay: str
    prompt: str
    revised_prompt: str | None = None
    created_at: str
    params: dict[str, Any] = {}
    owner: str = Field(default="", exclude=True)
    """Whose image it is: it gets a resource link only in its owner's results."""


class Failure(BaseModel):
    """One input of a batch edit that produced no image, and why."""

    index: int
    source: str
    error: str


class ImagesResult(BaseModel):
    images: list[ImageRecord]
    elapsed_seconds: float | None = None
    next_cursor: str | None = None
    failures: list[Failure] = []
    confirmation: str | None = None
    """For paid relays: paid:auto, accepted, declined, cancelled, unsupported."""
    estimated_cost: float | None = None
    save_error: str | None = None
    """Why the copies `save_to` asked for were not written (the images are stored)."""
    relay_choice: dict[str, str] | None = None
    """relay="auto": the relay chosen and why ({"relay", "reason"})."""

    def structured(self) -> dict[str, Any]:
        """The structured content: what is unknown or empty is left out."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def image_record(asset: Asset, published: Published | None) -> ImageRecord:
    return ImageRecord(
        asset_id=asset.id,
        url=published.url if published else None,
        expires_at=iso(published.expires_at) if published else None,
        path=str(published.path) if published and published.path else None,
        width=asset.width,
        height=asset.height,
        mime_type=asset.format.mime_type,
        bytes=asset.byte_size,
        relay=asset.relay,
        prompt=asset.prompt,
        revised_prompt=asset.revised_prompt,
        created_at=iso(asset.created_at) or "",
        params=asset.params,
        owner=asset.owner,
    )


def markdown_image(record: ImageRecord) -> str:
    """A Markdown image line chat clients can render; the alt text can't break out."""
    alt = _ALT_UNSAFE.sub(" ", record.prompt)[:80].strip() or record.asset_id
    return f"![{alt}]({record.url})"


def image_content(
    records: list[ImageRecord],
    heading: str,
    reader: str,
    thumbnails: list[bytes] | None = None,
) -> list[TextContent | ImageContent | ResourceLink]:
    """The text fallback (a line per image, its Markdown image when it has a link), a
    resource link to each of the `reader`'s own images (only their owner can read
    them), and the optional thumbnails."""
    lines = [heading]
    for record in records:
        line = f"- {record.asset_id}, {record.width}x{record.height} {_format(record.mime_type)}"
        lines.append(f"{line}: {markdown_image(record)}" if record.url else line)
    blocks: list[TextContent | ImageContent | ResourceLink] = [
        TextContent(type="text", text="\n".join(lines))
    ]
    blocks += [
        ResourceLink(
            type="resource_link",
            uri=f"image://{record.asset_id}",
            name=record.asset_id,
            mime_type=record.mime_type,
            size=record.bytes,
        )
        for record in records
        if record.owner == reader
    ]
    for thumb in thumbnails or []:
        blocks.append(
            ImageContent(type="image", data=base64.b64encode(thumb).decode(), mime_type="image/png")
        )
    return blocks


def _format(mime_type: str) -> str:
    return mime_type.split("/", 1)[1]
