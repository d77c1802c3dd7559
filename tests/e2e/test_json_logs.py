"""`imagegate serve` with log_format = "json" and traces on, as a real process: every
line of its stderr is a JSON record, those written during a call carry its trace id,
and the spans reach an OTLP/HTTP collector (a fake one) with the configured headers
and without the prompt."""

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.exceptions import ToolError

from tests.e2e.processes import serving
from tests.fakes.upstream import json_reply, running_upstream

PROMPT = "a prompt that must stay out of the collector"


async def test_json_lines_with_the_trace_id_and_spans_to_the_collector(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_upstream() as collector:
        collector.defaults["/v1/traces"] = json_reply({})
        with serving(
            state,
            IMAGEGATE_LOG_FORMAT="json",
            IMAGEGATE_AUDIT_LOG="off",
            IMAGEGATE_OTLP_ENDPOINT=collector.base_url,
            IMAGEGATE_OTLP_HEADERS_ENV="COLLECTOR_HEADERS",
            COLLECTOR_HEADERS="x-api-key=collector-secret",
        ) as (base_url, process):
            token = (state / "bearer-token").read_text().strip()
            async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
                await client.call_tool("generate_image", {"prompt": PROMPT, "size": "64x64"})
                with contextlib.suppress(ToolError):  # logged as a refusal
                    await client.call_tool("get_image", {"asset_id": "img_" + "0" * 24})
            # Not process.wait(): the exporter sends its last spans while stopping, to
            # the collector that this event loop serves.
            process.send_signal(signal.SIGTERM)
            for _ in range(300):
                if process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            stderr = process.stderr.read() if process.stderr else ""

    records: list[dict[str, Any]] = [json.loads(line) for line in stderr.splitlines()]
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    messages = [record["message"] for record in records]
    assert any(message.startswith("imagegate ") for message in messages)  # the announce
    assert "Application shutdown complete." in messages  # uvicorn's, same handler
    (refusal,) = [r for r in records if "tool get_image refused" in r["message"]]
    assert len(refusal["trace_id"]) == 32
    assert "trace_id" not in records[0]  # at start, outside any call

    exports = collector.calls("/v1/traces")
    assert exports
    assert all(call.headers["x-api-key"] == "collector-secret" for call in exports)
    assert all(call.headers["content-type"] == "application/x-protobuf" for call in exports)
    sent = b"".join(call.body for call in exports)
    assert refusal["trace_id"] in sent.hex()  # the span of that very call went out
    assert PROMPT.encode() not in sent
    assert token.encode() not in sent
