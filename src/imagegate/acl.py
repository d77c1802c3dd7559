"""Who may do what: the ACL file, and the pure decision a middleware applies.

    [default]                          # every authenticated caller (optional)
    scopes = ["images:read"]

    [subjects."token:ci-bot"]          # a subject, exactly as the auth layer names it
    scopes = ["images:generate", "images:read", "relay:placeholder", "paid:auto"]

    [groups.designers]                 # a group from the OIDC groups claim
    scopes = ["images:generate", "images:read", "images:share", "relay:*"]

A caller's scopes are the union of `default`, its subject's, its groups' and those its
mapped token adds. `*` is everything; `relay:*` is every relay; `admin` reaches other
callers' images (it grants no tool by itself). Unknown keys, wrong types and scopes
that grant nothing (typos, unknown relays) stop start-up with file and line.
"""

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagegate.auth.identity import Identity
from imagegate.errors import ConfigError
from imagegate.scopes import (
    ADMIN,
    ANY_RELAY,
    EVERYTHING,
    IMAGE_SCOPES,
    check_scope,
    grants,
    relay_scope,
)
from imagegate.tomlfile import describe, key_lines, line_of, read_toml

TOOL_SCOPES: dict[str, str | None] = {
    "generate_image": "images:generate",
    "edit_image": "images:edit",
    "list_images": "images:read",
    "get_image": "images:read",
    "create_download_link": "images:share",
    "delete_image": "images:delete",
    "list_relays": None,
    "server_info": None,
    "get_usage": None,
    "reset_usage": "admin",
}
"""The scope each tool needs; None: any authenticated caller (no image data involved)."""

RELAY_TOOLS = frozenset({"generate_image", "edit_image"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    missing: str | None = None

    @property
    def message(self) -> str:
        return f"forbidden: needs scope {self.missing}"


def decide(granted: frozenset[str], tool: str, relay: str | None) -> Decision:
    """May a caller holding `granted` call `tool` (on `relay`)? Unknown tools: no."""
    if tool not in TOOL_SCOPES:
        return Decision(False, EVERYTHING)
    required = TOOL_SCOPES[tool]
    if required is not None and not grants(granted, required):
        return Decision(False, required)
    if tool in RELAY_TOOLS and relay is not None and not grants(granted, relay_scope(relay)):
        return Decision(False, relay_scope(relay))
    return Decision(True)


class _Grant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scopes: tuple[str, ...]


class _AclFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: _Grant | None = None
    subjects: dict[str, _Grant] = Field(default_factory=dict)
    groups: dict[str, _Grant] = Field(default_factory=dict)


@dataclass(frozen=True)
class Acl:
    default: frozenset[str] = frozenset()
    subjects: dict[str, frozenset[str]] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)

    def scopes_for(self, identity: Identity) -> frozenset[str]:
        granted = set(self.default) | set(identity.token_scopes)
        granted |= self.subjects.get(identity.subject, frozenset())
        for group in identity.groups:
            granted |= self.groups.get(group, frozenset())
        return frozenset(granted)


OPEN_ACL = Acl(default=frozenset({EVERYTHING}))
"""stdio or the single-token embedded default: the one caller has everything."""

TEAM_OPEN_ACL = Acl(default=frozenset({*IMAGE_SCOPES, ANY_RELAY}))
"""`acl_open = true` on a server that lets several callers in: every tool and relay,
but not `admin`, so tenants stay apart, and not `paid:auto`, so spending still asks."""


def load_acl(path: Path, relays: Collection[str]) -> Acl:
    data, text = read_toml(path)
    try:
        parsed = _AclFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe(err, path, text)) from None
    lines = key_lines(text)
    sections: list[tuple[tuple[str, ...], _Grant]] = []
    if parsed.default is not None:
        sections.append((("default",), parsed.default))
    sections += [(("subjects", name), grant) for name, grant in parsed.subjects.items()]
    sections += [(("groups", name), grant) for name, grant in parsed.groups.items()]
    for where, grant in sections:
        for index, scope in enumerate(grant.scopes):
            try:
                check_scope(scope, relays)
            except ValueError as err:
                line = line_of(lines, [*where, "scopes"])
                key = ".".join(where) + f".scopes[{index}]"
                raise ConfigError(f"{path}:{line}: {key}: {err}") from None
    return Acl(
        default=frozenset(parsed.default.scopes) if parsed.default else frozenset(),
        subjects={name: frozenset(g.scopes) for name, g in parsed.subjects.items()},
        groups={name: frozenset(g.scopes) for name, g in parsed.groups.items()},
    )


@dataclass(frozen=True)
class Caller:
    """An identity with its granted scopes: what tools and middleware decide on."""

    identity: Identity
    scopes: frozenset[str]

    @property
    def subject(self) -> str:
        return self.identity.subject

    @property
    def is_admin(self) -> bool:
        return grants(self.scopes, ADMIN)

    def may_link(self, owner: str) -> bool:
        """A link to one's own image is how one fetches it; a link to another owner's
        image (an admin's reach) shares it, which needs images:share."""
        return owner == self.subject or grants(self.scopes, "images:share")


class AccessPolicy:
    """Turns identities into callers. stdio's local user has every scope."""

    def __init__(self, acl: Acl) -> None:
        self._acl = acl

    def caller(self, identity: Identity) -> Caller:
        if identity.local:
            return Caller(identity, frozenset({EVERYTHING}))
        return Caller(identity, self._acl.scopes_for(identity))
