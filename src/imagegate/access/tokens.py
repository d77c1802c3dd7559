"""Mapped bearer tokens: a TOML file mapping tokens (preferably their SHA-256) to subjects.

    [[tokens]]
    subject = "ci-bot"                 # the caller becomes token:ci-bot
    sha256 = "<64 hex>"                # or token = "<clear text>" (discouraged)
    scopes = ["paid:auto"]             # optional, added to what the ACL grants
    expires = 2027-06-30T00:00:00Z     # optional
    comment = "nightly pipeline"

The file is re-read when it changes, so removing a line revokes a token without a
restart. If a changed file is invalid, every mapped token is refused until it is
fixed (fail closed) and the error is logged.
"""

import hashlib
import hmac
import logging
import secrets
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from imagegate.access.bearer import TOKEN_SUBJECT_PREFIX
from imagegate.access.identity import Verified, verified
from imagegate.access.scopes import check_scope
from imagegate.core.errors import ConfigError
from imagegate.core.ids import Subject
from imagegate.core.tomlfile import line_of, read_model

log = logging.getLogger("imagegate.auth")

SUBJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_CLEAR_TOKEN_CHARS = 24


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field(pattern=SUBJECT_NAME)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    token: SecretStr | None = None
    scopes: tuple[str, ...] = ()
    expires: datetime | None = None
    comment: str = ""

    @model_validator(mode="after")
    def _one_secret(self) -> "_Entry":
        if (self.sha256 is None) == (self.token is None):
            raise ValueError("give exactly one of sha256 (preferred) or token")
        if self.token is not None and len(self.token.get_secret_value()) < MIN_CLEAR_TOKEN_CHARS:
            raise ValueError(f"token must be at least {MIN_CLEAR_TOKEN_CHARS} characters")
        if self.expires is not None and self.expires.tzinfo is None:
            raise ValueError("expires needs a time zone, e.g. 2027-06-30T00:00:00Z")
        return self


class _TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[_Entry] = Field(default_factory=list)


@dataclass(frozen=True)
class MappedToken:
    subject: Subject
    digest: bytes
    scopes: frozenset[str]
    expires_at: float | None


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def load_tokens_file(path: Path, relays: Collection[str], strict: bool) -> list[MappedToken]:
    """Parse and check the tokens file; ConfigError names file, line and reason."""
    _check_mode(path, strict)
    parsed, lines = read_model(path, _TokensFile)
    entries: list[MappedToken] = []
    seen: set[bytes] = set()
    for index, entry in enumerate(parsed.tokens):
        where = f"{path}:{line_of(lines, ['tokens', index])}"
        for scope in entry.scopes:
            try:
                check_scope(scope, relays)
            except ValueError as err:
                raise ConfigError(f"{where}: tokens[{index}].scopes: {err}") from None
        if entry.sha256 is not None:
            digest = bytes.fromhex(entry.sha256)
        else:
            assert entry.token is not None
            digest = token_digest(entry.token.get_secret_value())
        if digest in seen:
            raise ConfigError(f"{where}: tokens[{index}]: the same token appears twice")
        seen.add(digest)
        entries.append(
            MappedToken(
                subject=Subject(TOKEN_SUBJECT_PREFIX + entry.subject),
                digest=digest,
                scopes=frozenset(entry.scopes),
                expires_at=entry.expires.timestamp() if entry.expires else None,
            )
        )
    return entries


def _check_mode(path: Path, strict: bool) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # read_toml reports it
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        message = (
            f"{path}: tokens file mode {mode:04o} lets others read or change it; "
            f"run: chmod 640 {path}"
        )
        if strict:
            raise ConfigError(message)
        log.warning("SECURITY WARNING: %s", message)


class MappedTokensVerifier:
    """Checks a bearer token against every entry (constant time, no early exit)."""

    def __init__(
        self,
        path: Path,
        relays: Collection[str],
        strict: bool,
        clock: Callable[[], float],
    ) -> None:
        self._path = path
        self._relays = relays
        self._strict = strict
        self._clock = clock
        self._version = self._file_version()
        self._entries = load_tokens_file(path, relays, strict)

    def _file_version(self) -> tuple[int, int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _current(self) -> list[MappedToken]:
        version = self._file_version()
        if version != self._version:
            self._version = version
            try:
                self._entries = load_tokens_file(self._path, self._relays, self._strict)
                log.info("reloaded %d mapped tokens from %s", len(self._entries), self._path)
            except ConfigError as err:
                self._entries = []
                log.error("mapped tokens disabled until the file is fixed: %s", err)
        return self._entries

    def entries(self) -> list[MappedToken]:
        """The entries in force now (the file is re-read when it changed)."""
        return self._current()

    async def verify(self, token: str) -> Verified | None:
        digest = token_digest(token)
        match: MappedToken | None = None
        for entry in self._current():
            if hmac.compare_digest(entry.digest, digest):
                match = entry
        if match is None:
            return None
        if match.expires_at is not None and self._clock() >= match.expires_at:
            log.info("refused expired mapped token of %s", match.subject)
            return None
        expires_at = int(match.expires_at) if match.expires_at is not None else None
        return verified(match.subject, scopes=match.scopes, expires_at=expires_at)


def new_token_entry(
    subject: str, scopes: Collection[str], expires: datetime | None, comment: str
) -> tuple[str, str]:
    """A fresh random token and the TOML entry (hash only) to paste into tokens.toml."""
    token = secrets.token_urlsafe(32)
    lines = [
        "[[tokens]]",
        f'subject = "{subject}"',
        f'sha256 = "{token_digest(token).hex()}"',
    ]
    if scopes:
        lines.append("scopes = [" + ", ".join(f'"{s}"' for s in scopes) + "]")
    if expires is not None:
        lines.append(f"expires = {expires.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}")
    if comment:
        lines.append(f"comment = {_toml_string(comment)}")
    return token, "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else " " for c in escaped) + '"'
