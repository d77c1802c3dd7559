from pathlib import Path

import pytest

from imagegate.access.acl import Acl, load_acl
from imagegate.access.identity import Identity
from imagegate.core.errors import ConfigError
from imagegate.core.ids import Subject

RELAYS = ["placeholder", "openai"]


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
        (
            '[default]\nscopes = ["images:read", "image:write"]\n',
            r"acl.toml:2: default.scopes\[1\]: unknown scope 'image:write'",
        ),
        ('# all\n[default]\nscopes = ["relay:x"]\n', r"acl.toml:3: default.scopes\[0\]: .*relay"),
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
    example = Path(__file__).parents[2] / "acl.example.toml"
    acl = load_acl(example, ["placeholder"])
    assert "token:ci-bot" in acl.subjects
