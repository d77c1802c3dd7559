"""Downloads sent by nginx (`[storage] accel_redirect`), through the shipped
packaging/examples/nginx.conf with its internal location uncommented: imagegate checks
each link and names the file, nginx sends it; every refusal is still imagegate's, and
the internal location can't be asked for directly.

The last test runs nginx's workers as www-data, as Debian does, to check what the README
tells the operator to do (one ACL entry on the state directory): it lets nginx read the
blobs, and nothing else of the state directory.
"""

import io
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagegate.core.ids import parse_asset_id
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server, structured, team_files
from tests.services._process import ServiceUnavailable, free_port
from tests.services.nginx import running_nginx

EXAMPLE = Path(__file__).parents[2] / "packaging" / "examples" / "nginx.conf"
PREFIX = "/_imagegate_blobs/"
SCOPES = '["images:generate", "images:read", "images:share", "images:delete", "relay:*"]'
ACL = f'[subjects."token:alice"]\nscopes = {SCOPES}\n[subjects."token:bob"]\nscopes = {SCOPES}\n'
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("alice", "bob")}


def shipped_example(port: int, backend: str, blobs: Path, log: Path) -> str:
    """The example with its accel_redirect location uncommented, for one imagegate on
    this machine: changed only where it names this machine."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    start = lines.index(f"    # location {PREFIX} {{\n")
    end = lines.index("    # }\n", start)
    block = lines[start : end + 1]
    lines[start : end + 1] = ["    " + line.removeprefix("    # ") for line in block]
    text = "".join(lines)
    text, aliases = re.subn(r"alias /var/lib/imagegate/blobs/;", f"alias {blobs}/;", text)
    text, listens = re.subn(r"(?m)^(\s*)listen 443 ssl;", rf"\g<1>listen 127.0.0.1:{port};", text)
    text, certificates = re.subn(r"(?m)^\s*ssl_certificate.*\n", "", text)
    text, logs = re.subn(r"access_log /var/log/nginx/\S+", f"access_log {log}", text)
    servers = iter([f"    server {backend};\n", ""])  # one imagegate: the first, not the second
    text, upstreams = re.subn(r"(?m)^\s*server [\d.]+:\d+.*\n", lambda _: next(servers), text)
    counts = (aliases, listens, certificates, logs, upstreams)
    assert counts == (1, 1, 2, 1, 2), f"the example changed shape: {counts}"
    return text


def shipped_location() -> list[str]:
    """The example's commented-out internal location, uncommented, without comments."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(f"    # location {PREFIX} {{")
    block = lines[start : lines.index("    # }", start) + 1]
    return [line.removeprefix("    # ").split("#")[0].rstrip() for line in block]


def test_the_readme_shows_the_shipped_location() -> None:
    readme = (EXAMPLE.parents[2] / "README.md").read_text()
    start = readme.index("```nginx\n", readme.index("### Sent by nginx")) + len("```nginx\n")
    shown = [line.split("#")[0].rstrip() for line in readme[start:].split("```")[0].splitlines()]
    assert shown == shipped_location()


@dataclass
class Front:
    """imagegate, and the nginx in front of it."""

    server: RunningServer
    url: str
    log: Path
    clock: ManualClock

    async def call(self, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
        return await structured(self.server, TOKENS[who], tool, **arguments)

    async def image(self, who: str = "alice") -> dict[str, Any]:
        made = await self.call(who, "generate_image", prompt=who, size="256x192")
        image: dict[str, Any] = made["images"][0]
        assert image["url"].startswith(f"{self.url}/files/")  # public_url: links name nginx
        return image

    async def blob(self, image: dict[str, Any]) -> str:
        """The image's blob below the blob folder, `<aa>/<sha256>.png`."""
        asset = await self.server.app.service.assets.get(None, parse_asset_id(image["asset_id"]))
        return asset.blob.relative_path

    def logged(self) -> list[str]:
        """The paths nginx logged, as they were after any internal redirect ($uri)."""
        return re.findall(r'"(?:GET|HEAD) (\S+)"', self.log.read_text())


@contextmanager
def nginx_before(server: RunningServer, port: int, directory: Path, user: str) -> Iterator[Path]:
    """nginx from the example on `port`, in front of `server`; its access log."""
    log = directory / "access.log"
    blobs = server.settings.state_dir / "blobs"
    backend = server.base_url.removeprefix("http://")
    try:
        with running_nginx(directory, shipped_example(port, backend, blobs, log), port, user):
            yield log
    except ServiceUnavailable as missing:
        pytest.skip(str(missing))


@asynccontextmanager
async def fronted(
    state_dir: Path, clock: ManualClock, directory: Path, user: str = "root"
) -> AsyncIterator[Front]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    files = team_files(directory, ACL, TOKENS)
    accel = {"accel_redirect": PREFIX}
    async with running_server(state_dir, clock, public_url=url, storage=accel, **files) as server:
        with nginx_before(server, port, directory / "nginx", user) as log:
            yield Front(server, url, log, clock)


@pytest.fixture
async def front(state_dir: Path, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Front]:
    async with fronted(state_dir, clock, tmp_path) as running:
        yield running


async def fetch(url: str, method: str = "GET", **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, headers=headers)


async def test_nginx_sends_the_file_with_imagegates_headers(front: Front) -> None:
    image = await front.image()
    blob = await front.blob(image)
    data = (front.server.settings.state_dir / "blobs" / blob).read_bytes()

    response = await fetch(image["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == str(image["bytes"]) == str(len(data))
    # The test's nginx has no mime.types: its own type would be text/plain.
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == (
        f'inline; filename="imagegate-{image["asset_id"]}.png"'
    )
    assert re.fullmatch(r"private, max-age=\d+", response.headers["cache-control"])
    assert response.headers["etag"] == f'"{blob[3:-4]}"'  # the SHA-256, not nginx's own
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert "x-accel-redirect" not in response.headers
    # The bytes came from nginx's internal location ...
    assert front.logged() == [PREFIX + blob]
    # ... because imagegate itself answered with an empty body that names the file.
    direct = await fetch(image["url"].replace(front.url, front.server.base_url))
    assert (direct.status_code, direct.content) == (200, b"")
    assert direct.headers["x-accel-redirect"] == PREFIX + blob
    assert direct.headers["content-type"] == "image/png"


async def test_ranges_head_and_revalidation_go_through_nginx(front: Front) -> None:
    image = await front.image()
    blob = await front.blob(image)
    data = (front.server.settings.state_dir / "blobs" / blob).read_bytes()
    size = len(data)

    part = await fetch(image["url"], Range="bytes=100-1099")
    assert part.status_code == 206
    assert part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    assert part.headers["content-type"] == "image/png"
    assert part.headers["etag"] == f'"{blob[3:-4]}"'
    tail = await fetch(image["url"], Range="bytes=-10")
    assert (tail.status_code, tail.content) == (206, data[-10:])

    head = await fetch(image["url"], "HEAD")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(size)
    assert head.headers["content-type"] == "image/png"
    assert "x-accel-redirect" not in head.headers

    etag = f'"{blob[3:-4]}"'
    unchanged = await fetch(image["url"], **{"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    # imagegate answered that one itself: nginx went to the internal location 3 times.
    assert front.logged().count(PREFIX + blob) == 3
    # nginx answers this one, from the file's time, after imagegate's check.
    since = {"If-Modified-Since": head.headers["last-modified"]}
    assert (await fetch(image["url"], **since)).status_code == 304
    assert front.logged().count(PREFIX + blob) == 4


async def test_a_view_is_sent_by_imagegate(front: Front) -> None:
    image = await front.image()
    made = await front.call("alice", "create_download_link", asset_id=image["asset_id"], width=64)
    response = await fetch(made["images"][0]["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as view:
        assert view.size == (64, 48)
    assert not any(path.startswith(PREFIX) for path in front.logged())


async def _spoil_signature(front: Front, image: dict[str, Any]) -> str:
    url: str = image["url"]
    return url[:-1] + ("A" if not url.endswith("A") else "B")


async def _anothers_image(front: Front, image: dict[str, Any]) -> str:
    """Bob's link, pointed at Alice's image."""
    bobs = await front.image("bob")
    url: str = bobs["url"]
    return url.replace(bobs["asset_id"], image["asset_id"])


async def _expire(front: Front, image: dict[str, Any]) -> str:
    front.clock.advance(front.server.settings.link_ttl_seconds)
    url: str = image["url"]
    return url


async def _revoke(front: Front, image: dict[str, Any]) -> str:
    await front.call("alice", "revoke_links", asset_id=image["asset_id"])
    url: str = image["url"]
    return url


async def _delete(front: Front, image: dict[str, Any]) -> str:
    await front.call("alice", "delete_image", asset_id=image["asset_id"])
    url: str = image["url"]
    return url


async def _internal_location(front: Front, image: dict[str, Any]) -> str:
    return front.url + PREFIX + await front.blob(image)


Spoil = Callable[[Front, dict[str, Any]], Awaitable[str]]


@pytest.mark.parametrize(
    ("spoil", "status", "says"),
    [
        (_spoil_signature, 403, "not valid (bad signature)"),
        (_anothers_image, 403, "not valid (bad signature)"),
        (_expire, 410, "this download link expired"),
        (_revoke, 410, "this link was revoked"),
        (_delete, 404, "this image was deleted"),
        (_internal_location, 404, "404 Not Found"),
    ],
    ids=["bad-signature", "anothers-image", "expired", "revoked", "deleted", "internal-location"],
)
async def test_refusals_through_nginx(front: Front, spoil: Spoil, status: int, says: str) -> None:
    image = await front.image()
    blob = await front.blob(image)
    assert (await fetch(image["url"])).status_code == 200  # it worked until now
    response = await fetch(await spoil(front, image))
    assert response.status_code == status
    assert says in response.text
    assert not response.headers["content-type"].startswith("image/")
    assert "x-accel-redirect" not in response.headers
    # Only the request that worked reached the file; a direct one was refused there.
    expected = [PREFIX + blob] * (2 if spoil is _internal_location else 1)
    assert [path for path in front.logged() if path.startswith(PREFIX)] == expected


def _www_data_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("runs nginx's workers as www-data: needs root")
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        pytest.skip("no www-data user")
    for tool in ("setfacl", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing; `make test` installs acl (as root, with apt)")


def let_www_data_through(directory: Path) -> None:
    """What the README tells the operator to run."""
    acl = subprocess.run(
        ["setfacl", "-m", "u:www-data:x,g::-", str(directory)], capture_output=True, check=False
    )
    if acl.returncode != 0:
        pytest.skip(f"no ACLs on this file system: {acl.stderr.decode().strip()}")


def as_www_data(*command: str) -> bool:
    """Whether the command succeeds as www-data, without any group."""
    ran = subprocess.run(
        ["setpriv", "--reuid=www-data", "--regid=www-data", "--clear-groups", *command],
        capture_output=True,
        check=False,
    )
    return ran.returncode == 0


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory others may pass through (pytest's own are 0700), as /var/lib is."""
    directory = Path(tempfile.mkdtemp(prefix="imagegate-accel-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory)


async def test_nginx_as_www_data_reads_the_blobs_and_nothing_else(
    reachable_dir: Path, clock: ManualClock, tmp_path: Path
) -> None:
    _www_data_or_skip()
    state_dir = reachable_dir / "state"
    old = os.umask(0o022)  # what a loose umask makes, imagegate tightens
    try:
        async with fronted(state_dir, clock, tmp_path, user="www-data") as front:
            image = await front.image()
            blob = state_dir / "blobs" / await front.blob(image)
            # Without the ACL entry, nginx's user can't pass the state directory.
            assert (await fetch(image["url"])).status_code == 403
            let_www_data_through(state_dir)
            response = await fetch(image["url"])
            assert response.status_code == 200
            assert response.content == blob.read_bytes()
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o710
    assert as_www_data("cat", str(blob))
    for secret in ("imagegate.sqlite3", "link-signing.key"):
        assert (state_dir / secret).exists()
        assert not as_www_data("cat", str(state_dir / secret)), secret
    for folder in (state_dir, state_dir / "blobs", blob.parent, state_dir / "tmp"):
        assert not as_www_data("ls", str(folder)), folder
