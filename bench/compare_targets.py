"""The two servers bench/compare.py measures, each behind the same small interface.

A target knows how to start its server on a port against the fake upstream, how to
answer `initialize` over stdio, which CLI commands it has, which bearer token a caller
holds, and how to make one image and wait until it is stored:

- imagegate: `imagegate serve` with an `openai-images` relay (request_policy compat so
  that any size can be asked for, paid = false so no confirmation is asked) and mapped
  tokens for many callers. `generate_image` answers once the image is stored.
- image-generation-mcp 1.12.1 (bench/.competitor-venv, `make bench-competitor`):
  `image-generation-mcp serve --transport http`, its OpenAI provider pointed at the
  fake upstream through OPENAI_BASE_URL (the openai SDK reads it; the server has no
  setting of its own for it). Its `generate_image` answers "generating" at once and
  makes the image in a background task; the image is complete when its sidecar
  `<id>.json` appears in the scratch directory, which is watched from here every 2 ms:
  the earliest a client could know, without the cost of polling
  `check_generation_status` (measured separately as `generate_polled`).
"""

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastmcp import Client

BENCH_DIR = Path(__file__).resolve().parent
COMPETITOR_VENV = BENCH_DIR / ".competitor-venv"
COMPETITOR_BIN = COMPETITOR_VENV / "bin" / "image-generation-mcp"
COMPETITOR_VERSION = "1.12.1"
CALLERS = 64
"""Mapped tokens `caller-0` ... for the concurrent figures (each its own tenant)."""


def prompt(px: int) -> str:
    """The fake upstream picks the image from the tag (see fake_images_upstream.py)."""
    return f"benchmark image [px={px}]"


class Target:
    name: str
    healthz: str | None = None
    mcp_path = "/mcp"

    def __init__(self, work: Path, upstream: str) -> None:
        self.work = work
        self.upstream = upstream
        self._launches = 0

    def fresh_directory(self) -> Path:
        self._launches += 1
        directory = self.work / f"{self.name}-{self._launches}"
        directory.mkdir(parents=True)
        return directory

    def server_argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def stdio_argv(self) -> list[str]:
        raise NotImplementedError

    def env(self, directory: Path, port: int | None = None) -> dict[str, str]:
        raise NotImplementedError

    def cli(self) -> dict[str, list[str]]:
        """Label -> argv of the command-line calls that are timed."""
        raise NotImplementedError

    def token(self, caller: str) -> str:
        raise NotImplementedError

    def launch(self, port: int, directory: Path) -> subprocess.Popen[bytes]:
        log = (directory / "server.log").open("ab")
        try:
            return subprocess.Popen(
                self.server_argv(port),
                env=self.env(directory, port),
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=directory,
            )
        finally:
            log.close()

    async def generate(self, client: Client, px: int, directory: Path) -> None:
        """One image of px x px, returned once the server has stored it."""
        raise NotImplementedError

    async def generate_polled(
        self, client: Client, px: int, directory: Path, interval: float
    ) -> None:
        """Like generate, but learning of the image as a client can (the same here when
        the call itself answers with the stored image)."""
        await self.generate(client, px, directory)

    async def describe(self, client: Client, directory: Path) -> str:
        """What a 1024 px generation returns to the client, in one line."""
        raise NotImplementedError

    async def server_info(self, client: Client) -> None:
        """The cheapest authenticated tool call: the server's own info tool."""
        raise NotImplementedError


class Imagegate(Target):
    name = "imagegate"
    healthz = "/healthz"

    def __init__(self, work: Path, upstream: str) -> None:
        super().__init__(work, upstream)
        self.binary = Path(sys.executable).with_name("imagegate")
        self.key = "sk-bench-" + secrets.token_hex(12)
        self._tokens = {
            name: secrets.token_hex(20)
            for name in ["main", "heavy", "light"] + [f"caller-{n}" for n in range(CALLERS)]
        }
        self.config = work / "imagegate.toml"
        self.config.write_text(
            'default_relay = "bench"\n\n[relays.bench]\nkind = "openai-images"\n'
            f'base_url = "{upstream}/v1"\napi_key_env = "BENCH_IMAGES_KEY"\n'
            'model = "gpt-image-1.5"\npaid = false\nrequest_policy = "compat"\n'
        )
        self.tokens_file = work / "imagegate-tokens.toml"
        self.tokens_file.write_text(
            "".join(
                f'[[tokens]]\nsubject = "{name}"\n'
                f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n\n'
                for name, token in self._tokens.items()
            )
        )
        self.tokens_file.chmod(0o600)

    def server_argv(self, port: int) -> list[str]:
        return [str(self.binary), "serve"]

    def stdio_argv(self) -> list[str]:
        return [str(self.binary), "serve", "--transport", "stdio"]

    def env(self, directory: Path, port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
        env.update(
            BENCH_IMAGES_KEY=self.key,
            IMAGEGATE_CONFIG=str(self.config),
            IMAGEGATE_STATE_DIR=str(directory / "state"),
            IMAGEGATE_HOST="127.0.0.1",
            IMAGEGATE_PORT=str(port or 8765),
            IMAGEGATE_TOKENS_FILE=str(self.tokens_file),
            IMAGEGATE_ACL_OPEN="true",
            IMAGEGATE_LOG_LEVEL="warning",
            IMAGEGATE_AUDIT_LOG="off",
        )
        return env

    def cli(self) -> dict[str, list[str]]:
        return {
            "--version": [str(self.binary), "--version"],
            "check-config": [str(self.binary), "check-config"],
            "--help": [str(self.binary), "--help"],
        }

    def token(self, caller: str) -> str:
        return self._tokens[caller]

    async def server_info(self, client: Client) -> None:
        await client.call_tool("server_info", {})

    async def generate(self, client: Client, px: int, directory: Path) -> None:
        result = await client.call_tool(
            "generate_image", {"prompt": prompt(px), "size": f"{px}x{px}"}
        )
        images = (result.structured_content or {}).get("images") or []
        if len(images) != 1 or images[0].get("width") != px:
            raise RuntimeError(f"imagegate answered without a {px} px image: {result}")

    async def describe(self, client: Client, directory: Path) -> str:
        result = await client.call_tool(
            "generate_image", {"prompt": prompt(1024), "size": "1024x1024"}
        )
        structured = json.dumps(result.structured_content)
        blocks = ", ".join(_block(block) for block in result.content)
        return (
            f"generate_image answers when the image is stored: structured content "
            f"{len(structured)} B (asset_id, signed download url, size, params...); "
            f"content blocks: {blocks}; no image bytes inline"
        )


class Competitor(Target):
    name = "competitor"

    def __init__(self, work: Path, upstream: str) -> None:
        super().__init__(work, upstream)
        self.key = "sk-bench-" + secrets.token_hex(12)
        self._token = secrets.token_hex(20)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._files = _FileWatcher(0.002)

    @staticmethod
    def installed() -> bool:
        return COMPETITOR_BIN.exists()

    @staticmethod
    def version() -> str:
        found = subprocess.run(
            [str(COMPETITOR_VENV / "bin" / "python"), "-m", "pip", "show", "image-generation-mcp"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in found.stdout.splitlines():
            if line.startswith("Version:"):
                return line.split()[1]
        return "unknown"

    def server_argv(self, port: int) -> list[str]:
        http = ["--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
        return [str(COMPETITOR_BIN), "serve", *http]

    def stdio_argv(self) -> list[str]:
        return [str(COMPETITOR_BIN), "serve"]

    def env(self, directory: Path, port: int | None = None) -> dict[str, str]:
        prefixes = ("IMAGE_GENERATION_MCP_", "OPENAI_", "FASTMCP_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.update(
            # The openai SDK's own variable: the only way to move its base URL.
            OPENAI_BASE_URL=f"{self.upstream}/v1",
            IMAGE_GENERATION_MCP_OPENAI_API_KEY=self.key,
            IMAGE_GENERATION_MCP_READ_ONLY="false",  # else generate_image is hidden
            IMAGE_GENERATION_MCP_DEFAULT_PROVIDER="openai",
            IMAGE_GENERATION_MCP_PAID_PROVIDERS="none",  # no confirmation question
            IMAGE_GENERATION_MCP_BEARER_TOKEN=self._token,
            IMAGE_GENERATION_MCP_SCRATCH_DIR=str(directory / "images"),
            IMAGE_GENERATION_MCP_STYLES_DIR=str(directory / "styles"),
            IMAGE_GENERATION_MCP_KV_STORE_URL="memory://",
            FASTMCP_LOG_LEVEL="WARNING",
            # Over stdio, fastmcp prints a banner and asks pypi.org for a newer version.
            FASTMCP_SHOW_SERVER_BANNER="false",
            FASTMCP_CHECK_FOR_UPDATES="off",
            FASTMCP_HOME=str(directory / "fastmcp-home"),
        )
        return env

    def cli(self) -> dict[str, list[str]]:
        return {"--help": [str(COMPETITOR_BIN), "--help"]}

    def token(self, caller: str) -> str:
        return self._token

    async def server_info(self, client: Client) -> None:
        await client.call_tool("get_server_info", {})

    async def _start(self, client: Client, px: int) -> str:
        result = await client.call_tool(
            "generate_image", {"prompt": prompt(px), "provider": "openai"}
        )
        answer = json.loads(result.content[0].text)  # type: ignore[union-attr]
        if answer.get("status") != "generating":
            raise RuntimeError(f"competitor did not start a generation: {answer}")
        return str(answer["image_id"])

    def _watcher(self) -> "_FileWatcher":
        """One watcher per event loop (each measurement runs its own)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._files = loop, _FileWatcher(0.002)
        return self._files

    async def generate(self, client: Client, px: int, directory: Path) -> None:
        image_id = await self._start(client, px)
        sidecar = directory / "images" / f"{image_id}.json"
        try:
            await asyncio.wait_for(self._watcher().wait(sidecar), 120)
        except TimeoutError:
            status = await client.call_tool("check_generation_status", {"image_id": image_id})
            raise RuntimeError(f"competitor image {image_id} not stored: {status}") from None

    async def generate_polled(
        self, client: Client, px: int, directory: Path, interval: float
    ) -> None:
        image_id = await self._start(client, px)
        while True:
            status = await client.call_tool("check_generation_status", {"image_id": image_id})
            state = json.loads(status.content[0].text)  # type: ignore[union-attr]
            if state["status"] == "completed":
                return
            if state["status"] != "generating":
                raise RuntimeError(f"competitor image {image_id}: {state}")
            await asyncio.sleep(interval)

    async def describe(self, client: Client, directory: Path) -> str:
        result = await client.call_tool(
            "generate_image", {"prompt": prompt(1024), "provider": "openai"}
        )
        text = result.content[0].text  # type: ignore[union-attr]
        image_id = json.loads(text)["image_id"]
        await self._watcher().wait(directory / "images" / f"{image_id}.json")
        status = await client.call_tool("check_generation_status", {"image_id": image_id})
        shown = await client.call_tool("show_image", {"uri": f"image://{image_id}/view"})
        try:
            read = await client.read_resource(f"image://{image_id}/view")
            blob = getattr(read[0], "blob", None) or ""
            full = f"{len(blob)} B base64 inline (the whole PNG)"
        except Exception as error:  # what this client makes of a multi-MB answer
            full = f"failed in this client: {error}"
        blocks = ", ".join(_block(block) for block in result.content)
        shown_blocks = ", ".join(_block(block) for block in shown.content)
        status_text = status.content[0].text  # type: ignore[union-attr]
        return (
            f"generate_image answers at once, before any upstream request, with status "
            f"'generating' (content blocks: {blocks}; structured content: "
            f"{json.dumps(result.structured_content)}); check_generation_status: "
            f"text {len(status_text)} B, structured {json.dumps(status.structured_content)}; "
            f"show_image: {shown_blocks}; resources/read image://<id>/view: {full}"
        )


def _block(block: Any) -> str:
    kind = getattr(block, "type", type(block).__name__)
    if kind == "text":
        return f"text {len(block.text)} B"
    if kind == "image":
        return f"image {getattr(block, 'mime_type', '')} {len(block.data)} B base64"
    if kind == "resource_link":
        return f"resource_link {block.uri}"
    if kind == "resource":
        return "embedded resource"
    return str(kind)


class _FileWatcher:
    """Resolves waiters when their file appears; one stat per waiting file per tick,
    from a single task, so that 64 waiters cost the client little."""

    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._waiting: dict[Path, list[asyncio.Future[float]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def wait(self, path: Path) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(path, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            for path, futures in list(self._waiting.items()):
                if all(future.done() for future in futures):  # gave up waiting
                    del self._waiting[path]
            for path in _present(list(self._waiting)):
                now = time.perf_counter()
                for future in self._waiting.pop(path):
                    if not future.done():
                        future.set_result(now)
            await asyncio.sleep(self._tick)


def _present(paths: list[Path]) -> list[Path]:
    return [path for path in paths if path.exists()]
