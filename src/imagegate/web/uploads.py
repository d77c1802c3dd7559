"""The upload route: `PUT` (curl -T) or `POST` with a multipart file field (a browser
form) to a signed, single-use link made by `create_upload_link`.

Not behind MCP auth: the link is the grant, bound to its subject. Answers are JSON:
201 with the new asset; 403 a tampered link, 410 an expired one, 409 a used one, 413 a
body over the byte cap, 415 a body that is no image we accept, 507 the owner's
storage quota. A body declared too large is refused before the link is used up; once
a body is read, the link is spent, whatever the outcome.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from imagegate.core.errors import ImageRejected, QuotaExceeded, StorageError, TooLarge
from imagegate.core.ids import UploadId, is_upload_id
from imagegate.core.metrics import Metrics
from imagegate.service.links import LinkCheck
from imagegate.service.uploads import Uploads

Handler = Callable[[Request], Awaitable[Response]]

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


class UploadRoute:
    def __init__(self, uploads: Uploads, metrics: Metrics) -> None:
        self._uploads = uploads
        self._metrics = metrics

    async def upload(self, request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        exp = request.query_params.get("exp", "")
        check = self._uploads.check(upload_id, exp, request.query_params.get("sig", ""))
        if not is_upload_id(upload_id) or check is LinkCheck.BAD_SIGNATURE:
            return _error(403, "forbidden: this upload link is not valid (bad signature)")
        if check is LinkCheck.EXPIRED:
            return _error(
                410,
                f"gone: this upload link expired at {formatdate(int(exp), usegmt=True)}; "
                "ask for a new one with create_upload_link",
            )
        limit = self._uploads.max_bytes + (_FORM_OVERHEAD if request.method == "POST" else 0)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _too_large(self._uploads.max_bytes)
        try:
            body = self._body(request, limit)
        except FormParserError:
            return _error(400, "bad request: the multipart form is malformed")
        if isinstance(body, Response):
            return body
        try:
            ticket = await self._uploads.claim(UploadId(upload_id))
        except StorageError:
            return _error(503, UNAVAILABLE)
        if ticket is None:
            return _error(409, "conflict: this upload link was used already; ask for a new one")
        try:
            asset = await self._uploads.receive(ticket, self._counted(body))
        except TooLarge:
            return _too_large(self._uploads.max_bytes)
        except ImageRejected as err:
            return _error(415, f"unsupported media type: {err}")
        except QuotaExceeded as err:
            self._metrics.quota_refused(err.limit)
            return _error(507, str(err))
        except StorageError:
            try:
                await self._uploads.release(ticket.id)
            except StorageError:
                return _error(503, UNAVAILABLE + "; this link is used up: ask for a new one")
            return _error(503, UNAVAILABLE + " with the same link")
        except FormParserError:
            return _error(400, "bad request: the multipart form is malformed")
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it; nothing was stored
        return JSONResponse(
            {
                "asset_id": asset.id,
                "width": asset.width,
                "height": asset.height,
                "mime_type": asset.format.mime_type,
                "bytes": asset.byte_size,
            },
            status_code=201,
            headers=_HEADERS,
        )

    async def _counted(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The image's bytes, counted as they come in, whether or not they are kept."""
        async for chunk in body:
            self._metrics.transferred("upload", len(chunk))
            yield chunk

    def _body(self, request: Request, limit: int) -> AsyncIterator[bytes] | Response:
        """The image's bytes as they stream in; the parser of a form is made here, so
        a form it refuses costs no link."""
        if request.method == "PUT":
            return request.stream()
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            return _error(
                415, "unsupported media type: POST a multipart/form-data file field, or PUT"
            )
        return _first_file(request, _FirstFile(boundary), limit)


_FORM_OVERHEAD = 64 * 1024
"""What a multipart form may add around the file (boundaries, part headers)."""


UNAVAILABLE = "unavailable: the image could not be stored; try again later"


def _too_large(limit: int) -> Response:
    return _error(413, f"payload too large: an upload can be at most {limit} bytes")


class _FirstFile:
    """A multipart parser that keeps the data of the first part with a file name."""

    def __init__(self, boundary: bytes) -> None:
        self.field = b""
        self.value = b""
        self.current = False
        self.done = False
        self.pending: list[bytes] = []
        self.parser = MultipartParser(
            boundary,
            {
                "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end,
                "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end,
            },
        )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        if self.field.lower() == b"content-disposition":
            _, params = parse_options_header(self.value)
            self.current = b"filename" in params and not self.done
        self.field, self.value = b"", b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current:
            self.pending.append(data[start:end])

    def on_part_end(self) -> None:
        if self.current:
            self.done, self.current = True, False

    def take(self) -> list[bytes]:
        taken, self.pending = self.pending, []
        return taken


async def _first_file(request: Request, found: _FirstFile, limit: int) -> AsyncIterator[bytes]:
    """The bytes of the form's first part that carries a file name, as they stream in;
    parts before it are skipped, nothing after it is read, and the whole form may be
    at most `limit` bytes."""
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > limit:
            raise TooLarge(f"the form is larger than {limit} bytes")
        found.parser.write(chunk)
        for data in found.take():
            yield data
        if found.done:
            return
    found.parser.finalize()
    for data in found.take():
        yield data
    if not found.done:
        raise ImageRejected("the form has no file field")


def upload_routes(
    uploads: Uploads, metrics: Metrics | None = None
) -> list[tuple[str, list[str], Handler]]:
    """(path, methods, handler) of the upload route, for the HTTP app."""
    route = UploadRoute(uploads, metrics or Metrics())
    return [("/uploads/{upload_id}", ["PUT", "POST"], route.upload)]
