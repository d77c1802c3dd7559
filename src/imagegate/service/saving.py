"""`save_to`: over stdio, a generation's images are also written where the user works,
under the operator's `output_root` and nowhere else.

`plan_save` checks the name in the call, before anything is made: relative, no `..`,
inside `output_root` once symlinks are resolved, an extension that fits the format if
it has one, and no existing file unless `overwrite` (a format not known yet, for
relay="auto": no file by that name in any format). `save` writes the images when
they exist: a temp file in the target's directory, renamed into place (without
`overwrite`, a link that fails if the name appeared meanwhile), so a reader never sees
half a file and nothing outside the root is ever written. With several images the
name gets `-1`, `-2`, … before its extension.
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import OUTPUT_FORMATS, ImageFormat

_EXTENSIONS = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}


@dataclass(frozen=True)
class SavePlan:
    """Where the images of one call go: `directory` (inside the root) and a stem,
    with the extension given by the caller, if any."""

    root: Path
    directory: Path
    stem: str
    extension: str | None
    overwrite: bool

    def targets(self, formats: list[ImageFormat]) -> list[Path]:
        """One file per image, named for its format when the caller named none."""
        paths = []
        for index, fmt in enumerate(formats, start=1):
            suffix = f"-{index}" if len(formats) > 1 else ""
            extension = self.extension or fmt.extension
            paths.append(self.directory / f"{self.stem}{suffix}.{extension}")
        return paths


def extension_format(save_to: str) -> str | None:
    """The output format the name's extension asks for ("png", "jpeg", "webp"), if any."""
    stem, dot, extension = PurePath(save_to).name.rpartition(".")
    return _EXTENSIONS.get(extension.lower()) if dot and stem else None


def plan_save(
    root: Path | None,
    save_to: str,
    *,
    local: bool,
    output_format: str | None,
    count: int,
    overwrite: bool,
) -> SavePlan:
    """Check `save_to` against the root; InvalidRequest says what is wrong."""
    if not local:
        raise InvalidRequest(
            "save_to works over stdio only; over HTTP, fetch the image from its download "
            "link (curl -OJ URL) or use the remote CLI (imagegate generate --server URL)"
        )
    if root is None:
        raise InvalidRequest("save_to needs output_root set in the server's configuration")
    if "\x00" in save_to or not save_to.strip():
        raise InvalidRequest("save_to: give a file name or a relative path")
    relative = PurePath(save_to)
    if relative.is_absolute() or save_to.startswith("~"):
        raise InvalidRequest("save_to: give a path relative to output_root, not an absolute one")
    if ".." in relative.parts:
        raise InvalidRequest("save_to: '..' is not allowed; stay inside output_root")
    real_root = root.resolve()
    target = (real_root / relative).resolve()
    if not target.is_relative_to(real_root) or target == real_root:
        raise InvalidRequest(f"save_to: {save_to!r} leads outside output_root")
    stem, dot, extension = target.name.rpartition(".")
    given = extension.lower() if dot and stem else None
    if given is not None:
        if given not in _EXTENSIONS:
            raise InvalidRequest(
                f"save_to: .{extension} is not an image extension (.png, .jpg, .webp)"
            )
        if output_format is not None and _EXTENSIONS[given] != output_format:
            raise InvalidRequest(
                f"save_to: .{extension} does not fit output_format {output_format}"
            )
    kept = extension if given else None  # as the caller wrote it: .JPG stays .JPG
    plan = SavePlan(real_root, target.parent, stem if given else target.name, kept, overwrite)
    if not overwrite:
        # No format yet (relay="auto" chooses it later): a name taken in any format
        # is refused now, before anything is paid for, not after.
        choices = [ImageFormat(output_format)] if output_format else OUTPUT_FORMATS
        taken = [path for fmt in choices for path in plan.targets([fmt] * count) if path.exists()]
        if taken:
            raise InvalidRequest(
                f"save_to: {taken[0].name} exists in output_root; pass overwrite=true to replace it"
            )
    return plan


def _make_inside(root: Path, directory: Path) -> None:
    """Make `directory` (under `root`) one level at a time, checking before each that
    what exists so far still leads inside the root: a directory swapped for a link
    since the plan was made is refused, and nothing is made outside."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        if not current.resolve().is_relative_to(root):
            raise InvalidRequest("save_to: the directory now leads outside output_root")
        if not current.is_dir():
            current.mkdir()


def save(plan: SavePlan, sources: list[Path], formats: list[ImageFormat]) -> list[Path]:
    """Write each source to its target; the paths written. Blocking: run in a thread."""
    _make_inside(plan.root, plan.directory)
    written = []
    for source, target in zip(sources, plan.targets(formats), strict=True):
        fd, temp = tempfile.mkstemp(dir=plan.directory, prefix=".imagegate-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)
            if plan.overwrite:
                os.replace(temp, target)
            else:
                try:
                    os.link(temp, target)  # fails if the name exists: never replaced
                except FileExistsError:
                    raise InvalidRequest(
                        f"save_to: {target.name} appeared in output_root meanwhile; not replaced"
                    ) from None
        finally:
            Path(temp).unlink(missing_ok=True)
        written.append(target)
    return written
