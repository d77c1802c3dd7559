import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from imagegate.config import Settings, load_settings
from imagegate.core.errors import ConfigError
from imagegate.core.secrets import configured_secret
from imagegate.server import setup_tracing


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imagegate.toml"
    path.write_text(text)
    return path


def test_embedded_default_needs_no_file() -> None:
    settings = load_settings()
    assert settings.default_relay == "placeholder"
    assert list(settings.relays) == ["placeholder"]
    assert settings.host == "127.0.0.1"
    assert settings.base_url() == "http://127.0.0.1:8765"


def test_file_values_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "port = 9000\n[relays.art]\nkind = 'placeholder'\n"))
    assert settings.port == 9000
    assert set(settings.relays) == {"art"}
    assert settings.default_relay == "art"  # the only relay is the default


def test_several_relays_need_an_explicit_default(tmp_path: Path) -> None:
    text = "[relays.a]\nkind = 'placeholder'\n[relays.b]\nkind = 'placeholder'\n"
    with pytest.raises(ConfigError, match="set default_relay to one of: a, b"):
        load_settings(write(tmp_path, text))


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_PORT", "9100")
    assert load_settings(write(tmp_path, "port = 9000\n")).port == 9100


@pytest.mark.parametrize("in_file", [True, False])
def test_a_bad_value_from_the_environment_is_blamed_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_file: bool
) -> None:
    """The environment wins over the file, so its value is the one that is wrong,
    whether the file also sets the key or not."""
    monkeypatch.setenv("IMAGEGATE_PORT", "70000")
    path = write(tmp_path, "max_page_size = 7\n" + ("port = 8765\n" if in_file else ""))
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(error.value).startswith("environment IMAGEGATE_PORT: port: ")
    assert "imagegate.toml:" not in str(error.value)


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_CONFIG", str(write(tmp_path, "max_page_size = 7\n")))
    assert load_settings().max_page_size == 7


def test_every_problem_is_listed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, "port = 0\nmax_images_per_call = 99\n"))
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{tmp_path / 'imagegate.toml'}:1: port: ")
    assert lines[1].startswith(f"{tmp_path / 'imagegate.toml'}:2: max_images_per_call: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[relays.placeholder]\nkind = 'placeholder'\ndelay = 3\n",
            ":3: relays.placeholder.delay: unknown key",
        ),
        ("[relays.art]\nkind = 'placeholder'\ndelay = 3\n", ":3: relays.art.delay: unknown key"),
        (
            "[relays.openai-images]\nkind = 'openai-images'\nbase_url = 'https://x'\ntimeout = 3\n",
            ":4: relays.openai-images.timeout: unknown key",
        ),
        (
            "[relays.placeholder]\nkind = 'placeholder'\ndelay_seconds = 'slow'\n",
            ":3: relays.placeholder.delay_seconds: Input should be a valid number",
        ),
        (
            "[relays.art]\ndelay_seconds = 1\n",
            ":1: relays.art.kind: missing; expected one of: 'gemini', 'openai-images', "
            "'openai-responses', 'openrouter', 'placeholder', 'sd-webui'",
        ),
    ],
)
def test_a_relay_error_names_the_relay_and_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    # A relay may be named like its kind; the name must survive in the message.
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert f"{tmp_path / 'imagegate.toml'}{expected}" in str(raised.value)


@pytest.mark.parametrize("key", ["bearer_token", "link_key", "metrics_token"])
def test_secrets_are_refused_in_the_file(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=f"set IMAGEGATE_{key.upper()} in the environment"):
        load_settings(write(tmp_path, f'{key} = "abcdefghijklmnopqrstuvwxyz"\n'))


def test_secret_from_environment_is_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_BEARER_TOKEN", "very-secret-token-value")
    settings = load_settings()
    assert settings.bearer_token is not None
    assert settings.bearer_token.get_secret_value() == "very-secret-token-value"
    assert "very-secret-token-value" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[relays."Bad Name"]\nkind = "placeholder"\n', "relay name 'Bad Name'"),
        ("relays = {}\n", "at least one relay must be configured"),
        ('mcp_path = "mcp"\n', "mcp_path: Value error, must start with '/'"),
        ('public_url = "ftp://x"\n', "public_url: Value error, must be an http"),
        ("link_ttl_seconds = 100\nlink_ttl_max_seconds = 10\n", "must not exceed"),
        ('[relays.p]\nkind = "placeholder"\npaid = true\n', "relays.p.paid"),
    ],
)
def test_semantic_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)


def test_base_url_for_wildcard_and_public_url() -> None:
    wildcard = Settings(host="0.0.0.0")  # noqa: S104
    assert wildcard.base_url() == "http://127.0.0.1:8765"
    assert Settings(host="::1", port=1).base_url() == "http://[::1]:1"
    public = Settings(public_url="https://img.example.com/")
    assert public.base_url() == "https://img.example.com"


def test_not_utf8_and_directory(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"port = \xff\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_settings(tmp_path)


SHARED = 'database_url = "postgresql://imagegate@db.internal/images"\n'
KEYS = {"IMAGEGATE_LINK_KEY": "k" * 32, "IMAGEGATE_REQUEST_STATE_KEY": "s" * 32}


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        (SHARED, {}, "with database_url set, link_key must be configured"),
        (
            SHARED,
            {"IMAGEGATE_LINK_KEY": "k" * 32},
            "with database_url set, request_state_key must be configured",
        ),
        ('database_url = "mysql://x/y"\n', KEYS, "database_url: Value error, must be a postgresql"),
        (
            'database_url = "postgresql://imagegate:hunter2@db/images"\n',
            KEYS,
            "imagegate.toml:1: database_url: Value error, holds a password; leave it out and "
            "set IMAGEGATE_DATABASE_PASSWORD",
        ),
        (
            'database_url = "postgresql://imagegate@db/images?password=hunter2"\n',
            KEYS,
            "database_url: Value error, holds a password",
        ),
        (
            'database_url = "postgresql:///images?user=u&password=hunter2&host=db"\n',
            KEYS,
            "database_url: Value error, holds a password",
        ),
        ('database_password = "hunter2"\n', {}, "set IMAGEGATE_DATABASE_PASSWORD"),
        ('[storage]\nkind = "s3"\n', {}, 'kind = "s3" needs endpoint and bucket'),
        (
            '[storage]\nkind = "s3"\nendpoint = "https://s3.example.com/path"\nbucket = "img"\n',
            {},
            "endpoint must be an http(s) URL with no path",
        ),
        (
            '[storage]\nkind = "s3"\nendpoint = "http://s3.internal"\nbucket = "img"\n',
            {},
            "endpoint is plain http",
        ),
        ('[storage]\nkind = "s3"\nendpoint = "https://s3"\nbucket = "A_B"\n', {}, "bucket"),
        ('[storage]\nprefix = "../x/"\n', {}, "storage.prefix"),
        ('[storage]\nprefix = "a/../"\n', {}, "storage.prefix"),
        ('[storage]\nprefix = "./"\n', {}, "storage.prefix"),
        (
            '[storage]\nkind = "s3"\nendpoint = "http://127.evil.example"\nbucket = "img"\n',
            {},
            "endpoint is plain http",
        ),
    ],
)
def test_shared_state_settings_are_checked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    env: dict[str, str],
    fragment: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "storage",
    [
        '[storage]\nkind = "s3"\nendpoint = "https://s3.example.com"\nbucket = "images"\n',
        '[storage]\nkind = "s3"\nendpoint = "http://127.0.0.1:9000"\nbucket = "images"\n',
        '[storage]\nkind = "s3"\nendpoint = "http://[::1]"\nbucket = "images"\n',
        '[storage]\nkind = "s3"\nendpoint = "http://localhost:9000"\nbucket = "images"\n',
        '[storage]\nkind = "s3"\nendpoint = "http://s3.lan"\nbucket = "images"\n'
        "allow_http = true\n",
    ],
)
def test_shared_state_with_its_keys_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: str
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGEGATE_DATABASE_URL", "postgresql://imagegate@db/images")
    settings = load_settings(write(tmp_path, storage))
    assert settings.database_url == "postgresql://imagegate@db/images"
    assert settings.storage.kind == "s3"


def test_a_password_in_the_database_url_is_refused_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGEGATE_DATABASE_URL", "postgresql://imagegate:hunter2@db/images")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "environment IMAGEGATE_DATABASE_URL: database_url: Value error, holds a password" in (
        str(raised.value)
    )
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("metrics = true\n", "metrics = true needs metrics_token"),
        ('metrics = true\nmetrics_listen = "0.0.0.0:9464"\n', "must be a loopback IP address"),
        ('metrics = true\nmetrics_listen = "192.168.1.5:9464"\n', "must be a loopback IP"),
        ('metrics = true\nmetrics_listen = "localhost:9464"\n', "must be a loopback IP"),
        ('metrics = true\nmetrics_listen = "127.0.0.1"\n', "must be a loopback IP"),
        ('metrics = true\nmetrics_listen = "127.0.0.1:0"\n', "must be a loopback IP"),
        ('metrics = true\nmetrics_listen = "127.0.0.1:8765"\n', "another port than port"),
    ],
)
def test_metrics_need_a_token_or_a_loopback_listener(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)


def test_metrics_with_a_token_or_a_listener_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not load_settings().metrics  # off by default
    listener = load_settings(write(tmp_path, 'metrics = true\nmetrics_listen = "[::1]:9464"\n'))
    assert listener.metrics_address() == ("::1", 9464)
    monkeypatch.setenv("IMAGEGATE_METRICS_TOKEN", "scrape-token-0123456789")
    on_main_port = load_settings(write(tmp_path, "metrics = true\n"))
    assert on_main_port.metrics_address() is None
    with pytest.raises(ConfigError, match="metrics_token: must be at least 16 characters"):
        configured_secret("metrics_token", SecretStr("short"), None)


def test_traces_and_json_logs_are_off_by_default() -> None:
    settings = load_settings()
    assert settings.otlp_endpoint is None
    assert settings.otlp_traces_url() is None
    assert settings.otlp_service_name == "imagegate"
    assert settings.log_format == "text"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("https://otel.example.com/", "https://otel.example.com/v1/traces"),
        ("https://otel.example.com/v1/traces", "https://otel.example.com/v1/traces"),
    ],
)
def test_otlp_endpoint_names_the_collector(tmp_path: Path, endpoint: str, url: str) -> None:
    settings = load_settings(
        write(tmp_path, f'otlp_endpoint = "{endpoint}"\nlog_format = "json"\n')
    )
    assert settings.otlp_traces_url() == url
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('otlp_endpoint = "grpc://127.0.0.1:4317"\n', "otlp_endpoint"),
        ('otlp_endpoint = "https://user:key@otel.example.com"\n', "without credentials"),
        ('otlp_endpoint = "https://otel.example.com/?key=1"\n', "without credentials, query"),
        ('otlp_headers_env = "x-api-key=abc"\n', "otlp_headers_env"),
        ('log_format = "logfmt"\n', "log_format"),
    ],
)
def test_bad_trace_and_log_settings(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)
    assert "abc" not in str(raised.value)  # a value put where the name goes stays unsaid


def test_collector_headers_in_clear_or_unused_are_warned_about(tmp_path: Path) -> None:
    unused = load_settings(write(tmp_path, 'otlp_headers_env = "OTLP_HEADERS"\n'))
    assert any("no traces are sent" in warning for warning in unused.warnings())
    clear = load_settings(
        write(
            tmp_path,
            'otlp_endpoint = "http://otel.example.com:4318"\notlp_headers_env = "OTLP_HEADERS"\n',
        )
    )
    assert any("plain http://" in warning for warning in clear.warnings())
    local = load_settings(
        write(tmp_path, 'otlp_endpoint = "http://[::1]:4318"\notlp_headers_env = "OTLP_HEADERS"\n')
    )
    assert local.warnings() == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [(None, "OTLP_HEADERS is not set"), ("x-api-key", "entry 1 is not key=value")],
)
def test_collector_headers_come_from_the_named_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None, fragment: str
) -> None:
    if value is not None:
        monkeypatch.setenv("OTLP_HEADERS", value)
    settings = Settings(otlp_endpoint="https://otel.example.com", otlp_headers_env="OTLP_HEADERS")
    with pytest.raises(ConfigError, match=fragment):
        setup_tracing(settings)


@pytest.mark.parametrize(
    "text",
    ["retention_days = inf\n", "retention_days = 0\n", "[quotas.default]\nretention_days = nan\n"],
)
def test_retention_must_be_a_finite_number_of_days(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[storage]\naccel_redirect = "_imagegate_blobs/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/_imagegate_blobs"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/a/../b/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/./b/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "//b/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/b%2F/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/b c/"\n', "must be a URL path that starts"),
        ('[storage]\naccel_redirect = "/b/"\n', "needs public_url"),
        (
            'public_url = "https://i.example.com"\n[storage]\naccel_redirect = "/files/x/"\n',
            "own path /files/",
        ),
        (
            'public_url = "https://i.example.com"\n[storage]\naccel_redirect = "/mcp/"\n',
            "own path /mcp",
        ),
        (
            'public_url = "https://i.example.com"\nmcp_path = "/api/mcp"\n'
            '[storage]\naccel_redirect = "/api/blobs/"\n',
            "own path /api/mcp",
        ),
        (
            'public_url = "https://i.example.com"\n[storage]\nkind = "s3"\n'
            'endpoint = "https://s3.example.com"\nbucket = "images"\n'
            'accel_redirect = "/_imagegate_blobs/"\n',
            'accel_redirect works with kind = "files" only',
        ),
    ],
)
def test_accel_redirect_is_checked(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="accel_redirect") as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)


def test_accel_redirect_is_accepted(tmp_path: Path) -> None:
    text = 'public_url = "https://i.example.com"\n[storage]\naccel_redirect = "/_blobs.v1/x-y/"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.storage.accel_redirect == "/_blobs.v1/x-y/"
    assert Settings().storage.accel_redirect is None


PRESETS = """
[relays.placeholder]
kind = "placeholder"
[relays.studio]
kind = "placeholder"

[presets.poster]
prompt = "A bold poster of {prompt}, flat colours"
negative_prompt = "blurry"
size = "1024x1536"
quality = "high"
relay = "studio"
description = "Bold flat poster"

[presets.any-relay]
prompt = "{prompt}, in ink"
relay = "auto"
"""


def test_presets_are_read(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, 'default_relay = "placeholder"\n' + PRESETS))
    poster = settings.presets["poster"]
    assert (poster.prompt, poster.size, poster.quality, poster.relay) == (
        "A bold poster of {prompt}, flat colours",
        "1024x1536",
        "high",
        "studio",
    )
    assert settings.presets["any-relay"].relay == "auto"
    assert settings.max_presets_per_subject == 50
    assert Settings().presets == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            '[presets.poster]\nprompt = "A poster"\n',
            "imagegate.toml:2: presets.poster.prompt: Value error, must contain {prompt}",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\nquality = "ultra"\n',
            "imagegate.toml:3: presets.poster.quality: Input should be 'low', 'medium'",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\nsize = "big"\n',
            "imagegate.toml:3: presets.poster.size: String should match pattern",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\nseed = 3\n',
            "imagegate.toml:3: presets.poster.seed: unknown key",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}\\u0007"\n',
            "presets.poster.prompt: Value error, must not contain control characters",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\ndescription = "' + "d" * 201 + '"\n',
            "presets.poster.description: String should have at most 200 characters",
        ),
        (
            '[presets."Poster Style"]\nprompt = "{prompt}"\n',
            "presets: Value error, preset name 'Poster Style' must be 1-40 of a-z",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\nrelay = "nope"\n',
            "presets: Value error, preset 'poster': relay 'nope' is not a relay; use one of: "
            "placeholder, or 'auto'",
        ),
        (
            'max_prompt_chars = 20\n[presets.poster]\nprompt = "' + "x" * 20 + '{prompt}"\n',
            "presets.poster.prompt is 20 characters besides {prompt}, which leaves no room for "
            "a prompt under max_prompt_chars (20)",
        ),
        (
            '[presets.poster]\nprompt = "{prompt}"\nsize = "8192x8192"\n',
            "presets.poster.size 8192x8192 exceeds max_image_pixels (16777216)",
        ),
        ("max_presets_per_subject = -1\n", "max_presets_per_subject: Input should be greater"),
    ],
)
def test_a_bad_preset_is_refused_with_its_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text))
    assert fragment in str(raised.value)


def test_a_template_one_character_short_of_the_limit_is_accepted(tmp_path: Path) -> None:
    text = 'max_prompt_chars = 20\n[presets.poster]\nprompt = "' + "x" * 19 + '{prompt}"\n'
    assert load_settings(write(tmp_path, text)).presets["poster"].prompt.startswith("x")


@pytest.mark.parametrize(
    ("marking", "certificate", "marks", "warned"),
    [
        (None, False, (True, False), False),  # default: XMP
        (None, True, (True, True), False),  # default with a certificate: both
        ("off", True, (False, False), False),
        ("xmp", True, (True, False), False),
        ("c2pa", True, (False, True), False),
        ("both", True, (True, True), False),
        ("both", False, (True, False), True),  # asked for, no certificate: said at start
        ("c2pa", False, (False, False), True),
    ],
)
def test_marking_follows_the_policy_and_the_certificate(
    marking: str | None, certificate: bool, marks: tuple[bool, bool], warned: bool
) -> None:
    c2pa = (
        {"certificate_chain": "/c/chain.pem", "private_key": "/c/key.pem"} if certificate else None
    )
    settings = Settings(marking=marking, c2pa=c2pa)  # type: ignore[arg-type]
    assert settings.marks() == marks
    assert any("marking" in said for said in settings.warnings()) == warned


@pytest.mark.parametrize(
    ("c2pa", "said"),
    [
        ({"certificate_chain": "/c/chain.pem"}, "needs private_key or sign_command"),
        (
            {"certificate_chain": "/c", "private_key": "/k", "sign_command": ["x"]},
            "needs private_key or sign_command (one of them)",
        ),
        ({"private_key": "/c/key.pem"}, "need certificate_chain"),
        ({"sign_command": ["kms-sign"]}, "need certificate_chain"),
    ],
)
def test_a_c2pa_certificate_comes_with_one_way_to_sign(c2pa: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=re.escape(said)):
        Settings(c2pa=c2pa)  # type: ignore[arg-type]
