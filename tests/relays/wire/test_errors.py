import pytest

from imagegate.core.errors import ContentRefused, RelayError
from imagegate.relays.wire.errors import (
    clean_message,
    error_from_response,
    is_moderation,
    reported_failure,
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


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("moderation_blocked", True),
        ("content_policy_violation", True),
        ("content_filter", True),
        ("safety", True),
        ("image_moderation_rejected", True),
        ("rate_limit_exceeded", False),
        ("server_error", False),
        ("", False),
        (None, False),
    ],
)
def test_is_moderation(code: str | None, refused: bool) -> None:
    assert is_moderation(code) is refused


@pytest.mark.parametrize(
    ("error", "refused_codes", "kind", "text"),
    [
        # OpenAI Images / Responses: a failed event or a 200 answer's error object
        ({"code": "moderation_blocked", "message": "no"}, (), ContentRefused, "refused"),
        ({"type": "content_filter", "message": "no"}, (), ContentRefused, "refused"),
        ({"code": "server_error", "message": "boom"}, (), RelayError, "failed: boom"),
        ({"code": "server_error"}, (), RelayError, "failed: server_error"),
        ({}, (), RelayError, "failed: unknown error"),
        ("plain text", (), RelayError, "failed: plain text"),
        # OpenRouter: a provider's block as code 403, or flagged metadata
        ({"code": 403, "message": "blocked"}, ("403",), ContentRefused, "blocked"),
        ({"code": 403, "message": "forbidden"}, (), RelayError, "forbidden"),
        ({"message": "f", "metadata": {"flagged_input": "x"}}, (), ContentRefused, "refused"),
        ({"message": f"leaked {SECRET}"}, (), RelayError, "[redacted]"),
    ],
)
def test_reported_failure(
    error: object, refused_codes: tuple[str, ...], kind: type[RelayError], text: str
) -> None:
    failure = reported_failure("r", error, [SECRET], refused_codes)
    assert type(failure) is kind
    assert text in str(failure)
    assert SECRET not in str(failure)
