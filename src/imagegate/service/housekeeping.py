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
from imagegate.core.errors import ImagegateError, NotFound, StorageError
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import Leases
from imagegate.storage.processes import this_process

log = logging.getLogger("imagegate.housekeeping")

BATCH = 200
RETENTION_LEASE = "retention"
ORPHANS_LEASE = "orphans"
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

    async def sweep(self) -> int:
        """Delete the images whose time has come, if no other process is at it; how
        many. An image that can't be deleted now (the store refused) is left for the
        next sweep and does not hold up the others."""
        days = self._settings.retention_days
        now = self._clock.now()
        unrecorded_before = None if days is None else now - days * DAY
        deleted = 0
        failed: set[str] = set()
        # The lease is renewed for each batch: a long first sweep must not outlast it.
        while await self._leases.take(
            RETENTION_LEASE, self._holder, self._clock.now(), 2 * self._every
        ):
            due = await self._assets.expired(now, unrecorded_before, BATCH + len(failed))
            todo = [asset for asset in due if asset.id not in failed]
            for asset in todo:
                try:
                    await self._assets.delete(None, asset.id)
                    deleted += 1
                except NotFound:
                    pass  # deleted meanwhile, by its owner
                except StorageError as err:
                    failed.add(asset.id)
                    log.warning("retention: could not delete %s now: %s", asset.id, err)
            if len(todo) < BATCH:
                break
        return deleted

    async def collect_orphans(self) -> int:
        """Once a day, in one process: remove bytes no image uses, a day old or more."""
        now = self._clock.now()
        if now < self._orphans_due or not await self._leases.take(
            ORPHANS_LEASE, self._holder, now, DAY
        ):
            return 0
        self._orphans_due = now + DAY
        return await self._assets.collect_orphans(now - DAY)

    @property
    def _every(self) -> float:
        return self._settings.retention_sweep_seconds

    async def _chores(self) -> None:
        # Each chore on its own: one that fails (a store down, a bug) must not stop the
        # others, nor the next round.
        for name, chore in (
            ("retention", self.sweep),
            ("orphans", self.collect_orphans),
            ("staging", self._sweep_staging),
        ):
            try:
                done = await chore()
            except ImagegateError as err:
                log.warning("housekeeping (%s) failed this time: %s", name, err)
            except Exception:
                log.exception("housekeeping (%s) failed this time", name)
            else:
                if done:
                    log.info("housekeeping (%s): %d removed", name, done)

    async def _sweep_staging(self) -> int:
        return await anyio.to_thread.run_sync(self._assets.sweep_staging)

    async def _forever(self) -> None:
        while True:
            await self._chores()
            await anyio.sleep(self._every)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The chores, for as long as the server serves. A clean stop lets go of the
        leases, so that the next process (a restart) sweeps at once."""
        chores = asyncio.create_task(self._forever(), name="imagegate-housekeeping")
        try:
            yield
        finally:
            chores.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(chores, return_exceptions=True)
                for lease in (RETENTION_LEASE, ORPHANS_LEASE):
                    try:
                        await self._leases.release(lease, self._holder)
                    except ImagegateError as err:
                        log.warning("could not let go of the %s lease: %s", lease, err)
