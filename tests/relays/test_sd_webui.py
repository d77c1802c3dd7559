import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx
from PIL import Image

from imagegate.config import read_secret_env
from imagegate.core.errors import ConfigError, InvalidRequest, RelayError
from imagegate.core.images import ImageFormat
from imagegate.relays.base import ImageRequest, InputImage, Size
from imagegate.relays.sd_webui import (
    JobWatch,
    SDWebUIRelay,
    SDWebUIRelayConfig,
    describe_progress,
)
from imagegate.storage.files import FileBlobStore

BASE = "http://sd.test:7860"
TXT2IMG = f"{BASE}/sdapi/v1/txt2img"
IMG2IMG = f"{BASE}/sdapi/v1/img2img"
PROGRESS = f"{BASE}/sdapi/v1/progress"
IDLE = {"progress": 0, "eta_relative": 0, "state": {"job_count": 0}, "current_image": None}


def png(color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB", side: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (side, side), color).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def answer(images: list[bytes], seeds: list[int] | None = None, **info: Any) -> dict[str, Any]:
    """What the WebUI answers: bare base64 images and `info`, a JSON *string*."""
    seeds = seeds or [7 + i for i in range(len(images))]
    details = {
        "seed": seeds[0],
        "all_seeds": seeds,
        "steps": 30,
        "cfg_scale": 7.0,
        "sampler_name": "Euler a",
        "sd_model_name": "v1-5-pruned-emaonly",
    } | info
    return {"images": [b64(i) for i in images], "parameters": {}, "info": json.dumps(details)}


def request(prompt: str = "a red fox", n: int = 1, **fields: Any) -> ImageRequest:
    values: dict[str, Any] = {"size": Size(64, 64), "n": n, "output_format": ImageFormat.PNG}
    return ImageRequest(prompt, **(values | fields))


class Progress:
    def __init__(self) -> None:
        self.reports: list[tuple[float | None, str]] = []

    async def __call__(self, fraction: float | None, message: str) -> None:
        self.reports.append((fraction, message))

    def sampling(self) -> list[tuple[float | None, str]]:
        return [r for r in self.reports if r[1].startswith("sampling step")]


@pytest.fixture
def router() -> respx.MockRouter:
    router = respx.MockRouter(assert_all_called=False)
    router.get(PROGRESS, params={"skip_current_image": "true"}, name="progress").mock(
        return_value=httpx.Response(200, json=IDLE)
    )
    return router


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path, max_bytes=10**7)


MakeRelay = Callable[..., SDWebUIRelay]


@pytest.fixture
async def make(router: respx.MockRouter) -> AsyncIterator[MakeRelay]:
    made: list[SDWebUIRelay] = []

    def make(**overrides: Any) -> SDWebUIRelay:
        values: dict[str, Any] = {
            "kind": "sd-webui",
            "base_url": BASE,
            "progress_interval": 0.05,
            "max_retries": 2,
            "retry_budget_seconds": 2,
        }
        client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        relay = SDWebUIRelay(
            "sd", SDWebUIRelayConfig(**(values | overrides)), read_secret_env, client
        )
        made.append(relay)
        return relay

    yield make
    for relay in made:
        await relay.upstream.aclose()


def staged_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").iterdir())


async def test_txt2img_sends_exact_json_and_stages_decoded_images(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    image = png()
    route = router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=answer([image])))
    relay = make(sampler="DPM++ 2M", steps=20, cfg_scale=6.5)
    progress = Progress()

    images = await relay.generate(
        request(size=Size(512, 768), seed=1234, negative_prompt="blurry"), blobs.stage, progress
    )

    sent = route.calls.last.request
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content) == {
        "prompt": "a red fox",
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": 20,
        "cfg_scale": 6.5,
        "sampler_name": "DPM++ 2M",
        "width": 512,
        "height": 768,
        "batch_size": 1,
        "n_iter": 1,
        "save_images": False,
        "send_images": True,
    }
    [made] = images
    assert made.staged.path.read_bytes() == image
    assert made.staged.sha256 == hashlib.sha256(image).hexdigest()
    assert made.params == {"seed": 7, "steps": 30, "cfg_scale": 7.0, "sampler_name": "Euler a"}
    assert progress.reports[0] == (0.0, "sending to the SD backend")
    assert progress.reports[-1] == (1.0, "received 1 image(s) from the SD backend")


async def test_batch_of_two_without_seed_takes_seeds_from_info(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    reply = answer([red, blue], seeds=[41, 42])
    route = router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=reply))

    images = await make().generate(request(n=2), blobs.stage, Progress())

    sent = json.loads(route.calls.last.request.content)
    assert (sent["seed"], sent["batch_size"], sent["negative_prompt"]) == (-1, 2, "")
    assert "sampler_name" not in sent
    assert [i.staged.path.read_bytes() for i in images] == [red, blue]
    assert [i.params["seed"] for i in images] == [41, 42]


async def test_info_that_is_not_json_records_no_seed(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    reply = {"images": [b64(png())], "info": "not json"}
    router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=reply))
    [image] = await make().generate(request(), blobs.stage, Progress())
    assert image.params == {}


async def test_model_is_sent_as_override_settings_only_when_configured(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    route = router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=answer([png()])))

    await make().generate(request(), blobs.stage, Progress())
    assert "override_settings" not in json.loads(route.calls.last.request.content)

    await make(model="sdxl_base.safetensors").generate(request(), blobs.stage, Progress())
    sent = json.loads(route.calls.last.request.content)
    assert sent["override_settings"] == {"sd_model_checkpoint": "sdxl_base.safetensors"}


async def test_img2img_streams_init_image_and_mask_as_bare_base64(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    source, mask = tmp_path / "source.png", tmp_path / "mask.png"
    source.write_bytes(png((10, 120, 10), side=64))
    mask.write_bytes(png((0, 0, 0, 0), mode="RGBA", side=64))
    route = router.post(IMG2IMG).mock(return_value=httpx.Response(200, json=answer([png()])))
    edit = request(
        "make it snow",
        images=(InputImage(source, ImageFormat.PNG, 64, 64),),
        mask=InputImage(mask, ImageFormat.PNG, 64, 64),
    )

    [image] = await make(denoising_strength=0.6).generate(edit, blobs.stage, Progress())

    sent_request = route.calls.last.request
    assert int(sent_request.headers["content-length"]) == len(sent_request.content)
    sent = json.loads(sent_request.content)
    assert sent["init_images"] == [b64(source.read_bytes())]
    assert sent["mask"] == b64(mask.read_bytes())
    assert sent["inpainting_mask_invert"] == 1
    assert sent["denoising_strength"] == 0.6
    assert (sent["prompt"], sent["width"], sent["height"]) == ("make it snow", 64, 64)
    assert image.staged.sha256


async def test_img2img_without_mask_sends_no_mask_fields(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(png(side=64))
    route = router.post(IMG2IMG).mock(return_value=httpx.Response(200, json=answer([png()])))
    edit = request(images=(InputImage(source, ImageFormat.PNG, 64, 64),))

    await make().generate(edit, blobs.stage, Progress())

    sent = json.loads(route.calls.last.request.content)
    assert "mask" not in sent
    assert "inpainting_mask_invert" not in sent


async def test_basic_auth_header_sent_and_password_redacted_from_errors(
    router: respx.MockRouter,
    make: MakeRelay,
    blobs: FileBlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password = "hunter2-correct-horse"
    monkeypatch.setenv("SD_WEBUI_PASSWORD", password)
    token = b64(f"alice:{password}".encode())
    leak = {"error": {"message": f"login alice:{password} ({token}) refused for this job"}}
    replies = [httpx.Response(200, json=answer([png()])), httpx.Response(400, json=leak)]

    async def txt2img(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.12)  # long enough for a progress poll
        return replies.pop(0)

    route = router.post(TXT2IMG).mock(side_effect=txt2img)
    relay = make(basic_auth_user="alice", basic_auth_password_env="SD_WEBUI_PASSWORD")

    await relay.generate(request(), blobs.stage, Progress())
    assert route.calls.last.request.headers["authorization"] == f"Basic {token}"
    assert router["progress"].calls.last.request.headers["authorization"] == f"Basic {token}"

    with pytest.raises(RelayError) as failure:
        await relay.generate(request(), blobs.stage, Progress())
    assert password not in str(failure.value)
    assert token not in str(failure.value)
    assert "[redacted]" in str(failure.value)


async def test_bearer_key_when_api_key_env_is_set(
    router: respx.MockRouter,
    make: MakeRelay,
    blobs: FileBlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SD_WEBUI_KEY", "proxy-key-123")
    route = router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=answer([png()])))
    await make(api_key_env="SD_WEBUI_KEY").generate(request(), blobs.stage, Progress())
    assert route.calls.last.request.headers["authorization"] == "Bearer proxy-key-123"


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        (
            {"basic_auth_user": "alice", "basic_auth_password_env": "SD_UNSET_PASSWORD"},
            "SD_UNSET_PASSWORD is not set",
        ),
        ({"basic_auth_user": "alice"}, "must be set together"),
        ({"basic_auth_password_env": "SD_UNSET_PASSWORD"}, "must be set together"),
        ({"api_key_env": "SD_UNSET_KEY"}, "SD_UNSET_KEY is not set"),
        (
            {
                "basic_auth_user": "alice",
                "basic_auth_password_env": "SD_UNSET_PASSWORD",
                "api_key_env": "SD_UNSET_KEY",
            },
            "not both",
        ),
        ({"default_format": "webp"}, "default_format"),
        ({"default_size": "1000x1004"}, "default_size"),
    ],
)
def test_unusable_config_stops_construction(settings: dict[str, Any], complaint: str) -> None:
    config = SDWebUIRelayConfig(kind="sd-webui", base_url=BASE, **settings)
    with pytest.raises(ConfigError, match=complaint):
        SDWebUIRelay("sd", config, read_secret_env, httpx.AsyncClient())


def test_capabilities_png_only_and_seed_only_in_compat() -> None:
    compat = SDWebUIRelay("sd", SDWebUIRelayConfig(kind="sd-webui", base_url=BASE), read_secret_env)
    described = compat.capabilities.describe()
    assert described["output_formats"] == ["png"]
    assert (described["max_n"], described["min_side"], described["max_side"]) == (8, 64, 2048)
    assert described["seed"]
    assert described["negative_prompt"]
    assert described["edit"]
    assert described["mask"]
    assert described["max_inputs"] == 1
    # What the relay can't do is left out of the description.
    assert not {"qualities", "backgrounds", "partial_images", "compression"} & described.keys()
    assert not compat.paid
    # The POST's first byte is the finished job: no earlier give-up-and-re-POST.
    assert compat.upstream.timeouts.first_byte == compat.upstream.timeouts.total == 300

    strict = SDWebUIRelay(
        "sd",
        SDWebUIRelayConfig(kind="sd-webui", base_url=BASE, request_policy="openai"),
        read_secret_env,
    )
    assert not strict.capabilities.seed
    assert not strict.capabilities.negative_prompt


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (IDLE, (0.0, "queued on the SD backend")),
        (
            {
                "progress": 0.41,
                "eta_relative": 3.6,
                "state": {"job_count": 1, "sampling_step": 12, "sampling_steps": 30},
            },
            (0.41, "sampling step 12/30, eta 4s"),
        ),
        ({"progress": 0.5, "eta_relative": -1, "state": {"job_count": 1}}, (0.5, "generating")),
        ({"progress": "half"}, None),
        ({"progress": True}, None),
        ([], None),
    ],
)
def test_describe_progress(data: Any, expected: tuple[float, str] | None) -> None:
    assert describe_progress(data) == expected


async def test_progress_reports_the_backends_percentages(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    states = [(0.2, 6, 4.2), (0.5, 15, 2.1), (0.8, 24, 0.7)]
    polls = 0
    polled_enough = anyio.Event()

    def progress_endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        fraction, step, eta = states[min(polls, len(states) - 1)]
        polls += 1
        if polls >= len(states):
            polled_enough.set()
        state = {"job_count": 1, "sampling_step": step, "sampling_steps": 30}
        body = {"progress": fraction, "eta_relative": eta, "state": state, "current_image": None}
        return httpx.Response(200, json=body)

    async def txt2img(request: httpx.Request) -> httpx.Response:
        with anyio.fail_after(2):
            await polled_enough.wait()
        return httpx.Response(200, json=answer([png()]))

    router["progress"].side_effect = progress_endpoint
    router.post(TXT2IMG).mock(side_effect=txt2img)
    progress = Progress()

    await make().generate(request(), blobs.stage, progress)

    sampling = progress.sampling()
    assert sampling[:3] == [
        (0.2, "sampling step 6/30, eta 4s"),
        (0.5, "sampling step 15/30, eta 2s"),
        (0.8, "sampling step 24/30, eta 1s"),
    ]
    fractions = [fraction or 0.0 for fraction, _ in progress.reports]
    assert fractions == sorted(fractions)


async def test_failing_progress_endpoint_does_not_fail_the_job(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    bad_answers = [
        httpx.Response(500, json={"error": "RuntimeError"}, headers={"retry-after": "0"}),
        httpx.Response(200, text="<html>proxy error</html>"),
        httpx.Response(200, json={"progress": "soon"}),
    ]
    polls = 0

    def progress_endpoint(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        polls += 1
        return bad_answers[polls % len(bad_answers)]

    async def txt2img(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.3)
        return httpx.Response(200, json=answer([png()]))

    router["progress"].side_effect = progress_endpoint
    router.post(TXT2IMG).mock(side_effect=txt2img)
    progress = Progress()

    images = await make().generate(request(), blobs.stage, progress)

    assert len(images) == 1
    assert polls >= 3
    assert progress.sampling() == []


async def test_concurrent_calls_take_turns_on_the_backend(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    order: list[str] = []

    async def txt2img(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["prompt"]
        order.append(f"start {prompt}")
        await anyio.sleep(0.1)
        order.append(f"end {prompt}")
        return httpx.Response(200, json=answer([png()]))

    router.post(TXT2IMG).mock(side_effect=txt2img)
    relay = make()
    first, second = Progress(), Progress()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(relay.generate, request("one"), blobs.stage, first)
        tasks.start_soon(relay.generate, request("two"), blobs.stage, second)

    assert order == ["start one", "end one", "start two", "end two"]
    assert second.reports[0] == (None, "waiting for the SD backend (another job is running)")
    assert all("waiting" not in message for _, message in first.reports)


async def test_size_not_multiple_of_8_is_rejected_before_any_http(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    with pytest.raises(InvalidRequest, match="multiples of 8; got 1000x750, try 1000x752"):
        await make().generate(request(size=Size(1000, 750)), blobs.stage, Progress())
    assert router.calls.call_count == 0


async def test_server_error_is_retried_then_succeeds(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    route = router.post(TXT2IMG).mock(
        side_effect=[
            httpx.Response(500, json={"error": "OutOfMemoryError"}, headers={"retry-after": "0"}),
            httpx.Response(200, json=answer([png()])),
        ]
    )
    images = await make().generate(request(), blobs.stage, Progress())
    assert route.call_count == 2
    assert len(images) == 1


async def test_persistent_server_error_is_a_relay_error(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    failing = httpx.Response(500, json={"error": "OutOfMemoryError"}, headers={"retry-after": "0"})
    router.post(TXT2IMG).mock(return_value=failing)
    with pytest.raises(RelayError, match=r"HTTP 500.*OutOfMemoryError"):
        await make().generate(request(), blobs.stage, Progress())
    assert staged_files(tmp_path) == []


@pytest.mark.parametrize(
    "reply",
    [
        {"images": [], "info": "{}"},
        {"info": "{}"},
        {"images": None},
        ["not", "an", "object"],
    ],
)
async def test_answer_without_images_is_a_relay_error(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path, reply: Any
) -> None:
    router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=reply))
    with pytest.raises(RelayError, match="answered without images"):
        await make().generate(request(), blobs.stage, Progress())
    assert staged_files(tmp_path) == []


async def test_fewer_images_than_asked_is_a_relay_error(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=answer([png()])))
    with pytest.raises(RelayError, match="sent 1 of 2 images"):
        await make().generate(request(n=2), blobs.stage, Progress())
    assert staged_files(tmp_path) == []


async def test_garbage_base64_is_a_relay_error_and_nothing_stays_staged(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    reply = answer([png()])
    reply["images"].append("this is not base64!")
    router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=reply))
    with pytest.raises(RelayError, match="damaged base64"):
        await make().generate(request(n=2), blobs.stage, Progress())
    assert staged_files(tmp_path) == []


async def test_total_timeout_is_a_relay_error_and_frees_the_backend(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    posts = 0

    async def txt2img(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        if posts == 1:
            await anyio.sleep(5)
        return httpx.Response(200, json=answer([png()]))

    router.post(TXT2IMG).mock(side_effect=txt2img)
    relay = make(total_timeout=0.2)

    with pytest.raises(RelayError, match=r"did not finish within 0\.2 s"):
        await relay.generate(request(), blobs.stage, Progress())
    assert staged_files(tmp_path) == []

    second = Progress()
    assert len(await relay.generate(request(), blobs.stage, second)) == 1
    assert all("waiting" not in message for _, message in second.reports)


async def test_a_failing_progress_report_after_staging_leaves_nothing_staged(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    router.post(TXT2IMG).mock(return_value=httpx.Response(200, json=answer([png(), png()])))

    async def progress(fraction: float | None, message: str) -> None:
        if fraction == 1.0:
            raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        await make().generate(request(n=2), blobs.stage, progress)
    assert staged_files(tmp_path) == []


def running(fraction: float, step: int) -> dict[str, Any]:
    state = {"job_count": 1, "sampling_step": step, "sampling_steps": 30}
    return {"progress": fraction, "eta_relative": 3.0, "state": state, "current_image": None}


async def test_a_stalled_job_is_abandoned_and_not_sent_again(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore, tmp_path: Path
) -> None:
    """The backend's progress stops at 30 %: the job is given up after stall_seconds,
    not when the upstream finally errs (then retried) or the total timeout ends."""
    router["progress"].mock(return_value=httpx.Response(200, json=running(0.3, 9)))

    posts = 0

    async def hanging(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        posts += 1
        await anyio.sleep(30)
        return httpx.Response(500, json={"error": "stuck"})

    router.post(TXT2IMG).mock(side_effect=hanging)
    interrupt = router.post(f"{BASE}/sdapi/v1/interrupt").mock(return_value=httpx.Response(200))
    with anyio.fail_after(5), pytest.raises(RelayError, match=r"no progress for 0\.3 s"):
        await make(stall_seconds=0.3).generate(request(), blobs.stage, Progress())
    assert posts == 1
    assert interrupt.call_count == 1  # the backend is told to stop the job
    assert staged_files(tmp_path) == []


async def test_a_job_that_started_is_not_sent_again_after_a_failure(
    router: respx.MockRouter, make: MakeRelay, blobs: FileBlobStore
) -> None:
    polls = 0

    def moving(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        polls += 1
        return httpx.Response(200, json=running(min(polls / 10, 0.9), polls))

    async def fails_after_running(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.3)  # a few polls see the job run
        return httpx.Response(500, json={"error": "OutOfMemoryError"}, headers={"retry-after": "0"})

    router["progress"].side_effect = moving
    route = router.post(TXT2IMG).mock(side_effect=fails_after_running)
    with pytest.raises(RelayError, match="HTTP 500"):
        await make().generate(request(), blobs.stage, Progress())
    assert route.call_count == 1


def test_job_watch() -> None:
    now = [0.0]
    watch = JobWatch(10, clock=lambda: now[0])
    watch.saw(IDLE)  # queued, or another client's job: not ours yet
    now[0] = 100
    assert not watch.is_stalled()
    watch.saw(running(0.1, 3))
    now[0] = 105
    watch.saw(running(0.1, 3))  # the same numbers: no progress
    assert watch.started
    assert not watch.is_stalled()
    now[0] = 110.5
    assert watch.is_stalled()
    watch.saw(running(0.1, 4))  # a step moved
    assert not watch.is_stalled()
    watch.saw(IDLE)  # the job is done; the answer is still on its way
    now[0] = 200
    assert not watch.is_stalled()
