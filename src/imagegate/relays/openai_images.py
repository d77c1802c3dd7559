"""OpenAI-compatible Images API: `images/generations` (JSON) and `images/edits` (multipart).

The answer is JSON with `data[]` items holding `b64_json` (or, from some relays, a
`url`), or with `stream` configured, SSE events dispatched on `data.type`:
`image_generation.partial_image` / `image_edit.partial_image` become progress and
`image_generation.completed` / `image_edit.completed` carry each final image and its
usage. An `error` event, a moderation error in a 200 body, a stream that ends before a
completed image or is cut mid-line, or an answer without a usable image are errors, and
nothing staged is kept.

An image `url` is fetched only over https from a public address (hostnames are
resolved and every address checked), or from loopback when the relay itself is on
loopback (a local relay or a test server); never with the relay's key, never
following redirects, and capped like every upstream answer.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any, Literal

import anyio
import httpx

from imagegate.core.cpu import run_cpu
from imagegate.core.errors import RelayError
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat
from imagegate.core.staging import StagedBlob
from imagegate.relays.adapter import (
    ConfiguredRelay,
    discarded_on_failure,
    http_client,
    keyed_upstream,
    staged_from_base64,
    staged_from_url,
)
from imagegate.relays.base import (
    BACKGROUNDS,
    QUALITIES,
    Capabilities,
    ImageRequest,
    ProgressFn,
    RelayImage,
    RelayKind,
    SecretLookup,
    StageFn,
)
from imagegate.relays.config import HttpRelayConfig
from imagegate.relays.openai_responses import OPENAI_SIZES
from imagegate.relays.wire.errors import reported_failure
from imagegate.relays.wire.fetch import ImageFetcher
from imagegate.relays.wire.spool import discard_spooled
from imagegate.relays.wire.sse import SSEEvent, SSEParser

log = logging.getLogger("imagegate.relays")

MAX_INPUTS = 16
_RESOLVED = ("size", "quality", "output_format", "background")
"""What the upstream says it actually used; recorded with each image."""
_PARTIAL_EVENTS = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
_COMPLETED_EVENTS = frozenset({"image_generation.completed", "image_edit.completed"})


class OpenAIImagesRelayConfig(HttpRelayConfig):
    kind: Literal["openai-images"]
    model: str | None = "gpt-image-1.5"
    stream: bool = False
    """Use the streaming endpoint (partial images, progress)."""


class OpenAIImagesRelay(ConfiguredRelay[OpenAIImagesRelayConfig]):
    kind = "openai-images"

    def __init__(
        self,
        name: str,
        config: OpenAIImagesRelayConfig,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name, config, "OpenAI Images API (generations and edits)")
        self._compat = config.request_policy == "compat"
        self.capabilities = Capabilities(
            output_formats=OUTPUT_FORMATS,
            max_n=10,
            min_side=256,
            max_side=4096,
            sizes=None if self._compat else OPENAI_SIZES,
            qualities=QUALITIES,
            backgrounds=BACKGROUNDS,
            compression=True,
            seed=self._compat,
            negative_prompt=self._compat,
            partial_images=3 if config.stream else 0,
            edit=True,
            max_inputs=MAX_INPUTS,
            mask=True,
            input_fidelity=True,
        )
        client = client or http_client(config)
        self.upstream = keyed_upstream(name, config, secrets, client)
        # Image URLs are fetched with the same pool but never with the key.
        self._fetcher = ImageFetcher(name, client, self.upstream, config.base_url)

    def fields(self, request: ImageRequest) -> dict[str, Any]:
        """The request's fields, shared by the JSON body and the edit form."""
        fields: dict[str, Any] = {
            "prompt": request.prompt,
            "model": self.model,
            "n": request.n,
            "size": str(request.size),
            "quality": request.quality,
            "output_format": request.output_format.value,
            # The API rejects a compression level for PNG, where it means nothing.
            "output_compression": (
                None if request.output_format is ImageFormat.PNG else request.compression
            ),
            "background": request.background,
            # Fidelity to input images: there are none in a generation.
            "input_fidelity": request.input_fidelity if request.is_edit else None,
            "user": request.user,
        }
        if self._compat:
            fields |= {"seed": request.seed, "negative_prompt": request.negative_prompt}
        if self._config.stream:
            fields |= {"stream": True, "partial_images": request.partial_images or None}
        return {key: value for key, value in fields.items() if value is not None}

    def edit_form(self, request: ImageRequest, files: ExitStack) -> dict[str, Any]:
        """`data` and `files` for one try of an edit; the files are opened here, fresh for
        each try (a send consumes them), and closed when `files` closes."""
        data = {key: _form_value(value) for key, value in self.fields(request).items()}
        several = len(request.images) > 1
        field = "image[]" if several else "image"
        parts: list[tuple[str, tuple[str, Any, str]]] = []
        for number, image in enumerate(request.images, 1):
            filename = f"image-{number}" if several else "image"
            handle = files.enter_context(image.path.open("rb"))
            parts.append(
                (field, (f"{filename}.{image.format.extension}", handle, image.format.mime_type))
            )
        if request.mask is not None:
            mask = request.mask
            handle = files.enter_context(mask.path.open("rb"))
            parts.append(("mask", (f"mask.{mask.format.extension}", handle, mask.format.mime_type)))
        return {"data": data, "files": parts}

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        images: list[RelayImage] = []
        async with discarded_on_failure(self.name, images, self.upstream.timeouts.total):
            with anyio.fail_after(self.upstream.timeouts.total):
                await progress(0.0, "sending request")
                payload: Any = None
                async with self._post(request) as response:
                    streamed = self._config.stream and not _is_json(response)
                    if streamed:
                        stream = _ImageStream(self, request, stage, progress, images)
                        await stream.read(response)
                    else:
                        payload = await self.upstream.read_json(response, stage)
                if not streamed:
                    await self._take_json(payload, request, stage, progress, images)
        return images

    @asynccontextmanager
    async def _post(self, request: ImageRequest) -> AsyncIterator[httpx.Response]:
        if not request.is_edit:
            body = self.fields(request)
            async with self.upstream.stream("POST", "images/generations", body) as response:
                yield response
            return
        with ExitStack() as files:
            async with self.upstream.stream(
                "POST", "images/edits", multipart=lambda: self.edit_form(request, files)
            ) as response:
                yield response

    async def _take_json(
        self,
        payload: Any,
        request: ImageRequest,
        stage: StageFn,
        progress: ProgressFn,
        images: list[RelayImage],
    ) -> None:
        if not isinstance(payload, dict):
            raise RelayError(f"relay {self.name!r} answered with unexpected JSON")
        if payload.get("error"):
            raise reported_failure(self.name, payload["error"], self.upstream.secrets)
        data = payload.get("data")
        if not isinstance(data, list) or not data:
            raise RelayError(f"relay {self.name!r} answered without an image")
        if len(data) > request.n:
            log.warning("relay %s: sent %d images for n=%d", self.name, len(data), request.n)
            data = data[: request.n]
        params = {key: payload[key] for key in _RESOLVED if key in payload}
        usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
        if usage and len(data) > 1:
            usage = {**usage, "images_in_call": len(data)}  # the call's total, not this image's
        for number, item in enumerate(data, 1):
            if not isinstance(item, dict):
                raise RelayError(f"relay {self.name!r} answered with a malformed image item")
            # pop: the base64 text is freed once decoded, not held until the last image.
            staged = await self.stage_item(item.pop("b64_json", None), item.get("url"), stage)
            revised = item.get("revised_prompt")
            images.append(
                RelayImage(
                    staged,
                    revised_prompt=revised if isinstance(revised, str) and revised else None,
                    params=dict(params),
                    usage=dict(usage) if usage else None,
                )
            )
            await progress(number / len(data), f"image {number} of {len(data)} received")

    async def stage_item(self, encoded: Any, url: Any, stage: StageFn) -> StagedBlob:
        """One finished staged blob from an item's base64 or URL; nothing left on failure."""
        if not (isinstance(encoded, str) and encoded) and not (isinstance(url, str) and url):
            raise RelayError(f"relay {self.name!r} sent an image item without image data")
        if isinstance(encoded, str) and encoded:
            return await staged_from_base64(stage, encoded, self.name)
        return await staged_from_url(stage, str(url), self._fetcher)


class _ImageStream:
    """One Images API SSE stream: progress and the final images."""

    def __init__(
        self,
        relay: OpenAIImagesRelay,
        request: ImageRequest,
        stage: StageFn,
        progress: ProgressFn,
        images: list[RelayImage],
    ) -> None:
        self._relay = relay
        self._request = request
        self._stage = stage
        self._progress = progress
        self._images = images
        self.partials_seen = 0

    async def read(self, response: httpx.Response) -> None:
        parser = SSEParser(self._stage)
        try:
            async for chunk in self._relay.upstream.iter_capped(response):
                # Parsing decodes any image on the way: a worker thread's job.
                for event in await run_cpu(parser.feed, chunk):
                    await self.handle(event)
            parser.close()
        finally:
            parser.discard()
        if not self._images:
            raise RelayError(f"relay {self._relay.name!r} stream ended without a completed image")
        if len(self._images) < self._request.n:
            log.warning(
                "relay %s: stream completed %d of %d images",
                self._relay.name,
                len(self._images),
                self._request.n,
            )

    async def handle(self, sse: SSEEvent) -> None:
        event = sse.data
        if event is None:
            return
        if not isinstance(event, dict):
            raise RelayError(f"relay {self._relay.name!r} sent an event that is not an object")
        kind = event.get("type") or sse.event or ""
        if kind == "error" or kind.endswith(".failed"):
            relay = self._relay
            raise reported_failure(relay.name, event.get("error") or event, relay.upstream.secrets)
        elif kind in _PARTIAL_EVENTS:
            discard_spooled(event.get("b64_json"))  # progress only
            await self._partial()
        elif kind in _COMPLETED_EVENTS:
            await self._completed(event)

    async def _partial(self) -> None:
        self.partials_seen += 1
        expected = max(self._request.partial_images, 1) * self._request.n
        fraction = min(0.1 + 0.8 * self.partials_seen / expected, 0.9)
        await self._progress(fraction, f"partial image {self.partials_seen}")

    async def _completed(self, event: dict[str, Any]) -> None:
        n = self._request.n
        if len(self._images) >= n:
            log.warning("relay %s: stream sent more than n=%d images", self._relay.name, n)
            return
        staged = await self._relay.stage_item(event.pop("b64_json", None), None, self._stage)
        usage = event.get("usage")
        params = {key: event[key] for key in _RESOLVED if key in event}
        revised = event.get("revised_prompt")
        self._images.append(
            RelayImage(
                staged,
                revised_prompt=revised if isinstance(revised, str) and revised else None,
                params=params,
                usage=usage if isinstance(usage, dict) and usage else None,
            )
        )
        number = len(self._images)
        await self._progress(min(0.9 + 0.1 * number / n, 1.0), f"image {number} of {n} received")


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_json(response: httpx.Response) -> bool:
    """A relay that ignores `stream: true` answers with plain JSON."""
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip().lower() == "application/json"


KIND = RelayKind(OpenAIImagesRelayConfig, OpenAIImagesRelay)
