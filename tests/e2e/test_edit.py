"""edit_image over real HTTP and stdio, on the placeholder relay (which edits offline)."""

import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.exceptions import ToolError
from PIL import Image

from tests.e2e.harness import RunningServer, http_get, running_server
from tests.e2e.processes import clean_env


def png(size: tuple[int, int], colour: str = "navy", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, colour).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


async def call(server: RunningServer, tool: str, **arguments: Any) -> dict[str, Any]:
    async with server.client() as client:
        result = await client.call_tool(tool, arguments)
    assert result.structured_content is not None
    return result.structured_content


async def picture(server: RunningServer, url: str) -> Image.Image:
    response = await http_get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


async def test_edit_an_own_image_keeps_its_size(server: RunningServer) -> None:
    source = (await call(server, "generate_image", prompt="a house", size="320x200"))["images"][0]
    edited = await call(server, "edit_image", prompt="add snow", images=[source["asset_id"]])
    (image,) = edited["images"]
    assert (image["width"], image["height"]) == (320, 200)
    assert image["params"]["inputs"] == 1
    assert image["asset_id"] != source["asset_id"]
    with await picture(server, image["url"]) as result:
        assert result.size == (320, 200)


async def test_edit_uploaded_data(server: RunningServer) -> None:
    data = png((128, 96), "darkgreen")
    result = await call(
        server, "edit_image", prompt="a frame", images=[data_url(data)], output_format="webp"
    )
    (image,) = result["images"]
    assert image["mime_type"] == "image/webp"
    with await picture(server, image["url"]) as edited:
        # The placeholder draws over the input: its colour survives outside the caption.
        assert edited.convert("RGB").getpixel((127, 50)) == (0, 100, 0)


async def test_several_references_make_one_image(server: RunningServer) -> None:
    ids = [
        (await call(server, "generate_image", prompt=f"ref {i}", size="64x64"))["images"][0][
            "asset_id"
        ]
        for i in range(3)
    ]
    result = await call(server, "edit_image", prompt="combine", images=ids, size="96x96")
    assert len(result["images"]) == 1
    assert result["images"][0]["params"]["inputs"] == 3


async def test_batch_reports_failures_per_image(server: RunningServer) -> None:
    good = data_url(png((100, 100)))
    too_wide = data_url(png((4100, 64)))  # over the placeholder's 4096 side when kept as is
    unknown = "img_" + "0" * 24
    not_an_image = "data:image/png;base64," + base64.b64encode(b"hello, world").decode()
    result = await call(
        server,
        "edit_image",
        prompt="sepia",
        images=[good, too_wide, unknown, not_an_image, good],
        batch=True,
    )
    assert len(result["images"]) == 2
    failures = result["failures"]
    assert [(f["index"], f["source"]) for f in failures] == [
        (1, "(image data)"),
        (2, unknown),
        (3, "(image data)"),
    ]
    assert "sides from 64 to 4096" in failures[0]["error"]
    assert failures[1]["error"] == f"image not found: {unknown}"
    assert "images[3]: not a PNG, JPEG, WebP or GIF" in failures[2]["error"]


async def test_batch_with_every_item_failing_is_an_error(server: RunningServer) -> None:
    too_wide = data_url(png((4100, 64)))
    async with server.client() as client:
        with pytest.raises(ToolError, match="every edit in the batch failed"):
            await client.call_tool(
                "edit_image", {"prompt": "x", "images": [too_wide, too_wide], "batch": True}
            )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"images": [data_url(b"hello, not an image")]}, "images[0]: not a PNG, JPEG, WebP"),
        ({"images": ["data:image/png;base64,@@@@"]}, "images[0]: not valid base64"),
        (
            {"images": ["data:text/plain;base64,aGVsbG8="]},
            "images[0]: not valid base64 image data (a data URL must start with "
            "data:image/<type>;base64, not data:text/plain;base64)",
        ),
        ({"images": ["img_" + "0" * 24]}, "image not found"),
        ({"images": ["/etc/passwd"]}, "local file paths are accepted only over stdio"),
        (
            {"images": [data_url(png((64, 64)))], "mask": data_url(png((32, 32), mode="RGBA"))},
            "mask is 32x32 but the image is 64x64",
        ),
        (
            {"images": [data_url(png((64, 64)))], "mask": data_url(png((64, 64))), "batch": True},
            "a mask fits one image",
        ),
    ],
)
async def test_bad_inputs_are_refused_and_leave_nothing(
    server: RunningServer, arguments: dict[str, Any], message: str
) -> None:
    async with server.client() as client:
        with pytest.raises(ToolError) as raised:
            await client.call_tool("edit_image", {"prompt": "x", **arguments})
    assert message in str(raised.value)
    assert list((server.settings.state_dir / "tmp").iterdir()) == []
    assert list((server.settings.state_dir / "blobs").rglob("*.*")) == []


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://127.0.0.1/x.png"])
async def test_an_image_url_is_refused_with_what_to_send_instead(
    server: RunningServer, url: str
) -> None:
    async with server.client() as client:
        with pytest.raises(ToolError, match=r"images\[0\]: image URLs are not fetched"):
            await client.call_tool("edit_image", {"prompt": "x", "images": [url]})


async def test_the_offline_relay_keeps_outside_the_mask(server: RunningServer) -> None:
    """The mask's transparent left half is edited; its opaque right half is not."""
    image = png((128, 96), "navy")
    mask_image = Image.new("RGBA", (128, 96), (0, 0, 0, 255))
    mask_image.paste((0, 0, 0, 0), (0, 0, 64, 96))
    out = io.BytesIO()
    mask_image.save(out, format="PNG")
    result = await call(
        server, "edit_image", prompt="sky", images=[data_url(image)], mask=data_url(out.getvalue())
    )
    with await picture(server, result["images"][0]["url"]) as edited:
        rgb = edited.convert("RGB")
        right = {rgb.getpixel((x, y)) for x in range(64, 128) for y in range(96)}
        assert right == {(0, 0, 128)}  # untouched: not even the caption or the footer
        assert rgb.getpixel((10, 50)) != (0, 0, 128)  # changed where the mask said so


async def test_the_offline_relay_shows_every_reference(server: RunningServer) -> None:
    first, second, third = png((64, 64), "navy"), png((64, 64), "red"), png((64, 64), "lime")
    result = await call(
        server,
        "edit_image",
        prompt="combine",
        images=[data_url(first), data_url(second), data_url(third)],
        size="192x128",
    )
    with await picture(server, result["images"][0]["url"]) as combined:
        colours = {colour for _, colour in combined.convert("RGB").getcolors(1 << 16) or []}
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 128)} <= colours


async def test_an_edit_of_an_edit_has_one_readable_footer(server: RunningServer) -> None:
    first = (await call(server, "generate_image", prompt="one", size="256x160", seed=1))["images"]
    again = await call(server, "edit_image", prompt="two", images=[first[0]["asset_id"]], seed=2)
    with await picture(server, again["images"][0]["url"]) as edited:
        rgb = edited.convert("RGB")
        band = [rgb.getpixel((x, 159)) for x in range(256)]  # the bottom row
    # One opaque band under the new footer: the old footer's text does not show through.
    assert set(band) == {(20, 20, 20)}


async def test_an_image_too_large_for_one_message_says_what_to_do(
    server: RunningServer,
) -> None:
    big = "data:image/png;base64," + "A" * 5_000_000
    async with server.client() as client:
        info = (await client.call_tool("server_info", {})).structured_content
        with pytest.raises(Exception, match=r"at most 4 MiB.*create_upload_link.*asset id"):
            await client.call_tool("edit_image", {"prompt": "x", "images": [big]})
    assert info is not None
    assert info["limits"]["max_request_bytes"] == 4 * 1024 * 1024


async def test_oversize_upload_is_refused_before_decoding(state_dir: Path) -> None:
    async with running_server(state_dir, max_image_bytes=2048) as server:
        big = "data:image/png;base64," + "A" * 10_000
        async with server.client() as client:
            with pytest.raises(ToolError, match="image data is larger than 2048 bytes"):
                await client.call_tool("edit_image", {"prompt": "x", "images": [big]})


async def test_stdio_reads_files_only_under_input_root(tmp_path: Path) -> None:
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "photo.png").write_bytes(png((80, 64)))
    outside = tmp_path / "secret.png"
    outside.write_bytes(png((80, 64)))
    os.symlink(outside, root / "link.png")
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "imagegate", "serve", "--transport", "stdio"],
        env=clean_env(IMAGEGATE_STATE_DIR=str(tmp_path / "state"), IMAGEGATE_INPUT_ROOT=str(root)),
    )
    async with Client(transport) as client:
        result = await client.call_tool(
            "edit_image", {"prompt": "local", "images": [str(root / "photo.png")]}
        )
        assert result.structured_content is not None
        assert result.structured_content["images"][0]["width"] == 80
        relative = await client.call_tool("edit_image", {"prompt": "x", "images": ["photo.png"]})
        assert relative.structured_content is not None
        for escape in (str(outside), "../secret.png", str(root / "link.png")):
            with pytest.raises(ToolError, match="no such file under input_root"):
                await client.call_tool("edit_image", {"prompt": "x", "images": [escape]})
