"""The gallery's pages over ASGI: who may do what (the ACL, ownership), CSRF, the
cookies' flags, and the login's state check. The login at a real provider, in a real
browser, is in tests/e2e/test_gallery_browser.py; here it is a stand-in."""

import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Route

from imagegate.access.acl import Acl
from imagegate.access.audit import AuditLog
from imagegate.access.identity import Identity, Verified, verified
from imagegate.access.login import Attempt, LoginFailed
from imagegate.access.policy import AccessPolicy, Caller
from imagegate.access.sessions import LOGIN, Sealer
from imagegate.config import GallerySettings, OIDCSettings, Settings
from imagegate.core.ids import Subject
from imagegate.core.images import inspect_image
from imagegate.relays.placeholder import PlaceholderRelay, PlaceholderRelayConfig
from imagegate.relays.registry import Relays
from imagegate.service.images import ImageService
from imagegate.service.inputs import InputResolver
from imagegate.service.links import LinkSigner
from imagegate.storage.assets import AssetStore
from imagegate.storage.embedded import open_embedded
from imagegate.storage.interfaces import Asset, AssetMeta
from imagegate.web.gallery import Gallery, ttl_choices, web_origin
from tests.conftest import ManualClock

ALICE = Subject("oidc:alice")
BOB = Subject("oidc:bob")
EVERY = "images:read images:delete images:share"
PUBLIC = "https://images.example.com"


@dataclass
class StandIn:
    """The provider's side of a login, for these tests: the code names the person."""

    begun: list[Attempt] = field(default_factory=list)

    async def begin(self) -> Attempt:
        attempt = Attempt(f"https://idp.test/auth?n={len(self.begun)}", "state-1", "verifier-1")
        self.begun.append(attempt)
        return attempt

    async def finish(self, code: str, verifier: str) -> Verified:
        if verifier != "verifier-1" or not code.startswith("oidc:"):
            raise LoginFailed("the login provider refused the login (invalid_grant)")
        return verified(Subject(code), groups=["designers"])


class Policy(AccessPolicy):
    """The ACL as the operator has it now: a test changes it between requests."""

    def __init__(self, acl: Acl) -> None:
        super().__init__(acl)
        self.acl = acl

    def caller(self, identity: Identity) -> Caller:
        return AccessPolicy(self.acl).caller(identity)


@dataclass
class Site:
    client: httpx.AsyncClient
    service: ImageService
    sealer: Sealer
    clock: ManualClock
    policy: Policy
    audit_path: Path

    def audited(self) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [json.loads(line) for line in lines]

    def as_person(self, subject: Subject, groups: frozenset[str] = frozenset()) -> str:
        cookie = self.sealer.session(Identity(subject, groups), self.clock.now(), 3600)
        self.client.cookies.set("__Host-imagegate-session", cookie)
        return cookie

    def csrf(self, cookie: str) -> str:
        session = self.sealer.read_session(cookie, self.clock.now())
        assert session is not None
        return self.sealer.csrf_token(session)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), "navy").save(out, format="PNG")
    return out.getvalue()


async def stored(service: ImageService, owner: Subject = ALICE) -> Asset:
    with service.assets.stage() as staged:
        staged.write(png())
        staged.finish()
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        meta = AssetMeta(relay="placeholder", prompt="a <b>navy</b> square")
        return await service.assets.add(owner, staged, info, meta, 1.0)


def site_of(acl: Acl, **overrides: Any) -> Any:
    async def make(state_dir: Path, clock: ManualClock) -> AsyncIterator[Site]:
        settings = Settings(
            state_dir=state_dir,
            public_url=PUBLIC,
            audit_log=str(state_dir.parent / "audit.jsonl"),
            **overrides,
            oidc=OIDCSettings(issuer="https://idp.test", audience=f"{PUBLIC}/mcp"),
            gallery=GallerySettings(client_id="imagegate-gallery"),
            gallery_client_secret=SecretStr("s" * 32),
        )
        state_dir.mkdir(mode=0o700)
        storage = open_embedded(state_dir, 10**7)
        assets = AssetStore(storage.index, storage.blobs)
        relay = PlaceholderRelay("placeholder", PlaceholderRelayConfig(kind="placeholder"))
        inputs = InputResolver(
            assets, max_bytes=10**7, max_pixels=10**7, input_root=None, local=False
        )
        signer = LinkSigner(b"k" * 32, PUBLIC)
        relays = Relays({"placeholder": relay}, "placeholder")
        service = ImageService(
            settings, assets, storage.quotas, storage.nonces, relays, signer, clock, inputs
        )
        sealer = Sealer(b"k" * 32)
        login: Any = StandIn()
        policy = Policy(acl)
        audit = AuditLog(settings.audit_log)
        gallery = Gallery(settings, service, policy, login, sealer, clock, audit)
        app = Starlette(
            routes=[
                Route(path, handler, methods=methods) for path, methods, handler in gallery.table()
            ]
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
            yield Site(client, service, sealer, clock, policy, state_dir.parent / "audit.jsonl")
        audit.close()
        await storage.aclose()

    return make


def acl(alice: str = EVERY, bob: str = EVERY) -> Acl:
    return Acl(subjects={ALICE: frozenset(alice.split()), BOB: frozenset(bob.split())})


@pytest.fixture
async def site(state_dir: Path, clock: ManualClock) -> AsyncIterator[Site]:
    async for made in site_of(acl())(state_dir, clock):
        yield made


# -- signed out --------------------------------------------------------------------


async def test_signed_out_the_gallery_offers_to_sign_in_and_shows_nothing(site: Site) -> None:
    asset = await stored(site.service)
    page = await site.client.get("/gallery")
    assert page.status_code == 200
    assert 'href="/gallery/login"' in page.text
    assert asset.id not in page.text
    for path in ("", "/thumb", "/preview", "/download"):
        response = await site.client.get(f"/gallery/images/{asset.id}{path}")
        assert (response.status_code, response.headers["location"]) == (303, "/gallery")
    refused = await site.client.post(f"/gallery/images/{asset.id}/delete", data={"confirm": "yes"})
    assert refused.status_code == 401
    assert await site.service.assets.get(None, asset.id)


# -- the ACL, page by page ---------------------------------------------------------

ACTIONS = {
    "list": ("GET", "/gallery", None),
    "details": ("GET", "/gallery/images/{id}", None),
    "thumbnail": ("GET", "/gallery/images/{id}/thumb", None),
    "download": ("GET", "/gallery/images/{id}/download", None),
    "link": ("POST", "/gallery/images/{id}/link", {"ttl_seconds": "3600"}),
    "delete": ("POST", "/gallery/images/{id}/delete", {"confirm": "yes"}),
}


async def act(site: Site, action: str, asset_id: str, cookie: str) -> httpx.Response:
    """One of ACTIONS on an image, as the person signed in with `cookie`."""
    method, path, form = ACTIONS[action]
    url = path.format(id=asset_id)
    if form is None:
        return await site.client.request(method, url)
    return await site.client.post(url, data={**form, "csrf": site.csrf(cookie)})


@pytest.mark.parametrize(
    ("scopes", "action", "status"),
    [
        ("images:read", "list", 200),
        ("images:delete", "list", 403),
        ("images:read", "details", 200),
        ("images:share", "details", 403),
        ("images:read", "thumbnail", 200),
        ("", "thumbnail", 403),
        ("images:read", "download", 303),  # one's own image: as get_image
        ("images:delete", "download", 403),
        ("images:share", "link", 200),
        ("images:read", "link", 403),
        ("images:delete", "delete", 200),
        ("images:read images:share", "delete", 403),
    ],
)
async def test_each_page_needs_the_scope_its_tool_needs(
    state_dir: Path, clock: ManualClock, scopes: str, action: str, status: int
) -> None:
    async for site in site_of(acl(alice=scopes))(state_dir, clock):
        asset = await stored(site.service)
        response = await act(site, action, asset.id, site.as_person(ALICE))
        assert response.status_code == status, response.text
        if status == 403:
            assert "forbidden: needs scope" in response.text
        still_there = [a.id for a in (await site.service.assets.list(ALICE, 10, None)).assets]
        assert (asset.id in still_there) == (action != "delete" or status != 200)


@pytest.mark.parametrize("action", ["details", "thumbnail", "download", "link", "delete"])
async def test_another_persons_image_is_not_there(site: Site, action: str) -> None:
    asset = await stored(site.service, owner=ALICE)
    response = await act(site, action, asset.id, site.as_person(BOB))
    assert response.status_code == 404
    assert await site.service.assets.get(None, asset.id)


async def test_the_list_is_ones_own_newest_first(site: Site) -> None:
    first = await stored(site.service)
    site.clock.advance(1)
    bobs = await stored(site.service, owner=BOB)
    site.as_person(ALICE)
    page = await site.client.get("/gallery")
    assert first.id in page.text
    assert bobs.id not in page.text
    assert "Usage and limits" in page.text
    assert 'name="owner"' not in page.text  # no owner filter without admin


@pytest.mark.parametrize(("scopes", "status"), [("images:read admin", 200), ("images:read", 403)])
async def test_only_an_admin_filters_by_owner(
    state_dir: Path, clock: ManualClock, scopes: str, status: int
) -> None:
    async for site in site_of(acl(alice=scopes))(state_dir, clock):
        bobs = await stored(site.service, owner=BOB)
        site.as_person(ALICE)
        response = await site.client.get("/gallery", params={"owner": BOB})
        assert response.status_code == status
        assert (bobs.id in response.text) == (status == 200)
        if status == 200:
            assert 'name="owner"' in response.text


async def test_details_escape_what_the_prompt_holds(site: Site) -> None:
    asset = await stored(site.service)
    site.as_person(ALICE)
    page = await site.client.get(f"/gallery/images/{asset.id}")
    assert "a &lt;b&gt;navy&lt;/b&gt; square" in page.text
    assert "<b>navy" not in page.text
    # The alt text names the image, not its prompt.
    assert re.search(r'alt="Image [^"]+, 300x200 PNG', page.text)


async def test_a_download_is_a_short_signed_link(site: Site) -> None:
    asset = await stored(site.service)
    site.as_person(ALICE)
    response = await site.client.get(f"/gallery/images/{asset.id}/download")
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"{PUBLIC}/files/{asset.id}.png?")
    expires = int(re.search(r"exp=(\d+)", location)[1])  # type: ignore[index]
    assert expires - site.clock.now() <= 60


async def test_a_shared_link_lasts_the_chosen_time_within_the_maximum(site: Site) -> None:
    asset = await stored(site.service)
    cookie = site.as_person(ALICE)
    csrf = site.csrf(cookie)
    url = f"/gallery/images/{asset.id}/link"
    made = await site.client.post(url, data={"ttl_seconds": "86400", "csrf": csrf})
    assert made.status_code == 200
    link = re.search(r'value="(https://[^"]+)"', made.text)[1]  # type: ignore[index]
    expires = int(re.search(r"exp=(\d+)", link)[1])  # type: ignore[index]
    assert expires == int(site.clock.now()) + 86400
    too_long = await site.client.post(url, data={"ttl_seconds": str(10**9), "csrf": csrf})
    assert too_long.status_code == 400
    assert "ttl_seconds must be between" in too_long.text


# -- CSRF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("csrf", "origin", "status"),
    [
        (None, None, 403),
        ("wrong", None, 403),
        ("bob's", None, 403),  # another session's token
        ("right", "https://evil.example", 403),
        ("right", PUBLIC, 200),
        ("right", None, 200),  # no Origin header: the token decides
    ],
)
async def test_a_form_needs_its_sessions_token_and_this_origin(
    site: Site, csrf: str | None, origin: str | None, status: int
) -> None:
    asset = await stored(site.service)
    bobs_cookie = site.as_person(BOB)
    cookie = site.as_person(ALICE)
    tokens = {"right": site.csrf(cookie), "wrong": "x" * 43, "bob's": site.csrf(bobs_cookie)}
    form = {"confirm": "yes", **({"csrf": tokens[csrf]} if csrf else {})}
    headers = {"origin": origin} if origin else {}
    response = await site.client.post(
        f"/gallery/images/{asset.id}/delete", data=form, headers=headers
    )
    assert response.status_code == status
    gone = asset.id not in [a.id for a in (await site.service.assets.list(ALICE, 10, None)).assets]
    assert gone == (status == 200)


async def test_deleting_needs_the_box_ticked(site: Site) -> None:
    asset = await stored(site.service)
    cookie = site.as_person(ALICE)
    response = await site.client.post(
        f"/gallery/images/{asset.id}/delete", data={"csrf": site.csrf(cookie)}
    )
    assert response.status_code == 400
    assert await site.service.assets.get(None, asset.id)


# -- logging in and out ----------------------------------------------------------


def cookie_header(response: httpx.Response, name: str) -> str:
    (header,) = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
    return header


async def test_a_login_round_trip_sets_a_host_only_secure_http_only_session(site: Site) -> None:
    started = await site.client.get("/gallery/login")
    assert started.status_code == 303
    assert started.headers["location"].startswith("https://idp.test/auth")
    login_cookie = cookie_header(started, "__Host-imagegate-login")
    for flag in ("HttpOnly", "Secure", "Path=/", "SameSite=lax", "Max-Age=600"):
        assert flag in login_cookie
    back = await site.client.get("/gallery/callback", params={"code": ALICE, "state": "state-1"})
    assert (back.status_code, back.headers["location"]) == (303, "/gallery")
    session = cookie_header(back, "__Host-imagegate-session")
    for flag in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
        assert flag in session
    assert "Domain" not in session
    assert "Max-Age=0" in cookie_header(back, "__Host-imagegate-login")
    page = await site.client.get("/gallery")
    assert "Signed in as <strong>oidc:alice</strong>" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("query", "with_cookie", "message"),
    [
        ({"code": ALICE, "state": "another"}, True, "began elsewhere"),
        ({"code": ALICE, "state": "state-1"}, False, "began elsewhere"),
        ({"code": "junk", "state": "state-1"}, True, "invalid_grant"),
        ({"error": "access_denied", "state": "state-1"}, True, "access_denied"),
        ({"error": "<script>", "state": "state-1"}, True, "answered: error"),
    ],
)
async def test_a_callback_that_does_not_match_its_login_signs_no_one_in(
    site: Site, query: dict[str, str], with_cookie: bool, message: str
) -> None:
    if with_cookie:
        await site.client.get("/gallery/login")
    back = await site.client.get("/gallery/callback", params=query)
    assert back.status_code == 400
    assert message in back.text
    assert "<script>" not in back.text
    assert not any(
        h.startswith("__Host-imagegate-session=") for h in back.headers.get_list("set-cookie")
    )


async def test_a_login_cookie_is_no_session(site: Site) -> None:
    """Sealed for another purpose, under the same key: not accepted as a session."""
    sealed = site.sealer.seal(LOGIN, {"sub": ALICE, "groups": [], "sid": "x"}, 2**40)
    site.client.cookies.set("__Host-imagegate-session", sealed)
    page = await site.client.get("/gallery")
    assert 'href="/gallery/login"' in page.text


async def test_a_session_ends_at_its_time_and_at_logout(site: Site) -> None:
    cookie = site.as_person(ALICE)
    assert "Signed in as" in (await site.client.get("/gallery")).text
    out = await site.client.post("/gallery/logout", data={"csrf": site.csrf(cookie)})
    assert (out.status_code, out.headers["location"]) == (303, "/gallery?signed_out=1")
    assert "Max-Age=0" in cookie_header(out, "__Host-imagegate-session")
    site.client.cookies.clear()
    site.as_person(ALICE)
    site.clock.advance(3600)
    assert "Signed in as" not in (await site.client.get("/gallery")).text


async def test_static_files_are_a_fixed_list(site: Site) -> None:
    assert (await site.client.get("/gallery/static/gallery.css")).status_code == 200
    for name in ("..%2Fgallery.py", "base.html", "%2e%2e"):
        assert (await site.client.get(f"/gallery/static/{name}")).status_code == 404


def test_settings_refuse_a_gallery_without_what_it_needs() -> None:
    base: dict[str, Any] = {
        "public_url": PUBLIC,
        "oidc": {"issuer": "https://idp.test", "audience": "a"},
        "gallery": {"client_id": "g"},
        "gallery_client_secret": "s" * 32,
    }
    Settings(**base)
    for missing, said in [
        ("oidc", "needs [oidc]"),
        ("public_url", "needs public_url"),
        ("gallery_client_secret", "needs the client secret"),
    ]:
        with pytest.raises(ValueError, match=re.escape(said)):
            Settings(**{k: v for k, v in base.items() if k != missing})
    with pytest.raises(ValueError, match="without a path"):
        Settings(**{**base, "public_url": f"{PUBLIC}/imagegate"})


async def test_a_session_gets_the_acl_of_now(site: Site) -> None:
    """Scopes are not kept in the cookie: each request asks the ACL with the identity
    from login, so a changed ACL applies to a session already open."""
    site.as_person(ALICE)
    assert (await site.client.get("/gallery")).status_code == 200
    site.policy.acl = acl(alice="images:delete")
    refused = await site.client.get("/gallery")
    assert refused.status_code == 403
    assert "needs scope images:read" in refused.text


async def test_gallery_actions_are_audited(site: Site) -> None:
    asset = await stored(site.service)
    cookie = site.as_person(ALICE)
    csrf = site.csrf(cookie)
    await site.client.get(f"/gallery/images/{asset.id}/download")
    await site.client.post(
        f"/gallery/images/{asset.id}/link", data={"ttl_seconds": "3600", "csrf": csrf}
    )
    await site.client.post(
        f"/gallery/images/{asset.id}/delete", data={"confirm": "yes", "csrf": csrf}
    )
    await site.client.post(
        "/gallery/images/img_not-an-id%0Aforged/delete", data={"confirm": "yes", "csrf": csrf}
    )
    lines = [(r["subject"], r["tool"], r["outcome"], r["detail"]) for r in site.audited()]
    assert lines == [
        (ALICE, "gallery:download", "ok", asset.id),
        (ALICE, "gallery:create_link", "ok", asset.id),
        (ALICE, "gallery:delete", "ok", asset.id),
        (ALICE, "gallery:delete", "refused", None),  # not an asset id: not written
    ]


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Images.Example.com", "https://images.example.com"),
        ("https://images.example.com:443", "https://images.example.com"),
        ("https://images.example.com:8443", "https://images.example.com:8443"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_the_origin_is_what_browsers_send(url: str, origin: str) -> None:
    assert web_origin(url) == origin


@pytest.mark.parametrize(
    ("maximum", "offered"),
    [(7 * 86400, [3600, 86400, 7 * 86400]), (3600, [3600]), (600, [600])],
)
def test_link_lifetimes_offered_stay_within_the_maximum(maximum: int, offered: list[int]) -> None:
    assert [choice["seconds"] for choice in ttl_choices(maximum)] == offered


async def test_a_download_link_is_no_longer_than_the_maximum(
    state_dir: Path, clock: ManualClock
) -> None:
    async for site in site_of(acl(), link_ttl_seconds=30, link_ttl_max_seconds=30)(
        state_dir, clock
    ):
        asset = await stored(site.service)
        site.as_person(ALICE)
        response = await site.client.get(f"/gallery/images/{asset.id}/download")
        assert response.status_code == 303
        expires = int(re.search(r"exp=(\d+)", response.headers["location"])[1])  # type: ignore[index]
        assert expires == int(clock.now()) + 30


@pytest.mark.parametrize(
    ("scopes", "status"), [("images:read admin", 403), ("images:read admin images:share", 303)]
)
async def test_downloading_anothers_image_shares_it(
    state_dir: Path, clock: ManualClock, scopes: str, status: int
) -> None:
    """An admin reaches anyone's image; a link to it is sharing, as in get_image."""
    async for site in site_of(acl(alice=scopes))(state_dir, clock):
        bobs = await stored(site.service, owner=BOB)
        site.as_person(ALICE)
        response = await site.client.get(f"/gallery/images/{bobs.id}/download")
        assert response.status_code == status


@pytest.mark.parametrize(
    ("public_url", "warned"),
    [(PUBLIC, False), ("http://127.0.0.1:8765", False), ("http://images.example.com", True)],
)
def test_a_gallery_in_clear_is_warned_about(public_url: str, warned: bool) -> None:
    settings = Settings(
        public_url=public_url,
        oidc=OIDCSettings(issuer="https://idp.test", audience="a"),
        gallery=GallerySettings(client_id="g"),
        gallery_client_secret=SecretStr("s" * 32),
    )
    assert any("[gallery]" in said for said in settings.warnings()) == warned


async def test_a_thumbnail_whose_bytes_are_gone_is_a_page_not_a_crash(site: Site) -> None:
    asset = await stored(site.service)
    path = site.service.assets.local_path(asset)
    assert path is not None
    path.unlink()
    site.as_person(ALICE)
    response = await site.client.get(f"/gallery/images/{asset.id}/thumb")
    assert response.status_code in (404, 503)
    assert "Traceback" not in response.text
