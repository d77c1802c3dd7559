"""The `imagegate` command as a user runs it: serve (HTTP and stdio), generate, check-config."""

import asyncio
import base64
import gc
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError
from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from imagegate.cli import _listen, settle
from imagegate.storage.sqlite.schema import LATEST
from tests.e2e.processes import clean_env, free_port, run, serving
from tests.fakes.upstream import images_reply, json_reply, png_bytes, running_upstream, slow


async def test_serve_over_http_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as (base_url, process):
        token_file = state / "bearer-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((state / "link-signing.key").stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
            result = await client.call_tool("generate_image", {"prompt": "served", "size": "96x64"})
            with pytest.raises(ToolError, match="image not found"):
                await client.call_tool("get_image", {"asset_id": "img_" + "0" * 24})
        assert result.structured_content is not None
        url = result.structured_content["images"][0]["url"]
        async with httpx.AsyncClient() as http:
            download = await http.get(url)
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert (await httpx.AsyncClient().get(f"{base_url}/readyz")).status_code == 200

        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM (systemd counts it clean).
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
        stderr = process.stderr.read() if process.stderr else ""
    assert "Application shutdown complete" in stderr
    # One format in the journal: a line per record, ours; a refusal logged once by us.
    announced = ("imagegate ", "bearer token file: ", "state: ", "{")
    logged = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")
    for line in stderr.splitlines():
        assert line.startswith(announced) or logged.match(line), line
    assert "tool get_image refused: image not found" in stderr
    assert "Error calling tool" not in stderr
    assert f"MCP over streamable HTTP at {base_url}/mcp" in stderr
    assert f"bearer token file: {token_file}" in stderr
    assert token not in stderr  # not a terminal: the token itself is not printed


async def test_link_key_and_token_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serving(state) as (base_url, _):
        token = (state / "bearer-token").read_text().strip()
        async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
            result = await client.call_tool("generate_image", {"prompt": "keep", "size": "64x64"})
        assert result.structured_content is not None
        url = result.structured_content["images"][0]["url"]
    with serving(state) as (base_url_2, _):
        # Same state, same key: the old link still works on the restarted server
        # (on a new port, so re-point the link at it).
        moved = url.replace(base_url, base_url_2)
        assert httpx.get(moved).status_code == 200
        assert (state / "bearer-token").read_text().strip() == token


async def test_debug_logs_hold_no_token_prompt_or_image(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prompt = "the secret project codename"
    image = base64.b64encode(png_bytes((64, 64), "teal")).decode()
    with serving(state, IMAGEGATE_LOG_LEVEL="debug") as (base_url, process):
        token = (state / "bearer-token").read_text().strip()
        async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
            result = await client.call_tool("generate_image", {"prompt": prompt, "size": "64x64"})
            await client.call_tool(
                "edit_image", {"prompt": prompt, "images": [f"data:image/png;base64,{image}"]}
            )
        assert result.structured_content is not None
        url = result.structured_content["images"][0]["url"]
        httpx.get(url)
        refused = httpx.post(
            f"{base_url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer wrong-{token}"},
        )
        assert refused.status_code == 401
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        logs = process.stderr.read() if process.stderr else ""
    assert "DEBUG" in logs  # the level took effect, so the check below means something
    assert token not in logs
    assert prompt not in logs
    assert image[:40] not in logs
    assert url.split("sig=")[1] not in logs
    key = (state / "link-signing.key").read_text().strip()
    assert key not in logs


async def test_logs_hold_no_signed_image_url_an_upstream_returned(tmp_path: Path) -> None:
    signature = "X-Amz-Signature=0123456789abcdefSECRET"

    async def stored_image(request: Request, body: bytes) -> Response:
        return Response(png_bytes(), media_type="image/png")

    async with running_upstream() as fake:
        image_url = f"{fake.base_url}/bucket/image.png?{signature}"
        fake.defaults["/v1/images/generations"] = json_reply({"data": [{"url": image_url}]})
        fake.defaults["/bucket/image.png"] = stored_image
        config = tmp_path / "imagegate.toml"
        config.write_text(
            'default_relay = "images"\n[relays.images]\nkind = "openai-images"\n'
            f'base_url = "{fake.base_url}/v1"\napi_key_env = "LOG_TEST_KEY"\npaid = false\n'
        )
        state = tmp_path / "state"
        with serving(
            state,
            IMAGEGATE_CONFIG=str(config),
            IMAGEGATE_LOG_LEVEL="debug",
            LOG_TEST_KEY="sk-log-test-0123456789",
        ) as (base_url, process):
            token = (state / "bearer-token").read_text().strip()
            async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
                result = await client.call_tool("generate_image", {"prompt": "from a bucket"})
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            logs = process.stderr.read() if process.stderr else ""
    assert result.structured_content is not None
    assert [r.path for r in fake.requests] == ["/v1/images/generations", "/bucket/image.png"]
    assert "DEBUG" in logs
    assert "SECRET" not in logs
    assert "sk-log-test-0123456789" not in logs


def test_serve_reports_a_busy_port(tmp_path: Path) -> None:
    with serving(tmp_path / "a") as (base_url, _):
        port = base_url.rsplit(":", 1)[1]
        result = run(
            "serve",
            env=clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "b"), IMAGEGATE_PORT=port),
            timeout=30,
        )
    assert result.returncode != 0
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


async def test_stdio_transport(tmp_path: Path) -> None:
    state = tmp_path / "state"
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "serve", "--transport", "stdio"],
        env=clean_env(IMAGEGATE_STATE_DIR=str(state)),
    )
    async with Client(transport) as client:
        info = (await client.call_tool("server_info", {})).structured_content
        assert info is not None
        assert info["subject"] == "local"
        assert info["download_links"] is False
        result = await client.call_tool("generate_image", {"prompt": "over stdio", "size": "80x64"})
        assert result.structured_content is not None
        (image,) = result.structured_content["images"]
        path = Path(image["path"])
        assert path.is_file()
        assert path.is_relative_to(state)
        assert image["url"] == path.as_uri()
        assert "expires_at" not in image  # a local file does not expire
        with Image.open(path) as picture:
            assert picture.size == (80, 64)
        with pytest.raises(ToolError, match="download links need the HTTP server"):
            await client.call_tool("create_download_link", {"asset_id": image["asset_id"]})
        listed = (await client.call_tool("list_images", {})).structured_content
        assert listed is not None
        assert [i["asset_id"] for i in listed["images"]] == [image["asset_id"]]


def test_generate_command_writes_a_file_and_reports_json(tmp_path: Path) -> None:
    result = run(
        "generate",
        "a cat on a mat",
        "--size",
        "300x200",
        "--format",
        "jpeg",
        "--seed",
        "3",
        env=clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state")),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["relay"] == "placeholder"
    assert report["elapsed_seconds"] >= 0
    (image,) = report["images"]
    path = Path(image["path"])
    assert path.parent == tmp_path
    assert path.suffix == ".jpg"
    assert image["size"] == "300x200"
    assert image["bytes"] == path.stat().st_size
    with Image.open(path) as picture:
        assert picture.format == "JPEG"
        assert picture.size == (300, 200)
    progress = result.stderr.strip().splitlines()
    assert all(re.match(r"\[\s*\d+\.\ds\]", line) for line in progress)
    assert any("drawing image 1 of 1" in line for line in progress)
    assert not (tmp_path / "state").exists()  # no server, no state


@pytest.mark.parametrize(("name", "pillow"), [("out.png", "PNG"), ("out.JPG", "JPEG")])
def test_generate_to_a_named_file(tmp_path: Path, name: str, pillow: str) -> None:
    target = tmp_path / name  # without --format, the name's extension chooses it
    result = run("generate", "named", "--size", "64x64", "--out", str(target), env=clean_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"][0]["path"] == str(target)
    with Image.open(target) as picture:
        assert picture.format == pillow


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "big"], "size must look like 1024x1024"),
        (["--format", "bmp"], "output_format must be one of png, jpeg, webp"),
        (["-n", "9"], "n must be between 1 and 4"),
        (["--relay", "dalle"], "unknown relay 'dalle'"),
        (["--out", "/nonexistent/dir/"], "output directory does not exist"),
        (["--out", "x.png", "--format", "webp"], "--out x.png does not end in .webp, the format"),
        (["--out", "pic.gif"], "does not end in .png, the relay's default format; end it in .png"),
        (["--out", "pic"], "--out pic: no such directory; to write one file, end its name in"),
        (["--quality", "high"], "relay 'placeholder' does not support quality"),
    ],
)
def test_generate_command_fails_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("generate", "nope", *args, env=clean_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert not re.search(r"^\[", result.stderr, re.MULTILINE)  # refused before any progress
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_generate_needs_only_the_key_of_the_relay_it_uses(tmp_path: Path) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text(
        'default_relay = "placeholder"\n[relays.placeholder]\nkind = "placeholder"\n'
        '[relays.paid]\nkind = "openai-images"\nbase_url = "https://api.example/v1"\n'
        'api_key_env = "UNSET_KEY_FOR_TEST"\n'
    )
    env = clean_env(IMAGEGATE_CONFIG=str(config))
    result = run("generate", "keyless", "--size", "64x64", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    minted = run("token", "new", "--subject", "ci-bot", "--scope", "relay:paid", env=env)
    assert minted.returncode == 0, minted.stderr
    too_long = run("token", "new", "--subject", "x", "--expires-in-days", "99999999", env=env)
    assert too_long.returncode == 1
    assert "--expires-in-days must be between 1 and 3650" in too_long.stderr
    assert "Traceback" not in too_long.stderr


def test_generate_into_a_directory_it_cannot_write_fails_cleanly(tmp_path: Path) -> None:
    result = run("generate", "nope", "--out", "/proc/x.png", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert "/proc" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"IMAGEGATE_LINK_KEY": "changeme"}, "link_key: must be at least 16 characters"),
        ({"IMAGEGATE_REQUEST_STATE_KEY": "x" * 31}, "request_state_key: must be at least 32"),
        ({"IMAGEGATE_BEARER_TOKEN": "short"}, "bearer_token: must be at least 16 characters"),
        ({"IMAGEGATE_QUOTAS": "{bad"}, "environment IMAGEGATE_QUOTAS: not valid JSON"),
        (
            {
                "IMAGEGATE_PRESETS": '{"p": {"prompt": "{prompt}", "quality": "high", '
                '"relay": "placeholder"}}'
            },
            "presets.p: relay 'placeholder' does not support quality",
        ),
        (  # no relay: its calls go to the default relay, which takes no negative prompt
            {"IMAGEGATE_PRESETS": '{"p": {"prompt": "{prompt}", "negative_prompt": "text"}}'},
            "presets.p: relay 'placeholder' does not support negative_prompt (it names no relay",
        ),
        (
            {
                "IMAGEGATE_OTLP_ENDPOINT": "https://otel.example.com",
                "IMAGEGATE_OTLP_HEADERS_ENV": "OTLP_HEADERS_UNSET",
            },
            "the environment variable OTLP_HEADERS_UNSET is not set",
        ),
    ],
)
def test_what_serve_would_refuse_check_config_refuses_too(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    settings = clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state"), **env)
    for command in ("check-config", "serve"):
        result = run(command, env=settings, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        assert "changeme" not in result.stderr


def test_a_state_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    env = clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state"))
    checked = run("check-config", env=env)
    assert checked.returncode == 2
    assert f"state_dir: {tmp_path / 'state'} is not a directory" in checked.stderr
    served = run("serve", env=env, timeout=30)
    assert served.returncode == 2
    assert f"state_dir: cannot use {tmp_path / 'state'}" in served.stderr
    assert "Traceback" not in served.stderr


def test_an_open_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    with serving(state) as (_, process):
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        logs = process.stderr.read() if process.stderr else ""
    assert "was mode 0755, open to others; tightened to 0700" in logs


def test_a_wildcard_host_without_public_url_is_warned_about(tmp_path: Path) -> None:
    env = clean_env(IMAGEGATE_STATE_DIR=str(tmp_path), IMAGEGATE_HOST="0.0.0.0")  # noqa: S104
    result = run("check-config", env=env)
    assert result.returncode == 0
    assert "warning: host '0.0.0.0' without public_url" in result.stdout
    quiet = run("check-config", env={**env, "IMAGEGATE_PUBLIC_URL": "https://img.example"})
    assert "warning" not in quiet.stdout


def test_check_config_accepts_the_defaults_and_the_example(tmp_path: Path) -> None:
    env = clean_env(IMAGEGATE_STATE_DIR=str(tmp_path))
    assert run("check-config", env=env).returncode == 0
    example = Path(__file__).parents[2] / "imagegate.example.toml"
    result = run("--config", str(example), "check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


SERVING = ("uvicorn", "starlette", "fastmcp", "mcp", "opentelemetry.sdk", "asyncpg", "obstore")
"""What serving needs and the quick commands don't: the MCP server and client, the HTTP
server, the SDK that sends traces, the database and bucket drivers."""


@pytest.mark.parametrize(
    ("args", "not_loaded"),
    [
        (["--version"], (*SERVING, "imagegate.config", "pydantic", "httpx")),
        # Nor the metrics library, or httpx's own command line (click, rich).
        (["check-config"], (*SERVING, "joserfc", "prometheus_client", "httpx._main", "rich")),
    ],
)
def test_quick_commands_load_only_what_they_use(
    tmp_path: Path, args: list[str], not_loaded: tuple[str, ...]
) -> None:
    """`--version` and `check-config` answer at once (a shell completion, a deploy
    script): they import neither the server nor its drivers."""
    assert _among(_loaded_by(tmp_path, *args), not_loaded) == []


def test_the_stdio_server_loads_no_client_and_no_unused_driver(tmp_path: Path) -> None:
    """What stdio doesn't use, it doesn't load before its first answer: the remote
    client, the database and bucket drivers, the trace SDK, JWT checks."""
    loaded = _loaded_by(tmp_path, "serve", "--transport", "stdio")  # stdin empty: it ends
    unused = ("fastmcp.client", "asyncpg", "obstore", "opentelemetry.sdk", "joserfc.jwt")
    assert "imagegate.server" in loaded
    assert _among(loaded, unused) == []


def _loaded_by(state_dir: Path, *args: str) -> list[str]:
    """The modules that running the command leaves imported."""
    entry = (
        "import sys\n"
        "from imagegate.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"  # --version exits from argparse
        "    pass\n"
        "print(' '.join(name for name, module in sys.modules.items() if module))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", entry, *args],
        env=clean_env(IMAGEGATE_STATE_DIR=str(state_dir)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1].split()


def _among(loaded: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of `loaded` that are one of `packages` or inside one."""
    return [m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in packages)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("port = \n", r"not valid TOML: .*line 1"),
        ("prot = 8080\n", r"imagegate.toml:1: prot: unknown key"),
        ('port = "eighty"\n', r"port: Input should be a valid integer"),
        ("port = 70000\n", r"port: Input should be less than or equal to 65535"),
        (
            'default_relay = "gpt"\n',
            r"default_relay 'gpt' is not a relay; set default_relay to one of: placeholder",
        ),
        (
            '[relays.x]\nkind = "dalle"\n',
            r":2: relays\.x\.kind: unknown kind 'dalle'; "
            r"expected one of: 'gemini', 'openai-images', ",
        ),
        ('[relays.x]\nkind = "placeholder"\ncolour = 1\n', r":3: relays\.x\.colour: unknown"),
        ('link_key = "s3cret-value"\n', r"link_key: secrets are not read from the config file"),
    ],
)
def test_check_config_rejects_broken_files(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "imagegate.toml"
    config.write_text(text)
    result = run("check-config", env=clean_env(IMAGEGATE_CONFIG=str(config)))
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret-value" not in result.stderr


def test_check_config_names_a_bad_environment_variable(tmp_path: Path) -> None:
    result = run("check-config", env=clean_env(IMAGEGATE_PORT="http"))
    assert result.returncode == 2
    assert "environment IMAGEGATE_PORT: port: Input should be a valid integer" in result.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.toml"), "check-config", env=clean_env())
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.toml'}: file not found" in result.stderr


REPLICAS = "# Several replicas"


def test_the_commented_replica_example_is_valid(tmp_path: Path) -> None:
    """Uncommented, the example's database and bucket settings pass check-config."""
    example = (Path(__file__).parents[2] / "imagegate.example.toml").read_text()
    block = example.split(REPLICAS)[1].split("\n", 1)[1]
    config = tmp_path / "replicas.toml"
    config.write_text(re.sub(r"^# ([a-z_]+ =|\[storage\])", r"\1", block, flags=re.MULTILINE))
    keys = {"IMAGEGATE_LINK_KEY": "k" * 32, "IMAGEGATE_REQUEST_STATE_KEY": "s" * 32}
    result = run("--config", str(config), "check-config", env=clean_env(**keys))
    assert result.returncode == 0, result.stderr
    assert "database_url" in config.read_text()
    assert "warning" not in result.stdout
    files = run(
        "--config",
        str(config),
        "check-config",
        env=clean_env(IMAGEGATE_STORAGE='{"kind": "files"}', **keys),
    )
    assert files.returncode == 0, files.stderr
    assert "warning: database_url is set but images are files under state_dir" in files.stdout
    without_keys = run("--config", str(config), "check-config", env=clean_env())
    assert without_keys.returncode == 2
    assert "with database_url set, link_key must be configured" in without_keys.stderr


def test_the_commented_relay_examples_are_valid(tmp_path: Path) -> None:
    """Uncommented, every relay in imagegate.example.toml passes check-config."""
    example = (Path(__file__).parents[2] / "imagegate.example.toml").read_text()
    example = example.split(REPLICAS)[0]
    keys = "|".join(
        (
            r"\[relays",
            r"\[quotas",
            *("kind", "base_url", "api_key_env", "model", "image_model", "price", "stream"),
            *("request_policy", "steps", "sampler", "images_per_day", "cooldown_seconds"),
            *("max_concurrent", "spend_per"),
        )
    )
    uncommented = re.sub(
        rf"^# ({keys})",
        r"\1",
        example,
        flags=re.MULTILINE,
    )
    config = tmp_path / "full.toml"
    config.write_text(uncommented)
    env = clean_env(
        IMAGEGATE_STATE_DIR=str(tmp_path),
        OPENAI_API_KEY="sk-example",
        COMPAT_RELAY_KEY="k",
        GEMINI_API_KEY="g",
        OPENROUTER_API_KEY="o",
    )
    result = run("--config", str(config), "check-config", env=env)
    assert result.returncode == 0, result.stderr
    for kind in ("openai-responses", "openai-images", "gemini", "sd-webui", "openrouter"):
        assert f"({kind})" in result.stdout
    missing_key = run("--config", str(config), "check-config", env=clean_env())
    assert missing_key.returncode == 2
    for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY"):
        assert f"environment variable {variable} is not set" in missing_key.stderr  # all at once
    # Not the packaged config: no advice about the package's environment file.
    assert "set them in the environment that runs imagegate" in missing_key.stderr
    assert "/etc/imagegate/env" not in missing_key.stderr


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_peer_cannot_hold_connections_with_half_sent_headers(tmp_path: Path) -> None:
    settings = {
        "IMAGEGATE_REQUEST_HEADER_TIMEOUT": "1",
        "IMAGEGATE_MAX_CONNECTIONS_PER_PEER": "8",
    }
    with serving(tmp_path / "state", **settings) as (base_url, _):
        port = int(base_url.rsplit(":", 1)[1])
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        # The ninth connection from the same address is refused at once...
        ninth = socket.create_connection(("127.0.0.1", port))
        assert _closed_by_server(ninth, within=2)
        # ...and the half-sent ones are closed once their headers are late.
        assert all(_closed_by_server(sock, within=3) for sock in slow)
        for sock in [*slow, ninth]:
            sock.close()
        # A complete request in time is served, on a kept-alive connection too.
        with httpx.Client() as client:
            assert client.get(f"{base_url}/healthz").status_code == 200
            assert client.get(f"{base_url}/healthz").status_code == 200


def test_the_readmes_python_example_runs_as_shown(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("```python\n", readme.index("From Python")) + len("```python\n")
    example = readme[start : readme.index("```", start)]
    state = tmp_path / "state"
    with serving(state) as (base_url, _):
        script = tmp_path / "example.py"
        script.write_text(example.replace("http://127.0.0.1:8765", base_url))
        token = (state / "bearer-token").read_text().strip()
        env = clean_env(IMAGEGATE_TOKEN=token)
        result = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{base_url}/files/img_")


def test_upgrade_requests_do_not_use_up_a_peers_connections(tmp_path: Path) -> None:
    settings = {"IMAGEGATE_MAX_CONNECTIONS_PER_PEER": "3"}
    upgrade = (
        b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with serving(tmp_path / "state", **settings) as (base_url, _):
        port = int(base_url.rsplit(":", 1)[1])
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(upgrade)
                sock.settimeout(5)
                assert sock.recv(1024).startswith(b"HTTP/1.1 ")  # answered, not upgraded
        time.sleep(0.2)
        assert httpx.get(f"{base_url}/healthz").status_code == 200


async def test_generate_shows_it_is_alive_while_the_upstream_is_quiet(tmp_path: Path) -> None:
    """A long generation prints a line at least every progress_seconds, as MCP clients
    get progress notifications."""
    async with running_upstream() as fake:
        fake.defaults["/v1/images/generations"] = slow(1.0, images_reply(png_bytes()))
        config = tmp_path / "imagegate.toml"
        config.write_text(
            'default_relay = "images"\n[relays.images]\nkind = "openai-images"\n'
            f'base_url = "{fake.base_url}/v1"\napi_key_env = "SLOW_KEY"\npaid = false\n'
        )
        env = clean_env(
            IMAGEGATE_CONFIG=str(config),
            IMAGEGATE_PROGRESS_SECONDS="0.2",
            SLOW_KEY="sk-slow-0123456789",
        )
        result = await asyncio.to_thread(run, "generate", "patience", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    alive = [line for line in result.stderr.splitlines() if line.endswith("still working")]
    assert len(alive) >= 3
    assert all(re.match(r"\[\s*\d+\.\ds\] still working", line) for line in alive)


async def test_stdio_saves_where_the_user_works(tmp_path: Path) -> None:
    """save_to writes a copy under output_root, and nowhere else."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "hero.png").write_bytes(b"the user's own file")
    (project / "out").symlink_to(tmp_path)
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "serve", "--transport", "stdio"],
        env=clean_env(
            IMAGEGATE_STATE_DIR=str(tmp_path / "state"), IMAGEGATE_OUTPUT_ROOT=str(project)
        ),
    )
    async with Client(transport) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a hero", "size": "96x64", "save_to": "assets/hero.png"}
        )
        for bad, why in [
            ("../escape.png", "'..' is not allowed"),
            ("/tmp/escape.png", "not an absolute one"),
            ("out/escape.png", "leads outside output_root"),
            ("hero.png", "exists in output_root; pass overwrite=true"),
        ]:
            with pytest.raises(ToolError, match=re.escape(why)):
                await client.call_tool("generate_image", {"prompt": "x", "save_to": bad})
        replaced = await client.call_tool(
            "generate_image",
            {"prompt": "x", "size": "64x64", "save_to": "hero.png", "overwrite": True},
        )
    assert result.structured_content is not None
    (image,) = result.structured_content["images"]
    saved = project / "assets" / "hero.png"
    assert image["saved_to"] == str(saved)
    assert saved.read_bytes() == Path(image["path"]).read_bytes()
    assert replaced.structured_content is not None
    assert (project / "hero.png").read_bytes() != b"the user's own file"
    assert not (tmp_path / "escape.png").exists()
    assert sorted(p.name for p in project.iterdir()) == ["assets", "hero.png", "out"]


async def test_save_to_over_http_points_to_the_link(tmp_path: Path) -> None:
    with serving(tmp_path / "state") as (base_url, _):
        token = (tmp_path / "state" / "bearer-token").read_text().strip()
        async with Client(f"{base_url}/mcp", auth=BearerAuth(token)) as client:
            with pytest.raises(ToolError, match=r"stdio only.*download link"):
                await client.call_tool("generate_image", {"prompt": "x", "save_to": "a.png"})


def test_serve_refuses_an_old_schema_and_db_upgrade_fixes_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    old = sqlite3.connect(state / "imagegate.sqlite3")
    old.executescript("CREATE TABLE spent_nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL);")
    old.close()
    env = clean_env(IMAGEGATE_STATE_DIR=str(state), IMAGEGATE_PORT=str(free_port()))
    refused = run("serve", env=env, timeout=30)
    assert refused.returncode == 2
    assert "schema version 0; this imagegate needs" in refused.stderr
    assert "run: imagegate db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr
    upgraded = run("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"schema 0 -> {LATEST}")
    again = run("db", "upgrade", env=env)
    assert again.stdout.strip().endswith(f"schema {LATEST}, up to date")
    with serving(state) as (base_url, _):
        assert httpx.get(f"{base_url}/readyz").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_listener_is_tcp_so_that_answers_are_not_delayed(host: str) -> None:
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    names IPPROTO_TCP; a plain create_server() socket says 0, and small answers then
    wait ~40 ms for the client's delayed ACK."""
    sock = _listen(host, 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()


def test_settling_takes_what_start_up_made_out_of_full_collections() -> None:
    """serve calls settle() just before it answers: a full collection then no longer
    walks the modules, the app and its schemas."""
    before = gc.get_freeze_count()
    try:
        settle()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


def test_client_config_writes_into_a_codex_file_and_keeps_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    before = '# mine\nmodel = "o3"\n\n[mcp_servers.other]\ncommand = "x"\n'
    config.write_text(before)
    config.chmod(0o640)
    env = clean_env(IMAGEGATE_TOKEN="s3cret-token-value", IMAGEGATE_CONFIG="/nonexistent.toml")
    url = "https://images.example.com/mcp"
    args = ("client-config", "codex", "--server", url, "--write", "--file", str(config))
    first = run(*args, env=env)
    assert first.returncode == 0, first.stderr
    table = (
        '[mcp_servers.imagegate]\nurl = "https://images.example.com/mcp"\n'
        'bearer_token_env_var = "IMAGEGATE_TOKEN"\n'
    )
    assert first.stdout == table
    assert config.read_text() == before + "\n" + table
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    [backup] = tmp_path.glob("config.toml.*.bak")
    assert backup.read_text() == before
    assert f"added the 'imagegate' entry to {config} (the old file is in {backup})" in first.stderr

    second = run(*args, env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing written" in second.stderr
    assert config.read_text() == before + "\n" + table
    assert list(tmp_path.glob("*.bak")) == [backup]
    for result in (first, second):
        assert "s3cret-token-value" not in result.stdout + result.stderr


def test_client_config_stdio_entry_runs_this_imagegate(tmp_path: Path) -> None:
    config = tmp_path / ".mcp.json"
    result = run("client-config", "claude-code", "--write", "--file", str(config), env=clean_env())
    assert result.returncode == 0, result.stderr
    server = json.loads(config.read_text())["mcpServers"]["imagegate"]
    assert server["type"] == "stdio"
    assert server["args"][-3:] == ["serve", "--transport", "stdio"]
    version = subprocess.run(
        [server["command"], *server["args"][:-3], "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert version.stdout.startswith("imagegate ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cursor", "--write"), "not valid JSON"),
        (("claude-desktop", "--server", "https://h/mcp"), "Settings > Connectors"),
        (("librechat", "--server", "https://h/mcp", "--write"), "--write is not supported"),
        (("cursor", "--server", "https://h/mcp", "--token-env", "9X"), "--token-env"),
    ],
)
def test_client_config_refusals_exit_2_and_touch_nothing(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text("{broken")
    result = run("client-config", *args, "--file", str(config), env=clean_env())
    if "--write" not in args:  # --file needs --write: the same exit code, said first
        result = run("client-config", *args, env=clean_env())
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("imagegate: error: ")
    assert message in result.stderr
    assert config.read_text() == "{broken"
    assert os.listdir(tmp_path) == ["mcp.json"]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_stdio_entry_names_the_configuration_it_was_given(tmp_path: Path, how: str) -> None:
    """The client starts imagegate without this shell's environment: without the
    file, it would run on the built-in defaults."""
    config = tmp_path / "imagegate.toml"
    config.write_text("")
    if how == "option":
        result = run("--config", str(config), "client-config", "cursor", env=clean_env())
    else:
        env = clean_env(IMAGEGATE_CONFIG=str(config))
        result = run("client-config", "cursor", env=env)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["mcpServers"]["imagegate"]
    assert entry["command"].endswith("imagegate") or entry["command"] == sys.executable
    assert entry["args"][-5:] == ["--config", str(config), "serve", "--transport", "stdio"]
