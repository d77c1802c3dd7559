import httpx
import pytest
import respx

from imagegate.errors import ContentRefused, RelayError
from imagegate.relays.http import (
    RetryPolicy,
    Timeouts,
    Upstream,
    clean_message,
    error_from_response,
    retry_delay,
)

SECRET = "sk-live-abcdefghijklmnop"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"Incorrect API key provided: {SECRET}", SECRET),
        ("GET https://x/y?key=AIzaSyA12345678901234567890123&z=1", "AIzaSyA1234567"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("token=hunter2hunter2 in the query", "hunter2hunter2"),
        ("configured secret s3cr3t-value leaked", "s3cr3t-value"),
    ],
)
def test_clean_message_removes_secrets(text: str, leak: str) -> None:
    assert leak not in clean_message(text, ["s3cr3t-value"])


def test_clean_message_is_one_bounded_line() -> None:
    cleaned = clean_message("a\nb\n" + "x" * 1000, [])
    assert "\n" not in cleaned
    assert len(cleaned) <= 301


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


@pytest.mark.parametrize(
    ("status", "body", "kind", "fragment"),
    [
        (400, b'{"error":{"code":"moderation_blocked","message":"no"}}', ContentRefused, "refused"),
        (
            403,
            b'{"error":{"message":"flagged","metadata":{"reasons":["x"]}}}',
            ContentRefused,
            "refused",
        ),
        (
            401,
            b'{"error":{"message":"bad key sk-live-abcdefghijklmnop"}}',
            RelayError,
            "credentials",
        ),
        (429, b'{"error":{"code":"insufficient_quota","message":"pay"}}', RelayError, "no quota"),
        (502, b"<html>Bad Gateway</html>", RelayError, "failed (HTTP 502): HTTP 502"),
        (
            422,
            b'{"error":"HTTPException","detail":"Model not found"}',
            RelayError,
            "HTTPException: Model not found",
        ),
    ],
)
def test_error_from_response(
    status: int, body: bytes, kind: type[RelayError], fragment: str
) -> None:
    error = error_from_response("r", status, body, [SECRET])
    assert type(error) is kind
    assert fragment in str(error)
    assert SECRET not in str(error)


def upstream(client: httpx.AsyncClient, attempts: int = 3) -> Upstream:
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
        max_response_bytes=1000,
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
