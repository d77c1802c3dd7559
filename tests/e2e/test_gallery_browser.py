"""The web gallery in headless Chromium: people log in at the real test provider
(authorization code flow with PKCE), see their own images, download, share and delete
them; a second person sees none of the first's; a form posted from another page is
refused. Screenshots go to test-artifacts/."""

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import SecretStr

from imagegate.config import GallerySettings, OIDCSettings
from tests.e2e.browser import new_page, screenshot
from tests.e2e.harness import RunningServer, running_server, structured
from tests.e2e.idp import ACCOUNTS, AUDIENCE, GALLERY, Provider

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ACL = """
[groups.designers]
scopes = ["images:generate", "images:read", "images:delete", "images:share", "relay:*"]
"""


@pytest.fixture
async def gallery(tmp_path: Path, provider: Provider) -> AsyncIterator[RunningServer]:
    acl = tmp_path / "acl.toml"
    acl.write_text(ACL)
    async with running_server(
        tmp_path / "state",
        public=True,
        acl_file=acl,
        oidc=OIDCSettings(issuer=provider.issuer, audience=AUDIENCE),
        gallery=GallerySettings(client_id=GALLERY.client_id),
        gallery_client_secret=SecretStr(GALLERY.secret),
    ) as server:
        yield server


async def make(server: RunningServer, token: str, prompt: str) -> str:
    made = await structured(server, token, "generate_image", prompt=prompt)
    asset_id: str = made["images"][0]["asset_id"]
    return asset_id


async def log_in(page: "Page", server: RunningServer, account: str) -> None:
    await page.goto(f"{server.base_url}/gallery")
    await page.get_by_role("link", name="Sign in").click()
    await page.get_by_label("User name").fill(account)
    await page.get_by_label("Password").fill(ACCOUNTS[account])
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{server.base_url}/gallery")


async def test_a_person_logs_in_and_manages_their_images(
    gallery: RunningServer, provider: Provider, chromium: "Browser", tmp_path: Path
) -> None:
    # Made over MCP with alice's client token: the same subject as her browser login.
    first = await make(gallery, provider.token("alice"), "a lighthouse at dawn")
    second = await make(gallery, provider.token("alice"), "a teal bicycle")
    daves = await make(gallery, provider.token("dave"), "dave's secret plan")

    page = await new_page(chromium)
    await page.goto(f"{gallery.base_url}/gallery")
    await screenshot(page, "gallery-signed-out")
    await log_in(page, gallery, "alice")
    assert await page.get_by_text("Signed in as oidc:alice").count() == 1
    thumbs = page.locator("ul.grid img")
    assert await thumbs.count() == 2
    # Newest first, and every thumbnail really loaded.
    hrefs = await page.locator("ul.grid a").evaluate_all("(a) => a.map((e) => e.pathname)")
    assert hrefs == [f"/gallery/images/{second}", f"/gallery/images/{first}"]
    # Not wait_for_function: its polling evaluates a string, which the gallery's CSP
    # (script-src 'self') refuses whenever the images aren't loaded at the first look.
    widths = await thumbs.evaluate_all(
        "(images) => Promise.all(images.map((i) => i.complete ? i.naturalWidth"
        " : new Promise((done) => { i.onload = i.onerror = () => done(i.naturalWidth); })))"
    )
    assert len(widths) == 2
    assert all(width > 0 for width in widths)
    assert daves not in await page.content()
    await screenshot(page, "gallery-list")

    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["imagegate-session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    assert "imagegate-login" not in cookies  # the login's state is gone once used

    await page.locator(f'a[href="/gallery/images/{first}"]').click()
    assert await page.get_by_text("a lighthouse at dawn").count() == 1
    await screenshot(page, "gallery-image")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download").click()
    download = await download_info.value
    saved = tmp_path / "downloaded.png"
    await download.save_as(saved)
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    await page.get_by_label("Link valid for").select_option(label="1 day")
    await page.get_by_role("button", name="Create a link to copy").click()
    link = await page.get_by_label("Link").input_value()
    async with httpx.AsyncClient() as client:
        fetched = await client.get(link)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(saved.read_bytes()).digest()

    await page.goto(f"{gallery.base_url}/gallery/images/{first}")
    await page.get_by_label("Yes, delete this image").check()
    await page.get_by_role("button", name="Delete").click()
    assert await page.get_by_text(f"{first} is gone.").count() == 1
    await page.goto(f"{gallery.base_url}/gallery")
    assert await page.locator("ul.grid img").count() == 1

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{gallery.base_url}/gallery?signed_out=1")
    assert await page.get_by_text("You are signed out.").count() == 1
    assert "imagegate-session" not in {c["name"] for c in await page.context.cookies()}


async def test_a_second_person_sees_none_of_the_firsts_images(
    gallery: RunningServer, provider: Provider, chromium: "Browser"
) -> None:
    alices = await make(gallery, provider.token("alice"), "alice's sketch")
    daves = await make(gallery, provider.token("dave"), "dave's sketch")
    page = await new_page(chromium)
    await log_in(page, gallery, "dave")
    content = await page.content()
    assert daves in content
    assert alices not in content
    for path in ("", "/thumb", "/download"):
        response = await page.goto(f"{gallery.base_url}/gallery/images/{alices}{path}")
        assert response is not None
        assert response.status == 404
    await screenshot(page, "gallery-not-yours")


async def test_a_form_from_another_page_deletes_nothing(
    gallery: RunningServer, provider: Provider, chromium: "Browser", tmp_path: Path
) -> None:
    """A page elsewhere posts the delete form in alice's browser, with her cookie and
    without the form's CSRF token: refused (its Origin first), nothing deleted."""
    asset = await make(gallery, provider.token("alice"), "keep me")
    page = await new_page(chromium)
    await log_in(page, gallery, "alice")
    evil = await page.context.new_page()
    await evil.set_content(
        f'<form method="post" action="{gallery.base_url}/gallery/images/{asset}/delete">'
        '<input name="confirm" value="yes"><button>go</button></form>'
    )
    async with evil.expect_navigation() as navigation:
        await evil.get_by_role("button", name="go").click()
    response = await navigation.value
    assert response is not None
    assert response.status == 403
    await page.goto(f"{gallery.base_url}/gallery/images/{asset}")
    assert await page.get_by_text("keep me").count() == 1


async def test_a_wrong_password_signs_no_one_in(
    gallery: RunningServer, chromium: "Browser"
) -> None:
    page = await new_page(chromium)
    await page.goto(f"{gallery.base_url}/gallery/login")
    await page.get_by_label("User name").fill("alice")
    await page.get_by_label("Password").fill("not her password")
    await page.get_by_role("button", name="Sign in").click()
    assert not page.url.startswith(gallery.base_url)
    cookies: list[Any] = await page.context.cookies()
    assert "imagegate-session" not in {c["name"] for c in cookies}
