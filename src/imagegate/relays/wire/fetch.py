"""Fetch an image URL that an upstream returned instead of image data.

Such a URL comes from the upstream, so it is treated as hostile: only https, only hosts
whose every address is public (IP literals checked directly, names resolved), never a
redirect, never the relay's key, the response size capped. Loopback is allowed only
when the relay itself is on loopback (a local fake or a local relay), so a remote relay
can't make imagegate fetch from its own host. The URL never reaches a message or a
log (it may carry a signature); only its host is logged.
"""

import ipaddress
import logging
import socket

import anyio
import httpx

from imagegate.core.cpu import fed_while_read, run_cpu
from imagegate.core.errors import RelayError
from imagegate.core.staging import StagedBlob
from imagegate.relays.wire.http import Upstream

log = logging.getLogger("imagegate.relays")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ImageFetcher:
    def __init__(
        self, relay: str, client: httpx.AsyncClient, upstream: Upstream, base_url: str
    ) -> None:
        self._relay = relay
        self._client = client
        self._upstream = upstream
        self._loopback_relay = is_loopback_host(httpx.URL(base_url).host)

    async def fetch(self, url: str, staged: StagedBlob) -> None:
        """Stream the image at `url` into `staged`; RelayError if refused or failed."""
        await self._check(url)
        failed = f"relay {self._relay!r}: its image URL could not be fetched"
        request = self._client.build_request("GET", url)
        try:
            with anyio.fail_after(self._upstream.timeouts.first_byte):
                response = await self._client.send(request, stream=True, follow_redirects=False)
        except TimeoutError:
            raise RelayError(f"{failed} (no answer in time)") from None
        except httpx.HTTPError as err:
            raise RelayError(f"{failed} ({type(err).__name__})") from None
        try:
            if not response.is_success:
                raise RelayError(f"{failed} (HTTP {response.status_code})")
            # Written, hashed and checked in a worker thread while more arrives.
            staged.check_as_png()
            rest = await fed_while_read(self._upstream.iter_capped(response), staged.write_all)
            await run_cpu(staged.write_all, rest)
        except (httpx.TransportError, httpx.StreamError) as err:
            raise RelayError(f"{failed} ({type(err).__name__})") from None
        finally:
            await response.aclose()

    async def _check(self, url: str) -> None:
        refused = RelayError(
            f"relay {self._relay!r} returned an image URL that is not allowed (public https "
            "hosts only); it was not fetched"
        )
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL:
            raise refused from None
        host = target.host
        if target.scheme not in ("http", "https") or not host or target.userinfo:
            raise refused
        if is_loopback_host(host):
            if self._loopback_relay:
                return
            raise refused
        if target.scheme != "https":
            raise refused
        literal = ip_address(host)
        addresses = [literal] if literal is not None else await self._resolve(host, target)
        if not addresses or not all(is_public(address) for address in addresses):
            log.warning("relay %s: refused an image URL on host %s", self._relay, host)
            raise refused

    async def _resolve(self, host: str, target: httpx.URL) -> list[IPAddress]:
        try:
            infos = await anyio.getaddrinfo(host, target.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise RelayError(
                f"relay {self._relay!r} returned an image URL whose host does not resolve"
            ) from None
        addresses = [ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        if None in addresses:
            return []  # something we can't judge: refuse
        return [address for address in addresses if address is not None]


def ip_address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback_host(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = ip_address(name)
    return address is not None and address.is_loopback


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_public(address: IPAddress) -> bool:
    """A global unicast address; IPv6 forms that carry an IPv4 address (6to4, NAT64)
    are judged by that address, so they can't tunnel to a private one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            return is_public(address.sixtofour)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.teredo is not None:
            return False
    return address.is_global and not address.is_multicast
