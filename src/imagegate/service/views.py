"""Views of stored images (core.views), rendered off the event loop and kept in a
bounded cache: by the image's content hash and the view, so equal bytes share their
views and a view never outlives the question of whose image it is (callers check
ownership before they ask)."""

import logging
import tempfile
from collections import OrderedDict
from pathlib import Path

from imagegate.core.cpu import run_cpu
from imagegate.core.errors import NotFound
from imagegate.core.images import ImageFormat
from imagegate.core.views import View, render
from imagegate.service.marking import Marker, original_source_type
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Asset

log = logging.getLogger("imagegate.marking")


class Views:
    def __init__(self, assets: AssetStore, cache_bytes: int, marker: Marker | None = None) -> None:
        self._assets = assets
        self._marker = marker or Marker(xmp=False)
        self._limit = cache_bytes
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._held = 0
        self._scratch_dir: Path | None = None
        self.hits = 0
        self.misses = 0

    async def render(self, asset: Asset, view: View) -> bytes:
        """The view's bytes (encoded in `view.output_format(asset.format)`)."""
        key = (asset.sha256, view.key)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        self.misses += 1
        try:
            async with self._assets.as_file(asset) as path:
                data = await run_cpu(self._rendered, path, asset.format, view)
        except FileNotFoundError:
            # The blob file went after the record was read (deleted meanwhile): as a
            # blob store without local files says it.
            raise NotFound(f"image {asset.id} was deleted") from None
        self._keep(key, data)
        return data

    def _rendered(self, path: Path, source: ImageFormat, view: View) -> bytes:
        """Blocking: the view, marked as its original is (a resized copy: XMP's source
        type, and a manifest naming the original as its parent)."""
        data = render(path, source, view)
        if not self._marker.active:
            return data
        fmt = view.output_format(source)
        try:
            with tempfile.TemporaryDirectory(dir=self._scratch()) as scratch:
                rendered = Path(scratch) / f"view.{fmt.extension}"
                rendered.write_bytes(data)
                marked = self._marker.mark(
                    rendered,
                    fmt,
                    action="resized",
                    software_agent="imagegate",
                    parent=path,
                    source_type=original_source_type(path, source),
                )
                return marked.path.read_bytes() if marked.path != rendered else data
        except OSError as err:
            # A full or unwritable staging disk: the view as rendered, not an error.
            log.warning("a view could not be marked: %s", err.strerror or type(err).__name__)
            return data

    def _scratch(self) -> Path:
        """The staging directory, for a view's files while it is marked."""
        if self._scratch_dir is None:
            probe = self._assets.stage()
            probe.discard()
            self._scratch_dir = probe.path.parent
        return self._scratch_dir

    def _keep(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self._limit or key in self._cache:
            return
        self._cache[key] = data
        self._held += len(data)
        while self._held > self._limit:
            _, dropped = self._cache.popitem(last=False)
            self._held -= len(dropped)
