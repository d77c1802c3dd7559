"""Start the real OpenID provider (tests/oidc, npm oidc-provider) on 127.0.0.1."""

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from joserfc.jwk import RSAKey

OIDC_DIR = Path(__file__).parents[1] / "oidc"
AUDIENCE = "https://imagegate.test/mcp"


@dataclass
class Client:
    client_id: str
    secret: str
    groups: list[str]

    @property
    def email(self) -> str:
        return f"{self.client_id}@example.test"


CLIENTS = {
    "alice": Client("alice", "alice-secret-0123456789", ["designers"]),
    "dave": Client("dave", "dave-secret-0123456789", ["designers"]),
    "root": Client("root", "root-secret-0123456789", ["imagegate-admins"]),
    "nobody": Client("nobody", "nobody-secret-0123456789", []),
}


@dataclass
class Provider:
    issuer: str
    key: RSAKey
    """The provider's private signing key: the tests also sign hostile tokens with it."""

    def token(self, client: str) -> str:
        entry = CLIENTS[client]
        response = httpx.post(
            f"{self.issuer}/token",
            data={
                "grant_type": "client_credentials",
                "client_id": entry.client_id,
                "client_secret": entry.secret,
                "resource": AUDIENCE,
            },
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


@contextmanager
def oidc_provider(workdir: Path) -> Iterator[Provider]:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("the test OpenID provider is not installed: run `make test`")
    key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "alg": "RS256", "use": "sig"})
    config: dict[str, Any] = {
        "port": 0,
        "resource": AUDIENCE,
        "scopes": ["images:generate"],
        "jwks": {"keys": [key.as_dict(private=True)]},
        "clients": [
            {
                "client_id": c.client_id,
                "client_secret": c.secret,
                "groups": c.groups,
                "email": c.email,
            }
            for c in CLIENTS.values()
        ],
    }
    config_path = workdir / "oidc.json"
    config_path.write_text(json.dumps(config))
    process = subprocess.Popen(
        ["node", str(OIDC_DIR / "provider.mjs")],
        env={**os.environ, "OIDC_CONFIG": str(config_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"OpenID provider did not start: {line!r}")
        yield Provider(issuer=line.removeprefix("READY "), key=key)
    finally:
        process.terminate()
        process.wait(timeout=10)
