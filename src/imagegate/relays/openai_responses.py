"""OpenAI-compatible Responses API with the image_generation tool, streamed over SSE.

Events (dispatched on `data.type`): `response.image_generation_call.in_progress`,
`.generating` and `.partial_image` become progress; the image and revised prompt
come from `response.output_item.done` (not `.completed`, and not
`response.completed.output`, which relays that don't store responses leave empty);
usage from `response.completed`. `error`, `response.failed`, a failed item
(`moderation_blocked`) or a stream that ends without a terminal event are errors, and
nothing is kept. A broken stream is never re-POSTed: the upstream may be billing.
"""

from typing import Any, Literal

import anyio
import httpx

from imagegate.core.cpu import run_cpu
from imagegate.core.errors import RelayError
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat
from imagegate.relays.adapter import (
    ConfiguredRelay,
    data_url,
    keyed_upstream,
    staged_from_base64,
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
    Size,
    StageFn,
    discard_all,
)
from imagegate.relays.config import HttpRelayConfig
from imagegate.relays.wire.body import json_body
from imagegate.relays.wire.errors import reported_failure
from imagegate.relays.wire.spool import discard_spooled
from imagegate.relays.wire.sse import SSEParser

OPENAI_SIZES = (Size(1024, 1024), Size(1024, 1536), Size(1536, 1024))


class OpenAIResponsesRelayConfig(HttpRelayConfig):
    kind: Literal["openai-responses"]
    model: str | None = "gpt-5"
    image_model: str | None = None
    """The image_generation tool's model (e.g. gpt-image-1.5); None: the upstream's."""


class OpenAIResponsesRelay(ConfiguredRelay[OpenAIResponsesRelayConfig]):
    kind = "openai-responses"

    def __init__(
        self,
        name: str,
        config: OpenAIResponsesRelayConfig,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name, config, "OpenAI Responses API (image_generation tool)")
        compat = config.request_policy == "compat"
        self.capabilities = Capabilities(
            output_formats=OUTPUT_FORMATS,
            max_n=1,
            min_side=256,
            max_side=4096,
            sizes=None if compat else OPENAI_SIZES,
            qualities=QUALITIES,
            backgrounds=BACKGROUNDS,
            compression=True,
            seed=compat,
            negative_prompt=compat,
            partial_images=3,
            edit=True,
            max_inputs=10,
            mask=True,
            input_fidelity=True,
        )
        self.upstream = keyed_upstream(name, config, secrets, client)

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        tool: dict[str, Any] = {
            "type": "image_generation",
            "size": str(request.size),
            "output_format": request.output_format.value,
        }
        optional = {
            "model": self._config.image_model,
            "quality": request.quality,
            "background": request.background,
            # OpenAI rejects output_compression for PNG.
            "output_compression": None
            if request.output_format is ImageFormat.PNG
            else request.compression,
            "partial_images": request.partial_images or None,
            "input_fidelity": request.input_fidelity,
            "seed": request.seed,
            "negative_prompt": request.negative_prompt,
        }
        tool |= {key: value for key, value in optional.items() if value is not None}
        if request.mask is not None:
            tool["input_image_mask"] = {"image_url": data_url(request.mask)}
        content: list[dict[str, Any]] = [{"type": "input_text", "text": request.prompt}]
        content += [{"type": "input_image", "image_url": data_url(i)} for i in request.images]
        body: dict[str, Any] = {
            "model": self.model,
            "input": [{"role": "user", "content": content}],
            "tools": [tool],
            "tool_choice": {"type": "image_generation"},
            "stream": True,
            "store": False,
        }
        if request.user:
            body["safety_identifier"] = request.user
        return body

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        body = json_body(self.request_body(request))
        stream = _ResponseStream(self.name, request.partial_images, progress, self.upstream.secrets)
        parser = SSEParser(stage)
        try:
            with anyio.fail_after(self.upstream.timeouts.total):
                async with self.upstream.stream("POST", "responses", body) as response:
                    async for chunk in self.upstream.iter_capped(response):
                        # Parsing decodes any image on the way: a worker thread's job.
                        for event in await run_cpu(parser.feed, chunk):
                            await stream.handle(_object(event.data), stage)
                    parser.close()
        except BaseException as err:
            parser.discard()
            stream.discard()
            if isinstance(err, TimeoutError):
                raise RelayError(
                    f"relay {self.name!r} did not finish within {self.upstream.timeouts.total:g} s"
                ) from None
            raise
        return stream.result()


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _ResponseStream:
    """State of one Responses stream: progress, the final image, usage."""

    def __init__(
        self,
        relay: str,
        partials: int,
        progress: ProgressFn,
        secrets: tuple[str, ...],
    ) -> None:
        self._relay = relay
        self._secrets = secrets
        self._partials_wanted = partials
        self._progress = progress
        self.image: RelayImage | None = None
        self.partials_seen = 0
        self.completed = False
        self.usage: dict[str, Any] | None = None

    async def handle(self, event: dict[str, Any], stage: StageFn) -> None:
        kind = event.get("type", "")
        if kind == "error" or kind == "response.failed":
            error = event.get("error") or (event.get("response") or {}).get("error") or event
            raise reported_failure(self._relay, error, self._secrets)
        elif kind == "response.image_generation_call.in_progress":
            await self._progress(0.05, "upstream accepted the request")
        elif kind == "response.image_generation_call.generating":
            await self._progress(0.1, "generating")
        elif kind == "response.image_generation_call.partial_image":
            discard_spooled(event.get("partial_image_b64"))  # progress only
            self.partials_seen += 1
            fraction = 0.1 + 0.8 * self.partials_seen / max(self._partials_wanted, 1, 3)
            await self._progress(min(fraction, 0.9), f"partial image {self.partials_seen}")
        elif kind == "response.output_item.done":
            await self._item(event.get("item") or {}, stage)
        elif kind == "response.completed":
            self.completed = True
            response = event.get("response") or {}
            usage = response.get("usage")
            tool_usage = (response.get("tool_usage") or {}).get("image_gen")
            self.usage = {k: v for k, v in (("usage", usage), ("image_gen", tool_usage)) if v}

    async def _item(self, item: dict[str, Any], stage: StageFn) -> None:
        if item.get("type") != "image_generation_call":
            return
        if item.get("status") == "failed" or item.get("error"):
            error = item.get("error") or {"message": "image generation failed"}
            raise reported_failure(self._relay, error, self._secrets)
        result = item.get("result")
        if not isinstance(result, str) or not result:
            raise RelayError(f"relay {self._relay!r} finished the image call without an image")
        staged = await staged_from_base64(stage, result, self._relay)
        self.discard()
        resolved = ("size", "quality", "output_format", "background")
        params: dict[str, Any] = {key: item[key] for key in resolved if key in item}
        self.image = RelayImage(staged, revised_prompt=item.get("revised_prompt"), params=params)
        await self._progress(0.95, "image received")

    def result(self) -> list[RelayImage]:
        if self.image is None:
            raise RelayError(
                f"relay {self._relay!r} stream ended without a final image"
                + (" (the response did not complete)" if not self.completed else "")
            )
        if self.usage:
            self.image.usage = self.usage
        return [self.image]

    def discard(self) -> None:
        if self.image is not None:
            discard_all([self.image])
            self.image = None


KIND = RelayKind(OpenAIResponsesRelayConfig, OpenAIResponsesRelay)
