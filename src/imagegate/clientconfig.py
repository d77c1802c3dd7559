"""`imagegate client-config`: the entry that connects an MCP client to imagegate, and
its merge into that client's config file.

The entries follow each client's documented format (README "Connect a client"):

    claude-code     .mcp.json, "mcpServers"; remote: type http, headers with ${VAR}
    codex           ~/.codex/config.toml, [mcp_servers.NAME]; remote: bearer_token_env_var
    claude-desktop  claude_desktop_config.json, "mcpServers"; local (stdio) only
    cursor          ~/.cursor/mcp.json, "mcpServers"; remote: headers with ${env:VAR}
    librechat       librechat.yaml, mcpServers; remote (streamable-http) only, printed only;
                    or each LibreChat user's own OpenID access token (`PerUserOpenID`)

A remote entry names the environment variable that holds the token, never the token:
the client reads the variable when it connects. Building and merging are pure;
`write_merged` is the one function that touches the disk, and it refuses a file it
cannot parse rather than overwrite it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from imagegate.core.errors import InvalidRequest

CLIENTS = ("claude-code", "codex", "claude-desktop", "cursor", "librechat")
STDIO_ARGS = ("serve", "--transport", "stdio")
NEW_FILE_MODE = 0o600
"""A config file this command creates: others' entries may later hold secrets."""

SERVER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A bare TOML key, and a name every client accepts."""
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
OWNED = frozenset({"type", "command", "args", "url", "headers", "bearer_token_env_var"})
"""The keys an entry of ours has: an entry with others (env, cwd, ...) is not replaced."""


@dataclass(frozen=True)
class Local:
    """The client starts this imagegate itself and talks to it over stdio."""

    command: tuple[str, ...]
    """The executable and the arguments before `serve` (`python -m imagegate`)."""


@dataclass(frozen=True)
class Remote:
    """A running imagegate's MCP endpoint; the bearer token is in `token_env`."""

    url: str
    token_env: str


@dataclass(frozen=True)
class PerUserOpenID:
    """A running imagegate that each LibreChat user calls with their own OpenID access
    token, so that each user is a tenant of their own (LibreChat only)."""

    url: str


OPENID_PLACEHOLDER = "{{LIBRECHAT_OPENID_ACCESS_TOKEN}}"
"""LibreChat puts the logged-in user's access token from its OpenID provider here (with
OPENID_REUSE_TOKENS=true in its .env); its packages/api/src/utils/oidc.ts."""

Server = Local | Remote | PerUserOpenID
Change = Literal["added", "replaced", "unchanged"]


@dataclass(frozen=True)
class Merged:
    text: str
    change: Change


@dataclass(frozen=True)
class Written:
    change: Change
    path: Path
    backup: Path | None


def check_name(name: str) -> str:
    if not SERVER_NAME.fullmatch(name):
        raise InvalidRequest("--name: 1-64 of letters, digits, '_' and '-'")
    return name


def check_token_env(name: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise InvalidRequest(
            f"--token-env: {name!r} is not an environment variable name "
            "(letters, digits and '_', not starting with a digit)"
        )
    return name


def check_url(url: str) -> list[str]:
    """Refuses anything but an http(s) URL without credentials; returns warnings."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            "--server: expected the http(s) URL of imagegate's MCP endpoint, "
            "such as https://images.example.com/mcp"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest("--server: put no credentials in the URL; use --token-env")
    if any(c.isspace() or c in "\"'`$\\" for c in url):
        raise InvalidRequest("--server: the URL holds spaces, quotes, '$' or '\\'")
    warnings = []
    if parts.scheme == "http" and not _loopback(parts.hostname):
        warnings.append(f"the token goes to {parts.hostname} over plain http; use https")
    if parts.path in ("", "/"):
        warnings.append("the URL has no path; imagegate's MCP endpoint is /mcp unless configured")
    return warnings


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def entry(client: str, server: Server) -> dict[str, Any]:
    """The server's entry for `client`, as its config file spells it."""
    if isinstance(server, Local):
        if client == "librechat":
            raise InvalidRequest(
                "librechat: LibreChat is a shared server; connect it to a running "
                "imagegate with --server URL (a stdio entry would start one per LibreChat)"
            )
        command, *before = server.command
        local: dict[str, Any] = {"command": command, "args": [*before, *STDIO_ARGS]}
        return {"type": "stdio", **local} if client == "claude-code" else local
    if isinstance(server, PerUserOpenID):
        if client != "librechat":
            raise InvalidRequest(
                f"--openid is for librechat only: {client} sends one token for everyone "
                "(--token-env), or logs each person in itself (OAuth, interactive_login)"
            )
        # Unless told, LibreChat probes the server and may take it for one with an OAuth
        # login of its own (RFC 9728 metadata, served with interactive_login), then asks
        # each user to log in again instead of sending their token.
        return {
            "type": "streamable-http",
            "url": server.url,
            "headers": {"Authorization": f"Bearer {OPENID_PLACEHOLDER}"},
            "requiresOAuth": False,
        }
    bearer = f"Bearer ${{{server.token_env}}}"
    if client == "claude-code":
        return {"type": "http", "url": server.url, "headers": {"Authorization": bearer}}
    if client == "cursor":
        cursor_bearer = f"Bearer ${{env:{server.token_env}}}"
        return {"url": server.url, "headers": {"Authorization": cursor_bearer}}
    if client == "codex":
        return {"url": server.url, "bearer_token_env_var": server.token_env}
    if client == "librechat":
        return {"type": "streamable-http", "url": server.url, "headers": {"Authorization": bearer}}
    raise InvalidRequest(
        "claude-desktop: its config file takes only local (stdio) servers; drop --server, "
        "or add the remote server in Claude Desktop under Settings > Connectors (a custom "
        "connector, reached from Anthropic's cloud, with OAuth rather than a bearer token)"
    )


def default_path(client: str, home: Path, cwd: Path, macos: bool, codex_home: str | None) -> Path:
    """Where `client` reads the entry: Claude Code's project file, the others' user file."""
    if client == "claude-code":
        return cwd / ".mcp.json"
    if client == "codex":
        return (Path(codex_home) if codex_home else home / ".codex") / "config.toml"
    if client == "claude-desktop":
        base = home / "Library" / "Application Support" if macos else home / ".config"
        return base / "Claude" / "claude_desktop_config.json"
    if client == "cursor":
        return home / ".cursor" / "mcp.json"
    return Path("librechat.yaml")  # in LibreChat's directory, wherever it runs


def snippet(client: str, name: str, server_entry: dict[str, Any]) -> str:
    """The whole fragment of the client's config file that holds the entry."""
    if client == "codex":
        return _toml_table(name, server_entry)
    if client == "librechat":
        return "\n".join(_yaml_lines({"mcpServers": {name: server_entry}}, 0)) + "\n"
    return json.dumps({"mcpServers": {name: server_entry}}, indent=2) + "\n"


def merge(client: str, text: str | None, name: str, server_entry: dict[str, Any]) -> Merged:
    """The config file's text with the entry in it, everything else kept.

    JSON files are written back with two-space indents (keys and values kept, in
    order); a TOML file is edited as text, so its comments and layout stay."""
    if client == "codex":
        return _merge_toml(text, name, server_entry)
    if client == "librechat":
        raise InvalidRequest(
            "librechat: --write is not supported for librechat.yaml (imagegate reads no "
            "YAML); paste the printed entry under mcpServers: yourself"
        )
    return _merge_json(text, name, server_entry)


def _merge_json(text: str | None, name: str, server_entry: dict[str, Any]) -> Merged:
    document: Any = {}
    if text is not None and text.strip():
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidRequest(f"not valid JSON ({err}); left as it is") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the file's JSON is not an object; left as it is")
    servers = document.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise InvalidRequest('"mcpServers" is not an object; left as it is')
    old = servers.get(name)
    if old == server_entry:
        return Merged(text or "", "unchanged")
    _check_replaceable(name, old)
    servers[name] = server_entry
    merged = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return Merged(merged, "added" if old is None else "replaced")


def _check_replaceable(name: str, old: object) -> None:
    """An entry with settings of its own (env with keys, a cwd) would lose them."""
    extra = sorted(set(old) - OWNED) if isinstance(old, dict) else []
    if extra:
        raise InvalidRequest(
            f"the {name!r} entry has settings of its own ({', '.join(extra)}), which a "
            "new entry would drop; left as it is: edit it by hand, or remove it first"
        )


HEADER = re.compile(r"\s*\[\[?[^\n]*\]\]?\s*(#.*)?")


def _merge_toml(text: str | None, name: str, server_entry: dict[str, Any]) -> Merged:
    """Replace the `[mcp_servers.NAME]` table (and its sub-tables) in place, or append it.

    Done on lines, so comments and everything else stay as they were; the result is
    parsed again and must equal the old file with only this entry changed, else the
    file is refused (an entry written as dotted keys or an inline table, say)."""
    text = text or ""
    before = _parse_toml(text)
    servers = before.get("mcp_servers", {})
    if not isinstance(servers, dict):
        raise InvalidRequest("mcp_servers is not a table; left as it is")
    old = servers.get(name)
    if old == server_entry:
        return Merged(text, "unchanged")
    _check_replaceable(name, old)
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    headers = [i for i, line in enumerate(lines) if HEADER.fullmatch(line.rstrip("\n"))]
    ours = [i for i in headers if _table_path(lines[i])[:2] == ["mcp_servers", name]]
    table = _toml_table(name, server_entry)
    if ours:
        kept: list[str] = []
        for i, line in enumerate(lines):
            start = max((h for h in headers if h <= i), default=None)
            if start not in ours or _before_another_table(lines, i, headers, ours):
                kept.append(line)
            if i == ours[0]:
                kept.append(table)
        merged = "".join(kept)
    else:
        body = "".join(lines)
        merged = body + ("\n" if body.strip() else "") + table
    after = _parse_toml(merged)
    expected = {**before, "mcp_servers": {**servers, name: server_entry}}
    if after != expected:
        raise InvalidRequest(
            f"cannot replace the {name!r} entry safely (is it written as an inline table "
            "or dotted keys?); left as it is: edit it by hand"
        )
    return Merged(merged, "added" if old is None else "replaced")


def _parse_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InvalidRequest(f"not valid TOML ({err}); left as it is") from None


def _table_path(header: str) -> list[str]:
    """The keys a `[a."b".c]` header names, read by tomllib itself."""
    try:
        node: Any = tomllib.loads(header)
    except tomllib.TOMLDecodeError:
        return []  # a line inside a multi-line string; the final check catches the rest
    path = []
    while isinstance(node, dict | list) and node:
        node = node[-1] if isinstance(node, list) else node
        if not isinstance(node, dict) or len(node) != 1:
            break
        key, node = next(iter(node.items()))
        path.append(key)
    return path


def _before_another_table(lines: list[str], i: int, headers: list[int], ours: list[int]) -> bool:
    """Blank and comment lines just above another table's header belong to that table."""
    following = [h for h in headers if h > i]
    if not following or following[0] in ours:
        return False
    return all(
        not line.strip() or line.lstrip().startswith("#") for line in lines[i : following[0]]
    )


def _toml_table(name: str, server_entry: dict[str, Any]) -> str:
    lines = [f"[mcp_servers.{name}]"]
    for key, value in server_entry.items():
        if isinstance(value, list):
            rendered = "[" + ", ".join(_toml_string(v) for v in value) + "]"
        else:
            rendered = _toml_string(value)
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but TOML also forbids DEL."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _yaml_lines(mapping: dict[str, Any], depth: int) -> list[str]:
    """Block mappings of double-quoted strings and booleans (JSON's are YAML scalars)."""
    lines = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            lines += [f"{'  ' * depth}{key}:", *_yaml_lines(value, depth + 1)]
        else:
            lines.append(f"{'  ' * depth}{key}: {json.dumps(value)}")
    return lines


def write_merged(
    path: Path, client: str, name: str, server_entry: dict[str, Any], stamp: str | None = None
) -> Written:
    """Merge the entry into the file at `path` (a symlink's target), atomically.

    Nothing is written when the entry is already there. Otherwise the old file is
    first copied to `NAME.YYYYMMDD-HHMMSS.bak` beside it (with its mode; a new name
    each time, so no backup is overwritten), then the new text goes to a temp file in
    the same directory, is fsynced and renamed over the old one, with the old mode
    (0600 for a new file)."""
    real = path.resolve() if path.is_symlink() else path
    if path.is_symlink() and not real.exists():
        raise InvalidRequest(f"{path}: a symlink to {real}, which does not exist; left as it is")
    try:
        old: bytes | None = real.read_bytes()
    except FileNotFoundError:
        old = None
    try:
        text = None if old is None else old.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path}: not UTF-8 text; left as it is") from None
    try:
        merged = merge(client, text, name, server_entry)
    except InvalidRequest as err:
        raise InvalidRequest(f"{path}: {err}") from None
    if merged.change == "unchanged":
        return Written("unchanged", real, None)
    if not real.parent.is_dir():
        raise InvalidRequest(f"{path}: no such directory {real.parent}")
    mode = NEW_FILE_MODE
    backup = None
    if old is not None:
        mode = stat.S_IMODE(real.stat().st_mode)
        backup = _backup(real, old, mode, stamp or time.strftime("%Y%m%d-%H%M%S"))
    _replace(real, merged.text.encode("utf-8"), mode)
    return Written(merged.change, real, backup)


def _backup(path: Path, content: bytes, mode: int, stamp: str) -> Path:
    for n in range(100):
        suffix = f"{stamp}.bak" if n == 0 else f"{stamp}-{n}.bak"
        backup = path.with_name(f"{path.name}.{suffix}")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # not widened, not narrowed by the umask
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        return backup
    raise InvalidRequest(f"{path}: too many backups named {path.name}.{stamp}*.bak")


def _replace(path: Path, content: bytes, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)
