"""CPU-bound steps (drawing, encoding, decoding and checking images) in worker threads,
shared fairly between callers.

A call runs its steps through `run_cpu`. While a `FairShare` acts for a subject (the
service sets it around each call), a step waits for one of the share's slots, and
freed slots go round-robin to the subjects that wait: one caller with sixteen large
images in flight gets a turn, then the next caller does, instead of the others queueing
behind all sixteen. Outside a share (the command line, tests) a step just runs.

`fed_while_read` hands a stream's bytes to a worker thread in batches while more
arrive: what arrives and what the thread does with it overlap.

`acting_for(subject)` names the caller for the rest of a call (the MCP layer sets it
once the caller is known); other turn-taking uses it too: the embedded database gives
its connection round-robin by subject the same way, with a one-slot FairShare.
"""

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TypeVar

import anyio

T = TypeVar("T")


class FairShare:
    """`slots` CPU-bound steps at once, granted round-robin by subject."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a fair share needs at least one slot")
        self._free = slots
        self._waiting: dict[str, deque[anyio.Event]] = {}
        self._turns: deque[str] = deque()
        """Subjects with waiting steps, in the order their turn comes."""

    @contextmanager
    def acting_for(self, subject: str) -> Iterator[None]:
        """Steps run through `run_cpu` in this block count for `subject`."""
        token = _current.set((self, subject))
        try:
            with acting_for(subject):
                yield
        finally:
            _current.reset(token)

    @asynccontextmanager
    async def slot(self, subject: str) -> AsyncIterator[None]:
        if self._free > 0 and not self._turns:
            self._free -= 1
        else:
            await self._wait_turn(subject)
        try:
            yield
        finally:
            self._pass_on()

    async def _wait_turn(self, subject: str) -> None:
        granted = anyio.Event()
        self._waiting.setdefault(subject, deque()).append(granted)
        if subject not in self._turns:
            self._turns.append(subject)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self._pass_on()  # the slot came with the cancel: give it to the next
            else:
                self._forget(subject, granted)
            raise

    def _pass_on(self) -> None:
        if not self._turns:
            self._free += 1
            return
        subject = self._turns.popleft()
        waiting = self._waiting[subject]
        granted = waiting.popleft()
        if waiting:
            self._turns.append(subject)  # its next step waits for its next turn
        else:
            del self._waiting[subject]
        granted.set()

    def _forget(self, subject: str, granted: anyio.Event) -> None:
        waiting = self._waiting[subject]
        waiting.remove(granted)
        if not waiting:
            del self._waiting[subject]
            self._turns.remove(subject)


_current: ContextVar[tuple[FairShare, str] | None] = ContextVar("fair_share", default=None)
_subject: ContextVar[str] = ContextVar("acting_subject", default="")


@contextmanager
def acting_for(subject: str) -> Iterator[None]:
    """Work in this block is done for `subject` (see `acting_subject`)."""
    token = _subject.set(subject)
    try:
        yield
    finally:
        _subject.reset(token)


@contextmanager
def taking_turns(fair: FairShare | None, subject: str) -> Iterator[None]:
    """Work in this block is for `subject`, and its CPU-bound steps take their turns
    through `fair` (when there is one: not on the command line or in some tests)."""
    if fair is None:
        with acting_for(subject):
            yield
        return
    with fair.acting_for(subject):
        yield


def acting_subject() -> str:
    """Whom the current work is for; "" outside any call (housekeeping, downloads)."""
    return _subject.get()


async def run_cpu(work: Callable[..., T], *args: object) -> T:
    """Run `work(*args)` in a worker thread, through the fair share acting here."""
    acting = _current.get()
    if acting is None:
        return await anyio.to_thread.run_sync(work, *args)
    share, subject = acting
    async with share.slot(subject):
        return await anyio.to_thread.run_sync(work, *args)


BATCH_BYTES = 1 << 20
"""Bytes of a stream handed to a worker thread at once: fewer, larger hand-offs."""


async def fed_while_read(
    chunks: AsyncIterable[bytes], feed: Callable[[list[bytes]], None]
) -> list[bytes]:
    """Read `chunks`, each full batch (BATCH_BYTES) fed to `feed` through `run_cpu`
    while the next one is read: one batch in the thread and one arriving at most. The
    pieces go to the thread as they came (no copy on the event loop). Returns the
    last, partial batch, for the caller's last hand-off. A failure of either side is
    raised as itself."""
    batches, next_batch = anyio.create_memory_object_stream[list[bytes]]()

    async def fed() -> None:
        async with next_batch:
            async for batch in next_batch:
                await run_cpu(feed, batch)

    batch: list[bytes] = []
    size = 0
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(fed)
            async with batches:
                async for chunk in chunks:
                    batch.append(chunk)
                    size += len(chunk)
                    if size >= BATCH_BYTES:
                        await batches.send(batch)
                        batch, size = [], 0
    except BaseExceptionGroup as failed:
        # The cause: the reader's failure, or the feeder's (the reader then finds the
        # feeder gone: a BrokenResourceError, which says nothing more).
        causes = [e for e in failed.exceptions if not isinstance(e, anyio.BrokenResourceError)]
        raise (causes or list(failed.exceptions))[0] from None
    return batch
