"""The command line against a team server: `generate`, `edit` and `pull` over MCP.

With `--server URL` (or IMAGEGATE_SERVER) and a token (IMAGEGATE_TOKEN, or
`--token-file`, mode 0600), the commands run through that server: its relays, ACL,
quotas, paid:auto and audit apply. Progress from the server is printed with the
elapsed time; a job still running when the call answers is waited for with
`get_job`; the images are downloaded from their signed links into `--out` (a temp
file renamed into place: never half a file); the JSON report is the local command's,
with each image's asset id. Local files for `edit` go up through upload links first.

A paid relay asks on the terminal (the server's elicitation) when stdin is one;
otherwise the client does not offer to answer, and the server's refusal says why
and how an operator can grant paid:auto.
"""

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.elicitation import ElicitResult
from fastmcp.exceptions import ToolError

from imagegate.core.errors import ConfigError, ImagegateError, InvalidRequest
from imagegate.core.secrets import read_secret_file


class RemoteError(ImagegateError):
    """The server refused, or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Remote:
    url: str
    """The MCP endpoint."""
    token: str


def remote_of(server: str | None, token_file: Path | None) -> Remote | None:
    """The server to use, from --server or IMAGEGATE_SERVER; None: work locally."""
    server = server or os.environ.get("IMAGEGATE_SERVER") or None
    if server is None:
        return None
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--server {server!r}: give the server's http(s) URL")
    url = server if parts.path not in ("", "/") else server.rstrip("/") + "/mcp"
    if token_file is not None:
        token = read_secret_file(token_file)
    else:
        token = os.environ.get("IMAGEGATE_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "a server needs a token: set IMAGEGATE_TOKEN or pass --token-file (mode 0600)"
        )
    return Remote(url, token)


def plain_http_warning(url: str) -> str | None:
    """A warning when the token would cross a network in the clear."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host in ("localhost", "::1") or host.startswith("127."):
        return None
    return f"warning: the token goes to {host} over plain http; use https"


Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def _ask_on_terminal(
    message: str, response_type: Any, params: Any, context: Any
) -> ElicitResult[Any]:
    """A paid relay's question, answered by the person at the terminal (asked on
    stderr: stdout is the report's)."""
    print(f"{message} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = await asyncio.to_thread(sys.stdin.readline)
    if answer.strip().lower() in ("y", "yes"):
        return ElicitResult(action="accept", content={"value": True})
    return ElicitResult(action="decline")


class Session:
    """One MCP connection to the server, printing its progress."""

    def __init__(self, remote: Remote, say: Say = _stderr) -> None:
        self._remote = remote
        self._say = say
        warning = plain_http_warning(remote.url)
        if warning is not None:
            say(warning)
        self._started = time.monotonic()
        handler = _ask_on_terminal if sys.stdin.isatty() else None
        self._client: Client[Any] = Client(
            remote.url,
            auth=BearerAuth(remote.token),
            progress_handler=self._progress,
            elicitation_handler=handler,
        )
        self._held = AsyncExitStack()

    async def __aenter__(self) -> "Session":
        try:
            await self._held.enter_async_context(self._client)
        except Exception as err:  # httpx2 and MCP errors alike: one clear line
            raise RemoteError(f"cannot reach {self._remote.url}: {_reason(err)}") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._held.aclose()

    async def _progress(self, progress: float, total: float | None, message: str | None) -> None:
        percent = f" {progress:3.0f}%" if total == 100 else ""
        elapsed = time.monotonic() - self._started
        self._say(f"[{elapsed:6.1f}s]{percent} {message or ''}".rstrip())

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self._client.call_tool(tool, arguments)
        except ToolError as err:
            raise RemoteError(str(err)) from None
        except Exception as err:  # the connection or the protocol: one clear line
            raise RemoteError(f"{tool} failed: {_reason(err)}") from None
        structured = result.structured_content or {}
        if structured.get("status") == "running" and tool != "get_job":
            return await self.finish(structured["job_id"])
        return structured

    async def finish(self, job_id: str) -> dict[str, Any]:
        """Wait for a job the server still runs, a bounded wait at a time."""
        while True:
            done = await self.call("get_job", {"job_id": job_id})
            if done.get("status") != "running":
                return done

    async def upload(self, path: Path) -> str:
        """Send a local image through an upload link; its new asset id."""
        link = await self.call("create_upload_link", {"filename": path.name})

        async def body() -> AsyncIterator[bytes]:
            with path.open("rb") as source:
                while chunk := source.read(1 << 20):
                    yield chunk

        try:
            async with httpx.AsyncClient(timeout=300) as http:
                response = await http.put(link["upload_url"], content=body())
        except OSError as err:
            raise InvalidRequest(f"{path}: {err.strerror or 'cannot read'}") from None
        except httpx.HTTPError as err:
            raise RemoteError(f"upload of {path.name} failed: {_reason(err)}") from None
        if response.status_code != 201:
            try:
                said = response.json().get("error", response.text)
            except ValueError:
                said = response.text
            raise RemoteError(f"upload of {path.name} refused: {said}")
        asset_id: str = response.json()["asset_id"]
        return asset_id


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def not_confirmed(structured: dict[str, Any]) -> str | None:
    """The refusal of a paid call that was not confirmed, if this is one."""
    outcome = structured.get("confirmation")
    if structured.get("images") == [] and outcome not in (None, "accepted", "paid:auto"):
        if outcome == "unsupported":
            return (
                "not confirmed: the relay costs money and this command can't ask (stdin "
                "is not a terminal); no request was made. An operator can grant this "
                "caller paid:auto in the ACL."
            )
        return f"not confirmed ({outcome}): no image was made and nothing was spent"
    return None


async def download(
    images: list[dict[str, Any]], directory: Path, explicit: Path | None
) -> list[dict[str, Any]]:
    """Each image from its link into `directory` (or the one `explicit` file): the
    local report of what was written."""
    written = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A server that keeps images in a bucket answers a link with a redirect to it.
    async with httpx.AsyncClient(timeout=300, follow_redirects=True) as http:
        for image in images:
            extension = image["mime_type"].split("/", 1)[1].replace("jpeg", "jpg")
            target = (
                explicit or directory / f"imagegate-{stamp}-{image['asset_id'][4:10]}.{extension}"
            )
            url = image.get("url")
            if not url:
                raise RemoteError(f"{image['asset_id']}: the server gave no download link")
            await _fetch(http, url, target)
            written.append(
                {
                    "asset_id": image["asset_id"],
                    "path": str(target.resolve()),
                    "size": f"{image['width']}x{image['height']}",
                    "mime_type": image["mime_type"],
                    "bytes": image["bytes"],
                    "params": image.get("params", {}),
                }
            )
    return written


async def _fetch(http: httpx.AsyncClient, url: str, target: Path) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".imagegate-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            async with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RemoteError(f"download failed: HTTP {response.status_code}")
                async for chunk in response.aiter_bytes():
                    out.write(chunk)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except httpx.HTTPError as err:
        raise RemoteError(f"download failed: {_reason(err)}") from None
    finally:
        if os.path.exists(temp):  # noqa: ASYNC240 - a local temp file, gone at once
            os.unlink(temp)
