"""What the image tools do, without MCP: generate, edit (one, combined, or a batch),
list, get, link and delete owned images, and report usage."""

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import anyio

from imagegate.access.identity import Identity
from imagegate.access.policy import (
    Caller,
    check_relay,
    listing_owner,
    may_use_relay,
    needs_confirmation,
    reach,
    usage_subject,
)
from imagegate.config import Limits, Settings
from imagegate.core import xmp
from imagegate.core.clock import Clock
from imagegate.core.cpu import FairShare, run_cpu, taking_turns
from imagegate.core.errors import ConfigError, ImagegateError, InvalidRequest, PermissionDenied
from imagegate.core.ids import Subject, is_asset_id, parse_asset_id
from imagegate.core.images import ImageFormat, ImageInfo
from imagegate.core.metrics import Metrics
from imagegate.core.staging import StagedBlob
from imagegate.core.tracing import span
from imagegate.core.views import View
from imagegate.relays.base import ImageRequest, InputImage, ProgressFn, Relay
from imagegate.relays.config import AUTO
from imagegate.relays.registry import Relays
from imagegate.service.choice import Candidate, Choice, choose
from imagegate.service.confirm import ConfirmFn, PaidCall, batch_total, paid_call
from imagegate.service.generation import GenerateArgs, Produced, build_request, produce
from imagegate.service.inputs import InputResolver, Inputs
from imagegate.service.links import LinkSigner
from imagegate.service.marking import Marker, Verification, verify
from imagegate.service.presets import Presets
from imagegate.service.quota import (
    check_limits,
    keep_until,
    limits_for,
    reported_cost,
    seconds_to_next_day,
    seconds_to_next_month,
    stored_bytes_exceeded,
)
from imagegate.service.reports import Report, usage_report
from imagegate.service.saving import SavePlan, save
from imagegate.service.views import Views
from imagegate.storage.assets import AssetStore
from imagegate.storage.interfaces import (
    Asset,
    AssetMeta,
    NonceLedger,
    Page,
    QuotaLedger,
    Reservation,
    Usage,
)


def safety_identifier(owner: Subject) -> str:
    """What upstreams get to tell callers apart for abuse handling: a hash, never the
    subject (which may be an e-mail address)."""
    return hashlib.sha256(f"imagegate-safety:{owner}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Published:
    """How a caller reaches an image: a signed HTTP link, or a local file (stdio)."""

    url: str
    expires_at: int | None
    path: Path | None = None


@dataclass(frozen=True)
class BatchFailure:
    """One input of a batch edit that produced no image, and why."""

    index: int
    source: str
    error: str


@dataclass
class Made:
    assets: list[Asset]
    failures: list[BatchFailure] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """A checked request and what it would cost and may cost."""

    paid: bool
    relay: Relay
    request: ImageRequest
    call: PaidCall
    limits: Limits
    choice: Choice | None = None
    """How relay="auto" chose `relay`; None when the call named it."""

    @property
    def spend(self) -> float:
        return self.call.estimate or 0.0

    def pinned(self, args: GenerateArgs) -> GenerateArgs:
        """`args` to run this plan: on the relay chosen and confirmed now, not on a
        choice made again later."""
        if self.choice is None:
            return args
        return replace(args, relay=self.relay.name, needs=())


@dataclass
class Admitted:
    """A call that passed every check in front of its job: its inputs read, its request
    and its quota checked, a paid call confirmed. `run` makes the images, once, into
    `made` as each is stored (so a call stopped midway still shows what it made);
    `aclose` lets go of the inputs of a call that never runs."""

    make: Callable[[ProgressFn, Made], Awaitable[None]]
    inputs: Inputs = field(default_factory=Inputs)
    made: Made = field(default_factory=lambda: Made([]))
    choice: Choice | None = None
    """How relay="auto" chose the relay, for the result."""

    async def run(self, progress: ProgressFn) -> Made:
        try:
            await self.make(progress, self.made)
            return self.made
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await _let_go(self.inputs)


async def _let_go(inputs: Inputs) -> None:
    with anyio.CancelScope(shield=True):
        await inputs.aclose()


log = logging.getLogger("imagegate.marking")
P = ParamSpec("P")
T = TypeVar("T")


def _for_caller(
    method: Callable[Concatenate["ImageService", Caller, P], Awaitable[T]],
) -> Callable[Concatenate["ImageService", Caller, P], Awaitable[T]]:
    """The method's CPU-bound steps take their turns with other callers' (core.cpu)."""

    async def acting(
        self: "ImageService", caller: Caller, /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        with self._acting_for(caller.subject):
            return await method(self, caller, *args, **kwargs)

    acting.__name__, acting.__doc__ = method.__name__, method.__doc__
    return acting


class ImageService:
    def __init__(
        self,
        settings: Settings,
        assets: AssetStore,
        quotas: QuotaLedger,
        nonces: NonceLedger,
        relays: Relays,
        signer: LinkSigner | None,
        clock: Clock,
        inputs: InputResolver,
        fair: FairShare | None = None,
        metrics: Metrics | None = None,
        presets: Presets | None = None,
        marker: Marker | None = None,
    ) -> None:
        self.settings = settings
        self.assets = assets
        self.quotas = quotas
        self._nonces = nonces
        self.relays = relays
        self.inputs = inputs
        self._signer = signer
        self._clock = clock
        self._fair = fair
        self._metrics = metrics or Metrics()
        # Without a signer given (tests, stdio tools), XMP as the settings say.
        self.marker = marker or Marker(xmp=settings.marks()[0])
        self.views = Views(assets, settings.view_cache_bytes, self.marker)
        self.presets = presets or Presets(settings, relays, None, clock)

    def _acting_for(self, subject: str) -> AbstractContextManager[None]:
        return taking_turns(self._fair, subject)

    @_for_caller
    async def _generate(
        self,
        caller: Caller,
        args: GenerateArgs,
        progress: ProgressFn,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
    ) -> list[Asset]:
        """Generate (or, with input images, edit) and store the results of a request
        `admit` passed (checked, and a paid one confirmed).

        Order: reserve quota (checked again, atomically), call the relay, store; a
        refusal happens before any upstream request. The reservation ends exactly
        once: released (nothing consumed) on a failure or a cancel before the upstream
        answered; once it has (and may have billed), committed with the images stored
        and the cost, even when storing them fails (the storage quota, a full disk).
        Both are shielded from cancellation, and so is storing what the upstream made.
        """
        owner = caller.subject
        plan = self._plan(caller, args, images, mask)
        spend = plan.spend

        def fits(usage: Usage) -> None:
            check_limits(plan.limits, usage, plan.request.n, spend, self._clock.now())

        # Shielded: a cancel that lands while the reservation commits would leave it
        # held, unknown to us, until its lease ends; the cancel takes effect just after.
        with anyio.CancelScope(shield=True), span("quota.reserve", relay=plan.relay.name):
            reservation = await self.quotas.reserve(
                owner, plan.request.n, spend, self._clock.now(), fits, relay=plan.relay.name
            )
        started = time.perf_counter()
        try:
            inline = self.marker.inline_png("edited" if images else "created")
            stage = functools.partial(self._stage_upstream, inline)
            produced = await produce(plan.relay, plan.request, self.settings, stage, progress)
        except BaseException:
            await self._release(reservation)
            raise
        self._metrics.generated(plan.relay.name, time.perf_counter() - started)
        reported = reported_cost([item.image.usage for item in produced])
        self._metrics.spent(plan.relay.name, plan.call.currency, plan.call.estimate, reported)
        charged = reported if reported is not None else spend
        assets: list[Asset] = []
        with anyio.CancelScope(shield=True):
            try:
                await self._store(
                    owner,
                    plan.relay.name,
                    args,
                    plan.request,
                    produced,
                    [image.path for image in images],
                    plan.limits,
                    assets,
                    (charged, plan.call.currency),
                )
            finally:
                await self.quotas.commit(reservation, len(assets), charged, self._clock.now())
        return assets

    def _plan(
        self,
        caller: Caller,
        args: GenerateArgs,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
    ) -> "_Plan":
        choice = None
        if args.relay == AUTO:
            choice = choose(
                [self._candidate(caller, relay, args, images, mask) for relay in self.relays.all()],
                args.needs,
            )
            relay = self.relays.get(choice.relay)
        elif args.needs:
            raise InvalidRequest(f"needs chooses a relay: pass it with relay={AUTO!r}")
        else:
            relay = self.relays.get(args.relay)
        # The ACL middleware checked the relay the arguments name; this checks the one
        # the call will use, whatever chose it (the default, a preset, "auto").
        check_relay(caller, relay.name)
        request = build_request(
            args,
            relay,
            self.settings,
            images=images,
            mask=mask,
            user=safety_identifier(caller.subject),
        )
        relay.capabilities.check(request, relay.name)
        limits = limits_for(caller.identity, self.settings.quotas)
        call = paid_call(relay, request, request.n)
        return _Plan(relay.paid, relay, request, call, limits, choice)

    def _candidate(
        self,
        caller: Caller,
        relay: Relay,
        args: GenerateArgs,
        images: tuple[InputImage, ...],
        mask: InputImage | None,
    ) -> Candidate:
        """`relay` for relay="auto": the request built with its defaults, and checked."""
        if not may_use_relay(caller, relay.name):
            return Candidate(relay.name, usable=False)
        try:
            request = build_request(args, relay, self.settings, images=images, mask=mask)
            relay.capabilities.check(request, relay.name)
        except InvalidRequest as refusal:
            return Candidate(relay.name, True, relay.traits, str(refusal), relay.paid)
        call = paid_call(relay, request, request.n)
        return Candidate(
            relay.name, True, relay.traits, None, relay.paid, call.estimate, call.currency
        )

    async def _check_and_ask(
        self, caller: Caller, first: "_Plan", plans: list["_Plan"], confirm: ConfirmFn
    ) -> None:
        """Refuse what the quota would refuse for all of `plans` (one call, or a batch)
        before anyone is asked to pay for it; then, if any is paid, ask once for their
        total. Neither is a call (no slot, no cooldown): an answer may come back in
        another request (2026-07-28), or never."""
        now = self._clock.now()
        with span("quota.check", relay=first.relay.name):
            if first.limits.max_stored_bytes is not None:
                stored = await self.assets.stored_bytes(caller.subject)
                if stored >= first.limits.max_stored_bytes:
                    raise stored_bytes_exceeded(stored, first.limits.max_stored_bytes)
            usage = await self.quotas.usage(caller.subject, now)
            images = sum(plan.request.n for plan in plans)
            check_limits(first.limits, usage, images, sum(plan.spend for plan in plans), now)
        paid = [plan.call for plan in plans if plan.paid]
        if paid:
            await confirm(batch_total(paid), needs_confirmation(caller, True))

    async def _release(self, reservation: Reservation) -> None:
        # Also when the call was cancelled: an await in a cancelled scope would fail
        # at once and leave the slot held until its lease ran out.
        with anyio.CancelScope(shield=True):
            await self.quotas.release(reservation)

    @_for_caller
    async def admit(
        self,
        caller: Caller,
        args: GenerateArgs,
        confirm: ConfirmFn,
        sources: list[str] | None = None,
        mask: str | None = None,
        batch: bool = False,
    ) -> Admitted:
        """Everything a generation, or an edit of `sources` (asset ids or image data),
        must pass before it may start, in the call that asks for it: its inputs read,
        its request checked, its quota pre-checked and, for a paid relay, the user's
        yes; one question for a whole batch, with its total. Nothing is reserved or
        made yet. `batch` edits each source on its own: a failed item is then
        reported, not fatal. A preset the arguments name is applied first."""
        args = await self.presets.applied(caller, args)
        if sources is None:
            plan = self._plan(caller, args)
            await self._check_and_ask(caller, plan, [plan], confirm)
            args = plan.pinned(args)
            return Admitted(
                lambda progress, made: self._made(caller, args, progress, made),
                choice=plan.choice,
            )
        if batch and mask is not None:
            raise InvalidRequest("a mask fits one image; edit with a mask without batch")
        if batch:
            return await self._admit_batch(caller, args, sources, confirm)
        inputs = await self.inputs.resolve(reach(caller), sources, mask)
        images = tuple(inputs.images)
        try:
            plan = self._plan(caller, args, images, inputs.mask)
            await self._check_and_ask(caller, plan, [plan], confirm)
        except BaseException:
            await _let_go(inputs)
            raise
        args = plan.pinned(args)
        return Admitted(
            lambda progress, made: self._made(caller, args, progress, made, images, inputs.mask),
            inputs,
            choice=plan.choice,
        )

    async def _made(
        self,
        caller: Caller,
        args: GenerateArgs,
        progress: ProgressFn,
        made: Made,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
    ) -> None:
        made.assets += await self._generate(caller, args, progress, images, mask)

    async def edit(
        self,
        caller: Caller,
        args: GenerateArgs,
        sources: list[str],
        mask: str | None,
        batch: bool,
        progress: ProgressFn,
        confirm: ConfirmFn,
    ) -> Made:
        """`admit` and run an edit in one go, as a call without a job does."""
        admitted = await self.admit(caller, args, confirm, sources, mask, batch)
        return await admitted.run(progress)

    async def _admit_batch(
        self, caller: Caller, args: GenerateArgs, sources: list[str], confirm: ConfirmFn
    ) -> Admitted:
        failures: dict[int, str] = {}
        held = Inputs()
        images: dict[int, InputImage] = {}
        try:
            # An input that can't be read (an unknown id, data that is no image) is
            # that item's failure, not the batch's.
            for index, source in enumerate(sources):
                try:
                    images[index] = await self.inputs.one(
                        reach(caller), source, f"images[{index}]", held
                    )
                except ImagegateError as err:
                    failures[index] = str(err)
            if not images:
                raise _every_item_failed(sources, failures)
            # Every item is priced first, since an edit's size (and so its price)
            # defaults to its input's; the quota is checked for the whole batch.
            plans: list[_Plan] = []
            for image in images.values():
                plan = self._plan_item(caller, args, image)
                if plan is not None:
                    # relay="auto" chooses once, for the first item it can: one relay
                    # for the whole batch, and one question naming it.
                    args = plan.pinned(args)
                    plans.append(plan)
            if plans:
                await self._check_and_ask(caller, plans[0], plans, confirm)
        except BaseException:
            await _let_go(held)
            raise
        batch_args = args

        async def make(progress: ProgressFn, made: Made) -> None:
            await self._batch(caller, batch_args, sources, images, failures, progress, made)

        return Admitted(make, held, choice=plans[0].choice if plans else None)

    def _plan_item(self, caller: Caller, args: GenerateArgs, image: InputImage) -> _Plan | None:
        """A batch item's plan; an item that can't be built fails on its own later. A
        relay the caller may not use (a preset's, say) or a broken relay is the same
        for every item: the whole call is refused at once, and no job starts."""
        try:
            return self._plan(caller, args, (image,))
        except (PermissionDenied, ConfigError):
            raise
        except ImagegateError:
            return None

    @_for_caller
    async def _batch(
        self,
        caller: Caller,
        args: GenerateArgs,
        sources: list[str],
        images: dict[int, InputImage],
        failures: dict[int, str],
        progress: ProgressFn,
        made: Made,
    ) -> None:
        failures = dict(failures)
        for index, image in images.items():
            label = f"image {index + 1} of {len(sources)}: "
            item_progress = _item_of(progress, label, index, len(sources))
            try:
                made.assets += await self._generate(caller, args, item_progress, (image,))
            except ImagegateError as err:
                failures[index] = str(err)
        made.failures = [
            BatchFailure(index=index, source=source_label(sources[index]), error=error)
            for index, error in sorted(failures.items())
        ]
        if not made.assets:
            raise _every_item_failed(sources, failures)

    async def spend_once(self, nonce: str, valid_for: float) -> bool:
        """Use a single-use token (a confirmation's): True the first time only."""
        return await self._nonces.spend(nonce, self._clock.now(), valid_for)

    async def _store(
        self,
        owner: Subject,
        relay: str,
        args: GenerateArgs,
        request: ImageRequest,
        produced: list[Produced],
        inputs: list[Path],
        limits: Limits,
        assets: list[Asset],
        charged: tuple[float, str] = (0.0, ""),
    ) -> None:
        """Store what the upstream made, into `assets` as each is stored; each records
        its share of what the call `charged` (amount, currency), when not free."""
        max_stored_bytes = limits.max_stored_bytes
        keep = keep_until(limits.retention_days, self._clock.now())
        restaged: list[StagedBlob] = []
        try:
            # Marked first: the markings add bytes, which the room check must count.
            marked = []
            for item in produced:
                marked.append(await self._marked(item, relay, inputs))
                if marked[-1][0] is not item.image.staged:
                    restaged.append(marked[-1][0])
            if max_stored_bytes is not None:
                # All or none: each add checks again, atomically, against races.
                made = sum(info.byte_size for _, info, _ in marked)
                stored = await self.assets.stored_bytes(owner)
                if stored + made > max_stored_bytes:
                    raise stored_bytes_exceeded(stored, max_stored_bytes, made)
            for item, (staged, info, marking) in zip(produced, marked, strict=True):
                params: dict[str, object] = {
                    "requested_size": str(request.size),
                    "requested_format": request.output_format.value,
                    **{k: v for k, v in _options(request).items() if v is not None},
                    **item.image.params,
                }
                if inputs:
                    params["inputs"] = len(inputs)
                if marking:
                    params["marking"] = marking
                if item.image.usage:
                    params["usage"] = item.image.usage
                if charged[0] > 0:
                    params["cost"] = round(charged[0] / len(produced), 6)
                    params["currency"] = charged[1]
                meta = AssetMeta(
                    relay=relay,
                    prompt=args.prompt.strip(),
                    revised_prompt=item.image.revised_prompt,
                    params=params,
                )
                asset = await self.assets.add(
                    owner,
                    staged,
                    info,
                    meta,
                    self._clock.now(),
                    max_stored_bytes,
                    keep,
                )
                assets.append(asset)
                self._metrics.stored("edited" if inputs else "generated", asset.byte_size)
        finally:
            for item in produced:
                item.image.staged.discard()  # no-op for committed blobs
            for each in restaged:
                each.discard()

    def _stage_upstream(self, inline: bytes | None = None) -> StagedBlob:
        """A blob for what the upstream sends, under the pixel cap (a PNG is checked as
        it is decoded). With `inline` (Marker.inline_png), a PNG takes its marking as
        it is written. Otherwise, when marking is on, its hash waits until it is stored
        (AssetStore.add): most of the time a marked copy is stored instead."""
        staged = self.assets.stage()
        staged.pixel_cap = self.settings.max_image_pixels
        if inline is not None:
            staged.insert_after_ihdr(inline)
        elif self.marker.active:
            staged.defer_hash()
        return staged

    async def _marked(
        self, item: Produced, relay_name: str, inputs: list[Path]
    ) -> tuple[StagedBlob, ImageInfo, dict[str, str]]:
        """The item as it is to be stored: marked as it was written, or marked
        (service.marking) in a new staged blob, with its new size; or as it came, when
        no marking applies."""
        if not self.marker.active:
            return item.image.staged, item.info, {}
        staged = item.image.staged
        if not staged.inserted:
            return await self._marked_copy(item, relay_name, inputs)
        took = functools.partial(self.marker.took_inline, staged, self.settings.max_image_bytes)
        if took() if staged.png_seen is not None else await run_cpu(took):
            return staged, item.info, {"xmp": xmp.MarkResult.ADDED.value}
        # The image had XMP or a manifest of its own (or the chunk takes it past the
        # cap): it is marked as `mark` marks what the upstream sent.
        sent = self.assets.stage()
        sent.defer_hash()
        try:
            await run_cpu(self.marker.as_sent, staged, sent)
        except (ImagegateError, OSError) as err:  # the disk: keep what was written
            sent.discard()
            reason = err.strerror if isinstance(err, OSError) else str(err)
            log.warning("an image could not be copied to be marked; stored as written: %s", reason)
            # Its own XMP or manifest was not looked at: the marking is not known good.
            return staged, item.info, {"xmp": f"failed: {reason}", "stored": "as written"}
        except BaseException:
            sent.discard()
            raise
        kept = False
        try:
            original = Produced(
                replace(item.image, staged=sent), replace(item.info, byte_size=sent.size)
            )
            marked = await self._marked_copy(original, relay_name, inputs)
            kept = marked[0] is sent
            return marked
        finally:
            if not kept:
                sent.discard()

    async def _marked_copy(
        self, item: Produced, relay_name: str, inputs: list[Path]
    ) -> tuple[StagedBlob, ImageInfo, dict[str, str]]:
        relay = self.relays.get(relay_name)
        staged: StagedBlob | None = None
        try:
            staged = self.assets.stage()
            marked = await run_cpu(
                functools.partial(
                    self.marker.mark,
                    item.image.staged.path,
                    item.info.format,
                    action="edited" if inputs else "created",
                    software_agent=relay.model or relay.kind,
                    inputs=inputs,
                    into=staged,
                )
            )
        except (ImagegateError, OSError) as err:  # over the cap with the marks; disk
            if staged is not None:
                staged.discard()
            reason = err.strerror if isinstance(err, OSError) else str(err)
            log.warning("a marked image could not be staged; stored unmarked: %s", reason)
            return item.image.staged, item.info, {"stored": f"unmarked: {reason}"}
        except BaseException:
            if staged is not None:
                staged.discard()
            raise
        if marked.path != staged.path:
            staged.discard()
            return item.image.staged, item.info, marked.done
        return staged, replace(item.info, byte_size=staged.size), marked.done

    async def usage(self, caller: Caller, requested: str | None = None) -> dict[str, object]:
        """Usage and limits of the caller, or (admin) of the `requested` subject."""
        subject = usage_subject(caller, requested)
        identity = caller.identity if subject == caller.subject else Identity(subject)
        limits = limits_for(identity, self.settings.quotas)
        now = self._clock.now()
        usage = await self.quotas.usage(subject, now)
        return {
            "subject": subject,
            "limits": limits.model_dump(),
            "usage": {
                "images_today": usage.images_today,
                "spend_today": round(usage.spend_today, 6),
                "spend_month": round(usage.spend_month, 6),
                "calls_today": usage.calls_today,
                "running": usage.in_flight,
                "stored_bytes": await self.assets.stored_bytes(subject),
            },
            "resets_in_seconds": {
                "day": seconds_to_next_day(now),
                "month": seconds_to_next_month(now),
            },
        }

    async def reset_usage(self, subject: str) -> None:
        await self.quotas.reset(subject, self._clock.now())

    async def usage_report(self, since: str, until: str | None, by: str) -> Report:
        today = datetime.fromtimestamp(self._clock.now(), UTC).date()
        return await usage_report(self.quotas, since, until, by, today)

    async def get(self, caller: Caller, asset_id: str) -> Asset:
        """One of the caller's images (admin: anyone's); another's answers as missing."""
        return await self.assets.get(reach(caller), parse_asset_id(asset_id))

    async def list_page(
        self, caller: Caller, owner: str | None, limit: int, cursor: str | None
    ) -> Page:
        whose = listing_owner(caller, owner)
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidRequest(f"limit must be between 1 and {self.settings.max_page_size}")
        return await self.assets.list(whose, limit, cursor)

    async def delete(self, caller: Caller, asset_id: str) -> Asset:
        return await self.assets.delete(reach(caller), parse_asset_id(asset_id))

    async def revoke_links(self, caller: Caller, asset_id: str) -> Asset:
        """End every link of the image made so far; the image stays, and links made
        from now on work."""
        return await self.assets.revoke_links(reach(caller), parse_asset_id(asset_id))

    def publish(
        self, asset: Asset, ttl_seconds: int | None = None, view: View | None = None
    ) -> Published:
        """A fresh link with the given TTL (default from settings, capped by the
        maximum); with a `view`, to that resized or converted copy."""
        ttl = self.settings.link_ttl_seconds if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self.settings.link_ttl_max_seconds:
            raise InvalidRequest(
                f"ttl_seconds must be between 1 and {self.settings.link_ttl_max_seconds}"
            )
        if self._signer is None:
            path = self.assets.local_path(asset)
            if path is None:
                raise InvalidRequest(
                    "this storage keeps no local files; set public_url to an imagegate "
                    "HTTP server sharing this state for download links"
                )
            return Published(url=path.as_uri(), expires_at=None, path=path)
        expires_at = int(self._clock.now()) + ttl
        if view is not None and not view.is_plain:
            extension = view.output_format(asset.format).extension
            link = self._signer.sign(
                asset.id, extension, expires_at, view.key, view.query, asset.link_generation
            )
        else:
            link = self._signer.sign(
                asset.id, asset.format.extension, expires_at, generation=asset.link_generation
            )
        return Published(url=link.url, expires_at=link.expires_at)

    @property
    def links_enabled(self) -> bool:
        return self._signer is not None

    async def save_copies(self, plan: SavePlan, assets: list[Asset]) -> list[str]:
        """Copy the assets' files where `plan` says (service.saving); the paths."""
        async with AsyncExitStack() as held:
            paths = [await held.enter_async_context(self.assets.as_file(a)) for a in assets]
            formats = [asset.format for asset in assets]
            written = await anyio.to_thread.run_sync(save, plan, paths, formats)
        return [str(path) for path in written]

    async def thumbnails(self, assets: list[Asset]) -> list[bytes]:
        """A small PNG preview of each asset: a view, like any other (cached)."""
        side = self.settings.thumbnail_px
        preview = View(side, side, "contain", ImageFormat.PNG)
        return [await self.view(asset, preview) for asset in assets]

    async def verify(self, caller: Caller, asset_id: str) -> Verification:
        """What one of the caller's images (admin: anyone's) says about its origin."""
        asset = await self.get(caller, asset_id)
        anchors = self.settings.c2pa.trust_anchors if self.settings.c2pa else None
        with self._acting_for(asset.owner):
            async with self.assets.as_file(asset) as path:
                return await run_cpu(verify, path, asset.format, anchors)

    async def view(self, asset: Asset, view: View) -> bytes:
        """A view of an asset the caller may see (checked by the caller of this)."""
        with self._acting_for(asset.owner):
            return await self.views.render(asset, view)


def _options(request: ImageRequest) -> dict[str, object]:
    return {
        "quality": request.quality,
        "background": request.background,
        "compression": request.compression,
        "negative_prompt": request.negative_prompt,
        "input_fidelity": request.input_fidelity,
    }


def _every_item_failed(sources: list[str], failures: dict[int, str]) -> InvalidRequest:
    reasons = "; ".join(
        f"{source_label(sources[index])}: {error}" for index, error in sorted(failures.items())
    )
    return InvalidRequest(f"every edit in the batch failed: {reasons}")


def _item_of(progress: ProgressFn, label: str, index: int, count: int) -> ProgressFn:
    """Progress of one batch item as progress of the whole batch."""

    async def item(fraction: float | None, message: str) -> None:
        overall = None if fraction is None else (index + fraction) / count
        await progress(overall, f"{label}{message}")

    return item


def source_label(source: str) -> str:
    """How a batch failure names its input, without echoing megabytes of base64."""
    source = source.strip()
    if is_asset_id(source):
        return source
    if source.startswith("data:") or len(source) > 200:
        return "(image data)"
    return source
