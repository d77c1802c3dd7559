"""C2PA signing and reading against a private test CA made in this session.

No network: tsa_url stays unset, so no signature here carries a trusted time-stamp.
"""

import http.server
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from imagegate.core.c2pa import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    ActionRecord,
    ManifestSigner,
    SigningConfig,
    load_signer,
    plan_manifest,
    read,
    report_from_store,
)
from imagegate.core.errors import ConfigError, StorageError
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat
from tests.fakes.c2pa_ca import ORGANIZATION, SIGNER, Credentials, make_credentials

PIL_NAMES = {ImageFormat.PNG: "PNG", ImageFormat.JPEG: "JPEG", ImageFormat.WEBP: "WEBP"}


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def signer(credentials: Credentials) -> ManifestSigner:
    return load_signer(SigningConfig(credentials.chain, credentials.key))


def image_file(path: Path, fmt: ImageFormat, size: int = 96) -> Path:
    Image.effect_noise((size, size), 60).convert("RGB").save(path, PIL_NAMES[fmt])
    return path


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def pixel_data_offset(data: bytes, fmt: ImageFormat) -> int:
    """Where the compressed image data starts, found by walking the container's chunks
    (a search for a marker could land inside the manifest's signature bytes)."""
    if fmt is ImageFormat.PNG:
        pos = 8
        while data[pos + 4 : pos + 8] != b"IDAT":
            pos += 12 + struct.unpack(">I", data[pos : pos + 4])[0]
        return pos + 8
    if fmt is ImageFormat.JPEG:
        pos = 2
        while data[pos + 1] != 0xDA:
            pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        header_length: int = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        return pos + 2 + header_length
    pos = 12
    while data[pos : pos + 3] != b"VP8":
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        pos += 8 + size + (size & 1)
    return pos + 8


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def signed(
    signer: ManifestSigner,
    folder: Path,
    fmt: ImageFormat = ImageFormat.PNG,
    *,
    name: str = "signed",
    software_agent: str = "m",
) -> Path:
    """A new noisy image, signed as generated."""
    dst = folder / f"{name}.{fmt.extension}"
    src = image_file(folder / f"{name}-src.{fmt.extension}", fmt)
    signer.sign(src, dst, fmt, action="created", software_agent=software_agent)
    return dst


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS, ids=lambda f: f.value)
def test_signed_copy_validates_and_keeps_pixels(
    tmp_path: Path, signer: ManifestSigner, credentials: Credentials, fmt: ImageFormat
) -> None:
    src = image_file(tmp_path / f"src.{fmt.extension}", fmt)
    dst = tmp_path / f"signed.{fmt.extension}"
    signer.sign(src, dst, fmt, action="created", software_agent="gpt-image-1")

    report = read(dst, fmt, credentials.root)
    assert (report.present, report.valid, report.trusted) == (True, True, True)
    assert report.problems == ()
    assert report.actions == (
        ActionRecord("c2pa.created", TRAINED_ALGORITHMIC_MEDIA, "gpt-image-1"),
    )
    assert report.marks_ai
    assert (report.signer, report.issuer) == (SIGNER, ORGANIZATION)
    assert report.claim_generator == "imagegate"
    assert report.signed_at is None  # no time-stamping service in tests
    assert report.manifests == 1
    assert pixels(dst) == pixels(src)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS, ids=lambda f: f.value)
def test_a_changed_pixel_byte_fails_validation(
    tmp_path: Path, signer: ManifestSigner, credentials: Credentials, fmt: ImageFormat
) -> None:
    dst = signed(signer, tmp_path, fmt)
    flip_byte(dst, pixel_data_offset(dst.read_bytes(), fmt) + 20)

    report = read(dst, fmt, credentials.root)
    assert report.present
    assert not report.valid
    assert not report.trusted
    assert any(p.startswith("assertion.dataHash.mismatch") for p in report.problems)


def test_a_damaged_manifest_is_reported_not_raised(
    tmp_path: Path, signer: ManifestSigner, credentials: Credentials
) -> None:
    dst = signed(signer, tmp_path)
    data = dst.read_bytes()
    flip_byte(dst, data.index(b"c2pa.actions") + 2)

    report = read(dst, ImageFormat.PNG, credentials.root)
    assert report.present
    assert not report.valid
    assert report.problems


def test_without_trust_anchors_valid_but_not_trusted(
    tmp_path: Path, signer: ManifestSigner
) -> None:
    dst = signed(signer, tmp_path)

    report = read(dst, ImageFormat.PNG, None)
    assert (report.valid, report.trusted) == (True, False)
    assert any(p.startswith("signingCredential.untrusted") for p in report.problems)


def test_an_unmarked_image_reports_absent(tmp_path: Path, credentials: Credentials) -> None:
    report = read(
        image_file(tmp_path / "plain.png", ImageFormat.PNG), ImageFormat.PNG, credentials.root
    )
    assert (report.present, report.valid, report.actions, report.manifests) == (False, False, (), 0)


def test_an_upstream_manifest_becomes_the_parent_of_an_edit(
    tmp_path: Path, signer: ManifestSigner, credentials: Credentials
) -> None:
    upstream = signed(signer, tmp_path, name="upstream", software_agent="upstream-model")
    user_input = image_file(tmp_path / "input.jpg", ImageFormat.JPEG)
    edited = tmp_path / "edited.png"
    signer.sign(
        upstream,
        edited,
        ImageFormat.PNG,
        action="edited",
        software_agent="gpt-image-1",
        ingredients=[user_input],
    )

    report = read(edited, ImageFormat.PNG, credentials.root)
    assert report.trusted
    assert report.manifests == 2
    assert [(a.action, a.digital_source_type) for a in report.actions] == [
        ("c2pa.opened", None),
        ("c2pa.edited", COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA),
    ]
    parent, given = report.ingredients
    assert (parent.title, parent.relationship, parent.has_manifest) == (
        "upstream",
        "parentOf",
        True,
    )
    assert (given.title, given.relationship, given.format) == ("input 1", "inputTo", "image/jpeg")
    assert not given.has_manifest
    assert pixels(edited) == pixels(upstream)


def test_a_resized_view_names_its_original_as_parent(
    tmp_path: Path, signer: ManifestSigner, credentials: Credentials
) -> None:
    original = signed(signer, tmp_path, ImageFormat.WEBP, name="original")
    small = tmp_path / "small.webp"
    with Image.open(original) as image:
        image.resize((32, 32)).save(small, "WEBP")
    view = tmp_path / "view.webp"
    signer.sign(
        small, view, ImageFormat.WEBP, action="resized", software_agent="imagegate", parent=original
    )

    report = read(view, ImageFormat.WEBP, credentials.root)
    assert report.trusted
    assert [a.action for a in report.actions] == ["c2pa.opened", "c2pa.resized"]
    assert [(i.title, i.relationship, i.has_manifest) for i in report.ingredients] == [
        ("original", "parentOf", True)
    ]
    assert report.manifests == 2


def test_no_file_name_reaches_the_file(tmp_path: Path, signer: ManifestSigner) -> None:
    src = image_file(tmp_path / "bob-at-home.png", ImageFormat.PNG)
    given = image_file(tmp_path / "alice-passport.jpg", ImageFormat.JPEG)
    dst = tmp_path / "out.png"
    signer.sign(src, dst, ImageFormat.PNG, action="edited", software_agent="m", ingredients=[given])
    data = dst.read_bytes()
    assert b"alice" not in data
    assert b"bob" not in data
    assert str(tmp_path).encode() not in data


def test_failed_signing_leaves_no_file(tmp_path: Path, signer: ManifestSigner) -> None:
    src = image_file(tmp_path / "src.png", ImageFormat.PNG)
    dst = tmp_path / "out.png"
    with pytest.raises(StorageError, match=r"C2PA signing failed: .*could not be parsed"):
        signer.sign(src, dst, ImageFormat.JPEG, action="created", software_agent="m")
    assert not dst.exists()
    with pytest.raises(StorageError, match="C2PA signing failed: No such file"):
        signer.sign(
            src,
            dst,
            ImageFormat.PNG,
            action="edited",
            software_agent="m",
            ingredients=[tmp_path / "missing.png"],
        )
    assert not dst.exists()
    with pytest.raises(ValueError, match="other than its source"):
        signer.sign(src, src, ImageFormat.PNG, action="created", software_agent="m")


@pytest.fixture
def counting_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that records the paths asked of it."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_manifest_url_is_never_fetched(
    tmp_path: Path,
    signer: ManifestSigner,
    credentials: Credentials,
    counting_server: tuple[str, list[str]],
) -> None:
    """A file can name a remote manifest in its XMP; reading or signing it must not make
    the server fetch that URL (the SDK's default would)."""
    base, asked = counting_server
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'rdf:about="" xmlns:dcterms="http://purl.org/dc/terms/" '
        f'dcterms:provenance="{base}/manifest.c2pa"/></rdf:RDF></x:xmpmeta>'
    )
    remote = tmp_path / "remote.jpg"
    Image.new("RGB", (16, 16)).save(remote, "JPEG", xmp=xmp.encode())

    report = read(remote, ImageFormat.JPEG, credentials.root)
    assert (report.present, report.valid) == (True, False)
    assert report.problems == ("the manifest is stored remotely and was not fetched",)
    dst = tmp_path / "signed.jpg"
    signer.sign(remote, dst, ImageFormat.JPEG, action="edited", software_agent="m")
    (parent,) = read(dst, ImageFormat.JPEG, credentials.root).ingredients
    assert parent.relationship == "parentOf"
    assert asked == []


def test_the_manifest_holds_no_copy_of_the_image(tmp_path: Path, signer: ManifestSigner) -> None:
    """The SDK's default thumbnail would add a second copy of a noisy image."""
    dst = signed(signer, tmp_path)
    added = dst.stat().st_size - (tmp_path / "signed-src.png").stat().st_size
    assert 0 < added < 8_000


# -- credentials ----------------------------------------------------------------------


def test_a_self_signed_ca_certificate_is_refused_by_the_sdk_at_start_up(tmp_path: Path) -> None:
    """The SDK refuses to sign with it ("the certificate was self-signed");
    load_signer's probe signing turns that into a start-up error."""
    bad = make_credentials(tmp_path, kind="self_signed_ca")
    with pytest.raises(ConfigError, match="certificate was self-signed"):
        load_signer(SigningConfig(bad.chain, bad.key))


def test_a_self_signed_end_entity_signs_but_is_untrusted(
    tmp_path: Path, credentials: Credentials
) -> None:
    """A self-signed certificate without cA passes the SDK's profile check, so signing
    works; validation refuses to trust it: it does not chain to the suite's root."""
    own = make_credentials(tmp_path / "own", kind="self_signed_ee")
    dst = tmp_path / "out.png"
    load_signer(SigningConfig(own.chain, own.key)).sign(
        image_file(tmp_path / "src.png", ImageFormat.PNG),
        dst,
        ImageFormat.PNG,
        action="created",
        software_agent="m",
    )

    report = read(dst, ImageFormat.PNG, credentials.root)
    assert (report.valid, report.trusted) == (True, False)
    assert any(p.startswith("signingCredential.untrusted") for p in report.problems)


def test_an_end_entity_without_eku_is_refused_at_start_up(tmp_path: Path) -> None:
    bad = make_credentials(tmp_path, kind="no_eku")
    with pytest.raises(ConfigError, match="refuses this certificate"):
        load_signer(SigningConfig(bad.chain, bad.key))


def test_a_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, credentials: Credentials
) -> None:
    other = make_credentials(tmp_path)
    with pytest.raises(ConfigError, match="signature does not match"):
        load_signer(SigningConfig(credentials.chain, other.key))


def test_ps256_signs(tmp_path: Path) -> None:
    rsa = make_credentials(tmp_path, algorithm="ps256")
    dst = tmp_path / "out.jpg"
    load_signer(SigningConfig(rsa.chain, rsa.key, algorithm="ps256")).sign(
        image_file(tmp_path / "src.jpg", ImageFormat.JPEG),
        dst,
        ImageFormat.JPEG,
        action="created",
        software_agent="m",
    )
    assert read(dst, ImageFormat.JPEG, rsa.root).trusted


@pytest.mark.parametrize(
    ("mode", "accepted"),
    [(0o600, True), (0o400, True), (0o640, True), (0o644, False), (0o604, False), (0o660, False)],
)
def test_key_file_modes(
    tmp_path: Path, credentials: Credentials, mode: int, accepted: bool
) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(credentials.key.read_bytes())
    os.chmod(key, mode)
    config = SigningConfig(credentials.chain, key)
    if accepted:
        load_signer(config)
    else:
        with pytest.raises(ConfigError, match=f"mode {mode:04o} is too open"):
            load_signer(config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "rs256"}, "is not one of es256"),
        ({"tsa_url": "ftp://tsa.example"}, "must start with http"),
        ({"certificate_chain": Path("/nonexistent/chain.pem")}, "cannot read certificate chain"),
        ({"private_key": Path("/nonexistent/key.pem")}, "secret file not found"),
    ],
)
def test_config_errors_say_what(
    credentials: Credentials, change: dict[str, Any], message: str
) -> None:
    fields: dict[str, Any] = {
        "certificate_chain": credentials.chain,
        "private_key": credentials.key,
    } | change
    with pytest.raises(ConfigError, match=message):
        load_signer(SigningConfig(**fields))


def test_a_file_that_is_no_pem(tmp_path: Path, credentials: Credentials) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_text("not a certificate")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        load_signer(SigningConfig(chain, credentials.key))


def test_the_key_stays_out_of_repr(signer: ManifestSigner) -> None:
    assert "PRIVATE" not in repr(signer)


# -- what goes in a manifest ----------------------------------------------------------

SRC, PARENT, INPUT = Path("src"), Path("parent"), Path("input")


def actions(plan_args: dict[str, Any]) -> list[dict[str, Any]]:
    plan = plan_manifest(**plan_args)
    result: list[dict[str, Any]] = plan.manifest["assertions"][0]["data"]["actions"]
    return result


def summary(plan_args: dict[str, Any]) -> tuple[list[tuple[str, Any, Any]], list[tuple[Path, str]]]:
    plan = plan_manifest(**plan_args)
    found = [
        (
            a["action"],
            a.get("digitalSourceType", "").rsplit("/", 1)[-1] or None,
            a.get("parameters", {}).get("ingredientIds"),
        )
        for a in plan.manifest["assertions"][0]["data"]["actions"]
    ]
    return found, [(i.path, i.definition["relationship"]) for i in plan.ingredients]


TAM, CTAM = "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            {"action": "created", "src_has_manifest": False},
            ([("c2pa.created", TAM, None)], []),
            id="generated",
        ),
        pytest.param(
            {"action": "created", "src_has_manifest": True},
            ([("c2pa.opened", TAM, ["parent"])], [(SRC, "parentOf")]),
            id="generated, upstream manifest kept",
        ),
        pytest.param(
            {"action": "edited", "src_has_manifest": False, "ingredients": [INPUT]},
            ([("c2pa.created", CTAM, ["input-1"])], [(INPUT, "inputTo")]),
            id="edited",
        ),
        pytest.param(
            {"action": "edited", "src_has_manifest": True, "ingredients": [INPUT]},
            (
                [("c2pa.opened", None, ["parent"]), ("c2pa.edited", CTAM, ["input-1"])],
                [(SRC, "parentOf"), (INPUT, "inputTo")],
            ),
            id="edited, upstream manifest kept",
        ),
        pytest.param(
            {"action": "edited", "src_has_manifest": False, "parent": PARENT},
            (
                [("c2pa.opened", None, ["parent"]), ("c2pa.edited", CTAM, None)],
                [(PARENT, "parentOf")],
            ),
            id="edited with a parent",
        ),
        pytest.param(
            {"action": "edited", "src_has_manifest": True, "parent": PARENT},
            (
                [("c2pa.opened", None, ["parent"]), ("c2pa.edited", CTAM, ["input-1"])],
                [(SRC, "parentOf"), (PARENT, "inputTo")],
            ),
            id="upstream wins, the named parent becomes an input",
        ),
        pytest.param(
            {"action": "resized", "src_has_manifest": False, "parent": PARENT},
            (
                [("c2pa.opened", None, ["parent"]), ("c2pa.resized", None, None)],
                [(PARENT, "parentOf")],
            ),
            id="resized",
        ),
    ],
)
def test_plan(args: dict[str, Any], expected: tuple[Any, Any]) -> None:
    assert summary({"software_agent": "m", "src": SRC} | args) == expected


def test_plan_puts_the_agent_on_the_model_action() -> None:
    created = actions(
        {
            "action": "created",
            "software_agent": "gpt-image-1",
            "src": SRC,
            "src_has_manifest": False,
        }
    )
    assert created[0]["softwareAgent"] == {"name": "gpt-image-1"}
    edited = actions(
        {"action": "edited", "software_agent": "gpt-image-1", "src": SRC, "src_has_manifest": True}
    )
    assert "softwareAgent" not in edited[0]
    assert edited[1]["softwareAgent"] == {"name": "gpt-image-1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"action": "resized", "src_has_manifest": False}, "needs its original as parent"),
        ({"action": "deleted", "src_has_manifest": False}, "unknown C2PA action"),
        ({"action": "created", "src_has_manifest": False, "software_agent": " "}, "must name"),
    ],
)
def test_plan_refuses(args: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"software_agent": "m", "src": SRC}
    with pytest.raises(ValueError, match=message):
        plan_manifest(**(base | args))


# -- reading the SDK's JSON -----------------------------------------------------------


def test_report_from_a_v1_store_with_ingredient_failures() -> None:
    store = {
        "active_manifest": "urn:a",
        "manifests": {
            "urn:a": {
                "claim_generator": "Other Tool/1.0",
                "signature_info": {"common_name": "Signer", "issuer": "Org", "time": "T"},
                "assertions": [
                    {
                        "label": "c2pa.actions",
                        "data": {
                            "actions": [
                                {
                                    "action": "c2pa.created",
                                    "softwareAgent": "Model 2",
                                    "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                }
                            ]
                        },
                    },
                    {"label": "stds.schema-org.CreativeWork", "data": {}},
                ],
                "ingredients": [
                    {"title": "x", "relationship": "componentOf", "active_manifest": "urn:b"}
                ],
            },
            "urn:b": {},
        },
        "validation_state": "Invalid",
        "validation_results": {
            "activeManifest": {"failure": [{"code": "claimSignature.mismatch"}]},
            "ingredientDeltas": [
                {
                    "validationDeltas": {
                        "failure": [
                            {"code": "assertion.hashedURI.mismatch", "explanation": "changed"}
                        ]
                    }
                }
            ],
        },
    }
    report = report_from_store(store)
    assert report.actions == (ActionRecord("c2pa.created", TRAINED_ALGORITHMIC_MEDIA, "Model 2"),)
    assert report.problems == (
        "claimSignature.mismatch",
        "ingredient assertion.hashedURI.mismatch: changed",
    )
    assert (report.valid, report.trusted, report.manifests) == (False, False, 2)
    assert (report.signer, report.issuer, report.signed_at) == ("Signer", "Org", "T")
    assert report.claim_generator == "Other Tool/1.0"
    assert report.ingredients[0].has_manifest
    assert report.marks_ai


@pytest.mark.parametrize(
    ("state", "valid", "trusted"),
    [
        ("Trusted", True, True),
        ("Valid", True, False),
        ("Invalid", False, False),
        (None, False, False),
    ],
)
def test_report_states(state: str | None, valid: bool, trusted: bool) -> None:
    report = report_from_store({"validation_state": state})
    assert (report.present, report.valid, report.trusted) == (True, valid, trusted)
    assert not report.marks_ai


def test_a_sign_command_signs_instead_of_a_key_file(
    tmp_path: Path, credentials: Credentials
) -> None:
    """An HSM's or KMS's tool: here openssl, holding the key imagegate never reads."""
    command = ("openssl", "dgst", "-sha256", "-sign", str(credentials.key))
    command_signer = load_signer(SigningConfig(credentials.chain, None, sign_command=command))
    assert command_signer.key is None
    src = image_file(tmp_path / "a.png", ImageFormat.PNG)
    dst = tmp_path / "signed.png"
    command_signer.sign(src, dst, ImageFormat.PNG, action="created", software_agent="m")
    report = read(dst, ImageFormat.PNG, credentials.root)
    assert (report.valid, report.trusted) == (True, True)


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (("false",), "exit 1"),
        (("/nonexistent/kms-sign",), "can't run"),
        (("sh", "-c", "cat >/dev/null; printf 'not a signature'"), "refuses"),
    ],
)
def test_a_sign_command_that_fails_stops_the_start(
    credentials: Credentials, command: tuple[str, ...], said: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_signer(SigningConfig(credentials.chain, None, sign_command=command))
    assert said in str(refused.value)


def test_without_a_key_or_a_command_nothing_signs(credentials: Credentials) -> None:
    with pytest.raises(ConfigError, match="set private_key, or sign_command"):
        load_signer(SigningConfig(credentials.chain, None))
