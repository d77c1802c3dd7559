"""HTTP routes outside MCP: signed downloads, liveness and readiness.

These routes are not behind MCP auth on purpose: a download link carries its own
signature. The file served is found through the asset record; nothing in the URL is
ever used as a path.
"""

from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from imagegate import __version__
from imagegate.clock import Clock
from imagegate.errors import NotFound
from imagegate.ids import parse_asset_id
from imagegate.service import ImageService
from imagegate.store.links import LinkCheck, LinkSigner

_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _plain(status: int, text: str) -> Response:
    return PlainTextResponse(
        text + "\n", status_code=status, headers={"Cache-Control": "no-store", **_SECURITY_HEADERS}
    )


class Routes:
    def __init__(self, service: ImageService, signer: LinkSigner, clock: Clock) -> None:
        self._service = service
        self._signer = signer
        self._clock = clock

    async def download(self, request: Request) -> Response:
        name = request.path_params["name"]
        raw_id, _, extension = name.partition(".")
        now = self._clock.now()
        check = self._signer.check(
            raw_id, request.query_params.get("exp", ""), request.query_params.get("sig", ""), now
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
            asset = self._service.store.get(None, parse_asset_id(raw_id))
        except NotFound:
            return _plain(404, "not found: this image was deleted")
        path = self._service.store.blob_path(asset)
        if extension != asset.format.extension or not path.is_file():
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
        return FileResponse(path, media_type=asset.format.mime_type, headers=headers)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(self, request: Request) -> Response:
        if self._service.store.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": "asset store unavailable"}, 503)
