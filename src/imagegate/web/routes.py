"""HTTP routes outside MCP: signed downloads, liveness and readiness.

These routes are not behind MCP auth on purpose: a download link carries its own
signature. The bytes served are found through the asset record; nothing in the URL is
ever used as a path. A blob the storage keeps as a local file is sent from it (zero
copy), or, with `storage.accel_redirect`, named to nginx in `X-Accel-Redirect` for
nginx to send. One in a bucket is, by default, a redirect to a short-lived URL the
bucket signs, after imagegate's own checks (signature, expiry, revocation, the image
still there); with `storage.serve = "proxy"`, or for HEAD, it is streamed through.
Views (resized or converted copies) are rendered in memory and always sent by imagegate.
"""

import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from email.utils import formatdate

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from imagegate import __version__
from imagegate.core.clock import Clock
from imagegate.core.errors import InvalidRequest, NotFound, StorageError
from imagegate.core.ids import parse_asset_id
from imagegate.core.metrics import Metrics
from imagegate.core.views import PARAMETERS as VIEW_PARAMETERS
from imagegate.core.views import View
from imagegate.service.images import ImageService
from imagegate.service.links import LinkCheck, LinkSigner
from imagegate.storage.interfaces import Asset

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("imagegate.web")
READY_FOR_SECONDS = 1.0
UNAVAILABLE = "unavailable: the image store can't be reached; try again"

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _view_of(request: Request, max_pixels: int) -> View | None:
    """The view a link asks for in its parameters; None for the image as stored."""
    query = request.query_params
    if not any(name in query for name in VIEW_PARAMETERS):
        return None
    return View.parsed(query, max_pixels)


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(
        text + "\n", status_code=status, headers={"Cache-Control": "no-store", **_SECURITY_HEADERS}
    )


class _FileResponse(FileResponse):
    chunk_size = 1 << 18
    """Starlette reads 64 KiB at a time, each read a hand-off to a worker thread and
    each piece a send: 48 of each for a 3 MB image. Not larger: a client that stops
    reading holds one piece in memory per connection (256 per address by default)."""


def accel_response(prefix: str, asset: Asset, headers: dict[str, str]) -> Response:
    """A download every check has passed, for nginx to send: an empty 200 naming the
    blob below nginx's internal location (`prefix` maps to the blob folder). The name
    comes from the asset record, never from the request. nginx keeps Content-Type,
    Content-Disposition and Cache-Control from this answer and serves ranges, HEAD and
    If-Modified-Since from the file; the other headers its location must add (the
    shipped nginx.conf passes them on with $upstream_http_*)."""
    return Response(
        status_code=200,
        media_type=asset.format.mime_type,
        headers={**headers, "X-Accel-Redirect": prefix + asset.blob.relative_path},
    )


class Routes:
    def __init__(
        self,
        service: ImageService,
        signer: LinkSigner,
        clock: Clock,
        metrics: Metrics | None = None,
    ) -> None:
        self._service = service
        self._signer = signer
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._redirect = service.settings.storage.serve == "redirect"
        self._accel = service.settings.storage.accel_redirect
        self._ready = False
        self._ready_at = -math.inf

    async def download(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw_id, _, extension = name.partition(".")
        now = self._clock.now()
        try:
            view = _view_of(request, self._service.settings.max_image_pixels)
        except InvalidRequest as err:
            return _plain(400, f"bad request: {err}")
        generation = request.query_params.get("g", "")
        check = self._signer.check(
            raw_id,
            request.query_params.get("exp", ""),
            request.query_params.get("sig", ""),
            now,
            view=view.key if view else "",
            generation=generation,
        )
        if check is LinkCheck.BAD_SIGNATURE:
            return _plain(403, "forbidden: this download link is not valid (bad signature)")
        expires_at = int(request.query_params["exp"])
        if check is LinkCheck.EXPIRED:
            return _plain(
                410,
                f"gone: this download link expired at {formatdate(expires_at, usegmt=True)}; "
                "ask for a new one with get_image or create_download_link",
            )
        try:
            asset = await self._service.assets.get(None, parse_asset_id(raw_id))
        except NotFound:
            return _plain(404, "not found: this image was deleted")
        except StorageError as err:
            log.warning("download of %s: %s", raw_id, err)
            return _plain(503, UNAVAILABLE)
        if int(generation or 0) < asset.link_generation:
            return _plain(
                410,
                "gone: this link was revoked (revoke_links); ask the image's owner for a "
                "new one with create_download_link",
            )
        served = view.output_format(asset.format) if view else asset.format
        if extension != served.extension:
            return _plain(
                404, "not found: the link names another file type; use it as it was given"
            )
        if view is not None:
            return await self._view(request, asset, view, expires_at, now)
        path = self._service.assets.local_path(asset)
        if path is not None and not path.is_file():
            return _plain(404, "not found: this image was deleted")
        etag = f'"{asset.sha256}"'
        headers = {
            "ETag": etag,
            "Cache-Control": f"private, max-age={max(0, expires_at - int(now))}",
            "Content-Disposition": f'inline; filename="imagegate-{asset.id}.{extension}"',
            **_SECURITY_HEADERS,
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if path is not None:
            self._sending(request, asset.byte_size)
            if self._accel is not None:
                return accel_response(self._accel, asset, headers)
            return _FileResponse(path, media_type=asset.format.mime_type, headers=headers)
        if self._redirect and request.method == "GET":  # a URL signed for GET can't HEAD
            try:
                # Never longer than the link itself has left.
                url = await self._service.assets.presigned_url(asset, expires_at - int(now))
            except StorageError as err:
                log.warning("download of %s: %s", asset.id, err)
                return _plain(503, UNAVAILABLE)
            if url is not None:
                return RedirectResponse(
                    url, 302, {"Cache-Control": "no-store", **_SECURITY_HEADERS}
                )
        return await self._stream(asset, headers)

    async def _view(
        self, request: Request, asset: Asset, view: View, expires_at: int, now: float
    ) -> Response:
        """A resized or converted copy, rendered (or taken from the cache) now."""
        fmt = view.output_format(asset.format)
        etag = '"' + hashlib.sha256(f"{asset.sha256}/{view.key}".encode()).hexdigest() + '"'
        headers = {
            "ETag": etag,
            "Cache-Control": f"private, max-age={max(0, expires_at - int(now))}",
            "Content-Disposition": (
                f'inline; filename="imagegate-{asset.id}-view.{fmt.extension}"'
            ),
            **_SECURITY_HEADERS,
        }
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        try:
            data = await self._service.view(asset, view)
        except NotFound:
            return _plain(404, "not found: this image was deleted")
        except StorageError as err:
            log.warning("view of %s: %s", asset.id, err)
            return _plain(503, UNAVAILABLE)
        self._sending(request, len(data))
        return Response(data, media_type=fmt.mime_type, headers=headers)

    def _sending(self, request: Request, byte_count: int) -> None:
        """Count a body about to be sent (HEAD sends none), by imagegate or by nginx on
        its behalf (accel_redirect). A redirect to the bucket is not counted: the bucket
        sends the bytes."""
        if request.method == "GET":
            self._metrics.transferred("download", byte_count)

    async def _stream(self, asset: Asset, headers: dict[str, str]) -> Response:
        """Send a blob that is not a local file; the store is opened before the status
        line, so a missing blob is a 404, not a broken 200."""
        held = AsyncExitStack()
        try:
            reader = await held.enter_async_context(self._service.assets.open(asset))
        except NotFound:
            await held.aclose()
            return _plain(404, "not found: this image was deleted")
        except StorageError as err:
            await held.aclose()
            log.warning("download of %s: %s", asset.id, err)
            return _plain(503, UNAVAILABLE)

        async def body() -> AsyncIterator[bytes]:
            async with held:
                try:
                    async for chunk in reader.chunks():
                        yield chunk
                        self._metrics.transferred("download", len(chunk))
                except StorageError as err:
                    # The status line is gone: all that is left is to end short, which
                    # the client sees against Content-Length.
                    log.warning("download of %s broke off: %s", asset.id, err)

        headers = {**headers, "Content-Length": str(reader.size)}
        # The background task closes the store when the body was never read (HEAD, a
        # client that left); after a full read it finds it closed already.
        return StreamingResponse(
            body(),
            media_type=asset.format.mime_type,
            headers=headers,
            background=BackgroundTask(held.aclose),
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(self, request: Request) -> Response:
        # Anyone may ask, and each answer costs a database query and a bucket listing:
        # one answer serves for a second.
        if time.monotonic() - self._ready_at >= READY_FOR_SECONDS:
            self._ready = await self._service.assets.ready()
            self._ready_at = time.monotonic()
        if self._ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": "asset store unavailable"}, 503)

    def table(self) -> list[tuple[str, list[str], Handler]]:
        """(path, methods, handler) of every route, for the HTTP app."""
        return [("/files/{name}", ["GET", "HEAD"], self.download)]

    def probes(self) -> list[tuple[str, list[str], Handler]]:
        """The liveness and readiness probes, which answer whatever Host names this
        server: a balancer or an orchestrator asks each replica by its own address."""
        return [("/healthz", ["GET"], self.healthz), ("/readyz", ["GET"], self.readyz)]
