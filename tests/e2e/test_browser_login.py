"""The browser kit end to end, without imagegate: Chromium logs a person in at the test
OpenID provider (authorization code flow with PKCE), a catcher on 127.0.0.1 receives the
code, and the token it buys passes imagegate's OIDCVerifier."""

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

pytest.importorskip("playwright", reason="the playwright package is not installed (`make test`)")

from playwright.async_api import Browser, Page, expect

from imagegate.access.oidc import OIDCVerifier
from imagegate.config import OIDCSettings
from tests.e2e.browser import new_page, screenshot
from tests.e2e.idp import (
    ACCOUNTS,
    AUDIENCE,
    GALLERY,
    Provider,
    pkce_pair,
)


@dataclass
class Catcher:
    """Stands in for the app's redirect URI: records each request's path and query."""

    port: int
    requests: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def redirect_catcher() -> AsyncIterator[Catcher]:
    catcher = Catcher(port=0)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line:  # a speculative connection may send nothing
                catcher.requests.append(line.split()[1].decode())
                catcher.arrived.set()
                body = b"caught"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except TimeoutError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    catcher.port = server.sockets[0].getsockname()[1]
    try:
        yield catcher
    finally:
        server.close()
        await server.wait_closed()


def callback_query(catcher: Catcher) -> dict[str, list[str]]:
    (callback,) = [r for r in catcher.requests if r.startswith("/gallery/callback?")]
    return parse_qs(urlsplit(callback).query)


async def log_in(page: Page, account: str, password: str) -> None:
    await page.get_by_label("User name").fill(account)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_person_logs_in_in_chromium_and_gets_a_token_imagegate_accepts(
    provider: Provider, chromium: Browser
) -> None:
    page = await new_page(chromium)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    async with redirect_catcher() as catcher:
        # A random port: the registered http://127.0.0.1/gallery/callback matches any.
        redirect_uri = catcher.url("/gallery/callback")
        await page.goto(provider.authorization_url(GALLERY, redirect_uri, state, challenge))
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot = await screenshot(page, "oidc-provider-login")
        await log_in(page, "alice", ACCOUNTS["alice"])
        await page.wait_for_url(f"{redirect_uri}?*")
        query = callback_query(catcher)
    assert shot.stat().st_size > 0
    assert query["state"] == [state]
    assert query["iss"] == [provider.issuer]
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{provider.issuer}/token",
            auth=(GALLERY.client_id, GALLERY.secret),  # client_secret_basic
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "resource": AUDIENCE,
            },
        )
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        assert tokens["token_type"] == "Bearer"
        assert "id_token" in tokens  # scope openid
        oidc = OIDCSettings(issuer=provider.issuer, audience=AUDIENCE)
        caller = await OIDCVerifier(oidc, http).verify(tokens["access_token"])
    assert caller is not None
    assert caller.identity.subject == "oidc:alice"
    assert caller.identity.groups == {"designers"}


async def test_a_wrong_password_shows_an_error_and_issues_no_code(
    provider: Provider, browser_page: Page
) -> None:
    _, challenge = pkce_pair()
    async with redirect_catcher() as catcher:
        redirect_uri = catcher.url("/gallery/callback")
        await browser_page.goto(provider.authorization_url(GALLERY, redirect_uri, "s", challenge))
        await log_in(browser_page, "alice", "not-her-password")
        await expect(browser_page.get_by_role("alert")).to_have_text("Wrong user name or password.")
        await expect(browser_page.get_by_label("User name")).to_have_value("alice")
        await screenshot(browser_page, "oidc-provider-wrong-password")
        assert browser_page.url.startswith(f"{provider.issuer}/interaction/")
    assert catcher.requests == []


async def test_cancel_sends_access_denied(provider: Provider, browser_page: Page) -> None:
    _, challenge = pkce_pair()
    async with redirect_catcher() as catcher:
        redirect_uri = catcher.url("/gallery/callback")
        await browser_page.goto(provider.authorization_url(GALLERY, redirect_uri, "s", challenge))
        await browser_page.get_by_role("button", name="Cancel").click()
        await browser_page.wait_for_url(f"{redirect_uri}?*")
        query = callback_query(catcher)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s"]
    assert "code" not in query


async def test_screenshots_land_in_the_artifacts_directory(browser_page: Page) -> None:
    await browser_page.set_content("<h1>artifact</h1>")
    path = await screenshot(browser_page, "kit self/test")
    assert path == Path(__file__).parents[2] / "test-artifacts" / "kit-self-test.png"
    assert path.read_bytes().startswith(b"\x89PNG")
