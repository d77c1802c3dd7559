"""The one exception tree of imagegate.

    ImagegateError            anything this package raises on purpose; its message is
    │                         written for the caller and never holds a secret
    ├── ConfigError           configuration is unusable; stops start-up (file, key, reason)
    │   └── SchemaError       the database's schema is older or newer than expected
    ├── InvalidRequest        a tool or CLI argument is wrong; says what is allowed
    ├── NotFound              no such asset *for this caller* (another owner's looks the same)
    ├── PermissionDenied      the caller lacks a scope the request needs
    ├── QuotaExceeded         a per-subject limit is reached; says which, usage, retry after
    ├── NotConfirmed          the user declined (or could not be asked about) a paid call
    ├── ImageRejected         bytes are not an acceptable image (format, size, pixels)
    │   └── TooLarge          more bytes than the limit
    ├── RelayError            the upstream failed; message cleaned of anything secret
    │   └── ContentRefused    the upstream's moderation refused the prompt or image
    └── StorageError          the asset store could not read or write

Foreign exceptions (httpx, sqlite3, OSError, PIL) are translated at the boundary
where they occur. Mapping to MCP errors happens in exactly one place:
`imagegate.mcp.middleware.domain_errors`.
"""

import traceback


class ImagegateError(Exception):
    """Base of every deliberate error; `str(err)` is safe to show a client."""


class ConfigError(ImagegateError):
    """The configuration cannot be used; start-up stops with this message."""


class SchemaError(ConfigError):
    """The database's schema is not the one this code expects; start-up stops and the
    message says which command fixes it."""


class InvalidRequest(ImagegateError):
    """An argument is out of range or unsupported."""


class NotFound(ImagegateError):
    """The asset does not exist or belongs to someone else (indistinguishable)."""


class PermissionDenied(ImagegateError):
    """The caller lacks a scope; the message says which: `forbidden: needs scope X`."""


class QuotaExceeded(ImagegateError):
    """A limit is reached. Refused before any upstream request."""

    def __init__(
        self, limit: str, usage: str, retry_after: int | None, hint: str | None = None
    ) -> None:
        self.limit = limit
        self.retry_after = retry_after
        when = hint or (
            f"retry after {retry_after} s"
            if retry_after is not None
            else "retry when one of your running calls finishes"
        )
        super().__init__(f"quota exceeded: {limit} ({usage}); {when}")


class NotConfirmed(ImagegateError):
    """A paid call the user did not confirm; no upstream request was made."""


class ImageRejected(ImagegateError):
    """Bytes that are not an image we accept."""


class TooLarge(ImageRejected):
    """More bytes than the limit allows."""


class RelayError(ImagegateError):
    """An upstream relay failed."""


class ContentRefused(RelayError):
    """The upstream's safety system refused; retrying the same request won't help."""


class StorageError(ImagegateError):
    """The asset store failed to read or write."""


def where(err: BaseException) -> str:
    """An unexpected error's type and innermost frames, never its message: a message
    can quote what it failed on (a request body, a prompt, a path)."""
    frames = traceback.extract_tb(err.__traceback__)[-3:]
    trail = " < ".join(f"{_short(frame.filename)}:{frame.lineno}" for frame in reversed(frames))
    return f"{type(err).__name__} at {trail or 'an unknown place'}"


def _short(filename: str) -> str:
    for root in ("/site-packages/", "/src/"):
        if root in filename:
            return filename.rsplit(root, 1)[1]
    return filename


_RECORDED: dict[str, type[ImagegateError]] = {}


def recorded(err: ImagegateError) -> dict[str, str]:
    """An error as a job keeps it: its kind and its message (safe to show)."""
    return {"kind": type(err).__name__, "message": str(err)}


def from_record(record: dict[str, str]) -> ImagegateError:
    """The error a job recorded, to raise again for its caller: the same kind (so it
    maps to the same MCP error) and the same message."""
    if not _RECORDED:
        pending: list[type[ImagegateError]] = [ImagegateError]
        while pending:
            kind = pending.pop()
            _RECORDED[kind.__name__] = kind
            pending += kind.__subclasses__()
    kind = _RECORDED.get(record.get("kind", ""), ImagegateError)
    err = kind.__new__(kind)
    Exception.__init__(err, record.get("message", "the job failed"))
    return err
