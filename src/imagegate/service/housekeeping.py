"""Housekeeping: the chores that keep storage bounded without cron.

Every `retention_sweep_seconds` (and once at start), one process at a time (a lease in
the shared database) deletes the images whose retention has run out: with their bytes
(when no other image uses them) and so with every link to them. Once a day, one process
also removes stored bytes that no image uses and that are more than a day old (what a
process left that died between writing bytes and recording them). Each process
sweeps its own leftover staging files. Expired jobs are the job runner's; spent nonces
and used upload tickets go as new ones come.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from imagegate.config import Settings
from imagegate.core.clock import Clock
from imagegate.core.errors import ImagegateError, NotFound
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Leases
from imagegate.storage.processes import this_process

log = logging.getLogger("imagegate.housekeeping")

BATCH = 200
LEASE = "retention"
ORPHANS = "orphans"
DAY = 86_400.0


class Housekeeping:
    def __init__(
        self, settings: Settings, assets: AssetStore, leases: Leases, clock: Clock
    ) -> None:
        self._settings = settings
        self._assets = assets
        self._leases = leases
        self._clock = clock
        self._holder = this_process()
        self._orphans_due = 0.0

    async def collect_orphans(self) -> int:
        """Once a day, in one process: remove bytes no image uses, a day old or more."""
        now = self._clock.now()
        if now < self._orphans_due or not await self._leases.take(ORPHANS, self._holder, now, DAY):
            return 0
        self._orphans_due = now + DAY
        return await self._assets.collect_orphans(now - DAY)

    async def sweep(self) -> int:
        """Delete the images whose time has come, if no other process is at it; how many."""
        every = self._settings.retention_sweep_seconds
        now = self._clock.now()
        if not await self._leases.take(LEASE, self._holder, now, 2 * every):
            return 0
        days = self._settings.retention_days
        unrecorded_before = None if days is None else now - days * 86_400
        deleted = 0
        while True:
            due = await self._assets.expired(now, unrecorded_before, BATCH)
            for asset in due:
                try:
                    await self._assets.delete(None, asset.id)
                    deleted += 1
                except NotFound:
                    pass  # deleted meanwhile, by its owner
            if len(due) < BATCH:
                return deleted

    async def _forever(self) -> None:
        while True:
            try:
                deleted = await self.sweep()
                if deleted:
                    log.info("retention: deleted %d image(s) whose time had come", deleted)
                orphans = await self.collect_orphans()
                if orphans:
                    log.warning("removed %d stored file(s) that no image used", orphans)
                swept = await anyio.to_thread.run_sync(self._assets.sweep_staging)
                if swept:
                    log.info("removed %d staging file(s) left by a crash", swept)
            except ImagegateError as err:
                log.warning("housekeeping failed this time: %s", err)
            await anyio.sleep(self._settings.retention_sweep_seconds)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The chores, for as long as the server serves."""
        chores = asyncio.create_task(self._forever(), name="imagegate-housekeeping")
        try:
            yield
        finally:
            chores.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(chores, return_exceptions=True)
