"""Marking in the service: what a view of an unmarked original says, an upstream's
manifest that XMP would break, the room check counting the markings' bytes."""

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imagegate.config import Limits, QuotaSettings
from imagegate.core import c2pa, xmp
from imagegate.core.c2pa import SigningConfig, load_signer
from imagegate.core.errors import QuotaExceeded
from imagegate.core.images import ImageFormat, inspect_image
from imagegate.core.staging import StagedBlob
from imagegate.core.views import View
from imagegate.relays.base import RelayImage
from imagegate.service.generation import GenerateArgs, Produced
from imagegate.service.images import ImageService
from imagegate.service.marking import Marker
from imagegate.storage.interfaces import AssetMeta
from tests.conftest import ManualClock
from tests.fakes.c2pa_ca import Credentials, make_credentials
from tests.fakes.upstream import png_chunk
from tests.service.test_images import ALICE, Asked, image_service, progress


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("ca"))


def png(path: Path) -> Path:
    Image.effect_noise((64, 64), 40).convert("RGB").save(path, "PNG")
    return path


@pytest.mark.parametrize("marked", [True, False])
async def test_a_view_says_what_its_original_says(
    state_dir: Path, clock: ManualClock, tmp_path: Path, marked: bool
) -> None:
    """A generated image's view is AI-generated; an uploaded photo's is not."""
    async with image_service(state_dir, clock) as service:
        source = png(tmp_path / "photo.png")
        if marked:
            marked_copy = tmp_path / "marked.png"
            xmp.mark(source, marked_copy, ImageFormat.PNG, xmp.TRAINED_ALGORITHMIC_MEDIA)
            source = marked_copy
        with service.assets.stage() as staged:
            staged.write(source.read_bytes())
            staged.finish()
            info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
            asset = await service.assets.add(
                ALICE.subject, staged, info, AssetMeta(relay="upload", prompt=""), 1.0
            )
        view = await service.view(asset, View(32, 32, "contain", ImageFormat.WEBP))
    rendered = tmp_path / "view.webp"
    rendered.write_bytes(view)
    expected = xmp.TRAINED_ALGORITHMIC_MEDIA if marked else None
    assert xmp.read_source_type(rendered, ImageFormat.WEBP) == expected


def signed_upstream(tmp_path: Path) -> Path:
    """An image as an upstream that signs its outputs sends it."""
    upstream_ca = make_credentials(tmp_path / "upstream-ca")
    signer = load_signer(SigningConfig(upstream_ca.chain, upstream_ca.key))
    signed = tmp_path / "upstream.png"
    signer.sign(
        png(tmp_path / "plain.png"), signed, ImageFormat.PNG, action="created", software_agent="m"
    )
    return signed


def test_without_a_certificate_an_upstream_manifest_is_left_valid(tmp_path: Path) -> None:
    source = signed_upstream(tmp_path)
    marked = Marker(xmp=True).mark(source, ImageFormat.PNG, action="created", software_agent="m")
    assert marked.path == source  # nothing written: XMP would invalidate the manifest
    assert marked.done["xmp"].startswith("skipped")
    report = c2pa.read(source, ImageFormat.PNG)
    assert report.valid
    assert report.marks_ai


def test_with_a_certificate_the_upstream_manifest_stays_a_valid_parent(
    tmp_path: Path, ca: Credentials
) -> None:
    source = signed_upstream(tmp_path)
    signer = load_signer(SigningConfig(ca.chain, ca.key))
    marked = Marker(xmp=True, signer=signer).mark(
        source, ImageFormat.PNG, action="created", software_agent="m"
    )
    assert marked.done == {"xmp": "added", "c2pa": "signed"}
    report = c2pa.read(marked.path, ImageFormat.PNG, ca.root)
    assert report.trusted
    (parent,) = report.ingredients
    assert (parent.relationship, parent.has_manifest) == ("parentOf", True)
    # Its signer is the upstream's, whom no anchor here trusts; but its hash holds.
    assert parent.problems == ("signingCredential.untrusted",)
    assert xmp.read_source_type(marked.path, ImageFormat.PNG) == xmp.TRAINED_ALGORITHMIC_MEDIA


async def test_the_room_check_counts_the_markings_bytes(tmp_path: Path, clock: ManualClock) -> None:
    """Room for the images as made but not for their markings: refused whole. (The
    check counted the unmarked sizes; the second image's add then failed, after the
    first was stored.)"""
    args = GenerateArgs("x", n=2, seed=7)  # the same two images each time
    async with image_service(tmp_path / "probe", clock) as probe:
        made = await (await probe.admit(ALICE, args, Asked([]))).run(progress)
        marked_bytes = sum(asset.byte_size for asset in made.assets)
    limits = QuotaSettings(default=Limits(max_stored_bytes=marked_bytes - 1))
    async with image_service(tmp_path / "tight", clock, quotas=limits) as service:
        with pytest.raises(QuotaExceeded, match="max_stored_bytes"):
            await (await service.admit(ALICE, args, Asked([]))).run(progress)
        assert await service.assets.stored_bytes(ALICE.subject) == 0


async def test_an_image_the_marks_would_take_over_the_size_cap_is_stored_unmarked(
    tmp_path: Path, clock: ManualClock
) -> None:
    args = GenerateArgs("x", seed=7)
    async with image_service(tmp_path / "probe", clock, marking="off") as probe:
        (plain,) = (await (await probe.admit(ALICE, args, Asked([]))).run(progress)).assets
    async with image_service(tmp_path / "capped", clock, max_image_bytes=plain.byte_size) as capped:
        (asset,) = (await (await capped.admit(ALICE, args, Asked([]))).run(progress)).assets
        assert asset.sha256 == plain.sha256
        assert asset.params["marking"] == {
            "stored": f"unmarked: image is larger than the limit of {plain.byte_size} bytes"
        }
    assert list((tmp_path / "capped" / "tmp").iterdir()) == []


def test_an_image_already_marked_as_ai_is_kept_without_a_copy(tmp_path: Path) -> None:
    source = tmp_path / "upstream.png"
    xmp.mark(png(tmp_path / "plain.png"), source, ImageFormat.PNG, xmp.TRAINED_ALGORITHMIC_MEDIA)
    marked = Marker(xmp=True).mark(source, ImageFormat.PNG, action="created", software_agent="m")
    assert (marked.path, marked.done) == (source, {"xmp": "kept"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.png", "upstream.png"]


def staged_with_chunk(service: ImageService, data: bytes, checked: bool) -> StagedBlob:
    staged = service._stage_upstream(Marker(xmp=True).inline_png("created"))
    if checked:
        staged.check_as_png()
    for start in range(0, len(data), 1 << 16):  # as a spooled answer is written
        staged.write(data[start : start + (1 << 16)])
    staged.finish()
    return staged


def own_xmp(tmp_path: Path, source_type: str) -> bytes:
    out = tmp_path / f"own-{len(source_type)}.png"
    xmp.mark(png(tmp_path / "plain-own.png"), out, ImageFormat.PNG, source_type)
    return out.read_bytes()


CAMERA = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"


def itxt(keyword: bytes, text: bytes) -> bytes:
    return png_chunk(b"iTXt", keyword + b"\x00\x00\x00\x00\x00" + text)


def after_the_pixels(data: bytes, chunk: bytes) -> bytes:
    return data[:-12] + chunk + data[-12:]  # before IEND


def camera_packet() -> bytes:
    return itxt(b"XML:com.adobe.xmp", xmp.source_type_packet(CAMERA))


SENT: dict[str, Callable[[Path], bytes]] = {
    "plain": lambda tmp: png(tmp / "plain.png").read_bytes(),
    "a text chunk first": lambda tmp: (
        (p := png(tmp / "plain.png").read_bytes())[:33] + itxt(b"Comment", b"hi") + p[33:]
    ),
    "a text chunk last": lambda tmp: after_the_pixels(
        png(tmp / "plain.png").read_bytes(), itxt(b"Comment", b"hi")
    ),
    "its own xmp, ai": lambda tmp: own_xmp(tmp, xmp.TRAINED_ALGORITHMIC_MEDIA),
    "its own xmp, a camera": lambda tmp: own_xmp(tmp, CAMERA),
    "a camera's xmp last": lambda tmp: after_the_pixels(
        png(tmp / "plain.png").read_bytes(), camera_packet()
    ),
    "a c2pa manifest": lambda tmp: signed_upstream(tmp).read_bytes(),
    "a c2pa chunk last": lambda tmp: after_the_pixels(
        png(tmp / "plain.png").read_bytes(), png_chunk(b"caBX", b"a manifest store")
    ),
    "five camera packets last": lambda tmp: after_the_pixels(
        png(tmp / "plain.png").read_bytes(), camera_packet() * 5
    ),
    "two MiB of text first": lambda tmp: (
        (p := png(tmp / "plain.png").read_bytes())[:33]
        + png_chunk(b"tEXt", b"k\x00" + bytes(2 << 20))
        + p[33:]
    ),
}
INSERTED = {
    "plain",
    "a text chunk last",
    "a camera's xmp last",
    "a c2pa chunk last",
    "five camera packets last",
}
"""Nothing but image data before the first IDAT: the chunk goes in as it is written
(more than a MiB of anything before it is not held back: no chunk then)."""
STORED_AS_WRITTEN = {"plain", "its own xmp, ai", "a c2pa manifest"}
"""No copy: the chunk it took is its marking; or it already says AI, or a manifest
says where it came from (`mark` leaves both alone)."""
TAKEN_UNCHECKED = {"a text chunk last"}
"""Unchecked, the file's XMP layout tells: a text chunk that is not XMP is no reason
for a copy. Checked, any other text chunk is (the check counts them, cheaply)."""


@pytest.mark.parametrize("checked", [True, False])
@pytest.mark.parametrize("kind", SENT)
async def test_a_png_marked_as_written_is_what_mark_makes_of_it(
    tmp_path: Path, clock: ManualClock, kind: str, checked: bool
) -> None:
    """However the upstream's PNG came (with XMP or a manifest of its own, checked as it
    was written or not), the stored bytes and what the marking says are those of
    Marker.mark on the image as sent: the inserted chunk is taken as it is only
    when that is what `mark` would have written."""
    sent = SENT[kind](tmp_path)
    source = tmp_path / "sent.png"
    source.write_bytes(sent)
    expected = Marker(xmp=True).mark(source, ImageFormat.PNG, action="created", software_agent="m")
    async with image_service(tmp_path / "state", clock) as service:
        staged = staged_with_chunk(service, sent, checked)
        info = inspect_image(
            staged.path, max_bytes=10**7, max_pixels=10**7, png_whole=staged.png_whole
        )
        item = Produced(RelayImage(staged), info)
        stored, stored_info, done = await service._marked(item, "placeholder", [])
        assert done == expected.done
        assert stored.path.read_bytes() == expected.path.read_bytes()
        assert stored_info.byte_size == len(expected.path.read_bytes())
        assert stored.sha256 in ("", hashlib.sha256(stored.path.read_bytes()).hexdigest())
        assert (staged.inserted > 0) == (kind in INSERTED)
        copied = kind not in STORED_AS_WRITTEN and not (kind in TAKEN_UNCHECKED and not checked)
        assert (stored is not staged) == copied
        stored.discard()
        staged.discard()
    assert list((tmp_path / "state" / "tmp").iterdir()) == []


async def test_an_edit_marked_as_written_says_it_is_a_composite(
    tmp_path: Path, clock: ManualClock
) -> None:
    """XMP only: the edit's chunk goes in as its PNG is written, with the source type
    of an edit of supplied images."""
    async with image_service(tmp_path / "state", clock) as service:
        made = await (await service.admit(ALICE, GenerateArgs("x"), Asked([]))).run(progress)
        edited = await service.edit(
            ALICE, GenerateArgs("sepia"), [made.assets[0].id], None, False, progress, Asked([])
        )
        (asset,) = edited.assets
        path = service.assets.local_path(asset)
        assert path is not None
        assert asset.params["marking"] == {"xmp": "added"}
        source_type = xmp.read_source_type(path, ImageFormat.PNG)
        assert source_type == xmp.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
        assert path.read_bytes()[33:].startswith(xmp.png_chunk(source_type))


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("bug")])
async def test_a_copy_back_that_fails_leaves_nothing_behind(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The image had XMP of its own after its pixels, and copying it back as sent
    fails: a disk error stores it as written, saying its marking failed; anything
    else fails the call. Either way no staged copy is left."""

    def broken(staged: StagedBlob, into: StagedBlob) -> None:
        into.write(b"half")
        raise error

    monkeypatch.setattr(Marker, "as_sent", staticmethod(broken))
    sent = SENT["a camera's xmp last"](tmp_path)
    async with image_service(tmp_path / "state", clock) as service:
        staged = staged_with_chunk(service, sent, checked=True)
        info = inspect_image(staged.path, max_bytes=10**7, max_pixels=10**7)
        item = Produced(RelayImage(staged), info)
        if isinstance(error, OSError):
            stored, _, done = await service._marked(item, "placeholder", [])
            assert stored is staged
            assert done == {"xmp": "failed: No space left on device", "stored": "as written"}
        else:
            with pytest.raises(RuntimeError):
                await service._marked(item, "placeholder", [])
        staged.discard()
    assert list((tmp_path / "state" / "tmp").iterdir()) == []
