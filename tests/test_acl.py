from pathlib import Path

import pytest

from imagegate.acl import Acl, decide, load_acl
from imagegate.auth.identity import Identity
from imagegate.errors import ConfigError
from imagegate.ids import Subject

RELAYS = ["placeholder", "openai"]


@pytest.mark.parametrize(
    ("granted", "tool", "relay", "allowed", "missing"),
    [
        ({"images:generate", "relay:placeholder"}, "generate_image", "placeholder", True, None),
        ({"images:generate"}, "generate_image", "placeholder", False, "relay:placeholder"),
        ({"relay:placeholder"}, "generate_image", "placeholder", False, "images:generate"),
        ({"images:generate", "relay:*"}, "generate_image", "openai", True, None),
        (
            {"images:generate", "relay:openai"},
            "generate_image",
            "placeholder",
            False,
            "relay:placeholder",
        ),
        ({"*"}, "generate_image", "openai", True, None),
        ({"*"}, "delete_image", None, True, None),
        ({"images:read"}, "list_images", None, True, None),
        ({"images:read"}, "get_image", None, True, None),
        ({"images:read"}, "create_download_link", None, False, "images:share"),
        ({"images:read"}, "delete_image", None, False, "images:delete"),
        ({"images:edit"}, "edit_image", None, True, None),
        ({"admin"}, "list_images", None, False, "images:read"),
        (set(), "server_info", None, True, None),
        (set(), "list_relays", None, True, None),
        (set(), "list_images", None, False, "images:read"),
        ({"images:read"}, "some_new_tool", None, False, "*"),
    ],
)
def test_decide(
    granted: set[str], tool: str, relay: str | None, allowed: bool, missing: str | None
) -> None:
    decision = decide(frozenset(granted), tool, relay)
    assert decision.allowed is allowed
    assert decision.missing == missing
    if not allowed:
        assert decision.message == f"forbidden: needs scope {missing}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "acl.toml"
    path.write_text(text)
    return path


def test_scopes_are_the_union_of_default_subject_groups_and_token(tmp_path: Path) -> None:
    acl = load_acl(
        write(
            tmp_path,
            '[default]\nscopes = ["images:read"]\n'
            '[subjects."oidc:alice"]\nscopes = ["images:generate"]\n'
            '[groups.designers]\nscopes = ["relay:*"]\n'
            '[groups.other]\nscopes = ["admin"]\n',
        ),
        RELAYS,
    )
    alice = Identity(Subject("oidc:alice"), frozenset({"designers"}), frozenset({"paid:auto"}))
    assert acl.scopes_for(alice) == {"images:read", "images:generate", "relay:*", "paid:auto"}
    bob = Identity(Subject("oidc:bob"))
    assert acl.scopes_for(bob) == {"images:read"}
    assert Acl().scopes_for(bob) == frozenset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[subjects."a"]\nscopes = ["images:generat"]\n',
            r"acl.toml:2: subjects.a.scopes\[0\]: "
            r"unknown scope 'images:generat'",
        ),
        ('[groups.g]\nscopes = ["relay:dalle"]\n', r"acl.toml:2: .*names no configured relay"),
        ('[subjects."a"]\nscopes = "images:read"\n', r"acl.toml:2: subjects.a.scopes: Input"),
        ('[subjects."a"]\nscope = ["images:read"]\n', r"acl.toml:2: subjects.a.scope: unknown key"),
        ('[everyone]\nscopes = ["*"]\n', r"acl.toml:1: everyone: unknown key"),
        ("[subjects\n", "not valid TOML"),
    ],
)
def test_bad_acl_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_acl(write(tmp_path, text), RELAYS)


def test_the_example_acl_is_valid() -> None:
    example = Path(__file__).parents[1] / "acl.example.toml"
    acl = load_acl(example, ["placeholder"])
    assert "token:ci-bot" in acl.subjects
