"""The storage seam: what the layers above may ask of a backend, and the values it returns.

Protocols, each implemented by every backend and tested by one contract suite
(tests/storage/test_contract.py):

- `AssetIndex`: asset metadata by owner, and the references from assets to blobs;
- `QuotaLedger`: per-subject usage counters and reservations, checked atomically;
- `NonceLedger`: single-use tokens, such as a confirmation's;
- `JobLedger`: generations that outlive the call that started them;
- `UploadLedger`: single-use upload tickets;
- `PresetLedger`: the style presets subjects save for themselves;
- `BlobStore`: content-addressed image bytes, written through local staging files.

Every read and write of an asset names its owner; another owner's asset answers exactly
like a missing one. `owner=None` is for admins and for the download route, which has
already checked a signed link. Blobs are named by a `BlobKey`, never by a path; a backend
that keeps a blob as a local file may say where (`local_path`), for zero-copy serving.
"""

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from imagegate.core.errors import StorageError
from imagegate.core.ids import AssetId, JobId, Subject, UploadId
from imagegate.core.images import ImageFormat
from imagegate.core.staging import StagedBlob

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXTENSION = re.compile(r"[a-z]{2,4}")


@dataclass(frozen=True)
class BlobKey:
    """The name of a blob: its SHA-256 and its file extension, both validated, so that a
    key can become a file or object name without ever carrying a path."""

    sha256: str
    extension: str

    def __post_init__(self) -> None:
        if not _SHA256.fullmatch(self.sha256) or not _EXTENSION.fullmatch(self.extension):
            raise StorageError("invalid blob reference")

    def __str__(self) -> str:
        return f"{self.sha256}.{self.extension}"

    @property
    def relative_path(self) -> str:
        """`<aa>/<sha256>.<ext>`: where a store that lays blobs out in folders keeps
        this one, below its root (files under `blobs/`; the nginx location that
        `accel_redirect` names maps onto the same layout)."""
        return f"{self.sha256[:2]}/{self}"


@dataclass(frozen=True)
class AssetMeta:
    """What the generation pipeline knows about an image besides its bytes."""

    relay: str
    prompt: str
    revised_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Asset:
    id: AssetId
    owner: Subject
    sha256: str
    format: ImageFormat
    width: int
    height: int
    byte_size: int
    relay: str
    prompt: str
    revised_prompt: str | None
    params: dict[str, Any]
    created_at: float
    link_generation: int = 0
    """Raised by each revocation: links signed with an older one no longer work."""
    keep_until: float | None = None
    """When retention deletes it (inf: never); None: the server's retention_days, as it
    is when the sweep runs, applies (to images stored before retention was recorded,
    too)."""

    @property
    def blob(self) -> BlobKey:
        return BlobKey(self.sha256, self.format.extension)


@dataclass(frozen=True)
class Page:
    assets: list[Asset]
    next_cursor: str | None


@dataclass(frozen=True)
class Reservation:
    id: str
    subject: str
    images: int
    spend: float
    relay: str = ""
    """Where the call goes: its commit is counted under it too (usage reports)."""


@dataclass(frozen=True)
class UsageRow:
    """One line of a usage report: what `key` (a subject, a relay or a day) made."""

    key: str
    images: int
    spend: float
    calls: int


@dataclass(frozen=True)
class Usage:
    """A subject's counters now: what is committed plus what running calls reserved."""

    images_today: int
    spend_today: float
    spend_month: float
    calls_today: int
    in_flight: int
    last_call_at: float | None = None
    """When the subject last reserved, for cooldowns."""


class BlobReader(Protocol):
    size: int

    def chunks(self) -> AsyncIterator[bytes]:
        """The blob's bytes, in order, in pieces of a bounded size."""
        ...


class BlobStore(Protocol):
    def stage(self) -> StagedBlob:
        """A new local staging file, on the same file system as this store's own
        files where it has any, so that committing it is a rename."""
        ...

    async def prepare(self, staged: StagedBlob) -> None:
        """The part of committing a finished staging file that needs no lock (a file
        store's fsync), done before the blob's references are held (AssetStore.add),
        so that others' turns at the index don't wait for it. Commit does what this
        didn't. On failure the staging file is gone."""
        ...

    async def commit(self, staged: StagedBlob, key: BlobKey) -> None:
        """Keep a finished staging file's bytes under `key` (idempotent for equal
        content). The staging file is gone afterwards, whether this succeeds or not."""
        ...

    async def remove(self, key: BlobKey) -> None:
        """Forget the bytes of `key`; removing a missing blob is not an error."""
        ...

    def open(self, key: BlobKey) -> AbstractAsyncContextManager[BlobReader]:
        """Read a blob; NotFound when it is missing."""
        ...

    def local_path(self, key: BlobKey) -> Path | None:
        """The blob as a local file this process may read, when the backend keeps one
        (zero-copy serving, stdio results); None for a remote store."""
        ...

    async def presigned_url(self, key: BlobKey, max_seconds: int) -> str | None:
        """A URL from which a client may GET the blob directly for a short while (at
        most `max_seconds`), when the backend is a remote store that signs such URLs;
        None otherwise."""
        ...

    async def ready(self) -> bool:
        """Can blobs be written now?"""
        ...

    def sweep_staging(self) -> int:
        """Remove staging files a crash left behind (blocking; run it in a thread):
        how many."""
        ...

    def stored_before(self, before: float) -> AsyncIterator[BlobKey]:
        """The blobs written before that time (unix seconds), in no order: for finding
        those no asset uses (a crash between the bytes and their record)."""
        ...


class BlobReferences(Protocol):
    """Changes to the assets that use one blob, made while its `references` are held."""

    async def owned_bytes(self, owner: Subject) -> int:
        """The bytes of all the owner's assets, as of now (for a storage quota that
        holds against concurrent adds)."""
        ...

    async def users(self) -> int:
        """How many assets use the blob now."""
        ...

    async def add(self, asset: Asset) -> None:
        """Record the asset: the last call while the references are held (SQLite
        commits with it)."""
        ...

    async def remove(self, asset: Asset) -> int:
        """Delete the asset's record; return how many assets still use its blob."""
        ...


class AssetIndex(Protocol):
    def references(self, key: BlobKey) -> AbstractAsyncContextManager[BlobReferences]:
        """Hold the references to one blob while its bytes are committed or removed
        with them: a delete of the last asset using some bytes can't remove them
        between another add's commit and its record. Holds across every process that
        shares this index. Changes are kept only when the block ends without error.
        Make no other call to this index inside the block (the hold is not
        re-entrant)."""
        ...

    async def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """NotFound for a missing asset and for another owner's alike."""
        ...

    async def list(self, owner: Subject | None, limit: int, cursor: str | None) -> Page:
        """The owner's assets (None: everyone's), newest first; `cursor` continues a
        page; a malformed cursor is InvalidRequest."""
        ...

    async def stored_bytes(self, owner: Subject) -> int:
        """The bytes of all the owner's assets."""
        ...

    async def used(self, sha256s: Sequence[str]) -> set[str]:
        """Which of these blobs some asset uses, as of now (a read: a blob it leaves
        out may still be taken by an add in progress; hold its references to be sure)."""
        ...

    async def revoke_links(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """End every link of the asset made so far (its link generation goes up);
        NotFound for a missing asset and for another owner's alike."""
        ...

    async def expired(
        self, now: float, unrecorded_before: float | None, limit: int
    ) -> Sequence[Asset]:
        """Assets whose retention has run out at `now`, oldest first: those whose
        `keep_until` has passed, and (with `unrecorded_before`) those without one that
        were created before that time."""
        ...

    async def ready(self) -> bool: ...


LimitCheck = Callable[[Usage], None]
"""Raises QuotaExceeded when a call that would add to `Usage` must be refused."""


class QuotaLedger(Protocol):
    """Per-subject counters. A call first reserves (checked and recorded atomically, so
    two calls can't both take the last slot), then commits what it made or releases
    the reservation, which consumes nothing. Days and months are UTC. Reservations
    carry a lease, so a crashed process can't hold a slot forever."""

    async def reserve(
        self,
        subject: str,
        images: int,
        spend: float,
        now: float,
        check: LimitCheck,
        relay: str = "",
    ) -> Reservation:
        """Run `check` on the subject's usage (reservations included) and, if it
        passes, hold `images` and `spend` and record the call time, all atomically."""
        ...

    async def commit(self, reservation: Reservation, images: int, spend: float, now: float) -> None:
        """Record what the call really made; the reservation ends."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """The call failed or was declined: it consumes nothing."""
        ...

    async def usage(self, subject: str, now: float) -> Usage: ...

    async def reset(self, subject: str, now: float) -> None:
        """Forget today's and this month's usage and the last call (not running calls)."""
        ...

    async def report(self, since: str, until: str, by: str) -> list[UsageRow]:
        """What was committed on the UTC days `since` <= day < `until` (YYYY-MM-DD),
        summed by "subject", "relay" or "day", in key order. The same counters the
        limits are checked against; by relay, what was committed before relays were
        recorded is the key "" (so every way of summing gives the same total)."""
        ...


class Leases(Protocol):
    """Named leases: one process at a time does a shared chore (a retention sweep)."""

    async def take(self, name: str, holder: str, now: float, seconds: float) -> bool:
        """Hold `name` until `now + seconds` if it is free, expired, or `holder`'s
        already; False when another holder has it."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Let go of `name` if `holder` has it (a process that stops cleanly), so that
        the next one need not wait for the lease to run out."""
        ...


class NonceLedger(Protocol):
    """Single-use tokens (the nonce of a confirmed paid call): each is good once."""

    async def spend(self, nonce: str, now: float, valid_for: float) -> bool:
        """Record `nonce` as used: True the first time, False every time after. The
        record is kept `valid_for` seconds, as long as the nonce can be presented."""
        ...


class JobState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Job:
    """A generation or edit, as any process that shares the database sees it."""

    id: JobId
    owner: Subject
    tool: str
    state: JobState
    created_at: float
    updated_at: float
    progress: float | None = None
    """Percent done, when known."""
    message: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    """What the result is shaped by (the tool's options), never the prompt."""
    outcome: dict[str, Any] | None = None
    """What a completed job made (asset ids and the like), as JSON."""
    error: dict[str, str] | None = None
    """Why a job failed: the error's kind and its message for the caller."""

    @property
    def finished(self) -> bool:
        return self.state is not JobState.RUNNING


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


class JobLedger(Protocol):
    """Jobs by owner. A job is created running and ends exactly once, by the process
    that runs it: `finish` changes only a running job. Another process cancels by
    request (`request_cancel`), so that a completion racing the cancel is recorded as
    what happened. Another owner's job answers exactly like a missing one. A job of
    a process that is gone (killed, crashed) is failed when the database next opens."""

    async def create(self, job: Job) -> None: ...

    async def progress(
        self, job_id: JobId, progress: float | None, message: str, now: float
    ) -> bool:
        """Record how far a running job is; False (and no change) when it has ended
        or its cancel was requested: then its process stops it."""
        ...

    async def request_cancel(self, owner: Subject, job_id: JobId) -> bool:
        """Ask the process running one of the owner's jobs to stop it (it learns of
        it from `progress`); False when the job is not running."""
        ...

    async def finish(
        self,
        job_id: JobId,
        state: JobState,
        now: float,
        outcome: dict[str, Any] | None = None,
        error: dict[str, str] | None = None,
    ) -> bool:
        """End a running job; False (and no change) when it had already ended."""
        ...

    async def get(self, owner: Subject, job_id: JobId) -> Job:
        """NotFound for a missing job and for another owner's alike."""
        ...

    async def list(self, owner: Subject, limit: int, cursor: str | None) -> JobPage:
        """The owner's jobs, newest first; a malformed cursor is InvalidRequest."""
        ...

    async def sweep(self, finished_before: float) -> int:
        """Forget jobs that ended before the given time; return how many."""
        ...


@dataclass(frozen=True)
class UploadTicket:
    """The right to upload one image as an asset of `owner`, until `expires_at`."""

    id: UploadId
    owner: Subject
    expires_at: float
    filename: str | None = None
    stored_limit: int | None = None
    """The owner's max_stored_bytes when the link was made (its groups are known
    then, not when the upload comes)."""
    retention_days: float | None = None
    """The owner's retention_days when the link was made, likewise."""


class UploadLedger(Protocol):
    """Upload tickets: each can be claimed once, before it expires."""

    async def create(self, ticket: UploadTicket, now: float) -> None:
        """Record a ticket (and forget those that expired)."""
        ...

    async def claim(self, upload_id: UploadId, now: float) -> UploadTicket | None:
        """The ticket, marked used, atomically; None when it was used already, has
        expired, or is unknown."""
        ...

    async def release(self, upload_id: UploadId) -> None:
        """Make a claimed ticket good again: its upload failed on the server's side (the
        store was down), not the caller's."""
        ...


@dataclass(frozen=True)
class StoredPreset:
    """A style preset a subject saved for itself (service.presets says what it means)."""

    owner: Subject
    name: str
    prompt: str
    negative_prompt: str | None = None
    size: str | None = None
    quality: str | None = None
    relay: str | None = None
    description: str | None = None
    updated_at: float = 0.0

    def values(self) -> tuple[object, ...]:
        """In the presets table's column order (owner, name, prompt, negative_prompt,
        size, quality, relay, description, updated): both databases write this."""
        return (
            self.owner,
            self.name,
            self.prompt,
            self.negative_prompt,
            self.size,
            self.quality,
            self.relay,
            self.description,
            self.updated_at,
        )


class PresetSaved(StrEnum):
    CREATED = "created"
    REPLACED = "replaced"
    FULL = "full"


class PresetLedger(Protocol):
    """Each subject's own presets, by name. Another owner's preset answers exactly
    like a missing one."""

    async def list(self, owner: Subject) -> list[StoredPreset]:
        """The owner's presets, by name."""
        ...

    async def get(self, owner: Subject, name: str) -> StoredPreset | None: ...

    async def save(self, preset: StoredPreset, max_count: int) -> PresetSaved:
        """Keep `preset`, replacing the owner's preset of that name; FULL (and no
        change) when it is new and the owner has `max_count` already. Counted and
        written atomically, across every process that shares the ledger."""
        ...

    async def delete(self, owner: Subject, name: str) -> bool:
        """Forget the owner's preset of that name; False when there was none."""
        ...


async def _nothing_to_open() -> None:
    return None


@dataclass(frozen=True)
class Storage:
    """One backend's parts, as the composition root wires them."""

    index: AssetIndex
    quotas: QuotaLedger
    nonces: NonceLedger
    jobs: JobLedger
    uploads: UploadLedger
    blobs: BlobStore
    leases: Leases
    presets: PresetLedger
    closing: Callable[[], Awaitable[None]]
    """Release what the parts share (connections); after it, they fail cleanly."""
    opening: Callable[[], Awaitable[None]] = _nothing_to_open
    """Connect now, in the serving event loop, so that a wrong schema or an
    unreachable server stops the start (the parts would connect on first use)."""

    async def open(self) -> None:
        await self.opening()

    async def aclose(self) -> None:
        await self.closing()
