import pytest

from imagegate.core.ids import AssetId
from imagegate.service.links import LinkCheck, LinkSigner

KEY = b"k" * 32
ASSET = AssetId("img_0123456789abcdef01234567")


def parts(url: str) -> tuple[str, str, str]:
    path, query = url.split("?")
    params = dict(item.split("=") for item in query.split("&"))
    asset_id = path.rsplit("/", 1)[1].split(".")[0]
    return asset_id, params["exp"], params["sig"]


def test_sign_then_check() -> None:
    signer = LinkSigner(KEY, "http://h:1/")
    link = signer.sign(ASSET, "png", 1000)
    assert link.url.startswith(f"http://h:1/files/{ASSET}.png?exp=1000&sig=")
    assert signer.check(*parts(link.url), now=999.9) is LinkCheck.VALID
    assert signer.check(*parts(link.url), now=1000) is LinkCheck.EXPIRED


@pytest.mark.parametrize(
    ("asset_id", "exp", "sig_suffix"),
    [
        ("img_0123456789abcdef01234568", "1000", ""),
        (ASSET, "1001", ""),
        (ASSET, "1000", "x"),
        (ASSET, "-1", ""),
        (ASSET, "1e3", ""),
        (ASSET, "", ""),
        (ASSET, "\u00b2", ""),  # a digit to isdigit(), not to int()
        (ASSET, "\u0661\u0660\u0660\u0660", ""),  # 1000 in Arabic-Indic digits
    ],
)
def test_any_change_is_a_bad_signature(asset_id: str, exp: str, sig_suffix: str) -> None:
    signer = LinkSigner(KEY, "http://h")
    _, _, sig = parts(signer.sign(ASSET, "png", 1000).url)
    assert signer.check(asset_id, exp, sig + sig_suffix, now=0) is LinkCheck.BAD_SIGNATURE


def test_tampered_expiry_is_forgery_not_expiry() -> None:
    signer = LinkSigner(KEY, "http://h")
    _, _, sig = parts(signer.sign(ASSET, "png", 1000).url)
    assert signer.check(ASSET, "10", sig, now=500) is LinkCheck.BAD_SIGNATURE


def test_other_key_rejects() -> None:
    url = LinkSigner(KEY, "http://h").sign(ASSET, "png", 1000).url
    assert LinkSigner(b"z" * 32, "http://h").check(*parts(url), now=0) is LinkCheck.BAD_SIGNATURE


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LinkSigner(b"short", "http://h")


def test_known_answer() -> None:
    """A fixed vector: a change of the signed message (version tag, order, separator,
    encoding) would break every link already handed out, and must fail here."""
    signer = LinkSigner(b"imagegate-test-key-0123456789abcdef", "https://images.example.com/")
    link = signer.sign(ASSET, "png", 1_800_000_000)
    assert link.url == (
        "https://images.example.com/files/img_0123456789abcdef01234567.png"
        "?exp=1800000000&sig=1l74sCr2ONieCQvJHFbyK2K3gEOp0Qyplj1Fmu5byL0"
    )
    check = signer.check(ASSET, "1800000000", "1l74sCr2ONieCQvJHFbyK2K3gEOp0Qyplj1Fmu5byL0", 0)
    assert check is LinkCheck.VALID


@pytest.mark.parametrize(
    ("signed", "presented", "expected"),
    [
        (0, "", LinkCheck.VALID),
        (1, "1", LinkCheck.VALID),
        (7, "7", LinkCheck.VALID),
        (0, "1", LinkCheck.BAD_SIGNATURE),  # a generation added to an older link
        (1, "", LinkCheck.BAD_SIGNATURE),  # dropped from a newer one
        (1, "2", LinkCheck.BAD_SIGNATURE),
        (1, "01", LinkCheck.BAD_SIGNATURE),  # another spelling is another message
        (0, "0", LinkCheck.BAD_SIGNATURE),  # never written: generation 0 has no g=
        (0, "-1", LinkCheck.BAD_SIGNATURE),
        (0, "\u0661", LinkCheck.BAD_SIGNATURE),
        (0, "1" * 10, LinkCheck.BAD_SIGNATURE),
    ],
)
def test_a_links_generation_is_signed_in(signed: int, presented: str, expected: LinkCheck) -> None:
    signer = LinkSigner(KEY, "http://h")
    url = signer.sign(ASSET, "png", 1000, generation=signed).url
    assert ("&g=" in url) is (signed > 0)
    asset_id, exp, sig = parts(url)
    assert signer.check(asset_id, exp, sig, now=1, generation=presented) is expected
