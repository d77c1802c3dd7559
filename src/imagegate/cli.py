"""Command line: serve, generate, check-config, client-config.

Each command imports what it uses when it runs, not this module: `--version` and
`check-config` then answer without loading the server (FastMCP, uvicorn), the remote
client or the storage drivers, and the settings load only once the command is known.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

# httpx imports its own command line (click, rich, pygments: 30 ms) whenever those are
# installed, and fastmcp installs them; this process never runs it. A module that is
# None in sys.modules makes httpx's `from ._main import main` fail, and httpx then
# goes without (its own fallback for a missing dependency).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from imagegate import __version__  # noqa: E402
from imagegate.core.errors import (  # noqa: E402
    ConfigError,
    ImagegateError,
    InvalidRequest,
    SchemaError,
)
from imagegate.service.reports import BY  # noqa: E402

if TYPE_CHECKING:
    from imagegate.config import Settings
    from imagegate.core.images import ImageFormat
    from imagegate.relays.base import Relay
    from imagegate.remote import Remote
    from imagegate.server import App
    from imagegate.service.reports import Report

T = TypeVar("T")

CLIENTS = ("claude-code", "codex", "claude-desktop", "cursor", "librechat")
"""imagegate.clientconfig.CLIENTS, spelled here so that parsing imports nothing."""

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.handler is _client_config:  # reads no settings: a broken config can't stop it
        code: int = args.handler(args)
        return code
    from imagegate.config import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        print(f"imagegate: configuration error:\n{_indent(str(err))}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(settings)
    try:
        result: int = args.handler(settings, args)
        return result
    except SchemaError as err:
        print(f"imagegate: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as err:
        print(f"imagegate: configuration error:\n{_indent(str(err))}", file=sys.stderr)
        return EXIT_CONFIG
    except ImagegateError as err:
        print(f"imagegate: error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegate", description="A secured MCP server for image generation."
    )
    parser.add_argument("--version", action="version", version=f"imagegate {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: $IMAGEGATE_CONFIG, else built-in defaults)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the MCP server")
    serve.add_argument("--transport", choices=["http", "stdio"], default="http")
    serve.set_defaults(handler=_serve)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server",
        default=None,
        help="run through this imagegate server (default: $IMAGEGATE_SERVER; else locally)",
    )
    remote.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="the server's bearer token, in a 0600 file (default: $IMAGEGATE_TOKEN)",
    )

    generate = commands.add_parser(
        "generate",
        parents=[remote],
        help="generate images once: locally without a server, or through one (--server)",
    )
    generate.add_argument("prompt")
    generate.add_argument("--size", default=None, help="WIDTHxHEIGHT (default: the relay's)")
    generate.add_argument("-n", type=int, default=1, help="number of images (default 1)")
    generate.add_argument(
        "--format", dest="output_format", default=None, help="png, jpeg, webp (default: png)"
    )
    generate.add_argument("--quality", default=None, help="low, medium, high, auto")
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--relay", default=None, help="relay name (default: default_relay)")
    generate.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="output directory, or file name when -n is 1 (default: current directory)",
    )
    generate.set_defaults(handler=_generate)

    edit = commands.add_parser(
        "edit", parents=[remote], help="edit local images through a server (--server)"
    )
    edit.add_argument("prompt")
    edit.add_argument("images", nargs="+", type=Path, help="local image files")
    edit.add_argument("--mask", type=Path, default=None, help="a PNG mask the size of the first")
    edit.add_argument("--size", default=None)
    edit.add_argument("-n", type=int, default=1)
    edit.add_argument("--format", dest="output_format", default=None)
    edit.add_argument("--quality", default=None)
    edit.add_argument("--relay", default=None)
    edit.add_argument("--out", type=Path, default=Path("."), help="output directory or file")
    edit.set_defaults(handler=_edit)

    pull = commands.add_parser(
        "pull", parents=[remote], help="download images from a server (--server) by asset id"
    )
    pull.add_argument("asset_ids", nargs="+", metavar="ASSET_ID")
    pull.add_argument("--out", type=Path, default=Path("."), help="output directory")
    pull.set_defaults(handler=_pull)

    db = commands.add_parser("db", help="the state database")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    upgrade = db_commands.add_parser(
        "upgrade", help="bring the database to this version's schema (in place)"
    )
    upgrade.set_defaults(handler=_db_upgrade)

    usage = commands.add_parser("usage", help="what was made and spent")
    usage_commands = usage.add_subparsers(required=True, metavar="ACTION")
    report = usage_commands.add_parser(
        "report", help="images, spend and calls over a period, from the database"
    )
    report.add_argument("--since", required=True, help="first day, YYYY-MM-DD (UTC)")
    report.add_argument("--until", help="the day after the last (default: through today)")
    report.add_argument("--by", choices=BY, default="subject")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.set_defaults(handler=_usage_report)

    check = commands.add_parser(
        "check-config", help="validate the configuration, ACL and tokens files, then exit"
    )
    check.set_defaults(handler=_check_config)

    verify = commands.add_parser(
        "verify", help="say what marks an image file carries: XMP source type, C2PA manifest"
    )
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--trust-anchors",
        type=Path,
        default=None,
        help="PEM roots to trust (default: [c2pa] trust_anchors)",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    client = commands.add_parser(
        "client-config",
        help="print (or --write) an MCP client's config entry for this imagegate or a server",
    )
    client.add_argument("client", choices=CLIENTS)
    client.add_argument(
        "--server", default=None, help="a running imagegate's MCP URL (default: local stdio)"
    )
    client.add_argument("--name", default="imagegate", help="the entry's name (default imagegate)")
    client.add_argument(
        "--token-env",
        default="IMAGEGATE_TOKEN",
        help="the variable the client reads the bearer token from (default IMAGEGATE_TOKEN)",
    )
    client.add_argument(
        "--openid",
        action="store_true",
        help="librechat with --server: send each user's own OpenID access token, not --token-env's",
    )
    client.add_argument(
        "--write", action="store_true", help="merge the entry into the config file (backup first)"
    )
    client.add_argument("--file", type=Path, default=None, help="with --write: this config file")
    client.set_defaults(handler=_client_config)

    token = commands.add_parser("token", help="manage mapped bearer tokens")
    token_commands = token.add_subparsers(required=True, metavar="ACTION")
    new = token_commands.add_parser("new", help="make a token; print it once with its entry")
    new.add_argument("--subject", required=True, help="the caller becomes token:SUBJECT")
    new.add_argument("--scope", action="append", default=[], help="extra scope (repeatable)")
    new.add_argument("--expires-in-days", type=int, default=None, help="expiry, in days")
    new.add_argument("--comment", default="", help="a note kept in the file")
    new.set_defaults(handler=_token_new)
    return parser


def _setup_logging(settings: Settings) -> None:
    from imagegate.core.logjson import JsonLines

    # stderr only: on stdio, stdout carries the protocol.
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_format == "json":
        for handler in logging.root.handlers:
            handler.setFormatter(JsonLines())
    # httpx logs every request URL at INFO; an image URL an upstream returns can carry
    # a signature (S3, Azure SAS) that must not reach the log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))


def _fastmcp_logging() -> None:
    """For the commands that use FastMCP, after `_setup_logging`: FastMCP sets up its
    own (rich, multi-line) handler when it is imported; one format, one level for the
    journal instead."""
    import fastmcp  # noqa: F401 - imported first, so that its handler is there to go

    fastmcp_log = logging.getLogger("fastmcp")
    for handler in fastmcp_log.handlers[:]:
        fastmcp_log.removeHandler(handler)
    fastmcp_log.propagate = True
    # Their debug lines quote whole requests ("call_tool edit_image with {...}":
    # prompts, images as base64); ours at debug don't.
    for library in ("fastmcp", "mcp"):
        logging.getLogger(library).setLevel(max(logging.INFO, logging.root.level))


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


SWITCH_INTERVAL = 0.0005
"""Seconds a thread holds the GIL before one that waits may take it (Python's default:
0.005). The event loop and the worker threads (decoding, checking, SQLite) take turns
at it, and each hand-off to a thread and back waits for a turn or two: with 5 ms turns,
another caller's small call waited 10-25 ms per database turn during a burst. 0.5 ms:
that call 8.4-9.2x its idle time instead of 9.5-12x, 64 concurrent generations 36-38
a second instead of 33-34 (bench/compare.py --quick, 2 runs each)."""


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from imagegate.server import build_app, setup_tracing

    sys.setswitchinterval(SWITCH_INTERVAL)
    _fastmcp_logging()
    tracing = setup_tracing(settings)
    try:
        app = build_app(settings, args.transport)
        asyncio.run(_run(app, settings, args.transport))
    finally:
        if tracing is not None:
            tracing.shutdown()  # sends the spans still batched
    return 0


async def _run(app: App, settings: Settings, transport: str) -> None:
    try:
        await app.storage.open()
        if transport == "stdio":
            settle()
            await app.mcp.run_stdio_async(show_banner=False)
        else:
            await _serve_http(app, settings)
    finally:
        await app.aclose()


async def _serve_http(app: App, settings: Settings) -> None:
    import uvicorn

    from imagegate.core.notify import Notifier
    from imagegate.server import http_asgi_app
    from imagegate.web.connections import guarded_protocol
    from imagegate.web.notifying import NotifyingServer

    sock = _listen(settings.host, settings.port)
    # The metrics listener is a second socket of the same server: the app tells them
    # apart by the socket a request came in on (server.http_asgi_app).
    metrics_at = settings.metrics_address() if settings.metrics else None
    sockets = [sock, *([_listen(*metrics_at)] if metrics_at else [])]
    config = uvicorn.Config(
        http_asgi_app(app, settings),
        log_level=settings.log_level,
        # Access logs would record signed download URLs; we don't write them.
        access_log=False,
        log_config=None,  # uvicorn's lines go through our handler and format too
        server_header=False,
        lifespan="on",
        http=guarded_protocol(settings.request_header_timeout, settings.max_connections_per_peer),
        # No WebSockets are served; an upgrade would move the connection to another
        # protocol object, past the per-peer count.
        ws="none",
    )
    _announce(app, settings)
    # systemd's own protocol, not a setting: the variable is systemd's, read here.
    notifier = Notifier(os.environ.get("NOTIFY_SOCKET"))
    status = f"STATUS=serving MCP at {settings.base_url()}{settings.mcp_path}"
    settle()
    await NotifyingServer(config, notifier, status).serve(sockets=sockets)


def settle() -> None:
    """Take what start-up made (modules, the app, its tools and schemas: hundreds of
    thousands of objects that live as long as the process) out of the garbage
    collector's full passes. Each full pass walked them all, a pause of tens of ms
    for every call in flight, every few dozen calls (gc.freeze)."""
    gc.collect()
    gc.freeze()


def _listen(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a busy port is one clear line.

    The socket names its protocol (TCP): asyncio sets TCP_NODELAY on the connections
    it accepts only then. Without it, an answer written in two pieces waits for the
    client's delayed ACK, about 40 ms on every small answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" means IPv6 only, as create_server had it
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(256)
    except OSError as err:
        sock.close()
        raise ConfigError(f"could not listen on {host}:{port}: {err.strerror}") from None
    return sock


def _announce(app: App, settings: Settings) -> None:
    from imagegate.access.setup import DEV_TOKEN_FILE

    url = f"{settings.base_url()}{settings.mcp_path}"
    lines = [f"imagegate {__version__}: MCP over streamable HTTP at {url}"]
    lines += [f"warning: {warning}" for warning in settings.warnings()]
    if app.bearer_token is not None:
        token_file = settings.state_dir / DEV_TOKEN_FILE
        if sys.stderr.isatty():
            lines.append(f"development bearer token: {app.bearer_token}")
        lines.append(f"bearer token file: {token_file} (send 'Authorization: Bearer <token>')")
    lines.append(f"state: {settings.state_dir}")
    if settings.log_format == "json":  # a pipeline reading JSON lines gets these as records
        for line in lines:
            logging.getLogger("imagegate").info("%s", line)
        return
    print("\n".join(lines), file=sys.stderr, flush=True)


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    server = _server_of(args)
    if server is not None:
        arguments = _make_arguments(args)
        target = _remote_target(args.out, args.n)
        result = asyncio.run(_through(server, "generate_image", arguments, target))
    else:
        result = asyncio.run(_generate_files(settings, args))
    print(json.dumps(result, indent=2))
    return 0


def _edit(settings: Settings, args: argparse.Namespace) -> int:
    server = _needs_server(args, "edit")
    arguments = _make_arguments(args)
    for path in [*args.images, *([args.mask] if args.mask else [])]:
        if not path.is_file():
            raise InvalidRequest(f"{path}: no such file")
    target = _remote_target(args.out, args.n)
    result = asyncio.run(_through(server, "edit_image", arguments, target, args.images, args.mask))
    print(json.dumps(result, indent=2))
    return 0


def _pull(settings: Settings, args: argparse.Namespace) -> int:
    server = _needs_server(args, "pull")
    _output_directory(args.out)
    result = asyncio.run(_pull_images(server, args.asset_ids, args.out))
    print(json.dumps(result, indent=2))
    return 0


def _db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    done: tuple[int, int] | None
    if settings.database_url is not None:
        from imagegate.server import database_password
        from imagegate.storage.postgres.backend import database_name, upgrade_postgres
        from imagegate.storage.postgres.schema import LATEST as SHARED_LATEST

        where, latest = database_name(settings.database_url), SHARED_LATEST
        done = asyncio.run(upgrade_postgres(settings.database_url, database_password(settings)))
    else:
        from imagegate.storage.embedded import DATABASE_FILE, upgrade_embedded
        from imagegate.storage.sqlite.schema import LATEST

        where, latest = str(settings.state_dir / DATABASE_FILE), LATEST
        done = upgrade_embedded(settings.state_dir)
    if done is None:
        print(f"{where}: no database yet; it is made at schema {latest} when imagegate starts")
    elif done[1] > latest:
        print(f"{where}: schema {done[1]}, newer than this imagegate knows ({latest}); unchanged")
    elif done[0] == done[1]:
        print(f"{where}: schema {done[1]}, up to date")
    else:
        print(f"{where}: schema {done[0]} -> {done[1]}")
    return 0


def _usage_report(settings: Settings, args: argparse.Namespace) -> int:
    from imagegate.server import open_storage
    from imagegate.service.reports import usage_report

    async def read() -> Report:
        storage = open_storage(settings)
        try:
            today = datetime.now(UTC).date()
            return await usage_report(storage.quotas, args.since, args.until, args.by, today)
        finally:
            await storage.aclose()

    report = asyncio.run(read())
    if args.format == "json":
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    rows = [(row.key, str(row.images), f"{row.spend:.6g}", str(row.calls)) for row in report.rows]
    header = (args.by, "images", "spend", "calls")
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerows([header, *rows])
        return 0
    total = report.total
    lines = [header, *rows, ("total", str(total.images), f"{total.spend:.6g}", str(total.calls))]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    print(f"{report.since} to {report.until} (UTC; the last day not included)")
    for line in lines:
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
    return 0


def _needs_server(args: argparse.Namespace, command: str) -> Remote:
    server = _server_of(args)
    if server is None:
        raise InvalidRequest(f"{command} works through a server: pass --server URL")
    return server


def _server_of(args: argparse.Namespace) -> Remote | None:
    """The server --server (or $IMAGEGATE_SERVER) names, if any; FastMCP is its client."""
    from imagegate.remote import remote_of

    server = remote_of(args.server, args.token_file)
    if server is not None:
        _fastmcp_logging()
    return server


def _make_arguments(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "prompt": args.prompt,
        "size": args.size,
        "n": args.n,
        "output_format": args.output_format or _format_of(args.out),
        "quality": args.quality,
        "relay": args.relay,
        "seed": getattr(args, "seed", None),
    }
    return {name: value for name, value in given.items() if value is not None}


def _remote_target(out: Path, n: int) -> tuple[Path, Path | None]:
    """(directory, the one file or None) for --out of a command through a server."""
    explicit = out if not out.is_dir() and out.suffix else None
    if explicit is not None and n != 1:
        raise InvalidRequest("--out names a file, but -n is more than 1; give a directory")
    directory = explicit.parent if explicit else out
    _output_directory(directory)
    return directory, explicit


def _output_directory(out: Path) -> None:
    if not out.is_dir():
        raise InvalidRequest(f"output directory does not exist: {out}")
    if not os.access(out, os.W_OK):
        raise InvalidRequest(f"output directory is not writable: {out}")


async def _through(
    server: Remote,
    tool: str,
    arguments: dict[str, Any],
    target: tuple[Path, Path | None],
    images: list[Path] | None = None,
    mask: Path | None = None,
) -> dict[str, Any]:
    """A generation or edit on the server (local `images` and `mask` uploaded first),
    its images downloaded into the `target` directory (or its one file)."""
    from imagegate.remote import RemoteError, Session, download, not_confirmed

    started = time.monotonic()
    async with Session(server) as session:
        if images:
            arguments = {**arguments, "images": [await session.upload(p) for p in images]}
        if mask is not None:
            arguments = {**arguments, "mask": await session.upload(mask)}
        made = await session.call(tool, arguments)
    refusal = not_confirmed(made)
    if refusal is not None:
        raise RemoteError(refusal)
    written = await download(made["images"], *target)
    relay = made["images"][0]["relay"] if made["images"] else None
    elapsed = round(time.monotonic() - started, 3)
    return {"relay": relay, "images": written, "elapsed_seconds": elapsed}


async def _pull_images(server: Remote, asset_ids: list[str], out: Path) -> dict[str, Any]:
    from imagegate.remote import Session, download

    async with Session(server) as session:
        found = [(await session.call("get_image", {"asset_id": i}))["images"][0] for i in asset_ids]
    return {"images": await download(found, out, None)}


async def _generate_files(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from imagegate.core.staging import StagedBlob
    from imagegate.service.generation import GenerateArgs, Stopwatch, build_request, produce
    from imagegate.service.marking import build_marker

    watch = Stopwatch()
    relay = _one_relay(settings, args.relay)
    marker = build_marker(settings)  # before anything is paid for: a bad [c2pa] stops here
    request = build_request(
        GenerateArgs(
            args.prompt,
            size=args.size,
            n=args.n,
            output_format=args.output_format or _format_of(args.out),
            seed=args.seed,
            relay=args.relay,
            quality=args.quality,
        ),
        relay,
        settings,
    )
    relay.capabilities.check(request, relay.name)
    out, directory, explicit_file = _output_target(
        args.out, request.n, request.output_format, format_given=args.output_format is not None
    )

    said = [time.monotonic()]

    async def progress(fraction: float | None, message: str) -> None:
        said[0] = time.monotonic()
        percent = "" if fraction is None else f" {fraction * 100:3.0f}%"
        print(f"[{watch.elapsed():6.1f}s]{percent} {message}", file=sys.stderr, flush=True)

    async def heartbeat() -> None:
        """A line at least every `progress_seconds`, as MCP clients get progress: a
        long generation is visibly alive."""
        every = settings.progress_seconds
        while True:
            await asyncio.sleep(max(every - (time.monotonic() - said[0]), 0.01))
            if time.monotonic() - said[0] >= every:
                await progress(None, "still working")

    await progress(0.0, f"relay {relay.name}: {request.n} image(s) at {request.size}")
    beating = asyncio.create_task(heartbeat())
    try:
        produced = await produce(
            relay,
            request,
            settings,
            lambda: StagedBlob(directory, settings.max_image_bytes),
            progress,
        )
    except OSError as err:
        raise InvalidRequest(f"cannot write into {directory}: {err.strerror}") from None
    finally:
        beating.cancel()
    images = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        for item in produced:
            ext = item.info.format.extension
            if explicit_file:
                target = out
            else:
                target = directory / f"imagegate-{stamp}-{secrets.token_hex(3)}.{ext}"
            # Marked as the server marks what it stores (service.marking).
            marked = await asyncio.to_thread(
                partial(
                    marker.mark,
                    item.image.staged.path,
                    item.info.format,
                    action="created",
                    software_agent=relay.model or relay.kind,
                )
            )
            try:
                os.chmod(marked.path, 0o644)
                with marked.path.open("rb") as written:  # staging leaves it to whoever keeps it
                    os.fsync(written.fileno())
                os.replace(marked.path, target)
            except OSError as err:
                raise InvalidRequest(f"cannot write {target}: {err.strerror}") from None
            finally:
                if marked.path != item.image.staged.path:
                    marked.path.unlink(missing_ok=True)
            images.append(
                {
                    "path": str(target.resolve()),
                    "size": f"{item.info.width}x{item.info.height}",
                    "mime_type": item.info.format.mime_type,
                    "bytes": target.stat().st_size,
                    "params": {
                        **item.image.params,
                        **({"marking": marked.done} if marked.done else {}),
                    },
                }
            )
    finally:
        for item in produced:
            item.image.staged.discard()  # no-op for files already moved into place
    await progress(1.0, f"done: {len(images)} file(s)")
    return {"relay": relay.name, "images": images, "elapsed_seconds": watch.elapsed()}


def _format_of(out: Path) -> str | None:
    """`--out picture.jpg` without --format asks for a JPEG."""
    from imagegate.core.images import OUTPUT_FORMATS

    suffix = out.suffix.lower().lstrip(".")
    matches = [f.value for f in OUTPUT_FORMATS if suffix in (f.value, f.extension)]
    return matches[0] if matches else None


def _one_relay(settings: Settings, name: str | None) -> Relay:
    """Only the relay this command uses: the others' keys need not be set here."""
    from imagegate.config import read_secret_env
    from imagegate.relays.registry import build_relay

    name = name or settings.default_relay
    if name not in settings.relays:
        known = ", ".join(settings.relays)
        raise InvalidRequest(f"--relay: unknown relay {name!r}; configured: {known}")
    return build_relay(name, settings.relays[name], read_secret_env)


def _output_target(
    out: Path, n: int, output_format: ImageFormat, format_given: bool
) -> tuple[Path, Path, bool]:
    """(target, directory, is_explicit_file) for --out, checked before any work."""
    from imagegate.core.images import OUTPUT_FORMATS

    extensions = ", ".join(f".{fmt.extension}" for fmt in OUTPUT_FORMATS)
    explicit_file = not out.is_dir() and out.suffix != ""
    if explicit_file and n != 1:
        raise InvalidRequest("--out names a file, but -n is more than 1; give a directory")
    suffix = out.suffix.lower().lstrip(".")
    if explicit_file and suffix not in (output_format.value, output_format.extension):
        why = (
            f"the format --format {output_format.value} asks for"
            if format_given
            else f"the relay's default format; end it in {extensions} or pass --format"
        )
        raise InvalidRequest(f"--out {out.name} does not end in .{output_format.extension}, {why}")
    directory = out.parent if explicit_file else out
    if not explicit_file and not out.exists() and out.parent.is_dir():
        raise InvalidRequest(
            f"--out {out}: no such directory; to write one file, end its name in {extensions}"
        )
    if not directory.is_dir():
        raise InvalidRequest(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise InvalidRequest(f"output directory is not writable: {directory}")
    return out, directory, explicit_file


def _check_config(settings: Settings, args: argparse.Namespace) -> int:
    """Everything `serve` would refuse, found without serving or writing anything;
    every problem at once, not only the first."""
    from imagegate.access.setup import build_acl, metrics_token, static_token, team_auth
    from imagegate.access.tokens import load_tokens_file
    from imagegate.config import config_path_from_env, otlp_headers, read_secret_env
    from imagegate.core.secrets import configured_secret
    from imagegate.core.statedir import state_dir_problem
    from imagegate.relays.registry import build_relay
    from imagegate.service.presets import check_server_presets

    problems: list[str] = []

    def attempt(check: Callable[[], T]) -> T | None:
        try:
            return check()
        except ConfigError as err:
            problems.append(str(err))
            return None

    built = [
        attempt(partial(build_relay, name, c, read_secret_env))
        for name, c in settings.relays.items()
    ]
    relays = [relay for relay in built if relay is not None]
    attempt(lambda: check_server_presets(settings, relays))
    names = list(settings.relays)
    acl = attempt(lambda: build_acl(settings, names, http=True))
    attempt(lambda: configured_secret("link_key", settings.link_key, settings.link_key_file))
    attempt(
        lambda: configured_secret(
            "request_state_key", settings.request_state_key, settings.request_state_key_file
        )
    )
    attempt(lambda: metrics_token(settings))
    if settings.otlp_endpoint is not None:
        attempt(lambda: otlp_headers(settings))
    token = attempt(lambda: static_token(settings))
    with_xmp, with_c2pa = settings.marks()
    if settings.c2pa is not None:  # the SDK checks certificate, key and anchors as serve does
        from imagegate.service.marking import build_marker

        attempt(lambda: build_marker(settings))
    tokens_file = settings.tokens_file
    mapped = (
        attempt(lambda: load_tokens_file(tokens_file, names, settings.strict_permissions))
        if tokens_file is not None
        else None
    )
    state = state_dir_problem(settings.state_dir)
    if state is not None:
        problems.append(state)
    if problems:
        if any("environment variable" in problem for problem in problems):
            problems.append(_where_secrets_are(args.config or config_path_from_env()))
        raise ConfigError("\n".join(problems))
    auth = []
    if token is not None:
        auth.append("static bearer token")
    if mapped is not None:
        auth.append(f"{len(mapped)} mapped token(s) from {tokens_file}")
    if settings.oidc is not None:
        auth.append(f"OIDC tokens from {settings.oidc.issuer} (not contacted by this check)")
    lines = [
        "configuration OK",
        "relays: "
        + ", ".join(f"{r.name} ({r.kind})" for r in relays)
        + f"; default {settings.default_relay}",
        f"state: {settings.state_dir}",
        "presets: " + (", ".join(sorted(settings.presets)) or "none"),
        "marking: "
        + (" and ".join(m for m, on in (("XMP", with_xmp), ("C2PA", with_c2pa)) if on) or "off"),
        "authentication: " + ("; ".join(auth) or "generated development token"),
    ]
    if settings.acl_file is not None and acl is not None:
        lines.append(
            f"ACL: {settings.acl_file} ({len(acl.subjects)} subject(s), {len(acl.groups)} group(s))"
        )
    elif team_auth(settings):
        lines.append("ACL: none (acl_open); every caller may use every tool and relay, not admin")
    else:
        lines.append("ACL: none; one caller, who has every scope")
    lines += [f"warning: {warning}" for warning in settings.warnings()]
    print("\n".join(lines))
    return 0


PACKAGED_CONFIG_DIR = Path("/etc/imagegate")


def _where_secrets_are(config: Path | None) -> str:
    """Where a missing secret's variable should be set: the packaged service reads
    them from its environment file; anything else, from the environment it runs in."""
    if config is not None and config.resolve().is_relative_to(PACKAGED_CONFIG_DIR):
        return (
            "(the service reads its secrets from its environment file; check with them: "
            "sudo sh -c 'set -a; . /etc/imagegate/env; exec imagegate check-config')"
        )
    return "(set them in the environment that runs imagegate, as for `imagegate serve`)"


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when a marking says the image is AI-generated and the manifest, if any,
    is valid; 1 otherwise; 2 when the file is no image imagegate reads, or the trust
    anchors don't load."""
    from imagegate.core.images import sniff_format
    from imagegate.service.marking import MARKABLE, verify

    path: Path = args.file
    try:
        # The signature only: a damaged image is what this command is for.
        with path.open("rb") as file:
            fmt = sniff_format(file.read(32))
    except OSError as err:
        print(f"imagegate: {path}: {err.strerror or err}", file=sys.stderr)
        return EXIT_CONFIG
    if fmt not in MARKABLE:
        print(f"imagegate: {path}: not a PNG, JPEG or WebP image", file=sys.stderr)
        return EXIT_CONFIG
    anchors = args.trust_anchors or (settings.c2pa.trust_anchors if settings.c2pa else None)
    if anchors is not None:
        from imagegate.core.c2pa import reading_context

        try:
            reading_context(anchors)
        except ConfigError as err:
            print(f"imagegate: {err}", file=sys.stderr)
            return EXIT_CONFIG
    found = verify(path, fmt, anchors)
    report = found.as_dict()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_verification_text(report, found.manifest))
    return 0 if found.convincing else EXIT_FAILURE


_MANIFEST_STATES = {
    "invalid": "INVALID",
    "untrusted": "valid, signer not trusted",
    "trusted": "trusted",
}


def _verification_text(report: dict[str, Any], manifest: str) -> str:
    xmp, c2pa = report["xmp"], report["c2pa"]
    lines = [
        "AI-generated: " + ("yes" if report["ai_generated"] else "no marking says so"),
        f"XMP digital source type: {xmp['digital_source_type'] or 'none'}"
        + (f" ({xmp['error']})" if xmp.get("error") else ""),
    ]
    if not c2pa.get("present"):
        lines.append("C2PA manifest: none" + (f" ({c2pa['error']})" if c2pa.get("error") else ""))
        return "\n".join(lines)
    state = _MANIFEST_STATES[manifest]
    lines.append(f"C2PA manifest: {state}; signed by {c2pa['signer']} (issuer {c2pa['issuer']})")
    for action in c2pa["actions"]:
        lines.append(
            f"  action {action['action']}"
            + (f", {action['digital_source_type']}" if action["digital_source_type"] else "")
            + (f", by {action['software_agent']}" if action["software_agent"] else "")
        )
    for ingredient in c2pa["ingredients"] or []:
        lines.append(f"  ingredient {ingredient['title']} ({ingredient['relationship']})")
    for problem in c2pa["problems"] or []:
        lines.append(f"  problem: {problem}")
    return "\n".join(lines)


def _client_config(args: argparse.Namespace) -> int:
    """Print the client's entry (stdout) and where it goes (stderr); with --write, merge
    it into that file. Exit 2 for a bad argument or a file it won't touch, 1 for I/O."""
    from imagegate import clientconfig as cc

    def say(line: str) -> None:
        print(f"imagegate: {line}", file=sys.stderr)

    where: Path | None = None
    try:
        if args.file is not None and not args.write:
            raise InvalidRequest("--file goes with --write")
        name = cc.check_name(args.name)
        if args.openid and args.server is None:
            raise InvalidRequest("--openid goes with --server URL")
        if args.server is None:
            # The client starts imagegate without this shell's environment: name the
            # configuration this command was given, or it would run on the defaults.
            config = args.config or (
                Path(os.environ["IMAGEGATE_CONFIG"]) if os.environ.get("IMAGEGATE_CONFIG") else None
            )
            extra = ("--config", os.path.abspath(config)) if config else ()
            server: cc.Server = cc.Local((*_own_command(), *extra))
        else:
            token_env = cc.check_token_env(args.token_env)
            for warning in cc.check_url(args.server):
                say(f"warning: {warning}")
            server = (
                cc.PerUserOpenID(args.server) if args.openid else cc.Remote(args.server, token_env)
            )
        entry = cc.entry(args.client, server)
        where = args.file or cc.default_path(
            args.client,
            Path.home(),
            Path.cwd(),
            sys.platform == "darwin",
            os.environ.get("CODEX_HOME"),  # Codex's own variable, as Codex reads it
        )
        if args.write and args.client == "librechat":
            cc.merge(args.client, None, name, entry)  # refuses, saying why
        text = cc.snippet(args.client, name, entry)
        if not args.write:
            print(text, end="")
            at = _OPENID_ENTRY_AT if args.openid else _ENTRY_AT.get(args.client, "")
            say(f"this goes in {where}{at}")
            return 0
        written = cc.write_merged(where, args.client, name, entry)
        print(text, end="")  # only once written: a refusal leaves stdout empty
    except InvalidRequest as err:
        print(f"imagegate: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as err:
        print(f"imagegate: error: {err.filename or where}: {err.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    if written.change == "unchanged":
        say(f"{written.path} already has this {name!r} entry; nothing written")
    elif written.change == "added":
        kept = f" (the old file is in {written.backup})" if written.backup else ""
        say(f"added the {name!r} entry to {written.path}{kept}")
    else:
        old_file = f"the old file is in {written.backup}"
        say(f"replaced a different {name!r} entry in {written.path} ({old_file})")
    return 0


_ENTRY_AT = {
    "claude-code": ' (project scope; or under "mcpServers" in ~/.claude.json for every project)',
    "codex": " (or .codex/config.toml in a trusted project)",
    "cursor": " (or .cursor/mcp.json in a project)",
    "librechat": " (LibreChat's, under mcpServers:; its .env sets the variable)",
}
_OPENID_ENTRY_AT = " (LibreChat's, under mcpServers:; its .env sets OPENID_REUSE_TOKENS=true)"


def _own_command() -> tuple[str, ...]:
    """How a client starts this very imagegate: the `imagegate` script that runs now, the
    one beside this interpreter (a venv's bin/), else this interpreter with -m. Not
    $PATH's: that may be another installation. Absolute, symlinks kept (a pipx link
    outlives an upgrade)."""
    script = Path(sys.argv[0])
    if script.name == "imagegate" and script.is_file():
        return (os.path.abspath(script),)
    beside = Path(sys.executable).parent / "imagegate"
    if beside.is_file():
        return (os.path.abspath(beside),)
    return (sys.executable, "-m", "imagegate")


MAX_TOKEN_DAYS = 3650


def _token_new(settings: Settings, args: argparse.Namespace) -> int:
    from imagegate.access.bearer import TOKEN_SUBJECT_PREFIX
    from imagegate.access.scopes import check_scope
    from imagegate.access.tokens import SUBJECT_NAME, new_token_entry

    if not re.fullmatch(SUBJECT_NAME, args.subject):
        raise InvalidRequest("--subject: 1-64 of letters, digits, '.', '_', '@', '-'")
    names = list(settings.relays)  # names only: relay keys are not needed to mint a token
    for scope in args.scope:
        try:
            check_scope(scope, names)
        except ValueError as err:
            raise InvalidRequest(f"--scope: {err}") from None
    expires = None
    if args.expires_in_days is not None:
        if not 1 <= args.expires_in_days <= MAX_TOKEN_DAYS:
            raise InvalidRequest(f"--expires-in-days must be between 1 and {MAX_TOKEN_DAYS}")
        expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
    token, entry = new_token_entry(args.subject, args.scope, expires, args.comment)
    print(
        f"# token for {TOKEN_SUBJECT_PREFIX}{args.subject}: shown only now; give it to the caller"
    )
    print(token)
    print("\n# add this entry to your tokens file (it holds only the token's SHA-256):")
    print(entry, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
