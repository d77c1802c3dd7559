"""OpenRouter image models through chat completions: `POST {base}/chat/completions`.

The request asks for `modalities: ["image", "text"]` and maps the requested size to the
nearest aspect ratio (`image_config.aspect_ratio`); the image comes back at the model's
own resolution for it, in the model's own format (PNG for the Gemini models; the
asset's real format is read from its bytes when it is stored). Non-streaming.

One call makes one image, so `n` images are `n` sequential calls, each with its own
progress report, timeout (`total_timeout`) and usage (`usage.cost` is the real spend);
if any call fails, every image already made is discarded.

Images arrive in `choices[0].message.images[].image_url.url`, usually as data: URLs,
decoded into the staged blob in slices. An https URL is fetched with this relay's
client, without its key, without redirects, capped at `max_response_bytes`; any other
scheme, and hosts that are loopback, private or link-local addresses, are refused.

Errors can arrive with HTTP 200 once the model has started: a top-level `error`, or a
choice with `finish_reason: "error"`; both are RelayErrors, or ContentRefused when they
carry moderation details. `finish_reason: "content_filter"` is ContentRefused.
"""

from typing import Any, Literal

import httpx

from imagegate.core.errors import ConfigError, ContentRefused, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.adapter import (
    ConfiguredRelay,
    data_url,
    http_client,
    json_object,
    keyed_upstream,
    one_call_per_image,
    staged_from_base64,
    staged_from_url,
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
from imagegate.relays.wire.body import json_body
from imagegate.relays.wire.errors import clean_message, reported_failure
from imagegate.relays.wire.fetch import ImageFetcher

MAX_N = 4
"""Images per request, made one call each; every call is billed."""
_REFUSED_NATIVE = frozenset(
    {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST"}
)


class OpenRouterRelayConfig(HttpRelayConfig):
    kind: Literal["openrouter"]
    base_url: str = "https://openrouter.ai/api/v1"
    model: str | None = "google/gemini-2.5-flash-image"


class OpenRouterRelay(ConfiguredRelay[OpenRouterRelayConfig]):
    kind = "openrouter"

    def __init__(
        self,
        name: str,
        config: OpenRouterRelayConfig,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not config.model:
            raise ConfigError(
                f"relays.{name}.model: needs an OpenRouter model id like "
                "google/gemini-2.5-flash-image"
            )
        super().__init__(name, config, f"OpenRouter image generation ({config.model})")
        self.capabilities = Capabilities(
            output_formats=(ImageFormat.PNG,),
            max_n=MAX_N,
            min_side=256,
            max_side=4096,
            edit=True,
            max_inputs=3,
        )
        client = client or http_client(config)
        self.upstream = keyed_upstream(name, config, secrets, client)
        # Image links are fetched with the same pool but never with the key.
        self._fetcher = ImageFetcher(name, client, self.upstream, config.base_url)

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        content += [
            {"type": "image_url", "image_url": {"url": data_url(i)}} for i in request.images
        ]
        body: dict[str, Any] = {
            "model": self.model,
            "modalities": ["image", "text"],
            "messages": [{"role": "user", "content": content}],
            "image_config": {"aspect_ratio": request.size.aspect_ratio},
            "stream": False,
        }
        if request.user:
            body["user"] = request.user
        return body

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        body = json_body(self.request_body(request))

        async def one() -> RelayImage:
            answer = await self.upstream.request_json("POST", "chat/completions", body, stage=stage)
            return await self._image(json_object(answer), request, stage)

        return await one_call_per_image(
            self.name, request.n, self.upstream.timeouts.total, progress, one
        )

    async def _image(
        self, answer: dict[str, Any], request: ImageRequest, stage: StageFn
    ) -> RelayImage:
        url = self._find_image(answer)
        if url.startswith("data:"):
            staged = await staged_from_base64(stage, url, self.name)
        else:
            staged = await staged_from_url(stage, url, self._fetcher)
        params: dict[str, Any] = {"aspect_ratio": request.size.aspect_ratio}
        if isinstance(answer.get("provider"), str):
            params["provider"] = answer["provider"]
        usage = answer.get("usage")
        return RelayImage(staged, params=params, usage=usage if isinstance(usage, dict) else None)

    def _find_image(self, answer: dict[str, Any]) -> str:
        """The first image URL of the answer, or the error, refusal or failure it reports."""
        if answer.get("error"):
            raise self._error(answer["error"])
        choices = answer.get("choices")
        choice = json_object(choices[0] if isinstance(choices, list) and choices else None)
        if not choice:
            raise RelayError(f"relay {self.name!r} answered without a result")
        finish = str(choice.get("finish_reason") or "")
        if finish == "error" or choice.get("error"):
            raise self._error(choice.get("error") or "the model failed while generating")
        message = json_object(choice.get("message"))
        said = self._said(message.get("content") or message.get("refusal"))
        native = str(choice.get("native_finish_reason") or "")
        if finish == "content_filter" or native in _REFUSED_NATIVE:
            raise ContentRefused(f"relay {self.name!r} refused the prompt or image{said}")
        images = message.get("images")
        for image in map(json_object, images if isinstance(images, list) else []):
            url = json_object(image.get("image_url")).get("url")
            if isinstance(url, str) and url:
                return url
        why = f" (finish reason {native or finish})" if native or finish else ""
        raise RelayError(f"relay {self.name!r} returned no image{why}{said}")

    def _error(self, value: object) -> RelayError:
        # OpenRouter passes on a provider's moderation block as code 403.
        error = json_object(value) or {"message": str(value)}
        return reported_failure(self.name, error, self.upstream.secrets, refused_codes=("403",))

    def _said(self, text: object) -> str:
        if isinstance(text, list):
            text = " ".join(str(json_object(part).get("text") or "") for part in text)
        if not isinstance(text, str) or not text.strip():
            return ""
        return f"; the model said: {clean_message(text, self.upstream.secrets)}"


KIND = RelayKind(OpenRouterRelayConfig, OpenRouterRelay)
