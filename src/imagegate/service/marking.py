"""Every image imagegate stores says it is AI-generated (EU AI Act, Article 50(2)):
in plain XMP (IPTC's DigitalSourceType), and with a certificate in a signed C2PA
manifest. `marking` and `[c2pa]` choose (config.Settings.marks).

Order matters: XMP first, then the manifest, whose signature covers every byte outside
it. Both add metadata only: pixel data is copied as it is. An AI marking an image
already carries (an upstream's source type or manifest) is kept; a source type that
says otherwise (a camera photo) is replaced.

A marking that fails (an upstream's XMP that doesn't parse, a time-stamping service
that is down) doesn't lose the image: it is stored with what did succeed, and the
failure is logged and recorded in its params ("marking"), which verify_image shows.
"""

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from imagegate.config import Settings
from imagegate.core import xmp
from imagegate.core.edits import Edit, apply_edits
from imagegate.core.errors import ImagegateError
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob

if TYPE_CHECKING:
    from imagegate.core.c2pa import ManifestSigner, Report

log = logging.getLogger("imagegate.marking")

MARKABLE = frozenset({ImageFormat.PNG, ImageFormat.JPEG, ImageFormat.WEBP})
Action = Literal["created", "edited", "resized"]


@dataclass(frozen=True)
class Marked:
    path: Path
    """The marked copy, or the source itself when nothing was written."""
    done: dict[str, str]
    """What each marking did ("added", "kept", "replaced", "skipped: why", "signed",
    or "failed: why")."""


@dataclass(frozen=True)
class Marker:
    xmp: bool
    signer: "ManifestSigner | None" = None

    @property
    def active(self) -> bool:
        return self.xmp or self.signer is not None

    def mark(
        self,
        src: Path,
        fmt: ImageFormat,
        *,
        action: Action,
        software_agent: str,
        inputs: Sequence[Path] = (),
        parent: Path | None = None,
        source_type: str | None = None,
        into: StagedBlob | None = None,
    ) -> Marked:
        """Blocking (run it in a worker thread): a marked copy of `src` beside it, which
        the caller removes once used; or, given `into`, the marked bytes written there
        and `into` finished (its writes' errors, TooLarge or OSError, are raised). When
        nothing changes, `Marked.path` is `src` and `into` is left as it was.

        `inputs` are an edit's input images, `parent` the original of a resized view.
        The source type is trained algorithmic media for what was created, a composite
        for an edit of supplied images, and for a view the original's (`source_type`;
        none: no XMP). XMP is not added to an image that carries a C2PA manifest when
        nothing re-signs it: the new bytes would make that manifest (an upstream's)
        invalid, and it says the image's origin itself."""
        if not self.active or fmt not in MARKABLE:
            return Marked(src, {})
        current, done = src, {}
        if source_type is None and action != "resized":
            source_type = xmp.made_source_type(action)
        signed = _carries_c2pa(src, fmt)
        if self.xmp and source_type is not None and signed and self.signer is None:
            done["xmp"] = "skipped: the image's own C2PA manifest says where it came from"
        elif self.xmp and source_type is not None:
            try:
                result, edits = xmp.planned(src, fmt, source_type)
            except (xmp.MarkingError, OSError) as err:
                done["xmp"] = _failed("xmp", err)
            else:
                done["xmp"] = result.value
                if edits and self.signer is None and into is not None:
                    # The last marking: straight into the blob, one copy of the image.
                    apply_edits(src, edits, into.write)
                    into.finish()
                    return Marked(into.path, done)
                if edits:
                    current = _edited_copy(src, edits, done)
        if self.signer is not None:
            out = _beside(src, "c2pa")
            try:
                self.signer.sign(
                    current,
                    out,
                    fmt,
                    action=action,
                    software_agent=software_agent,
                    ingredients=inputs,
                    parent=parent,
                    # The XMP copy broke the source's own manifest: keep the source's.
                    history=src if signed and current != src else None,
                )
            except (ImagegateError, ValueError, OSError) as err:
                out.unlink(missing_ok=True)
                done["c2pa"] = _failed("c2pa", err)
            else:
                if current != src:
                    current.unlink(missing_ok=True)
                current = out
                done["c2pa"] = "signed"
        if into is None or current == src:
            return Marked(current, done)
        try:
            apply_edits(current, [], into.write)
            into.finish()
        finally:
            current.unlink(missing_ok=True)
        return Marked(into.path, done)

    def inline_png(self, action: Action) -> bytes | None:
        """The XMP chunk for an upstream's PNG to take as it is written
        (StagedBlob.insert_after_ihdr) when XMP is the only marking, so the image is
        stored without a copy; None when a C2PA signature follows (it is made on a
        copy) or nothing is marked."""
        if not self.xmp or self.signer is not None or action == "resized":
            return None
        return xmp.png_chunk(xmp.made_source_type(action))

    @staticmethod
    def took_inline(staged: StagedBlob, max_bytes: int) -> bool:
        """Whether the chunk `staged` took as it was written is its whole marking,
        byte for byte what `mark` writes: no XMP of its own (which `mark` would have
        edited instead) and no C2PA manifest (which the chunk breaks; `mark` leaves
        such an image alone), within `max_bytes`. Otherwise the image is marked from
        `as_sent`. Known from the check as written (no other text chunk at all), or
        else read from the file's chunk headers: blocking then."""
        if not staged.inserted or staged.size + staged.inserted > max_bytes:
            return False
        seen = staged.png_seen
        if seen is not None:
            return seen.text_chunks == 1 and not seen.c2pa
        try:
            return xmp.alone_after_ihdr(staged.path)
        except (xmp.MarkingError, OSError):
            return False

    @staticmethod
    def as_sent(staged: StagedBlob, into: StagedBlob) -> None:
        """Blocking: the blob as the upstream sent it, without the inserted chunk,
        written into `into` and finished."""
        apply_edits(staged.path, [Edit(*staged.inserted_span)], into.write)
        into.finish()


def _edited_copy(src: Path, edits: list[Edit], done: dict[str, str]) -> Path:
    """`src` with `edits`, in a file beside it; `src` itself (and the failure in
    `done`) when it can't be written."""
    out = _beside(src, "xmp")
    try:
        with out.open("wb") as fh:
            apply_edits(src, edits, fh.write)
    except OSError as err:
        out.unlink(missing_ok=True)
        done["xmp"] = _failed("xmp", err)
        return src
    return out


def original_source_type(path: Path, fmt: ImageFormat) -> str | None:
    """What a view of the stored image at `path` says: what the image says (an edit's
    view is still a composite); None when it says nothing (an uploaded photo), so its
    views don't claim to be AI-generated either."""
    try:
        return xmp.read_source_type(path, fmt) if fmt in MARKABLE else None
    except (xmp.MarkingError, OSError):
        return None


def build_marker(settings: Settings) -> Marker:
    """How stored images are marked. A [c2pa] certificate the SDK refuses, or trust
    anchors that don't load, stop serve and check-config here, not at the first image
    or the first verification."""
    with_xmp, with_c2pa = settings.marks()
    if settings.c2pa is None:
        return Marker(xmp=with_xmp)
    # Imported here: only a server with [c2pa] loads the C2PA SDK.
    from imagegate.core.c2pa import SigningConfig, load_signer, reading_context

    if settings.c2pa.trust_anchors is not None:
        reading_context(settings.c2pa.trust_anchors)
    if not with_c2pa:
        return Marker(xmp=with_xmp)
    assert settings.c2pa.certificate_chain is not None  # marks() says so
    signer = load_signer(
        SigningConfig(
            settings.c2pa.certificate_chain,
            settings.c2pa.private_key,
            settings.c2pa.algorithm,
            settings.c2pa.tsa_url,
            settings.c2pa.sign_command,
        )
    )
    return Marker(xmp=with_xmp, signer=signer)


def _carries_c2pa(path: Path, fmt: ImageFormat) -> bool:
    try:
        return xmp.carries_c2pa(path, fmt)
    except (xmp.MarkingError, OSError):
        return False


def _beside(src: Path, what: str) -> Path:
    # "stage-" and ".part": the staging sweep removes what a crash leaves behind.
    fd, name = tempfile.mkstemp(dir=src.parent, prefix=f"stage-mark-{what}-", suffix=".part")
    os.close(fd)
    return Path(name)


def _failed(what: str, err: Exception) -> str:
    reason = str(err) or type(err).__name__
    log.warning("marking (%s) failed; the image is stored without it: %s", what, reason)
    return f"failed: {reason}"[:300]


@dataclass(frozen=True)
class Verification:
    """What an image says about its origin, for verify_image and `imagegate verify`."""

    digital_source_type: str | None
    xmp_problem: str | None
    c2pa: "Report | None"
    c2pa_problem: str | None

    def as_dict(self) -> dict[str, object]:
        report = self.c2pa
        c2pa: dict[str, object] = {"present": False}
        if report is not None and report.present:
            c2pa = {
                "present": True,
                "valid": report.valid,
                "trusted": report.trusted,
                "problems": list(report.problems) or None,
                "signer": report.signer,
                "issuer": report.issuer,
                "signed_at": report.signed_at,
                "actions": [
                    {
                        "action": a.action,
                        "digital_source_type": a.digital_source_type,
                        "software_agent": a.software_agent,
                    }
                    for a in report.actions
                ],
                "ingredients": [
                    {
                        "title": i.title,
                        "relationship": i.relationship,
                        "has_manifest": i.has_manifest,
                    }
                    for i in report.ingredients
                ]
                or None,
                "marks_ai": report.marks_ai,
            }
        if self.c2pa_problem:
            c2pa["error"] = self.c2pa_problem
        return {
            "xmp": {
                "digital_source_type": self.digital_source_type,
                **({"error": self.xmp_problem} if self.xmp_problem else {}),
            },
            "c2pa": c2pa,
            "ai_generated": self.ai_generated,
        }

    @property
    def manifest(self) -> Literal["none", "invalid", "untrusted", "trusted"]:
        """The C2PA manifest's state: none, invalid, valid from a signer the anchors
        don't name, or trusted."""
        report = self.c2pa
        if report is None or not report.present:
            return "none"
        if not report.valid:
            return "invalid"
        return "trusted" if report.trusted else "untrusted"

    @property
    def convincing(self) -> bool:
        """A marking says AI-generated, and no manifest says otherwise or failed to read."""
        return self.ai_generated and self.manifest != "invalid" and self.c2pa_problem is None

    @property
    def ai_generated(self) -> bool:
        """Does any marking say so (the source types trained or composite)?"""
        plain = self.digital_source_type in xmp.AI_SOURCE_TYPES
        return plain or (self.c2pa is not None and self.c2pa.marks_ai)


def verify(path: Path, fmt: ImageFormat, trust_anchors: Path | None) -> Verification:
    """Blocking: read both markings of the image at `path`."""
    source_type, xmp_problem = None, None
    if fmt in MARKABLE:
        try:
            source_type = xmp.read_source_type(path, fmt)
        except xmp.MarkingError as err:
            xmp_problem = str(err)
    report, c2pa_problem = None, None
    if fmt in MARKABLE:
        # Only now: a server that never verifies never loads the C2PA SDK.
        from imagegate.core import c2pa

        try:
            report = c2pa.read(path, fmt, trust_anchors)
        except (ImagegateError, ValueError, OSError) as err:
            c2pa_problem = str(err) or type(err).__name__
    return Verification(source_type, xmp_problem, report, c2pa_problem)
