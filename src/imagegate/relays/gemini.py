"""Google Gemini image models: `POST {base}/models/{model}:generateContent`.

Gemini takes no pixel size. The requested size picks the nearest aspect ratio Gemini
names (`imageConfig.aspectRatio`); the image comes back at the model's own resolution
for that ratio (`imageConfig.imageSize` 1K/2K/4K when configured, on models that take
it). The output format is the upstream's choice (PNG from current models) and cannot be
asked for; the asset's real format is read from its bytes when it is stored.

One call makes one image, so `n` images are `n` sequential calls, each with its own
progress report, timeout (`total_timeout`) and usage; if any call fails, every image
already made is discarded. Edits send the input images inline as base64, streamed from
disk. The key travels in the `x-goog-api-key` header, never in the URL.

Parts marked `thought: true` (the interim images of thinking models) are skipped. An
answer without an image is an error: a safety finish reason or a blocked prompt is
ContentRefused, anything else a RelayError quoting the model's text reply. That text is
commentary, not a rewritten prompt, so it never becomes `revised_prompt`.
"""

import re
from typing import Any, Literal

import httpx

from imagegate.core.errors import ConfigError, ContentRefused, InvalidRequest, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.adapter import (
    ConfiguredRelay,
    json_object,
    keyed_upstream,
    one_call_per_image,
    staged_from_base64,
)
from imagegate.relays.base import (
    Capabilities,
    ImageRequest,
    ProgressFn,
    RelayImage,
    RelayKind,
    SecretLookup,
    StageFn,
)
from imagegate.relays.config import HttpRelayConfig
from imagegate.relays.wire.body import ImageData, json_body
from imagegate.relays.wire.errors import clean_message

MAX_N = 4
"""Images per request, made one call each; every call is billed."""
INPUT_FORMATS = (ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.WEBP)
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

_REFUSALS = {
    "SAFETY": "its safety filters blocked the result",
    "IMAGE_SAFETY": "its safety filters blocked the image",
    "PROHIBITED_CONTENT": "the request asks for prohibited content",
    "IMAGE_PROHIBITED_CONTENT": "the image would show prohibited content",
    "BLOCKLIST": "the prompt contains blocked terms",
    "SPII": "the result would contain sensitive personal information",
    "RECITATION": "the result would reproduce existing (possibly copyrighted) material",
    "IMAGE_RECITATION": "the image would reproduce existing (possibly copyrighted) material",
}
_FAILURES = {
    "NO_IMAGE": "the model made no image; try describing the picture more concretely",
    "IMAGE_OTHER": "the model stopped before finishing the image",
    "MAX_TOKENS": "the answer reached the token limit before an image",
}
_BLOCKS = {
    "SAFETY": "its safety filters blocked the prompt",
    "IMAGE_SAFETY": "its safety filters blocked an input image",
    "PROHIBITED_CONTENT": "the prompt asks for prohibited content",
    "BLOCKLIST": "the prompt contains blocked terms",
}


class GeminiRelayConfig(HttpRelayConfig):
    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    model: str | None = "gemini-2.5-flash-image"
    image_size: Literal["1K", "2K", "4K"] | None = None


class GeminiRelay(ConfiguredRelay[GeminiRelayConfig]):
    kind = "gemini"

    def __init__(
        self,
        name: str,
        config: GeminiRelayConfig,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        model = (config.model or "").removeprefix("models/")
        if not _MODEL.fullmatch(model):
            raise ConfigError(
                f"relays.{name}.model: needs a Gemini model name like gemini-2.5-flash-image, "
                f"got {config.model!r}"
            )
        super().__init__(name, config, f"Google Gemini image generation ({model})")
        self.model = model
        self._path = f"models/{model}:generateContent"
        self.capabilities = Capabilities(
            output_formats=(ImageFormat.PNG,),
            max_n=MAX_N,
            min_side=256,
            max_side=4096,
            edit=True,
            max_inputs=3,
        )
        self.upstream = keyed_upstream(
            name, config, secrets, client, header="x-goog-api-key", prefix=""
        )

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": request.prompt}]
        for image in request.images:
            mime = image.format.mime_type
            data = ImageData(image.path, mime, data_url=False)
            parts.append({"inlineData": {"mimeType": mime, "data": data}})
        image_config = {"aspectRatio": request.size.aspect_ratio}
        if self._config.image_size:
            image_config["imageSize"] = self._config.image_size
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": image_config,
            },
        }

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        for image in request.images:
            if image.format not in INPUT_FORMATS:
                allowed = ", ".join(f.value for f in INPUT_FORMATS)
                raise InvalidRequest(
                    f"relay {self.name!r} takes {allowed} input images, not {image.format.value}"
                )
        body = json_body(self.request_body(request))

        async def one() -> RelayImage:
            answer = await self.upstream.request_json("POST", self._path, body, stage=stage)
            return await self._image(answer, request, stage)

        return await one_call_per_image(
            self.name, request.n, self.upstream.timeouts.total, progress, one
        )

    async def _image(self, answer: Any, request: ImageRequest, stage: StageFn) -> RelayImage:
        answer = json_object(answer)
        staged = await staged_from_base64(stage, self._find_image(answer), self.name)
        params: dict[str, Any] = {"aspect_ratio": request.size.aspect_ratio}
        if self._config.image_size:
            params["image_size"] = self._config.image_size
        if isinstance(answer.get("modelVersion"), str):
            params["model_version"] = answer["modelVersion"]
        usage = answer.get("usageMetadata")
        return RelayImage(staged, params=params, usage=usage if isinstance(usage, dict) else None)

    def _find_image(self, answer: dict[str, Any]) -> str:
        """The base64 of the answer's first final image, or the refusal or failure."""
        candidates = answer.get("candidates")
        candidate = json_object(
            candidates[0] if isinstance(candidates, list) and candidates else None
        )
        parts = json_object(candidate.get("content")).get("parts")
        texts: list[str] = []
        for part in map(json_object, parts if isinstance(parts, list) else []):
            if part.get("thought"):
                continue
            inline = part.get("inlineData") or part.get("inline_data")
            if isinstance(inline, dict):
                mime = str(inline.get("mimeType") or inline.get("mime_type") or "image/")
                data = inline.get("data")
                if mime.startswith("image/") and isinstance(data, str) and data:
                    return data
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        said = self._said(" ".join(texts) or candidate.get("finishMessage"))
        block = json_object(answer.get("promptFeedback")).get("blockReason")
        if block:
            reason = str(block)
            if reason in _BLOCKS:
                raise ContentRefused(f"relay {self.name!r} refused: {_BLOCKS[reason]}{said}")
            raise RelayError(f"relay {self.name!r} blocked the prompt ({reason}){said}")
        finish = str(candidate.get("finishReason") or "")
        if finish in _REFUSALS:
            raise ContentRefused(f"relay {self.name!r} refused: {_REFUSALS[finish]}{said}")
        if finish in _FAILURES:
            raise RelayError(f"relay {self.name!r} returned no image: {_FAILURES[finish]}{said}")
        why = f" (finish reason {finish})" if finish else ""
        raise RelayError(f"relay {self.name!r} returned no image{why}{said}")

    def _said(self, text: object) -> str:
        if not isinstance(text, str) or not text.strip():
            return ""
        return f"; the model said: {clean_message(text, self.upstream.secrets)}"


KIND = RelayKind(GeminiRelayConfig, GeminiRelay)
