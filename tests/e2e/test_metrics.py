"""Prometheus metrics over real HTTP: known calls, then a scrape parsed with
prometheus_client's own parser; the token and the loopback listener that guard it."""

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastmcp.exceptions import ToolError
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from imagegate.config import Limits, QuotaSettings
from imagegate.relays.config import PriceTable
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, free_port, http_get, running_server, team_files
from tests.e2e.processes import serving
from tests.fakes.upstream import (
    FakeUpstream,
    error_reply,
    images_reply,
    png_bytes,
    running_upstream,
)

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
ZELDA_TOKEN = "zelda-token-0123456789abcdefghijk"
ACL = """
[subjects."token:zelda"]
scopes = ["images:generate", "images:read", "images:upload", "relay:*"]
"""
PROMPT = "a lighthouse drawn by zelda"
GENERATIONS = "/v1/images/generations"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        yield fake


def relays(fake: FakeUpstream) -> dict[str, Any]:
    return {
        "placeholder": PlaceholderRelayConfig(kind="placeholder"),
        "images": OpenAIImagesRelayConfig(
            kind="openai-images",
            base_url=f"{fake.base_url}/v1",
            api_key_env="FAKE_IMAGES_KEY",
            model="gpt-image-test",
            paid=False,
            retry_budget_seconds=5.0,
            price=PriceTable(currency="EUR", per_image={"*": 0.25}),
        ),
    }


async def scrape(url: str, token: str | None = SCRAPE_TOKEN) -> httpx.Response:
    return await http_get(url, {"Authorization": f"Bearer {token}"} if token else None)


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def png(colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(out, format="PNG")
    return out.getvalue()


async def jobs_settled(server: RunningServer) -> Samples:
    """A scrape once every job has ended: a call's answer can come a moment before its
    job is off the gauge."""
    with anyio.fail_after(5):
        while True:
            found = samples((await scrape(f"{server.base_url}/metrics")).text)
            if value(found, "imagegate_jobs_running") == 0:
                return found
            await anyio.sleep(0.02)


async def test_a_scrape_counts_the_calls_made_and_names_nobody(
    state_dir: Path,
    tmp_path: Path,
    clock: ManualClock,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_IMAGES_KEY", "sk-fake-images-key-0123456789")
    upstream.script(
        GENERATIONS,
        error_reply(503, "overloaded", "busy", {"retry-after": "0"}),
        images_reply(png_bytes((1024, 1024), "navy")),
    )
    team = team_files(tmp_path, ACL, {"zelda": ZELDA_TOKEN})
    async with running_server(
        state_dir,
        clock,
        relays=relays(upstream),
        default_relay="placeholder",
        quotas=QuotaSettings(subjects={"token:zelda": Limits(images_per_day=4)}),
        metrics=True,
        metrics_token=SecretStr(SCRAPE_TOKEN),
        **team,
    ) as server:
        made: list[dict[str, Any]] = []
        async with server.client(ZELDA_TOKEN) as client:
            for _ in range(3):
                result = await client.call_tool("generate_image", {"prompt": PROMPT})
                made += result.structured_content["images"]
            result = await client.call_tool("generate_image", {"prompt": PROMPT, "relay": "images"})
            made += result.structured_content["images"]
            with pytest.raises(ToolError, match="images_per_day"):
                await client.call_tool("generate_image", {"prompt": PROMPT})
            with pytest.raises(ToolError):
                await client.call_tool("zelda_was_here", {})
            link = (await client.call_tool("create_upload_link", {})).structured_content
        downloaded = await http_get(made[0]["url"])
        assert downloaded.status_code == 200
        image = png("teal")
        async with httpx.AsyncClient() as http:
            uploaded = await http.put(link["upload_url"], content=image)
        assert uploaded.status_code == 201, uploaded.text

        response = await scrape(f"{server.base_url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        found = await jobs_settled(server)

    def count(name: str, **labels: str) -> float:
        return value(found, name, **labels)

    assert count("imagegate_tool_calls_total", tool="generate_image", outcome="ok") == 4
    assert count("imagegate_tool_calls_total", tool="generate_image", outcome="refused") == 1
    assert count("imagegate_tool_calls_total", tool="create_upload_link", outcome="ok") == 1
    # A made-up tool name is the client's to choose: it never becomes a label.
    assert count("imagegate_tool_calls_total", tool="unknown", outcome="denied") == 1
    assert count("imagegate_tool_calls_in_flight") == 0
    assert count("imagegate_quota_refusals_total", limit="images_per_day") == 1

    assert count("imagegate_generation_seconds_count", relay="placeholder") == 3
    assert count("imagegate_generation_seconds_count", relay="images") == 1
    assert count("imagegate_upstream_requests_total", relay="images", status_class="5xx") == 1
    assert count("imagegate_upstream_requests_total", relay="images", status_class="2xx") == 1
    assert count("imagegate_upstream_retries_total", relay="images") == 1
    assert count("imagegate_upstream_request_seconds_count", relay="images") == 2
    assert len(upstream.calls(GENERATIONS)) == 2
    assert count("imagegate_spend_estimated_total", relay="images", currency="EUR") == 0.25
    assert count("imagegate_spend_reported_total", relay="images", currency="EUR") == 0

    assert count("imagegate_images_stored_total", source="generated") == 4
    assert count("imagegate_images_stored_total", source="uploaded") == 1
    generated_bytes = sum(item["bytes"] for item in made)
    assert count("imagegate_image_bytes_stored_total", source="generated") == generated_bytes
    assert count("imagegate_image_bytes_stored_total", source="uploaded") == len(image)
    assert count("imagegate_transfer_bytes_total", direction="download") == len(downloaded.content)
    assert count("imagegate_transfer_bytes_total", direction="upload") == len(image)
    assert count("imagegate_jobs_running") == 0

    label_names = {name for _, labels in found for name, _ in labels}
    assert label_names <= {
        "tool",
        "outcome",
        "limit",
        "relay",
        "status_class",
        "source",
        "currency",
        "direction",
        "le",
    }
    text = response.text
    secrets = ["zelda", PROMPT, ZELDA_TOKEN, SCRAPE_TOKEN, uploaded.json()["asset_id"]]
    for secret in secrets + [item["asset_id"] for item in made]:
        assert secret not in text


async def test_metrics_need_their_own_token(state_dir: Path) -> None:
    async with running_server(
        state_dir, metrics=True, metrics_token=SecretStr(SCRAPE_TOKEN)
    ) as server:
        url = f"{server.base_url}/metrics"
        refusals = [
            await scrape(url, None),
            await scrape(url, "wrong-token-0123456789abcdef"),
            await scrape(url, server.token),  # an MCP token is not a scraper's
            await http_get(url, {"Authorization": f"Basic {SCRAPE_TOKEN}"}),
        ]
        allowed = await scrape(url)
        # Outside the Host check, like the probes: a scraper asks each replica by its
        # own address.
        by_address = await scrape(url.replace("127.0.0.1", "localhost"))
    for refused in refusals:
        assert refused.status_code == 401
        assert refused.text == "unauthorized\n"  # not which: missing, wrong or foreign
        assert refused.headers["www-authenticate"] == "Bearer"
    assert allowed.status_code == 200
    assert "imagegate_tool_calls_in_flight" in allowed.text
    assert by_address.status_code == 200


async def test_the_loopback_listener_serves_metrics_and_nothing_else(
    state_dir: Path,
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    async with running_server(state_dir, metrics=True, metrics_listen=listen) as server:
        async with server.client() as client:
            await client.call_tool("generate_image", {"prompt": PROMPT})
        listener = f"http://{listen}"
        scraped = await scrape(f"{listener}/metrics", None)
        elsewhere = [
            await scrape(f"{listener}/mcp", server.token),
            await http_get(f"{listener}/healthz"),
            await http_get(f"{listener}/metrics/"),
        ]
        main_port = await scrape(f"{server.base_url}/metrics", None)
        mcp_still_works = await http_get(f"{server.base_url}/healthz")
    assert scraped.status_code == 200
    found = samples(scraped.text)
    assert value(found, "imagegate_tool_calls_total", tool="generate_image", outcome="ok") == 1
    assert [response.status_code for response in elsewhere] == [404, 404, 404]
    assert main_port.status_code == 404
    assert mcp_still_works.status_code == 200


async def test_metrics_are_off_by_default(state_dir: Path) -> None:
    async with running_server(state_dir) as server:
        response = await scrape(f"{server.base_url}/metrics", server.token)
    assert response.status_code == 404


def test_imagegate_serve_opens_the_metrics_listener(tmp_path: Path) -> None:
    """The command itself binds the listener (the harness above binds its own)."""
    listen = f"127.0.0.1:{free_port()}"
    with serving(tmp_path / "state", IMAGEGATE_METRICS="true", IMAGEGATE_METRICS_LISTEN=listen) as (
        base_url,
        _,
    ):
        scraped = httpx.get(f"http://{listen}/metrics", timeout=5)
        assert scraped.status_code == 200
        assert "imagegate_tool_calls_in_flight" in scraped.text
        assert httpx.get(f"{base_url}/metrics", timeout=5).status_code == 404
