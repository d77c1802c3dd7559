"""save_to: every way out of output_root is refused; names, extensions and overwrites."""

from pathlib import Path

import pytest

from imagegate.core.errors import InvalidRequest
from imagegate.core.images import ImageFormat
from imagegate.service.saving import extension_format, plan_save, save


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "assets").mkdir(parents=True)
    (root / "taken.png").write_bytes(b"old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inside-link").symlink_to(root / "assets")
    return root


@pytest.mark.parametrize(
    ("save_to", "message"),
    [
        ("../x.png", "'..' is not allowed"),
        ("assets/../../x.png", "'..' is not allowed"),
        ("/tmp/x.png", "not an absolute one"),
        ("~/x.png", "not an absolute one"),
        ("escape/x.png", "leads outside output_root"),
        (".", "leads outside output_root"),
        ("", "give a file name"),
        ("a\x00b.png", "give a file name"),
        ("x.gif", "not an image extension"),
        ("x.jpg", "does not fit output_format png"),
        ("taken.png", "taken.png exists"),
    ],
)
def test_refused(root: Path, save_to: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan_save(root, save_to, local=True, output_format="png", count=1, overwrite=False)


def test_refused_over_http_and_without_a_root(root: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"stdio only.*download link"):
        plan_save(root, "x.png", local=False, output_format="png", count=1, overwrite=False)
    with pytest.raises(InvalidRequest, match="needs output_root"):
        plan_save(None, "x.png", local=True, output_format="png", count=1, overwrite=False)


@pytest.mark.parametrize(
    ("save_to", "count", "fmt", "expected"),
    [
        ("hero.png", 1, "png", ["hero.png"]),
        ("new/dir/hero.png", 1, "png", ["new/dir/hero.png"]),
        ("inside-link/hero.png", 1, "png", ["assets/hero.png"]),  # a link that stays inside
        ("hero", 1, "webp", ["hero.webp"]),
        ("hero.JPG", 1, "jpeg", ["hero.JPG"]),
        ("shot.png", 2, "png", ["shot-1.png", "shot-2.png"]),
    ],
)
def test_written_where_asked(
    root: Path, tmp_path: Path, save_to: str, count: int, fmt: str, expected: list[str]
) -> None:
    source = tmp_path / "image"
    source.write_bytes(b"image bytes")
    plan = plan_save(root, save_to, local=True, output_format=fmt, count=count, overwrite=False)
    formats = [ImageFormat(fmt)] * count
    written = save(plan, [source] * count, formats)
    assert [path.relative_to(root.resolve()).as_posix() for path in written] == expected
    assert all(path.read_bytes() == b"image bytes" for path in written)
    assert not [p for p in written[0].parent.iterdir() if p.name.endswith(".part")]


def test_overwrite_replaces_and_without_it_a_late_file_is_kept(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "image"
    source.write_bytes(b"new")
    plan = plan_save(root, "taken.png", local=True, output_format="png", count=1, overwrite=True)
    save(plan, [source], [ImageFormat.PNG])
    assert (root / "taken.png").read_bytes() == b"new"
    late = plan_save(root, "late.png", local=True, output_format="png", count=1, overwrite=False)
    (root / "late.png").write_bytes(b"someone else's")
    with pytest.raises(InvalidRequest, match="appeared in output_root meanwhile"):
        save(late, [source], [ImageFormat.PNG])
    assert (root / "late.png").read_bytes() == b"someone else's"


def test_a_directory_swapped_for_a_link_is_refused_and_nothing_made_outside(
    root: Path, tmp_path: Path
) -> None:
    source = tmp_path / "image"
    source.write_bytes(b"x")
    plan = plan_save(
        root, "later/deeper/x.png", local=True, output_format="png", count=1, overwrite=False
    )
    (root / "later").symlink_to(tmp_path / "outside")  # while the job ran
    with pytest.raises(InvalidRequest, match="now leads outside"):
        save(plan, [source], [ImageFormat.PNG])
    assert list((tmp_path / "outside").iterdir()) == []


@pytest.mark.parametrize(
    ("save_to", "fmt"),
    [
        ("hero.png", "png"),
        ("assets/hero.JPG", "jpeg"),
        ("hero.jpeg", "jpeg"),
        ("hero.webp", "webp"),
        ("hero", None),
        ("hero.gif", None),  # plan_save refuses it
        (".png", None),  # a hidden file's name, not an extension
        ("v1.2/hero", None),
    ],
)
def test_the_format_a_name_asks_for(save_to: str, fmt: str | None) -> None:
    assert extension_format(save_to) == fmt


@pytest.mark.parametrize(
    ("existing", "save_to", "count"),
    [("hero.webp", "hero", 1), ("hero.png", "hero", 1), ("shot-2.jpg", "shot", 2)],
)
def test_without_a_format_yet_a_name_taken_in_any_format_is_refused(
    root: Path, existing: str, save_to: str, count: int
) -> None:
    """relay="auto" chooses the format after the plan: whichever it chooses, the file
    must not be found taken only after the call was paid for."""
    (root / existing).write_bytes(b"the user's")
    with pytest.raises(InvalidRequest, match=f"save_to: {existing} exists in output_root"):
        plan_save(root, save_to, local=True, output_format=None, count=count, overwrite=False)
    plan = plan_save(root, save_to, local=True, output_format=None, count=count, overwrite=True)
    assert plan.stem == save_to
