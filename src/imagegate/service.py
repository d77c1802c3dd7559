"""What the tools do, without MCP: generate, list, get, link and delete owned images."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import anyio

from imagegate.acl import Caller
from imagegate.auth.identity import Identity
from imagegate.clock import Clock
from imagegate.config import Settings
from imagegate.confirm import ConfirmFn, PaidCall, needs_confirmation, paid_call
from imagegate.errors import InvalidRequest
from imagegate.generation import GenerateArgs, Produced, build_request, produce
from imagegate.ids import AssetId, Subject
from imagegate.inputs import InputResolver
from imagegate.quota import (
    QuotaStore,
    limits_for,
    reported_cost,
    seconds_to_next_day,
    seconds_to_next_month,
)
from imagegate.relays.base import ImageRequest, InputImage, ProgressFn
from imagegate.relays.registry import Relays
from imagegate.store.assets import Asset, AssetMeta, AssetStore, Page
from imagegate.store.links import LinkSigner


def safety_identifier(owner: Subject) -> str:
    """What upstreams get to tell callers apart for abuse handling: a hash, never the
    subject (which may be an e-mail address)."""
    return hashlib.sha256(f"imagegate-safety:{owner}".encode()).hexdigest()[:32]


def _options(request: ImageRequest) -> dict[str, object]:
    return {
        "quality": request.quality,
        "background": request.background,
        "compression": request.compression,
        "negative_prompt": request.negative_prompt,
        "input_fidelity": request.input_fidelity,
    }


@dataclass(frozen=True)
class Published:
    """How a caller reaches an image: a signed HTTP link, or a local file (stdio)."""

    url: str
    expires_at: int | None
    path: Path | None = None


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: AssetStore,
        relays: Relays,
        signer: LinkSigner | None,
        clock: Clock,
        inputs: InputResolver,
        quotas: QuotaStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.relays = relays
        self.inputs = inputs
        self.quotas = quotas
        self._signer = signer
        self._clock = clock

    async def generate(
        self,
        caller: Caller,
        args: GenerateArgs,
        progress: ProgressFn,
        confirm: ConfirmFn,
        images: tuple[InputImage, ...] = (),
        mask: InputImage | None = None,
    ) -> list[Asset]:
        """Generate (or, with input images, edit) and store the results for the caller.

        Order: check the request, reserve quota, confirm a paid call, call the relay,
        store; a refusal at any step happens before any upstream request, and a
        failure or a no releases the reservation (nothing is consumed).
        """
        owner = Subject(caller.subject)
        relay = self.relays.get(args.relay)
        request = build_request(
            args, relay, self.settings, images=images, mask=mask, user=safety_identifier(owner)
        )
        relay.capabilities.check(request, relay.name)
        call = paid_call(relay, request, request.n)
        limits = limits_for(caller.identity, self.settings.quotas)
        reservation = await anyio.to_thread.run_sync(
            self.quotas.reserve, owner, limits, request.n, call.estimate or 0.0, self._clock.now()
        )
        try:
            if relay.paid:
                await confirm(call, needs_confirmation(relay, caller))
            produced = await produce(
                relay, request, self.settings, self.store.blobs.stage, progress
            )
            assets = await self._store(owner, relay.name, args, request, produced, len(images))
        except BaseException:
            await anyio.to_thread.run_sync(self.quotas.release, reservation)
            raise
        spend = reported_cost([item.image.usage for item in produced])
        await anyio.to_thread.run_sync(
            self.quotas.commit,
            reservation,
            len(assets),
            spend if spend is not None else call.estimate or 0.0,
            self._clock.now(),
        )
        return assets

    def quote(self, args: GenerateArgs, images: tuple[InputImage, ...] = ()) -> PaidCall | None:
        """What a call would ask to confirm, without any effect; None for a free relay."""
        relay = self.relays.get(args.relay)
        if not relay.paid:
            return None
        request = build_request(args, relay, self.settings, images=images)
        return paid_call(relay, request, request.n)

    async def _store(
        self,
        owner: Subject,
        relay: str,
        args: GenerateArgs,
        request: ImageRequest,
        produced: list[Produced],
        inputs: int,
    ) -> list[Asset]:
        assets: list[Asset] = []
        try:
            for item in produced:
                params: dict[str, object] = {
                    "requested_size": str(request.size),
                    "requested_format": request.output_format.value,
                    **{k: v for k, v in _options(request).items() if v is not None},
                    **item.image.params,
                }
                if inputs:
                    params["inputs"] = inputs
                if item.image.usage:
                    params["usage"] = item.image.usage
                meta = AssetMeta(
                    relay=relay,
                    prompt=args.prompt.strip(),
                    revised_prompt=item.image.revised_prompt,
                    params=params,
                )
                asset = await anyio.to_thread.run_sync(
                    self.store.add, owner, item.image.staged, item.info, meta, self._clock.now()
                )
                assets.append(asset)
        finally:
            for item in produced:
                item.image.staged.discard()  # no-op for committed blobs
        return assets

    def usage(self, caller: Caller, subject: str) -> dict[str, object]:
        """Usage and limits of `subject` (the caller's own unless the caller is admin)."""
        identity = caller.identity if subject == caller.subject else Identity(Subject(subject))
        limits = limits_for(identity, self.settings.quotas)
        now = self._clock.now()
        usage = self.quotas.usage(subject, now)
        return {
            "subject": subject,
            "limits": limits.model_dump(),
            "usage": {
                "images_today": usage.images_today,
                "spend_today": round(usage.spend_today, 6),
                "spend_month": round(usage.spend_month, 6),
                "calls_today": usage.calls_today,
                "running": usage.in_flight,
            },
            "resets_in_seconds": {
                "day": seconds_to_next_day(now),
                "month": seconds_to_next_month(now),
            },
        }

    def reset_usage(self, subject: str) -> None:
        self.quotas.reset(subject, self._clock.now())

    def get(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        """`owner` None: any owner's (admin)."""
        return self.store.get(owner, asset_id)

    def list(self, owner: Subject | None, limit: int, cursor: str | None) -> Page:
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidRequest(f"limit must be between 1 and {self.settings.max_page_size}")
        return self.store.list(owner, limit, cursor)

    async def delete(self, owner: Subject | None, asset_id: AssetId) -> Asset:
        return await anyio.to_thread.run_sync(self.store.delete, owner, asset_id)

    def publish(self, asset: Asset, ttl_seconds: int | None = None) -> Published:
        """A fresh link with the given TTL (default from settings, capped by the maximum)."""
        ttl = self.settings.link_ttl_seconds if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self.settings.link_ttl_max_seconds:
            raise InvalidRequest(
                f"ttl_seconds must be between 1 and {self.settings.link_ttl_max_seconds}"
            )
        if self._signer is None:
            path = self.store.blob_path(asset)
            return Published(url=path.as_uri(), expires_at=None, path=path)
        expires_at = int(self._clock.now()) + ttl
        link = self._signer.sign(asset.id, asset.format.extension, expires_at)
        return Published(url=link.url, expires_at=link.expires_at)

    @property
    def links_enabled(self) -> bool:
        return self._signer is not None
