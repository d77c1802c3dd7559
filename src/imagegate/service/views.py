"""Views of stored images (core.views), rendered off the event loop and kept in a
bounded cache: by the image's content hash and the view, so equal bytes share their
views and a view never outlives the question of whose image it is (callers check
ownership before they ask)."""

from collections import OrderedDict

from imagegate.core.cpu import run_cpu
from imagegate.core.errors import NotFound
from imagegate.core.views import View, render
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Asset


class Views:
    def __init__(self, assets: AssetStore, cache_bytes: int) -> None:
        self._assets = assets
        self._limit = cache_bytes
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._held = 0
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
                data = await run_cpu(render, path, asset.format, view)
        except FileNotFoundError:
            # The blob file went after the record was read (deleted meanwhile): as a
            # blob store without local files says it.
            raise NotFound(f"image {asset.id} was deleted") from None
        self._keep(key, data)
        return data

    def _keep(self, key: tuple[str, str], data: bytes) -> None:
        if len(data) > self._limit or key in self._cache:
            return
        self._cache[key] = data
        self._held += len(data)
        while self._held > self._limit:
            _, dropped = self._cache.popitem(last=False)
            self._held -= len(dropped)
