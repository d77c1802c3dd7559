"""The web gallery at /gallery: people look at, download, share and delete their own
images in a browser, after logging in at the team's OpenID provider.

Server-rendered from the templates in web/templates/gallery (Jinja2, autoescaped); the
basics need no JavaScript. Every page acts as the logged-in person with the same
ACL decisions as the tools: listing and viewing need images:read, a download link
what get_image needs, a link to copy images:share, deleting images:delete, another
owner's images admin. Forms are POSTs with a CSRF token derived from the session;
a POST whose Origin is another site's is refused as well.
"""

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from imagegate.access.audit import AuditLog, AuditRecord
from imagegate.access.login import LOGIN_SECONDS, Login, LoginFailed
from imagegate.access.policy import AccessPolicy, Caller, Decision, may_link
from imagegate.access.scopes import DELETE, READ, SHARE, grants
from imagegate.access.sessions import LOGIN, Sealer, Session, SessionTooLarge
from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.core.errors import (
    ImagegateError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    StorageError,
)
from imagegate.core.ids import is_asset_id
from imagegate.core.images import ImageFormat
from imagegate.core.views import View
from imagegate.service.images import ImageService
from imagegate.storage.interfaces import Asset

Handler = Callable[[Request], Awaitable[Response]]
HERE = Path(__file__).parent
STATIC = {"gallery.css": "text/css", "gallery.js": "text/javascript"}
PAGE_SIZE = 24
PREVIEW_PX = 1024
DOWNLOAD_LINK_SECONDS = 60
"""A download from the gallery goes through a fresh signed link this short."""
TTL_CHOICES = ((3600, "1 hour"), (86400, "1 day"), (7 * 86400, "7 days"), (30 * 86400, "30 days"))

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not no-referrer: with it, Chromium sends "Origin: null" on the pages' own form
    # POSTs, which the Origin checks (ours, and FastMCP's for loopback) must refuse.
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Cookies:
    """The two cookies' names and flags: `__Host-` names (Secure, Path=/, no Domain)
    over https; over plain http (a loopback test) neither Secure nor the prefix."""

    secure: bool

    @property
    def session(self) -> str:
        return "__Host-imagegate-session" if self.secure else "imagegate-session"

    @property
    def login(self) -> str:
        return "__Host-imagegate-login" if self.secure else "imagegate-login"

    def set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",  # sent on the provider's redirect back, not on others' POSTs
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


class Gallery:
    def __init__(
        self,
        settings: Settings,
        service: ImageService,
        policy: AccessPolicy,
        login: Login,
        sealer: Sealer,
        clock: Clock,
        audit: AuditLog | None = None,
    ) -> None:
        assert settings.gallery is not None
        assert settings.public_url is not None
        self._settings = settings
        self._lifetime = settings.gallery.session_hours * 3600
        self._service = service
        self._policy = policy
        self._login = login
        self._sealer = sealer
        self._clock = clock
        self._audit = audit
        self._origin = web_origin(settings.public_url)
        self._cookies = Cookies(secure=self._origin.startswith("https:"))
        self._templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
        )

    def table(self) -> list[tuple[str, list[str], Handler]]:
        return [
            ("/gallery", ["GET"], self.index),
            ("/gallery/login", ["GET"], self.login),
            ("/gallery/callback", ["GET"], self.callback),
            ("/gallery/logout", ["POST"], self.logout),
            ("/gallery/static/{name}", ["GET"], self.static),
            ("/gallery/images/{asset_id}", ["GET"], self.image),
            ("/gallery/images/{asset_id}/thumb", ["GET"], self.thumb),
            ("/gallery/images/{asset_id}/preview", ["GET"], self.preview),
            ("/gallery/images/{asset_id}/download", ["GET"], self.download),
            ("/gallery/images/{asset_id}/link", ["POST"], self.link),
            ("/gallery/images/{asset_id}/delete", ["POST"], self.delete),
        ]

    # -- rendering ---------------------------------------------------------------

    def _page(
        self,
        template: str,
        session: Session | None,
        status: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        csrf = self._sealer.csrf_token(session) if session else ""
        values.setdefault("notice", None)
        html = self._templates.get_template(f"gallery/{template}").render(
            session=session, csrf=csrf, **values
        )
        return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)

    def _message(
        self, session: Session | None, status: int, title: str, message: str
    ) -> HTMLResponse:
        return self._page("message.html", session, status, title=title, message=message)

    def _forbidden(self, session: Session, scope: str) -> HTMLResponse:
        return self._message(session, 403, "Not allowed", Decision(False, scope).message)

    def _refused(self, session: Session, err: ImagegateError) -> HTMLResponse:
        if isinstance(err, NotFound):
            return self._message(session, 404, "Not found", "There is no such image of yours.")
        if isinstance(err, PermissionDenied):
            return self._message(session, 403, "Not allowed", str(err))
        if isinstance(err, StorageError):
            return self._message(session, 503, "Not available", str(err))
        return self._message(session, 400, "Not possible", str(err))

    # -- who is asking -----------------------------------------------------------

    def _session(self, request: Request) -> Session | None:
        value = request.cookies.get(self._cookies.session)
        return self._sealer.read_session(value, self._clock.now()) if value else None

    def _record(
        self, who: Session | str, action: str, outcome: str, asset_id: str | None = None
    ) -> None:
        """An audit line, as a tool call gets one: `gallery:<action>`, the asset id as
        its detail (checked to be one: the URL's text is the client's)."""
        if self._audit is None:
            return
        subject = who.subject if isinstance(who, Session) else who
        self._audit.write(
            AuditRecord(
                time=self._clock.now(),
                subject=subject,
                tool=f"gallery:{action}",
                relay=None,
                outcome=outcome,
                images=0,
                estimated_cost=None,
                duration_ms=0.0,
                detail=asset_id if asset_id and is_asset_id(asset_id) else None,
            )
        )

    def _caller(self, session: Session) -> Caller:
        # The ACL as it is now, for the identity the provider vouched for at login.
        return self._policy.caller(session.identity)

    async def _posted(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """A form POST's session and fields, once its CSRF token and origin pass."""
        session = self._session(request)
        if session is None:
            return self._message(None, 401, "Signed out", "Sign in again, then try once more.")
        origin = request.headers.get("origin")
        if origin is not None and origin != self._origin:
            return self._message(session, 403, "Refused", "This form came from another site.")
        form = await request.form(max_files=0, max_fields=10)
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        if not self._sealer.csrf_ok(session, fields.get("csrf", "")):
            return self._message(
                session, 403, "Refused", "The form is stale; reload the page and try again."
            )
        return session, fields

    async def _posted_by(
        self, request: Request, scope: str, action: str
    ) -> tuple[Session, dict[str, str], Caller] | Response:
        """A form POST (`_posted`) on an image by someone granted `scope`; a denial
        goes to the audit log as `action`'s."""
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        session, fields = posted
        caller = self._caller(session)
        if not grants(caller.scopes, scope):
            self._record(session, action, "denied", request.path_params["asset_id"])
            return self._forbidden(session, scope)
        return session, fields, caller

    # -- logging in and out ------------------------------------------------------

    async def login(self, request: Request) -> Response:
        try:
            attempt = await self._login.begin()
        except LoginFailed as err:
            return self._message(None, 502, "Can't sign in", str(err))
        response = RedirectResponse(attempt.url, status_code=303, headers=_PAGE_HEADERS)
        expires = int(self._clock.now()) + LOGIN_SECONDS
        sealed = self._sealer.seal(
            LOGIN, {"state": attempt.state, "pkce": attempt.verifier}, expires
        )
        self._cookies.set(response, self._cookies.login, sealed, LOGIN_SECONDS)
        return response

    async def callback(self, request: Request) -> Response:
        query = request.query_params
        sealed = request.cookies.get(self._cookies.login, "")
        pending = self._sealer.unseal(LOGIN, sealed, self._clock.now()) if sealed else None
        response: Response
        if "error" in query:
            code = query["error"] if query["error"].replace("_", "").isalnum() else "error"
            response = self._message(
                None, 400, "Not signed in", f"The login provider answered: {code[:40]}."
            )
        elif pending is None or not secrets.compare_digest(
            query.get("state", "").encode(), str(pending.get("state", "")).encode()
        ):
            response = self._message(
                None, 400, "Not signed in", "This login expired or began elsewhere; sign in again."
            )
        else:
            response = await self._finish(query.get("code", ""), str(pending.get("pkce", "")))
        self._cookies.clear(response, self._cookies.login)
        return response

    async def _finish(self, code: str, verifier: str) -> Response:
        try:
            verified = await self._login.finish(code, verifier)
            value = self._sealer.session(verified.identity, self._clock.now(), self._lifetime)
        except (LoginFailed, SessionTooLarge) as err:
            return self._message(None, 400, "Not signed in", str(err))
        self._record(verified.identity.subject, "login", "ok")
        response = RedirectResponse("/gallery", status_code=303, headers=_PAGE_HEADERS)
        self._cookies.set(response, self._cookies.session, value, int(self._lifetime))
        return response

    async def logout(self, request: Request) -> Response:
        posted = await self._posted(request)
        if isinstance(posted, Response):
            return posted
        response = RedirectResponse("/gallery?signed_out=1", status_code=303)
        self._cookies.clear(response, self._cookies.session)
        return response

    # -- pages -------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            notice = "You are signed out." if "signed_out" in request.query_params else None
            return self._page("signin.html", None, title="Sign in", notice=notice)
        caller = self._caller(session)
        if not grants(caller.scopes, READ):
            return self._forbidden(session, READ)
        owner = request.query_params.get("owner") or None
        cursor = request.query_params.get("cursor") or None
        limit = min(PAGE_SIZE, self._settings.max_page_size)
        try:
            page = await self._service.list_page(caller, owner, limit, cursor)
            usage = await self._service.usage(caller)
        except ImagegateError as err:
            return self._refused(session, err)
        next_url = None
        if page.next_cursor:
            query = {"cursor": page.next_cursor, **({"owner": owner} if owner else {})}
            next_url = "/gallery?" + urlencode(query)
        others = owner is not None and owner != caller.subject
        return self._page(
            "list.html",
            session,
            title="Everyone's images" if owner == "*" else "Your images" if not others else owner,
            images=[_card(asset, show_owner=others) for asset in page.assets],
            usage=_usage_rows(usage),
            admin=caller.is_admin,
            owner=owner,
            next_url=next_url,
        )

    async def _asset(
        self, request: Request, scope: str = READ
    ) -> tuple[Session, Caller, Asset] | Response:
        session = self._session(request)
        if session is None:
            return RedirectResponse("/gallery", status_code=303)
        caller = self._caller(session)
        if not grants(caller.scopes, scope):
            return self._forbidden(session, scope)
        try:
            asset = await self._service.get(caller, request.path_params["asset_id"])
        except ImagegateError as err:
            return self._refused(session, err)
        return session, caller, asset

    async def image(self, request: Request) -> Response:
        found = await self._asset(request)
        if isinstance(found, Response):
            return found
        session, caller, asset = found
        ttl_max = self._settings.link_ttl_max_seconds
        return self._page(
            "image.html",
            session,
            title=f"Image {asset.id}",
            image=_card(asset, show_owner=asset.owner != caller.subject),
            details=_details(asset),
            may_download=may_link(caller, asset.owner),
            may_link=grants(caller.scopes, SHARE),
            may_delete=grants(caller.scopes, DELETE),
            ttl_choices=ttl_choices(ttl_max),
        )

    async def thumb(self, request: Request) -> Response:
        side = self._settings.thumbnail_px
        return await self._view(request, View(side, side, "contain", ImageFormat.PNG))

    async def preview(self, request: Request) -> Response:
        return await self._view(request, View(PREVIEW_PX, PREVIEW_PX, "contain"))

    async def _view(self, request: Request, view: View) -> Response:
        found = await self._asset(request)
        if isinstance(found, Response):
            return found
        session, _, asset = found
        try:
            data = await self._service.view(asset, view)
        except ImagegateError as err:
            return self._refused(session, err)
        return Response(
            data,
            media_type=view.output_format(asset.format).mime_type,
            headers={
                "Cache-Control": "private, max-age=3600",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )

    async def download(self, request: Request) -> Response:
        found = await self._asset(request)
        if isinstance(found, Response):
            return found
        session, caller, asset = found
        if not may_link(caller, asset.owner):
            return self._forbidden(session, SHARE)
        ttl = min(DOWNLOAD_LINK_SECONDS, self._settings.link_ttl_max_seconds)
        published = self._service.publish(asset, ttl)
        self._record(session, "download", "ok", asset.id)
        return RedirectResponse(published.url, status_code=303, headers=_PAGE_HEADERS)

    async def link(self, request: Request) -> Response:
        posted = await self._posted_by(request, SHARE, "create_link")
        if isinstance(posted, Response):
            return posted
        session, fields, caller = posted
        try:
            asset = await self._service.get(caller, request.path_params["asset_id"])
            ttl = _ttl(fields.get("ttl_seconds", ""))
            published = self._service.publish(asset, ttl)
        except ImagegateError as err:
            self._record(session, "create_link", "refused", request.path_params["asset_id"])
            return self._refused(session, err)
        self._record(session, "create_link", "ok", asset.id)
        return self._page(
            "link.html",
            session,
            title="A link to share",
            asset_id=asset.id,
            url=published.url,
            expires=_when(published.expires_at),
        )

    async def delete(self, request: Request) -> Response:
        posted = await self._posted_by(request, DELETE, "delete")
        if isinstance(posted, Response):
            return posted
        session, fields, caller = posted
        if fields.get("confirm") != "yes":
            return self._message(session, 400, "Not deleted", "Tick the box to confirm.")
        try:
            asset = await self._service.delete(caller, request.path_params["asset_id"])
        except ImagegateError as err:
            self._record(session, "delete", "refused", request.path_params["asset_id"])
            return self._refused(session, err)
        self._record(session, "delete", "ok", asset.id)
        return self._page("message.html", session, title="Deleted", message=f"{asset.id} is gone.")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:  # a fixed list: nothing in the URL becomes a path
            return Response("not found\n", status_code=404, media_type="text/plain")
        return Response(
            (HERE / "static" / name).read_bytes(),
            media_type=STATIC[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


def web_origin(url: str) -> str:
    """The origin a browser sends for pages under `url`: scheme and host in lower
    case, the port only when it isn't the scheme's default."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[scheme]
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{scheme}://{host}{port}"


def ttl_choices(maximum: int) -> list[dict[str, object]]:
    """The lifetimes a link may be given: the usual ones up to the maximum, and the
    maximum itself when it is shorter than any of them."""
    choices = [(seconds, label) for seconds, label in TTL_CHOICES if seconds <= maximum]
    if not choices:
        choices = [(maximum, f"{maximum} seconds")]
    return [{"seconds": seconds, "label": label} for seconds, label in choices]


def _ttl(text: str) -> int:
    if not text.isdigit():
        raise InvalidRequest("choose how long the link lasts")
    return int(text)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _bytes(count: int | float) -> str:
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _card(asset: Asset, show_owner: bool) -> dict[str, Any]:
    size = f"{asset.width}x{asset.height} {asset.format.extension.upper()}"
    created = _when(asset.created_at)
    return {
        "id": asset.id,
        # Not the prompt: alt text is read aloud, and the prompt follows in the details.
        "alt": f"Image {asset.id}, {size}, made {created}",
        "created": created,
        "size": size,
        "owner": asset.owner if show_owner else None,
    }


def _details(asset: Asset) -> list[dict[str, str]]:
    rows = [
        ("Prompt", asset.prompt),
        ("Revised prompt", asset.revised_prompt),
        ("Relay", asset.relay),
        ("Size", f"{asset.width}x{asset.height}, {_bytes(asset.byte_size)}"),
        ("Format", asset.format.mime_type),
        ("Cost", _cost(asset.params)),
        ("Made", _when(asset.created_at)),
        ("Owner", asset.owner),
        ("Kept until", _when(asset.keep_until) if asset.keep_until else None),
        ("Asset id", asset.id),
    ]
    return [{"label": label, "value": value} for label, value in rows if value]


def _cost(params: dict[str, Any]) -> str | None:
    cost = params.get("cost")
    if isinstance(cost, int | float):
        currency = params.get("currency", "")
        return f"{cost:.4f} {currency}".strip()
    return None


def _usage_rows(usage: dict[str, Any]) -> list[dict[str, str]]:
    used, limits = usage["usage"], usage["limits"]

    def of(value: str, limit: Any) -> str:
        return f"{value} of {limit}" if limit is not None else value

    rows = [
        ("Images today", of(str(used["images_today"]), limits.get("images_per_day"))),
        ("Spent today", of(f"{used['spend_today']:g}", limits.get("spend_per_day"))),
        ("Spent this month", of(f"{used['spend_month']:g}", limits.get("spend_per_month"))),
        ("Running now", of(str(used["running"]), limits.get("max_concurrent"))),
        (
            "Stored",
            of(
                _bytes(used["stored_bytes"]),
                _bytes(limits["max_stored_bytes"]) if limits.get("max_stored_bytes") else None,
            ),
        ),
    ]
    return [{"label": label, "value": value} for label, value in rows]
