"""A real S3 server for tests: OpenStack Swift with its s3api middleware, on loopback.

Swift (Debian's swift-* packages) rather than Ceph RGW: it is ready in a few seconds
instead of ~15, needs no monitor/OSD bootstrap, and it checks SigV4 signatures, expiry
and presigned URLs like AWS does (moto and LocalStack accept forged ones).
Addressing is path-style only: there is no DNS for virtual-hosted buckets on 127.0.0.1.
"""

import atexit
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from obstore.store import S3Store

from tests.services._process import (
    ServiceUnavailable,
    free_port,
    port_open,
    require,
    require_file,
    supervised,
)

__all__ = ["S3Server", "ServiceUnavailable", "presign_get", "running_s3"]

REGION = "us-east-1"
# tempauth turns account "test" and user "tester" into the S3 access key "test:tester".
ACCOUNT = "test"
USER = "tester"

# Swift runs on Debian's own Python, not the test venv's.
SYSTEM_PYTHON = "/usr/bin/python3"
SERVERS = ("account", "container", "object")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    # Buckets are made through Swift's own API: it needs no request signing.
    auth_url: str = field(repr=False)

    def make_bucket(self, name: str) -> None:
        # Swift would create any container name, but s3api then answers InvalidBucketName.
        if not _BUCKET_NAME.fullmatch(name):
            raise ValueError(f"not a DNS-compliant S3 bucket name: {name!r}")
        with httpx.Client(timeout=30) as client:
            auth = client.get(
                self.auth_url,
                headers={"X-Auth-User": self.access_key, "X-Auth-Key": self.secret_key},
            )
            auth.raise_for_status()
            created = client.put(
                f"{auth.headers['X-Storage-Url']}/{name}",
                headers={"X-Auth-Token": auth.headers["X-Auth-Token"]},
            )
            created.raise_for_status()

    def store(self, bucket: str, secret_key: str | None = None) -> S3Store:
        """An obstore client of one bucket, as the tests read it behind imagegate's back
        (another secret: to see a wrong one refused)."""
        return S3Store(
            bucket,
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key,
            secret_access_key=secret_key or self.secret_key,
            # No DNS for bucket.127.0.0.1: buckets go in the path.
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    def presign_get(
        self,
        bucket: str,
        key: str,
        expires_in: int = 300,
        query: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """A SigV4 presigned GET URL that also signs extra query parameters.

        obstore's `sign` cannot add parameters, and S3 only honours response-*
        overrides (content type, disposition) when they are part of the signature.
        """
        return presign_get(self, bucket, key, expires_in, query or {}, now)


@contextmanager
def running_s3(tmp_dir: Path) -> Iterator[S3Server]:
    """Start Swift + s3api on free loopback ports under tmp_dir; stop everything at exit."""
    binaries = require(
        "memcached",
        "swift-proxy-server",
        *(f"swift-{name}-server" for name in SERVERS),
    )
    require_file(SYSTEM_PYTHON)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in (*SERVERS, "proxy", "memcached")}
    secret = secrets.token_urlsafe(24)
    _write_config(tmp_dir, ports, secret)
    _build_rings(tmp_dir, ports)

    with supervised(tmp_dir / "logs") as processes:
        processes.start(
            "memcached",
            [
                binaries["memcached"],
                *("-l", "127.0.0.1", "-p", str(ports["memcached"]), "-U", "0", "-m", "16"),
                # memcached refuses to run as root unless told which user to run as.
                *("-u", _user()),
            ],
        )
        # -v also logs to stderr (the log file): there is usually no syslog to receive it.
        for name in (*SERVERS, "proxy"):
            processes.start(
                name,
                [binaries[f"swift-{name}-server"], str(tmp_dir / f"{name}-server.conf"), "-v"],
            )
        for name, port in ports.items():
            processes.wait_until(partial(port_open, port), f"swift {name}")
        processes.wait_until(lambda: _healthy(ports["proxy"]), "swift proxy /healthcheck")
        server = S3Server(
            endpoint=f"http://127.0.0.1:{ports['proxy']}",
            region=REGION,
            access_key=f"{ACCOUNT}:{USER}",
            secret_key=secret,
            auth_url=f"http://127.0.0.1:{ports['proxy']}/auth/v1.0",
        )
        yield server


def _user() -> str:
    # The account name, not $USER: sudo and CI runners often leave $USER stale.
    return pwd.getpwuid(os.getuid()).pw_name


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def presign_get(
    server: S3Server,
    bucket: str,
    key: str,
    expires_in: int,
    query: Mapping[str, str],
    now: datetime | None = None,
) -> str:
    """AWS SigV4 query-string signing (UNSIGNED-PAYLOAD), as in the S3 presign docs."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    stamp, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
    scope = f"{day}/{server.region}/s3/aws4_request"
    params = {
        **query,
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{server.access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires_in),
        "X-Amz-SignedHeaders": "host",
    }
    # Sorted by encoded name, as the canonical request demands.
    canonical_query = "&".join(
        f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in params.items())
    )
    path = "/" + quote(bucket, safe="-_.~") + "/" + quote(key, safe="-_.~/")
    host = urlsplit(server.endpoint).netloc
    canonical = f"GET\n{path}\n{canonical_query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signing_key = f"AWS4{server.secret_key}".encode()
    for part in (day, server.region, "s3", "aws4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{server.endpoint}{path}?{canonical_query}&X-Amz-Signature={signature}"


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _write_config(root: Path, ports: dict[str, int], secret: str) -> None:
    user = _user()
    # Swift reads swift.conf from swift_dir, so nothing under /etc/swift is used.
    (root / "swift.conf").write_text(
        "[swift-hash]\n"
        f"swift_hash_path_suffix = {secrets.token_hex(8)}\n"
        f"swift_hash_path_prefix = {secrets.token_hex(8)}\n"
        "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
    )
    (root / "devices" / "d1").mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    common = (
        "[DEFAULT]\n"
        "bind_ip = 127.0.0.1\n"
        f"swift_dir = {root}\n"
        f"devices = {root / 'devices'}\n"
        f"recon_cache_path = {root / 'cache'}\n"
        # The devices are plain directories, not mount points.
        "mount_check = false\n"
        "disable_fallocate = true\n"
        # One process per server: nothing forks, so stopping is simple and cheap.
        "workers = 0\n"
        # Without this Swift switches to the `swift` user, who cannot write tmp_dir.
        f"user = {user}\n"
        "log_level = WARNING\n"
    )
    for name in SERVERS:
        (root / f"{name}-server.conf").write_text(
            common
            + f"bind_port = {ports[name]}\n"
            + f"[pipeline:main]\npipeline = {name}-server\n"
            + f"[app:{name}-server]\nuse = egg:swift#{name}\n"
        )
    pipeline = (
        "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
        # s3api needs slo for multipart uploads, copy for UploadPartCopy/CopyObject.
        "s3api tempauth copy slo dlo proxy-logging proxy-server"
    )
    filters = {
        name: f"use = egg:swift#{name.replace('-', '_')}"
        for name in pipeline.split()
        if name != "proxy-server"
    }
    filters["cache"] = (
        f"use = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{ports['memcached']}"
    )
    filters["s3api"] = (
        f"use = egg:swift#s3api\nlocation = {REGION}\n"
        # Swift checks clock skew on presigned URLs too; 15 minutes is AWS's own limit.
        "allowable_clock_skew = 900"
    )
    filters["tempauth"] = f"use = egg:swift#tempauth\nuser_{ACCOUNT}_{USER} = {secret} .admin"
    (root / "proxy-server.conf").write_text(
        common
        + f"bind_port = {ports['proxy']}\n"
        + f"[pipeline:main]\npipeline = {pipeline}\n"
        + "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
        + "".join(f"[filter:{name}]\n{body}\n" for name, body in filters.items())
    )


_RING_SCRIPT = """
import sys
from swift.common.ring import RingBuilder
root = sys.argv[1]
for arg in sys.argv[2:]:
    name, port = arg.split("=")
    builder = RingBuilder(part_power=2, replicas=1, min_part_hours=0)
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
                     "port": int(port), "device": "d1", "weight": 1.0})
    builder.rebalance()
    builder.get_ring().save(f"{root}/{name}.ring.gz")
"""


def _build_rings(root: Path, ports: dict[str, int]) -> None:
    # One interpreter for all three rings: swift-ring-builder would need nine runs.
    built = subprocess.run(
        [SYSTEM_PYTHON, "-c", _RING_SCRIPT, str(root), *(f"{n}={ports[n]}" for n in SERVERS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building the Swift rings failed:\n{built.stderr}")


_SHARED: list[S3Server] = []


def shared_s3() -> S3Server:
    """One server for the whole test session, started on first use (skipping the test
    when it is missing) and stopped when the session's process exits."""
    if not _SHARED:
        root = Path(tempfile.mkdtemp(prefix="imagegate-s3-"))
        running = running_s3(root)
        try:
            _SHARED.append(running.__enter__())
        except ServiceUnavailable as missing:
            pytest.skip(str(missing))
        atexit.register(shutil.rmtree, root, True)
        atexit.register(running.__exit__, None, None, None)
    return _SHARED[0]
