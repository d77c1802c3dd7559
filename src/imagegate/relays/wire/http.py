"""HTTP to one upstream: timeouts per phase, bounded retries, a size cap, clean errors.

Retried: 429 (honouring `retry-after-ms` / `Retry-After`), 500, 502, 503, 504 and
connection errors, with jittered exponential backoff, at most `attempts` tries and
`budget_seconds` of waiting. Never retried: 400/401/403/404, `insufficient_quota`,
moderation blocks, and anything after a streaming response has begun (the upstream
may already be generating, and billing). Error answers become clean RelayErrors in
`errors.error_from_response`.
"""

import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from imagegate.core.cpu import fed_while_read, run_cpu
from imagegate.core.errors import RelayError
from imagegate.core.metrics import Metrics, status_class
from imagegate.core.tracing import Span, span
from imagegate.relays.base import StageFn
from imagegate.relays.wire.body import JsonBody
from imagegate.relays.wire.errors import error_fields, error_from_response, parse_json
from imagegate.relays.wire.spool import JsonSpool

log = logging.getLogger("imagegate.relays")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 60.0
    total: float = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    budget_seconds: float = 60.0
    base_delay: float = 0.5
    max_delay: float = 8.0


def retry_delay(
    response: httpx.Response | None, attempt: int, policy: RetryPolicy, body: bytes = b""
) -> float:
    """Seconds to wait before try `attempt + 1`: the upstream's hint, else backoff + jitter."""
    hinted = _body_retry_delay(body) if body else None
    if hinted is not None:
        return hinted
    if response is not None:
        hint_ms = response.headers.get("retry-after-ms")
        hint = response.headers.get("retry-after")
        try:
            if hint_ms is not None:
                return max(0.0, float(hint_ms) / 1000)
            if hint is not None:
                return max(0.0, float(hint))
        except ValueError:
            pass  # an HTTP date or garbage: fall back to backoff
    backoff = min(policy.max_delay, policy.base_delay * 2**attempt)
    return float(backoff * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret


def _body_retry_delay(body: bytes) -> float | None:
    """Gemini puts its retry hint in the body: error.details[].retryDelay = "36s"."""
    data = parse_json(body)
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", delay) if isinstance(delay, str) else None
        if match:
            return float(match[1])
    return None


def _retryable(status: int, body: bytes) -> bool:
    if status not in RETRY_STATUSES:
        return False
    code, _ = error_fields(body)
    return code != "insufficient_quota"


Sleep = Callable[[float], Awaitable[None]]


class Upstream:
    """HTTP access to one relay's upstream. One httpx client per relay, so a slow relay
    never holds the connection pool of another."""

    def __init__(
        self,
        relay: str,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        headers: dict[str, str],
        timeouts: Timeouts,
        retry: RetryPolicy,
        max_response_bytes: int,
        secrets: Collection[str] = (),
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.relay = relay
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._headers = headers
        self._timeouts = timeouts
        self._retry = retry
        self._max_bytes = max_response_bytes
        self.secrets = tuple(s for s in secrets if s)
        self._sleep = sleep
        self.metrics = Metrics()
        """Where each try is counted: the server's, once the registry gives it."""

    @property
    def timeouts(self) -> Timeouts:
        return self._timeouts

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, path: str) -> str:
        return f"{self._base_url}/{path.lstrip('/')}"

    async def request_json(
        self,
        method: str,
        path: str,
        body: JsonBody | dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        may_retry: Callable[[], bool] | None = None,
        stage: StageFn | None = None,
    ) -> Any:
        """Send, retrying what may be retried; return the parsed JSON body (with
        `stage`, its images already staged: see `read_json`)."""
        async with self.stream(method, path, body, params=params, may_retry=may_retry) as response:
            return await self.read_json(response, stage)

    async def read_json(self, response: httpx.Response, stage: StageFn | None = None) -> Any:
        """The whole (capped) body of `response`, parsed as JSON. With `stage`, the
        body is parsed as it arrives, in worker threads, and each image in it is
        decoded into a blob from `stage` on the way (a `Spooled` in the value)."""
        if stage is None:
            raw = await self.read_capped(response)
            try:
                return json.loads(raw)
            except ValueError:
                raise self._not_json() from None
        spool = JsonSpool(stage)
        try:
            rest = await fed_while_read(self.iter_capped(response), spool.feed_all)
            return await run_cpu(_last, spool, rest)
        except ValueError:
            raise self._not_json() from None
        finally:
            spool.discard()

    def _not_json(self) -> RelayError:
        return RelayError(f"relay {self.relay!r} answered with something that is not JSON")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        body: JsonBody | dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        multipart: Callable[[], dict[str, Any]] | None = None,
        may_retry: Callable[[], bool] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Open a response whose status is 2xx; retries happen only before that.

        `multipart` returns fresh `data`/`files` arguments for each try (files are
        consumed by a send). `may_retry`, asked before each retry, can forbid it (a
        job the upstream already started must not run twice)."""

        def request_kwargs() -> dict[str, Any]:
            kwargs: dict[str, Any] = {"params": params, "headers": dict(self._headers)}
            if isinstance(body, JsonBody):
                kwargs["content"] = body.stream()
                kwargs["headers"]["content-type"] = "application/json"
                kwargs["headers"]["content-length"] = str(body.length)
            elif body is not None:
                kwargs["json"] = body
            if multipart is not None:
                kwargs.update(multipart())
            return kwargs

        # Neither the URL nor the trace context goes into the span or to the upstream:
        # the URL may hold a key (Gemini) and the upstream is another company.
        with span("upstream", relay=self.relay, method=method) as step:
            response, started = await self._open(method, path, request_kwargs, may_retry, step)
            status: int | None = response.status_code
            try:
                yield response
            except (httpx.TransportError, httpx.StreamError) as err:
                status = None
                raise RelayError(
                    f"relay {self.relay!r} connection broke mid-response ({type(err).__name__})"
                ) from None
            finally:
                await response.aclose()
                step.set("status_class", status_class(status))
                # Counted once the body is read: for an image, most of the time is the
                # upstream's work after the headers (a stream's events, a slow JSON body).
                self.metrics.upstream_request(self.relay, status, time.perf_counter() - started)

    async def _open(
        self,
        method: str,
        path: str,
        request_kwargs: Callable[[], dict[str, Any]],
        may_retry: Callable[[], bool] | None,
        step: Span,
    ) -> tuple[httpx.Response, float]:
        """A 2xx response, and when its try began (it is counted when it is closed);
        every failed try is counted here."""
        waited = 0.0
        attempt = 0
        while True:
            response: httpx.Response | None = None
            body = b""
            failure: RelayError
            started = time.perf_counter()
            step.set("tries", attempt + 1)
            try:
                request = self._client.build_request(method, self.url(path), **request_kwargs())
                with anyio.fail_after(self._timeouts.first_byte):
                    response = await self._client.send(request, stream=True)
            except TimeoutError:
                self._count_failure(None, started)
                # The request went out whole: the upstream may be working (and billing)
                # on it, so sending it again could pay twice. Give up instead.
                raise RelayError(
                    f"relay {self.relay!r} sent no response within {self._timeouts.first_byte:g} s"
                ) from None
            except httpx.TimeoutException:
                failure = RelayError(f"relay {self.relay!r} timed out connecting")
            except httpx.TransportError as err:
                failure = RelayError(f"relay {self.relay!r} is unreachable ({type(err).__name__})")
            else:
                if response.is_success:
                    return response, started
                body = await self._read_error_body(response)
                failure = error_from_response(self.relay, response.status_code, body, self.secrets)
            step.set("status_class", status_class(response.status_code if response else None))
            self._count_failure(response, started)
            if response is not None and not _retryable(response.status_code, body):
                raise failure
            attempt += 1
            delay = retry_delay(response, attempt - 1, self._retry, body)
            if attempt >= self._retry.attempts or waited + delay > self._retry.budget_seconds:
                raise failure
            if may_retry is not None and not may_retry():
                raise failure
            log.info(
                "relay %s: try %d failed (%s); retrying in %.1f s",
                self.relay,
                attempt,
                failure,
                delay,
            )
            self.metrics.upstream_retry(self.relay)
            waited += delay
            await self._sleep(delay)

    def _count_failure(self, response: httpx.Response | None, started: float) -> None:
        status = response.status_code if response is not None else None
        self.metrics.upstream_request(self.relay, status, time.perf_counter() - started)

    async def _read_error_body(self, response: httpx.Response) -> bytes:
        try:
            return await self.read_capped(response, limit=64 * 1024)
        except RelayError:
            return b""
        finally:
            await response.aclose()

    async def read_capped(self, response: httpx.Response, limit: int | None = None) -> bytes:
        cap = limit or self._max_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                if limit is not None:
                    return bytes(body[:cap])
                raise RelayError(f"relay {self.relay!r} response exceeds {cap} bytes")
        return bytes(body)

    async def iter_capped(self, response: httpx.Response) -> AsyncIterator[bytes]:
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > self._max_bytes:
                raise RelayError(f"relay {self.relay!r} response exceeds {self._max_bytes} bytes")
            yield chunk


def _last(spool: JsonSpool, pieces: list[bytes]) -> Any:
    """The answer's last pieces and its value, in one hand-off to a thread: all of a
    small answer (most of them) takes one."""
    spool.feed_all(pieces)
    return spool.finish()
