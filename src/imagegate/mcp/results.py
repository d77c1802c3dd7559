"""Shape tool results: structured content, a resource link and a Markdown line per image."""

import base64
import re
from datetime import UTC, datetime
from typing import Any

from mcp_types import ImageContent, ResourceLink, TextContent
from pydantic import BaseModel

from imagegate.service.images import Published
from imagegate.storage.interfaces import Asset

_ALT_UNSAFE = re.compile(r"[\[\]\(\)\\\r\n`*_<>!]+")


class ImageRecord(BaseModel):
    asset_id: str
    url: str | None
    expires_at: str | None
    path: str | None
    width: int
    height: int
    mime_type: str
    bytes: int
    relay: str
    prompt: str
    revised_prompt: str | None
    created_at: str
    params: dict[str, Any]


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
    )


def markdown_image(record: ImageRecord) -> str:
    """A Markdown image line chat clients can render; the alt text can't break out."""
    alt = _ALT_UNSAFE.sub(" ", record.prompt)[:80].strip() or record.asset_id
    return f"![{alt}]({record.url})"


def image_content(
    records: list[ImageRecord], heading: str, thumbnails: list[bytes] | None = None
) -> list[TextContent | ResourceLink | ImageContent]:
    """Human-readable blocks for images that have a URL: text, links, optional thumbnails."""
    lines = [heading]
    for record in records:
        expiry = f", link expires {record.expires_at}" if record.expires_at else ""
        lines.append(
            f"- {record.asset_id}: {record.width}x{record.height} {record.mime_type}, "
            f"{record.bytes} bytes, relay {record.relay}{expiry}"
        )
        if record.url is not None:
            lines.append(f"  {markdown_image(record)}")
    blocks: list[TextContent | ResourceLink | ImageContent] = [
        TextContent(type="text", text="\n".join(lines))
    ]
    for record in records:
        if record.url is None:
            continue
        blocks.append(
            ResourceLink(
                type="resource_link",
                uri=record.url,
                name=f"{record.asset_id}.{_extension(record.mime_type)}",
                mime_type=record.mime_type,
                size=record.bytes,
                description=f"{record.width}x{record.height} image from relay {record.relay}",
            )
        )
    for thumb in thumbnails or []:
        blocks.append(
            ImageContent(type="image", data=base64.b64encode(thumb).decode(), mime_type="image/png")
        )
    return blocks


def _extension(mime_type: str) -> str:
    sub = mime_type.split("/", 1)[1]
    return "jpg" if sub == "jpeg" else sub
