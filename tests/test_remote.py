"""The remote command line's pure parts: where it connects, and when it warns."""

from pathlib import Path

import pytest

from imagegate.core.errors import ConfigError
from imagegate.remote import plain_http_warning, remote_of


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("https://imagegate.example.com/mcp", False),
        ("http://127.0.0.1:8765/mcp", False),
        ("http://localhost:8765/mcp", False),
        ("http://imagegate.example.com/mcp", True),
        ("http://10.0.0.5:8765/mcp", True),
    ],
)
def test_plain_http_to_another_host_is_warned_about(url: str, warned: bool) -> None:
    assert (plain_http_warning(url) is not None) is warned


def test_the_mcp_path_is_added_to_a_bare_server_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGATE_TOKEN", "t" * 32)
    remote = remote_of("https://imagegate.example.com", None)
    assert remote is not None
    assert remote.url == "https://imagegate.example.com/mcp"
    kept = remote_of("https://imagegate.example.com/custom/mcp", None)
    assert kept is not None
    assert kept.url == "https://imagegate.example.com/custom/mcp"


def test_no_server_means_local_and_a_server_needs_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("IMAGEGATE_SERVER", raising=False)
    monkeypatch.delenv("IMAGEGATE_TOKEN", raising=False)
    assert remote_of(None, None) is None
    with pytest.raises(ConfigError, match="needs a token"):
        remote_of("https://imagegate.example.com", None)
    with pytest.raises(ConfigError, match="http"):
        remote_of("ftp://imagegate.example.com", None)
    loose = tmp_path / "token"
    loose.write_text("t" * 32)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="too open"):
        remote_of("https://imagegate.example.com", loose)
