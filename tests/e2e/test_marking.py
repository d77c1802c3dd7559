"""Marking end to end (issue 18): a real server stores every image marked as
AI-generated, in XMP and, with a certificate from a test CA made here, in a signed
C2PA manifest; downloads, views and edits keep it; an upstream's manifest is kept as
the parent; verify_image and `imagegate verify` report it; a tampered byte fails."""

import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import C2PASettings
from imagegate.core import c2pa, xmp
from imagegate.core.c2pa import SigningConfig, load_signer
from imagegate.core.images import ImageFormat
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.e2e.harness import RunningServer, free_port, running_server, structured
from tests.e2e.processes import clean_env, run
from tests.fakes.c2pa_ca import Credentials, make_credentials
from tests.fakes.tsa import running_tsa
from tests.fakes.upstream import images_reply, png_bytes, running_upstream

FORMATS = {"png": ImageFormat.PNG, "jpeg": ImageFormat.JPEG, "webp": ImageFormat.WEBP}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("ca"))


def signing(ca: Credentials) -> C2PASettings:
    return C2PASettings(certificate_chain=ca.chain, private_key=ca.key, trust_anchors=ca.root)


async def download(url: str, to: Path) -> Path:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    to.write_bytes(response.content)
    return to


async def generated(server: RunningServer, to: Path, **arguments: Any) -> tuple[str, Path]:
    made = await structured(server, server.token, "generate_image", prompt="a kite", **arguments)
    image = made["images"][0]
    return image["asset_id"], await download(image["url"], to)


@pytest.fixture
async def signed(tmp_path: Path, ca: Credentials) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "state", c2pa=signing(ca)) as server:
        yield server


@pytest.mark.parametrize("fmt", list(FORMATS))
async def test_a_generated_image_carries_both_markings(
    signed: RunningServer, ca: Credentials, tmp_path: Path, fmt: str
) -> None:
    asset_id, path = await generated(signed, tmp_path / f"made.{fmt}", output_format=fmt)
    assert xmp.read_source_type(path, FORMATS[fmt]) == xmp.TRAINED_ALGORITHMIC_MEDIA
    report = c2pa.read(path, FORMATS[fmt], ca.root)
    assert (report.valid, report.trusted, report.signer) == (True, True, "imagegate test signer")
    (created,) = report.actions
    assert created.action == "c2pa.created"
    assert created.digital_source_type == xmp.TRAINED_ALGORITHMIC_MEDIA
    assert created.software_agent == "placeholder"
    assert b"a kite" not in path.read_bytes()  # no prompt in either marking

    verified = await structured(signed, signed.token, "verify_image", asset_id=asset_id)
    assert verified["ai_generated"] is True
    assert verified["xmp"]["digital_source_type"] == xmp.TRAINED_ALGORITHMIC_MEDIA
    assert (verified["c2pa"]["valid"], verified["c2pa"]["trusted"]) == (True, True)


async def test_the_command_line_verifies_a_file_and_a_tampered_byte_fails(
    signed: RunningServer, ca: Credentials, tmp_path: Path
) -> None:
    _, path = await generated(signed, tmp_path / "made.png")
    ok = verify_file(path, ca.root)
    assert ok.returncode == 0, ok.stderr
    assert "AI-generated: yes" in ok.stdout
    assert "C2PA manifest: trusted; signed by imagegate test signer" in ok.stdout
    untrusted = verify_file(path, None)
    assert "valid, signer not trusted" in untrusted.stdout
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the pixel data
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(bytes(data))
    refused = verify_file(tampered, ca.root)
    assert refused.returncode == 1
    assert "C2PA manifest: INVALID" in refused.stdout


def verify_file(path: Path, anchors: Path | None) -> subprocess.CompletedProcess[str]:
    extra = ["--trust-anchors", str(anchors)] if anchors else []
    return run("verify", str(path), *extra, env=clean_env(HOME=str(path.parent)))


async def test_a_view_is_marked_as_a_resized_copy_of_its_original(
    signed: RunningServer, ca: Credentials, tmp_path: Path
) -> None:
    asset_id, _ = await generated(signed, tmp_path / "made.png")
    link = await structured(
        signed, signed.token, "create_download_link", asset_id=asset_id, width=128, format="webp"
    )
    path = await download(link["images"][0]["url"], tmp_path / "view.webp")
    assert xmp.read_source_type(path, ImageFormat.WEBP) == xmp.TRAINED_ALGORITHMIC_MEDIA
    report = c2pa.read(path, ImageFormat.WEBP, ca.root)
    assert report.trusted
    assert [a.action for a in report.actions] == ["c2pa.opened", "c2pa.resized"]
    (original,) = report.ingredients
    assert (original.relationship, original.has_manifest) == ("parentOf", True)


async def test_an_edit_is_a_composite_that_names_its_input(
    signed: RunningServer, ca: Credentials, tmp_path: Path
) -> None:
    asset_id, _ = await generated(signed, tmp_path / "made.png")
    made = await structured(
        signed, signed.token, "edit_image", prompt="add a moon", images=[asset_id]
    )
    path = await download(made["images"][0]["url"], tmp_path / "edited.png")
    assert (
        xmp.read_source_type(path, ImageFormat.PNG) == xmp.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    )
    report = c2pa.read(path, ImageFormat.PNG, ca.root)
    assert report.trusted
    assert any(
        a.digital_source_type == xmp.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        for a in report.actions
    )
    (used,) = report.ingredients
    assert (used.relationship, used.has_manifest) == ("inputTo", True)


async def test_an_upstream_manifest_is_kept_as_the_parent(
    tmp_path: Path, ca: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream_ca = make_credentials(tmp_path / "upstream-ca")
    upstream_signer = load_signer(SigningConfig(upstream_ca.chain, upstream_ca.key))
    plain = tmp_path / "upstream-plain.png"
    plain.write_bytes(png_bytes((256, 256)))
    marked = tmp_path / "upstream-signed.png"
    upstream_signer.sign(
        plain, marked, ImageFormat.PNG, action="created", software_agent="upstream-model"
    )
    monkeypatch.setenv("FAKE_MARKING_KEY", "sk-fake-marking-0123456789")
    async with running_upstream() as fake:
        fake.defaults["/v1/images/generations"] = images_reply(marked.read_bytes())
        relay = OpenAIImagesRelayConfig(
            kind="openai-images",
            base_url=f"{fake.base_url}/v1",
            api_key_env="FAKE_MARKING_KEY",
            model="gpt-image-test",
            paid=False,
        )
        async with running_server(
            tmp_path / "state", c2pa=signing(ca), relays={"up": relay}
        ) as server:
            _, path = await generated(server, tmp_path / "stored.png")
    report = c2pa.read(path, ImageFormat.PNG, ca.root)
    assert report.trusted
    assert report.manifests == 2
    (parent,) = report.ingredients
    assert (parent.relationship, parent.has_manifest) == ("parentOf", True)
    assert report.actions[0].action == "c2pa.opened"
    assert any(a.software_agent == "gpt-image-test" for a in report.actions)
    assert xmp.read_source_type(path, ImageFormat.PNG) == xmp.TRAINED_ALGORITHMIC_MEDIA


async def test_xmp_alone_by_default_and_nothing_when_off(tmp_path: Path) -> None:
    async with running_server(tmp_path / "a") as plain_default:
        _, path = await generated(plain_default, tmp_path / "default.png")
    assert xmp.read_source_type(path, ImageFormat.PNG) == xmp.TRAINED_ALGORITHMIC_MEDIA
    assert not c2pa.read(path, ImageFormat.PNG).present
    relays = {"placeholder": PlaceholderRelayConfig(kind="placeholder")}
    async with running_server(tmp_path / "b", marking="off", relays=relays) as off:
        asset_id, path = await generated(off, tmp_path / "off.png")
        verified = await structured(off, off.token, "verify_image", asset_id=asset_id)
    assert xmp.read_source_type(path, ImageFormat.PNG) is None
    assert not c2pa.read(path, ImageFormat.PNG).present
    assert verified["ai_generated"] is False
    assert verified["c2pa"] == {"present": False}


async def test_a_signature_that_fails_loses_nothing(tmp_path: Path, ca: Credentials) -> None:
    """The time-stamping service is down: the image is stored with its XMP, and says
    what failed."""
    settings = C2PASettings(
        certificate_chain=ca.chain,
        private_key=ca.key,
        tsa_url=f"http://127.0.0.1:{free_port()}/tsa",  # nothing listens there
    )
    async with running_server(tmp_path / "state", c2pa=settings) as server:
        made = await structured(server, server.token, "generate_image", prompt="a kite")
        (image,) = made["images"]
        path = await download(image["url"], tmp_path / "made.png")
    marking = image["params"]["marking"]
    assert marking["xmp"] == "added"
    assert marking["c2pa"].startswith("failed: C2PA signing failed")
    assert xmp.read_source_type(path, ImageFormat.PNG) == xmp.TRAINED_ALGORITHMIC_MEDIA
    assert not c2pa.read(path, ImageFormat.PNG).present


def test_the_local_generate_command_marks_its_files(tmp_path: Path) -> None:
    made = run(
        "generate", "a kite", "--format", "webp", env=clean_env(HOME=str(tmp_path)), cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    (path,) = tmp_path.glob("imagegate-*.webp")
    assert xmp.read_source_type(path, ImageFormat.WEBP) == xmp.TRAINED_ALGORITHMIC_MEDIA
    (image,) = json.loads(made.stdout)["images"]
    assert image["params"]["marking"] == {"xmp": "added"}
    assert image["bytes"] == path.stat().st_size
    assert not list(tmp_path.glob("stage-*"))  # nothing left behind


@pytest.mark.parametrize("anchors", ["missing.pem", "not-pem.pem"])
def test_trust_anchors_that_do_not_load_are_said_not_ignored(tmp_path: Path, anchors: str) -> None:
    image = tmp_path / "plain.png"
    image.write_bytes(png_bytes((32, 32)))
    (tmp_path / "not-pem.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    result = verify_file(image, tmp_path / anchors)
    assert result.returncode == 2
    assert "trust anchors" in result.stderr


async def test_a_time_stamping_service_dates_each_signature(
    tmp_path: Path, ca: Credentials
) -> None:
    """A real RFC 3161 service on 127.0.0.1 (openssl ts): the manifest carries its
    time, trusted when its root is."""
    with running_tsa(tmp_path / "tsa") as tsa:
        settings = C2PASettings(certificate_chain=ca.chain, private_key=ca.key, tsa_url=tsa.url)
        async with running_server(tmp_path / "state", c2pa=settings) as server:
            _, path = await generated(server, tmp_path / "made.png")
        assert tsa.requests  # asked for each signature (and not at start)
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ca.root.read_bytes() + tsa.root.read_bytes())
    report = c2pa.read(path, ImageFormat.PNG, anchors)
    assert (report.valid, report.trusted) == (True, True)
    assert report.signed_at is not None
    assert report.signed_at.startswith(str(datetime.now(UTC).year))
