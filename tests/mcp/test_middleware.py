"""The one place where errors become MCP errors: what the caller and the log see."""

import logging

import pytest
from fastmcp.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from imagegate.core.errors import (
    ContentRefused,
    ImageRejected,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RelayError,
    from_record,
    recorded,
)
from imagegate.mcp.middleware import Failed, Forbidden, Refused, UpstreamFailed, domain_errors

SECRET_PROMPT = "the secret project codename"


@pytest.mark.parametrize(
    ("raised", "becomes", "message"),
    [
        (PermissionDenied("forbidden: needs scope admin"), Forbidden, "needs scope admin"),
        (InvalidRequest("size must look like 1024x1024"), Refused, "size must look"),
        (NotFound("image not found: img_x"), Refused, "image not found"),
        (QuotaExceeded("images_per_day", "1 of 1", 5), Refused, "quota exceeded"),
        (ImageRejected("not a PNG"), Refused, "not a PNG"),
        (ContentRefused("relay 'r' refused the prompt"), Refused, "refused the prompt"),
        (RelayError("relay 'r' failed (HTTP 500): boom"), UpstreamFailed, "HTTP 500"),
        (ValueError(f"invalid literal: {SECRET_PROMPT}"), Failed, "internal error"),
        (KeyError(SECRET_PROMPT), Failed, "internal error"),
    ],
)
async def test_errors_become_tool_errors(
    raised: Exception, becomes: type[ToolError], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def tool() -> None:
        raise raised

    with caplog.at_level(logging.DEBUG), pytest.raises(becomes) as error:
        await domain_errors(tool)()
    assert message in str(error.value)
    assert error.value.__cause__ is None  # the original never travels on
    if becomes is Failed:
        assert SECRET_PROMPT not in caplog.text
        assert SECRET_PROMPT not in str(error.value)
        (line,) = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert line.getMessage().startswith(f"tool tool failed: {type(raised).__name__} at ")
        assert "tests/mcp/test_middleware.py:" in line.getMessage()


@pytest.mark.parametrize(
    "raised",
    [ToolError("fastmcp's own"), MCPError(-32021, "needs a capability")],
)
async def test_fastmcp_errors_pass_through(raised: Exception) -> None:
    async def tool() -> None:
        raise raised

    with pytest.raises(type(raised)) as error:
        await domain_errors(tool)()
    assert error.value is raised


async def test_a_quota_refusal_names_its_limit_once() -> None:
    """A fresh refusal carries its limit (for metrics); a job's refusal raised again for
    each caller that reads it does not: the job runner counted it already."""

    async def refused_now() -> None:
        raise QuotaExceeded("images_per_day", "1 of 1", 5)

    async def refused_in_a_job() -> None:
        raise from_record(recorded(QuotaExceeded("max_stored_bytes", "full", None)))

    with pytest.raises(Refused) as now:
        await domain_errors(refused_now)()
    with pytest.raises(Refused, match="max_stored_bytes") as replayed:
        await domain_errors(refused_in_a_job)()
    assert (now.value.limit, replayed.value.limit) == ("images_per_day", None)
