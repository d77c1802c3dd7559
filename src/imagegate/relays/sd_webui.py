"""Stable Diffusion WebUI (A1111 / Forge) over its `/sdapi/v1` JSON API.

`POST /sdapi/v1/txt2img` or `/img2img` answers only when the whole job is done, with
`{images: [bare base64 PNG], info: "<JSON string>"}`; the seeds actually used come from
`info`. While the POST is in flight, `GET /sdapi/v1/progress` is polled for real
percentages. That endpoint is global to the backend and the backend runs one job at a
time, so each relay serialises its jobs: one generate() talks to the backend at once,
and the others wait (saying so) before they POST.

Input images and masks are only ever base64 this server produced, streamed from disk
(some setups make img2img fetch http URLs). imagegate masks mark the area to edit
with transparency; the WebUI reads an RGBA mask's alpha the other way round
(opaque = repaint), so the mask is sent with `inpainting_mask_invert`.
"""

import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeGuard

import anyio
import httpx
from pydantic import Field

from imagegate.core.errors import ConfigError, InvalidRequest, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.adapter import (
    ConfiguredRelay,
    optional_api_key,
    secret_from_env,
    staged_from_base64,
    upstream_for,
)
from imagegate.relays.base import (
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
from imagegate.relays.config import ENV_NAME, HttpRelayConfig
from imagegate.relays.wire.body import ImageData, JsonBody, json_body

log = logging.getLogger("imagegate.relays")

TXT2IMG = "sdapi/v1/txt2img"
IMG2IMG = "sdapi/v1/img2img"
PROGRESS = "sdapi/v1/progress"
INTERRUPT = "sdapi/v1/interrupt"
SIDE_STEP = 8
"""SD works in latents of 1/8 the pixel size: width and height must be multiples of 8."""
_RECORDED = ("steps", "cfg_scale", "sampler_name")
"""Settings from `info` recorded with each image besides its seed (never model paths)."""


class SDWebUIRelayConfig(HttpRelayConfig):
    kind: Literal["sd-webui"]
    paid: bool = False
    request_policy: Literal["openai", "compat"] = "compat"
    steps: int = Field(default=30, ge=1, le=150)
    sampler: str | None = None
    cfg_scale: float = Field(default=7.0, ge=1, le=30)
    denoising_strength: float = Field(default=0.75, ge=0, le=1)
    basic_auth_user: str | None = None
    basic_auth_password_env: str | None = Field(default=None, pattern=ENV_NAME)
    progress_interval: float = Field(default=1.0, ge=0.05, le=30)
    stall_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Abandon a job whose progress has not moved for this long."""


class SDWebUIRelay(ConfiguredRelay[SDWebUIRelayConfig]):
    kind = "sd-webui"

    def __init__(
        self,
        name: str,
        config: SDWebUIRelayConfig,
        secrets: SecretLookup,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(name, config, "Stable Diffusion WebUI (A1111 / Forge)")
        compat = config.request_policy == "compat"
        self.capabilities = Capabilities(
            output_formats=(ImageFormat.PNG,),
            max_n=8,
            min_side=64,
            max_side=2048,
            seed=compat,
            negative_prompt=compat,
            edit=True,
            max_inputs=1,
            mask=True,
        )
        self._check_defaults()
        headers, redacted = _auth(name, config, secrets)
        # The POST's first byte is the finished job: a first-byte timeout shorter than the
        # total would abandon (and re-POST) jobs the backend is still running.
        patient = config.model_copy(
            update={"first_byte_timeout": max(config.first_byte_timeout, config.total_timeout)}
        )
        self.upstream = upstream_for(name, patient, headers, redacted, client)
        self._backend = anyio.Lock()
        self._poll_timeout = max(5.0, 2 * config.progress_interval)

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        """The txt2img or img2img body; image files stand in as ImageData (streamed).

        `override_settings.sd_model_checkpoint` is sent only when the relay names a
        model. The WebUI switches its loaded checkpoint for the job: A1111 switches back
        afterwards (a reload per call), Forge keeps it, so it changes the model for
        every other user of that backend.
        """
        config = self._config
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or "",
            "seed": request.seed if request.seed is not None else -1,
            "steps": config.steps,
            "cfg_scale": config.cfg_scale,
            "width": request.size.width,
            "height": request.size.height,
            "batch_size": request.n,
            "n_iter": 1,
            "save_images": False,
            "send_images": True,
        }
        if config.sampler:
            body["sampler_name"] = config.sampler
        if config.model:
            body["override_settings"] = {"sd_model_checkpoint": config.model}
        if request.is_edit:
            image = request.images[0]
            body["init_images"] = [ImageData(image.path, image.format.mime_type, data_url=False)]
            body["denoising_strength"] = config.denoising_strength
            if request.mask is not None:
                mask = request.mask
                body["mask"] = ImageData(mask.path, mask.format.mime_type, data_url=False)
                body["inpainting_mask_invert"] = 1  # ours: transparent = edit; SD: opaque
        return body

    async def generate(
        self, request: ImageRequest, stage: StageFn, progress: ProgressFn
    ) -> list[RelayImage]:
        """Run one job on the backend and stage its images.

        The total timeout covers the backend job (POST and polling), not the wait for
        this relay's earlier jobs, each of which is bounded by the same timeout.
        """
        _check_size(request.size)
        body = json_body(self.request_body(request))
        path = IMG2IMG if request.is_edit else TXT2IMG
        async with self._turn(progress):
            await progress(0.0, "sending to the SD backend")
            try:
                with anyio.fail_after(self.upstream.timeouts.total):
                    answer = await self._post_while_polling(path, body, progress, stage)
            except TimeoutError:
                raise RelayError(
                    f"relay {self.name!r} did not finish within {self.upstream.timeouts.total:g} s"
                ) from None
        images = await self._stage_images(answer, request.n, stage)
        try:
            await progress(1.0, f"received {len(images)} image(s) from the SD backend")
        except BaseException:
            discard_all(images)
            raise
        return images

    @asynccontextmanager
    async def _turn(self, progress: ProgressFn) -> AsyncIterator[None]:
        """Hold the backend: progress is global there, and it runs one job at a time."""
        try:
            self._backend.acquire_nowait()
        except anyio.WouldBlock:
            await progress(None, "waiting for the SD backend (another job is running)")
            await self._backend.acquire()
        try:
            yield
        finally:
            self._backend.release()

    async def _post_while_polling(
        self, path: str, body: JsonBody, progress: ProgressFn, stage: StageFn
    ) -> Any:
        """POST the job and report progress while it runs. A job whose progress stops
        moving for `stall_seconds` is abandoned; a job that started is never POSTed
        again (a retry would run it again, on a backend that is struggling)."""
        job = JobWatch(self._config.stall_seconds)
        failure: Exception | None = None
        answer: Any = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._poll, progress, job, tasks.cancel_scope)
            try:
                answer = await self.upstream.request_json(
                    "POST", path, body, may_retry=lambda: not job.started, stage=stage
                )
            except Exception as err:  # re-raised below, not wrapped in an ExceptionGroup
                failure = err
            tasks.cancel_scope.cancel()
        if job.stalled:
            await self._interrupt()
            raise RelayError(
                f"relay {self.name!r}: the SD backend's job made no progress for "
                f"{job.stall_seconds:g} s; it was abandoned, not sent again"
            )
        if failure is not None:
            raise failure
        return answer

    async def _interrupt(self) -> None:
        """Ask the backend to stop the abandoned job, so that the next one can run."""
        try:
            with anyio.move_on_after(self._poll_timeout):
                await self.upstream.request_json("POST", INTERRUPT)
        except Exception as err:  # best effort: the backend may be hung for good
            log.warning("relay %s: could not interrupt the stalled job (%s)", self.name, err)

    async def _poll(self, progress: ProgressFn, job: "JobWatch", scope: anyio.CancelScope) -> None:
        """Report the backend's progress until cancelled; a failed poll never fails the
        job. A stalled job cancels `scope`, the POST's."""
        reported = 0.0
        failures = 0
        while True:
            await anyio.sleep(self._config.progress_interval)
            try:
                reported = await self._poll_once(progress, reported, job)
            except Exception as err:  # best effort: the job goes on without progress
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "relay %s: progress poll failed (%s); job continues", self.name, err)
            if job.is_stalled():
                job.stalled = True
                log.warning("relay %s: job stalled; abandoning it", self.name)
                scope.cancel()
                return

    async def _poll_once(self, progress: ProgressFn, reported: float, job: "JobWatch") -> float:
        data: Any = None
        with anyio.move_on_after(self._poll_timeout):
            data = await self.upstream.request_json(
                "GET", PROGRESS, params={"skip_current_image": "true"}
            )
        step = describe_progress(data)
        if step is None:
            raise RelayError(f"relay {self.name!r} sent a progress answer it can't read")
        job.saw(data)
        fraction, message = step
        if fraction < reported or (fraction == 0 and reported > 0):
            return reported  # another job's numbers or the backend resetting: never go back
        await progress(fraction, message)
        return fraction

    async def _stage_images(self, answer: Any, n: int, stage: StageFn) -> list[RelayImage]:
        encoded = answer.get("images") if isinstance(answer, dict) else None
        if not isinstance(encoded, list) or not encoded:
            raise RelayError(f"relay {self.name!r} answered without images")
        if len(encoded) < n:
            raise RelayError(f"relay {self.name!r} sent {len(encoded)} of {n} images")
        params = _params_from_info(answer.get("info"), n)
        images: list[RelayImage] = []
        try:
            # Extensions may append images (e.g. ControlNet maps): the first n are ours.
            for value, used in zip(encoded[:n], params, strict=True):
                if not isinstance(value, str):
                    raise RelayError(f"relay {self.name!r} sent an image that is not base64")
                staged = await staged_from_base64(stage, value, self.name)
                images.append(RelayImage(staged, params=used))
        except BaseException:
            discard_all(images)
            raise
        return images

    def _check_defaults(self) -> None:
        """Defaults this relay can't honour would fail every call: stop at start-up."""
        defaults, prefix = self.defaults, f"relays.{self.name}"
        if defaults.output_format is not ImageFormat.PNG:
            raise ConfigError(f"{prefix}.default_format: sd-webui produces png only")
        for key, value in (
            ("default_quality", defaults.quality),
            ("default_background", defaults.background),
            ("default_compression", defaults.compression),
        ):
            if value is not None:
                raise ConfigError(f"{prefix}.{key}: sd-webui does not support it")
        size = defaults.size
        caps = self.capabilities
        if (
            size.width % SIDE_STEP
            or size.height % SIDE_STEP
            or min(size.width, size.height) < caps.min_side
            or max(size.width, size.height) > caps.max_side
        ):
            raise ConfigError(
                f"{prefix}.default_size: needs sides that are multiples of {SIDE_STEP} "
                f"between {caps.min_side} and {caps.max_side}; got {size}"
            )


class JobWatch:
    """Whether the backend's job has started, and whether its progress has stopped
    moving (the same fraction and sampling step) for `stall_seconds`."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.started = False
        self.finished = False
        self.stalled = False
        self._clock = clock
        self._seen: tuple[object, ...] | None = None
        self._moved_at = clock()

    def saw(self, data: dict[str, Any]) -> None:
        """Take one (readable) progress answer."""
        state = data.get("state")
        state = state if isinstance(state, dict) else {}
        running = bool(state.get("job_count") or data.get("progress"))
        if running:
            self.started = True
        elif self.started:
            self.finished = True  # the backend is idle again: the answer is on its way
        seen = (data.get("progress"), state.get("sampling_step"), state.get("job_no"))
        if seen != self._seen:
            self._seen = seen
            self._moved_at = self._clock()

    def is_stalled(self) -> bool:
        moving_for = self._clock() - self._moved_at
        return self.started and not self.finished and moving_for > self.stall_seconds


def describe_progress(data: Any) -> tuple[float, str] | None:
    """(fraction, message) from a `/sdapi/v1/progress` answer; None if it makes no sense."""
    if not isinstance(data, dict):
        return None
    fraction = data.get("progress")
    if not _is_number(fraction):
        return None
    state = data.get("state")
    state = state if isinstance(state, dict) else {}
    if state.get("job_count") == 0:
        return 0.0, "queued on the SD backend"
    parts: list[str] = []
    step, steps = state.get("sampling_step"), state.get("sampling_steps")
    if _is_number(step) and _is_number(steps) and steps > 0:
        parts.append(f"sampling step {int(step)}/{int(steps)}")
    eta = data.get("eta_relative")
    if _is_number(eta) and eta >= 0:
        parts.append(f"eta {round(eta)}s")
    return min(max(float(fraction), 0.0), 1.0), ", ".join(parts) or "generating"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _params_from_info(info: Any, n: int) -> list[dict[str, Any]]:
    """Per image: the seed the backend used and its sampling settings, from `info`."""
    try:
        parsed = json.loads(info) if isinstance(info, str) else info
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return [{} for _ in range(n)]
    shared = {
        key: parsed[key] for key in _RECORDED if isinstance(parsed.get(key), str | int | float)
    }
    seeds = parsed.get("all_seeds")
    if not (isinstance(seeds, list) and len(seeds) >= n and all(_is_int(s) for s in seeds[:n])):
        seed = parsed.get("seed")
        seeds = [seed] if n == 1 and _is_int(seed) else [None] * n
    return [shared | ({"seed": seed} if seed is not None else {}) for seed in seeds[:n]]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(size: Size) -> None:
    if size.width % SIDE_STEP or size.height % SIDE_STEP:
        nearest = Size(_round_side(size.width), _round_side(size.height))
        raise InvalidRequest(
            f"sd-webui needs width and height that are multiples of {SIDE_STEP}; "
            f"got {size}, try {nearest}"
        )


def _round_side(side: int) -> int:
    return max(SIDE_STEP, round(side / SIDE_STEP) * SIDE_STEP)


def _auth(
    name: str, config: SDWebUIRelayConfig, secrets: SecretLookup
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The Authorization header (HTTP Basic or Bearer, or none) and the secrets to redact.

    Each is optional, but once configured it must be complete: a named variable that is
    unset stops start-up rather than sending unauthenticated requests.
    """
    prefix = f"relays.{name}"
    user, password_env = config.basic_auth_user, config.basic_auth_password_env
    if (user is None) != (password_env is None):
        raise ConfigError(
            f"{prefix}: basic_auth_user and basic_auth_password_env must be set together"
        )
    if user is not None and config.api_key_env is not None:
        raise ConfigError(f"{prefix}: use HTTP Basic auth or api_key_env, not both")
    if user is None or password_env is None:
        key = optional_api_key(name, config, secrets)
        return ({"authorization": f"Bearer {key}"}, (key,)) if key else ({}, ())
    if ":" in user:
        raise ConfigError(f"{prefix}.basic_auth_user: must not contain ':'")
    password = secret_from_env(f"{prefix}.basic_auth_password_env", password_env, secrets)
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"authorization": f"Basic {token}"}, (password, token)


KIND = RelayKind(SDWebUIRelayConfig, SDWebUIRelay)
