"""The ACL file: which scopes each caller holds.

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

from pydantic import BaseModel, ConfigDict, Field

from imagegate.access.identity import Identity
from imagegate.access.scopes import ANY_RELAY, EVERYTHING, IMAGE_SCOPES, check_scope
from imagegate.core.errors import ConfigError
from imagegate.core.tomlfile import line_of, read_model


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
    parsed, lines = read_model(path, _AclFile)
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
