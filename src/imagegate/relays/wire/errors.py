"""Upstream errors made safe and classified, whatever the upstream's dialect.

Upstream text reaches a caller only through `clean_message`, which removes the relay's
own secrets and anything shaped like a key or token. A moderation refusal becomes
ContentRefused (retrying won't help), anything else RelayError.
"""

import json
import re
from collections.abc import Collection
from typing import Any

from imagegate.core.errors import ContentRefused, RelayError

MAX_MESSAGE_CHARS = 300
MODERATION_CODES = frozenset(
    {"moderation_blocked", "content_policy_violation", "content_filter", "safety"}
)
_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+"),
    re.compile(r"(?i)(api[_-]?key|key|token)=([^&\s\"']+)"),
]


def clean_message(text: str, secrets: Collection[str]) -> str:
    """Upstream text made safe to show: secrets removed, one line, bounded length."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(_redact, text)
    text = " ".join(text.split())
    return text[:MAX_MESSAGE_CHARS] + ("…" if len(text) > MAX_MESSAGE_CHARS else "")


def _redact(match: re.Match[str]) -> str:
    name, separator, _ = match.group(0).partition("=")
    return f"{name}=[redacted]" if separator else "[redacted]"


def is_moderation(code: str | None) -> bool:
    """Does an upstream error code (OpenAI, Azure, OpenRouter dialects) mean its safety
    system refused?"""
    return bool(code) and (code in MODERATION_CODES or "moderation" in str(code))


def flagged(error: object) -> bool:
    """OpenRouter reports moderation as an error whose metadata names the reasons."""
    meta = error.get("metadata") if isinstance(error, dict) else None
    return isinstance(meta, dict) and ("reasons" in meta or "flagged_input" in meta)


def reported_failure(
    relay: str,
    error: object,
    secrets: Collection[str],
    refused_codes: Collection[str] = (),
) -> RelayError:
    """The error an upstream reported inside a 2xx answer or a stream event. Codes in
    `refused_codes` also mean a refusal, for dialects that use their own."""
    fields = error if isinstance(error, dict) else {"message": str(error)}
    code = str(fields.get("code") or fields.get("type") or "")
    message = clean_message(str(fields.get("message") or code or "unknown error"), secrets)
    if is_moderation(code) or code in refused_codes or flagged(fields):
        return ContentRefused(f"relay {relay!r} refused the prompt or image: {message}")
    return RelayError(f"relay {relay!r} failed: {message}")


def error_from_response(
    relay: str, status: int, body: bytes, secrets: Collection[str]
) -> RelayError:
    """One clean RelayError for an upstream error response, whatever its dialect."""
    code, message = error_fields(body)
    text = clean_message(message or body.decode("utf-8", errors="replace"), secrets)
    if not text or text.lstrip().startswith("<"):
        text = f"HTTP {status}"  # an HTML error page says nothing useful
    data = parse_json(body)
    if is_moderation(code) or flagged(data.get("error") if isinstance(data, dict) else None):
        return ContentRefused(f"relay {relay!r} refused the prompt or image: {text}")
    if status in (401, 403):
        return RelayError(
            f"relay {relay!r} rejected its credentials (HTTP {status}); "
            "the operator should check the relay's API key"
        )
    if status == 429:
        if code == "insufficient_quota":
            return RelayError(f"relay {relay!r} has no quota left: {text}")
        return RelayError(f"relay {relay!r} is rate limited; try again later: {text}")
    if status >= 500:
        return RelayError(f"relay {relay!r} failed (HTTP {status}): {text}")
    return RelayError(f"relay {relay!r} rejected the request (HTTP {status}): {text}")


def parse_json(body: bytes) -> Any:
    """The JSON of an error body, or None when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def error_fields(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) from the error dialects we meet: OpenAI, Gemini, A1111/FastAPI."""
    data = parse_json(body)
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    detail = data.get("detail")
    if isinstance(error, dict):
        code = error.get("code")
        if isinstance(code, int) or code is None:  # Gemini: numeric code, word in status
            code = error.get("status") or error.get("type") or code
        message = error.get("message")
        return (str(code) if code is not None else None), (str(message) if message else None)
    if isinstance(error, str):
        return None, f"{error}: {detail}" if isinstance(detail, str) and detail else error
    if isinstance(detail, str):
        return None, detail
    return None, None
