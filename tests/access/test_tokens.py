import hashlib
import os
from pathlib import Path

import pytest

from imagegate.access.identity import Verified
from imagegate.access.tokens import MappedTokensVerifier, load_tokens_file, new_token_entry
from imagegate.core.errors import ConfigError

RELAYS = ["placeholder"]
BOT_TOKEN = "bot-token-0123456789abcdefghij"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def entry(subject: str, token: str, extra: str = "") -> str:
    return f'[[tokens]]\nsubject = "{subject}"\nsha256 = "{sha(token)}"\n{extra}\n'


async def test_hashed_and_clear_entries(tmp_path: Path) -> None:
    clear = "clear-token-0123456789abcdefg"
    path = write(
        tmp_path,
        entry("ci-bot", BOT_TOKEN, 'scopes = ["paid:auto"]')
        + f'[[tokens]]\nsubject = "script"\ntoken = "{clear}"\n',
    )
    verifier = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: 0)
    bot = await verifier.verify(BOT_TOKEN)
    assert isinstance(bot, Verified)
    assert bot.identity.subject == "token:ci-bot"
    assert bot.identity.token_scopes == {"paid:auto"}
    script = await verifier.verify(clear)
    assert script is not None
    assert script.identity.subject == "token:script"
    assert await verifier.verify("nope") is None
    assert await verifier.verify(BOT_TOKEN + "x") is None


async def test_expired_token_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, entry("old", BOT_TOKEN, "expires = 2026-01-01T00:00:00Z"))
    expiry = 1767225600.0
    before = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: expiry - 1)
    assert await before.verify(BOT_TOKEN) is not None
    after = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: expiry)
    assert await after.verify(BOT_TOKEN) is None


async def test_removing_an_entry_revokes_without_restart(tmp_path: Path) -> None:
    other = "other-token-0123456789abcdefgh"
    path = write(tmp_path, entry("a", BOT_TOKEN) + entry("b", other))
    verifier = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: 0)
    assert await verifier.verify(BOT_TOKEN) is not None
    path.write_text(entry("b", other))
    assert await verifier.verify(BOT_TOKEN) is None
    assert await verifier.verify(other) is not None


async def test_broken_file_fails_closed(tmp_path: Path) -> None:
    path = write(tmp_path, entry("a", BOT_TOKEN))
    verifier = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: 0)
    path.write_text(entry("a", BOT_TOKEN) + "[[tokens]]\nsubject = 3\n")
    assert await verifier.verify(BOT_TOKEN) is None
    path.write_text(entry("a", BOT_TOKEN))
    assert await verifier.verify(BOT_TOKEN) is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[tokens]]\nsubject = "a"\n', r"tokens.toml:1: tokens.0: Value error, give exactly one"),
        (
            f'[[tokens]]\nsubject = "a"\nsha256 = "{sha("x")}"\ncolour = "red"\n',
            r"tokens.toml:4: tokens.0.colour: unknown key",
        ),
        ('[[tokens]]\nsubject = "a b"\ntoken = "x"\n', r"tokens.toml:2: tokens.0.subject:"),
        ('[[tokens]]\nsubject = "a"\ntoken = "short"\n', "at least 24 characters"),
        (
            entry("a", BOT_TOKEN) + entry("b", "filler-token-0123456789abcdef", 'scopes = ["x"]'),
            r"tokens.toml:5: tokens\[1\].scopes: unknown scope 'x'",
        ),
        (entry("a", BOT_TOKEN, 'scopes = ["relay:dalle"]'), "names no configured relay"),
        (entry("a", BOT_TOKEN) + entry("b", BOT_TOKEN), "the same token appears twice"),
        (entry("a", BOT_TOKEN, "expires = 2027-01-01T00:00:00"), "expires needs a time zone"),
        ("[[tokens]\n", "not valid TOML"),
    ],
)
def test_bad_files_name_file_line_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected):
        load_tokens_file(path, RELAYS, strict=False)


def test_world_readable_file_warns_or_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, entry("a", BOT_TOKEN), mode=0o644)
    assert len(load_tokens_file(path, RELAYS, strict=False)) == 1
    assert "SECURITY WARNING" in caplog.text
    assert "chmod 640" in caplog.text
    with pytest.raises(ConfigError, match="mode 0644 lets others read or change it"):
        load_tokens_file(path, RELAYS, strict=True)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_a_file_others_cannot_read_passes_strict_permissions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = write(tmp_path, entry("a", BOT_TOKEN), mode=mode)
    assert len(load_tokens_file(path, RELAYS, strict=True)) == 1
    assert "SECURITY WARNING" not in caplog.text


async def test_new_token_entry_round_trips(tmp_path: Path) -> None:
    token, text = new_token_entry("ci-bot", ["images:read"], None, 'say "hi"')
    assert token not in text
    path = write(tmp_path, text)
    verifier = MappedTokensVerifier(path, RELAYS, strict=False, clock=lambda: 0)
    caller = await verifier.verify(token)
    assert caller is not None
    assert caller.identity.subject == "token:ci-bot"
    assert caller.identity.token_scopes == {"images:read"}
