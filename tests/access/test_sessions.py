"""Sealed values and gallery sessions: purpose, expiry, tampering, CSRF tokens."""

import pytest

from imagegate.access.identity import Identity
from imagegate.access.sessions import (
    LOGIN,
    MAX_SEALED_CHARS,
    SESSION,
    Sealer,
    SessionTooLarge,
)
from imagegate.core.ids import Subject

ALICE = Identity(Subject("oidc:alice"), frozenset({"designers", "ops"}))
NOW = 1_800_000_000.0


def test_a_session_reads_back_until_it_ends() -> None:
    sealer = Sealer(b"k" * 32)
    cookie = sealer.session(ALICE, NOW, 3600)
    session = sealer.read_session(cookie, NOW + 3599)
    assert session is not None
    assert session.identity == ALICE
    assert session.expires_at == int(NOW) + 3600
    assert sealer.read_session(cookie, NOW + 3600) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # the MAC
        lambda v: ("e" if v[0] != "e" else "f") + v[1:],  # the body
        lambda v: v.replace(".", ""),
        lambda v: v + ".x",
        lambda v: "é" + v,  # not ASCII: refused, not an exception
        lambda v: v + "A" * MAX_SEALED_CHARS,
    ],
)
def test_a_damaged_value_is_no_session(damage: object) -> None:
    sealer = Sealer(b"k" * 32)
    cookie = sealer.session(ALICE, NOW, 3600)
    assert callable(damage)
    assert sealer.read_session(damage(cookie), NOW) is None


def test_another_key_or_purpose_is_no_session() -> None:
    sealer = Sealer(b"k" * 32)
    cookie = sealer.session(ALICE, NOW, 3600)
    assert Sealer(b"j" * 32).read_session(cookie, NOW) is None
    assert sealer.unseal(LOGIN, cookie, NOW) is None
    assert sealer.unseal(SESSION, cookie, NOW) is not None


def test_csrf_tokens_are_per_session() -> None:
    sealer = Sealer(b"k" * 32)
    one = sealer.read_session(sealer.session(ALICE, NOW, 60), NOW)
    two = sealer.read_session(sealer.session(ALICE, NOW, 60), NOW)
    assert one is not None
    assert two is not None
    assert sealer.csrf_ok(one, sealer.csrf_token(one))
    assert not sealer.csrf_ok(one, sealer.csrf_token(two))
    assert not sealer.csrf_ok(one, "")
    assert not sealer.csrf_ok(one, "é")


def test_an_identity_too_large_for_a_cookie_is_refused() -> None:
    crowded = Identity(Subject("oidc:alice"), frozenset(f"group-{n:04}" for n in range(400)))
    with pytest.raises(SessionTooLarge, match="400 groups"):
        Sealer(b"k" * 32).session(crowded, NOW, 60)
