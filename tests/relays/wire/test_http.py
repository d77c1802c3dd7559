import base64
import importlib.abc
import importlib.machinery
import inspect
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpcore
import httpx
import pytest
import respx

from imagegate.core.errors import RelayError
from imagegate.core.staging import StagedBlob
from imagegate.relays.adapter import http_client
from imagegate.relays.config import HttpRelayConfig
from imagegate.relays.wire.http import RetryPolicy, Timeouts, Upstream, retry_delay
from imagegate.relays.wire.spool import Spooled

SECRET = "sk-live-abcdefghijklmnop"


def test_retry_delay_prefers_the_upstream_hint() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8)
    request = httpx.Request("GET", "https://x")
    ms = httpx.Response(429, headers={"retry-after-ms": "250"}, request=request)
    seconds = httpx.Response(429, headers={"retry-after": "3"}, request=request)
    assert retry_delay(ms, 0, policy) == 0.25
    assert retry_delay(seconds, 0, policy) == 3
    gemini = b'{"error": {"details": [{"retryDelay": "36s"}]}}'
    assert retry_delay(None, 0, policy, gemini) == 36
    for attempt in range(6):
        assert 0 < retry_delay(None, attempt, policy) <= 8


def upstream(client: httpx.AsyncClient, attempts: int = 3, max_bytes: int = 1000) -> Upstream:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    return Upstream(
        "r",
        client,
        "https://up.test/v1",
        headers={"authorization": f"Bearer {SECRET}"},
        timeouts=Timeouts(first_byte=5),
        retry=RetryPolicy(attempts=attempts, budget_seconds=100),
        max_response_bytes=max_bytes,
        secrets=[SECRET],
        sleep=no_sleep,
    )


async def test_retries_then_succeeds() -> None:
    async with respx.mock(base_url="https://up.test/v1") as mock:
        route = mock.post("/x").mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.Response(503, json={"error": {"message": "busy"}}),
                httpx.Response(200, json={"ok": True}),
            ]
        )
        async with httpx.AsyncClient() as client:
            assert await upstream(client).request_json("POST", "x", {"a": 1}) == {"ok": True}
        assert route.call_count == 3


async def test_gives_up_after_the_attempts() -> None:
    async with respx.mock(base_url="https://up.test/v1") as mock:
        route = mock.post("/x").mock(return_value=httpx.Response(500, text="boom"))
        async with httpx.AsyncClient() as client:
            with pytest.raises(RelayError, match=r"failed \(HTTP 500\): boom"):
                await upstream(client, attempts=2).request_json("POST", "x")
        assert route.call_count == 2


async def test_response_cap() -> None:
    async with respx.mock(base_url="https://up.test/v1") as mock:
        mock.post("/x").mock(return_value=httpx.Response(200, content=b"x" * 2000))
        async with httpx.AsyncClient() as client:
            with pytest.raises(RelayError, match="exceeds 1000 bytes"):
                await upstream(client).request_json("POST", "x")


def test_upstream_answers_are_read_up_to_a_mebibyte_at_a_time() -> None:
    """A relay's client sets httpcore's read size; httpcore must still use it."""
    http_client(HttpRelayConfig(kind="test", base_url="https://api.test/v1"))
    assert "self.READ_NUM_BYTES" in inspect.getsource(httpcore.AsyncHTTP11Connection._receive_event)
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == 1 << 20


class _ImportRecorder(importlib.abc.MetaPathFinder):
    """Records each module import looks for (none is found here)."""

    def __init__(self) -> None:
        self.sought: list[str] = []

    def find_spec(
        self, fullname: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        self.sought.append(fullname)
        return None


async def test_httpcore_finds_sniffio_without_a_search() -> None:
    """httpcore imports sniffio for each lock it sets up (several per upstream call).
    Without sniffio installed, each of those imports fails after a search of sys.path
    on the event loop; with it, the import is a lookup in sys.modules."""
    async with httpcore.AsyncConnectionPool() as pool:
        await pool.aclose()  # sets up the pool's lock: sniffio is imported now, if ever
        recorder = _ImportRecorder()
        sys.meta_path.insert(0, recorder)
        try:
            async with httpcore.AsyncConnectionPool() as other:
                await other.aclose()
        finally:
            sys.meta_path.remove(recorder)
    assert "sniffio" not in recorder.sought


@pytest.mark.parametrize("stage_given", [True, False])
async def test_with_a_stage_an_answers_image_is_decoded_on_the_way(
    tmp_path: Path, stage_given: bool
) -> None:
    """read_json(stage=...) spools a large image (a Spooled str, its blob already
    written); without a stage the answer is parsed whole as before."""
    image = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200_000)
    answer = {"data": [{"b64_json": base64.b64encode(image).decode()}]}
    async with respx.mock(base_url="https://up.test/v1") as mock:
        mock.post("/x").mock(return_value=httpx.Response(200, json=answer))
        async with httpx.AsyncClient() as client:
            relay = upstream(client, max_bytes=1 << 20)
            stage = (lambda: StagedBlob(tmp_path, 1 << 20)) if stage_given else None
            value = await relay.request_json("POST", "x", stage=stage)
    encoded = value["data"][0]["b64_json"]
    assert isinstance(encoded, Spooled) == stage_given
    if stage_given:
        staged = encoded.claim()
        staged.finish()
        assert staged.path.read_bytes() == image


def streamed(body: bytes, piece: int = 64 * 1024) -> httpx.AsyncClient:
    """A client whose every answer is `body`, arriving in pieces (as from a socket)."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), piece):
            yield body[start : start + piece]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=pieces())

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


IMAGE = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(3_000_000)
ANSWER = json.dumps({"data": [{"b64_json": base64.b64encode(IMAGE).decode()}]}).encode()


def full_disk() -> StagedBlob:
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("cap", "full", "refusal"),
    [
        (8 << 20, False, None),
        (8 << 20, True, "No space left on device"),
        (2 << 20, False, "exceeds 2097152 bytes"),
    ],
    ids=["whole", "staging fails in the thread", "the answer over its cap"],
)
async def test_a_long_answer_is_decoded_while_it_arrives(
    tmp_path: Path, cap: int, full: bool, refusal: str | None
) -> None:
    """Batches go to a thread while the next ones arrive; a failure on either side (the
    decoding thread, the reading) is its own plain error, not a task group's, and
    leaves no staging file."""
    async with streamed(b" " * (2 << 20) + ANSWER) as client:  # the image after 2 batches
        relay = upstream(client, max_bytes=cap)
        stage = full_disk if full else (lambda: StagedBlob(tmp_path, 8 << 20))
        request = relay.request_json("POST", "x", stage=stage)
        if refusal is not None:
            with pytest.raises((RelayError, OSError), match=refusal):
                await request
            assert list(tmp_path.iterdir()) == []
            return
        value = await request
    staged = value["data"][0]["b64_json"].claim()
    staged.finish()
    assert staged.path.read_bytes() == IMAGE
