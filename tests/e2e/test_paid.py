"""Paid relays ask first, in both protocol eras; quotas refuse before any upstream call.

The paid relay is an Images API relay pointing at a fake upstream on 127.0.0.1, so
every test can assert whether a request reached the upstream at all."""

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mcp_types
import pytest
from fastmcp.client.elicitation import ElicitResult
from fastmcp.exceptions import ToolError

from imagegate.config import Limits, QuotaSettings
from imagegate.relays.config import PriceTable
from imagegate.relays.openai_images import OpenAIImagesRelayConfig
from imagegate.relays.placeholder import PlaceholderRelayConfig
from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server
from tests.fakes.upstream import (
    FakeUpstream,
    error_reply,
    images_reply,
    png_bytes,
    running_upstream,
    slow,
    watched,
)

KEY = "sk-paid-relay-key-0123456789"
PATH = "/v1/images/generations"
ERAS = ["legacy", "modern"]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as fake:
        fake.defaults[PATH] = images_reply(png_bytes((1024, 1024)))
        yield fake


def relays(fake: FakeUpstream) -> dict[str, Any]:
    common: dict[str, Any] = {
        "kind": "openai-images",
        "base_url": f"{fake.base_url}/v1",
        "api_key_env": "FAKE_PAID_KEY",
        "model": "gpt-image-test",
    }
    return {
        "paid": OpenAIImagesRelayConfig(
            **common,
            paid=True,
            price=PriceTable(per_image={"1024x1024:high": 0.25, "*": 0.04}),
        ),
        "unpriced": OpenAIImagesRelayConfig(**common, paid=True),
        "upstream-free": OpenAIImagesRelayConfig(**common, paid=False),
        "placeholder": PlaceholderRelayConfig(kind="placeholder"),
    }


@pytest.fixture
async def server(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    async with running_server(
        state_dir, clock, relays=relays(upstream), default_relay="paid"
    ) as running:
        yield running


class Answers:
    """An elicitation handler that answers as told and remembers the questions."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.questions: list[str] = []

    async def __call__(self, message: str, response_type: Any, params: Any, ctx: Any) -> Any:
        self.questions.append(message)
        return self.answer


def client(
    server: RunningServer,
    era: str,
    answers: Answers | None,
    token: str | None = None,
) -> Any:
    kwargs: dict[str, Any] = {}
    if era == "legacy":
        kwargs["mode"] = "legacy"
    if answers is not None:
        kwargs["elicitation_handler"] = answers
    return server.client(token, **kwargs)


async def generate(
    server: RunningServer, era: str, answers: Answers | None, **arguments: Any
) -> Any:
    arguments.setdefault("prompt", "a costly picture")
    async with client(server, era, answers) as c:
        return await c.call_tool("generate_image", arguments)


@pytest.mark.parametrize("era", ERAS)
async def test_accept_proceeds_and_shows_the_cost(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    answers = Answers(True)
    upstream.script(PATH, images_reply(png_bytes((1024, 1024)), png_bytes((1024, 1024), "red")))
    result = await generate(server, era, answers, quality="high", n=2)
    assert result.structured_content["confirmation"] == "accepted"
    assert result.structured_content["estimated_cost"] == 0.5
    assert len(result.structured_content["images"]) == 2
    (question,) = answers.questions
    assert "Relay 'paid' (model gpt-image-test) costs money" in question
    assert "Make 2 image(s) at 1024x1024, quality high" in question
    assert "Estimated cost: about USD 0.500" in question
    assert len(upstream.calls(PATH)) == 1


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (False, "declined"),
        (ElicitResult(action="decline"), "declined"),
        (ElicitResult(action="cancel"), "cancelled"),
    ],
    ids=["answered-no", "decline", "cancel"],
)
async def test_no_answer_makes_no_request(
    server: RunningServer, upstream: FakeUpstream, era: str, answer: Any, outcome: str
) -> None:
    result = await generate(server, era, Answers(answer))
    assert not result.is_error
    assert result.structured_content["images"] == []
    assert result.structured_content["confirmation"] == outcome
    assert f"not confirmed ({outcome})" in result.content[0].text
    assert "nothing was spent" in result.content[0].text
    assert upstream.requests == []
    async with client(server, era, None) as c:  # the question came first: no job started
        assert (await c.call_tool("list_jobs", {})).structured_content["jobs"] == []


@pytest.mark.parametrize("era", ERAS)
async def test_accepted_the_job_records_the_confirmation(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    """The question is asked in the call that starts the job; the job's result, fetched
    later, still says what was confirmed and at what estimate."""
    async with client(server, era, Answers(True)) as c:
        result = await c.call_tool("generate_image", {"prompt": "x", "quality": "high"})
        (job,) = (await c.call_tool("list_jobs", {})).structured_content["jobs"]
        again = await c.call_tool("get_job", {"job_id": job["job_id"]})
    assert again.structured_content["confirmation"] == "accepted"
    assert again.structured_content["estimated_cost"] == 0.25
    assert again.structured_content["images"][0]["asset_id"] == job["asset_ids"][0]

    def without_links(content: dict[str, Any]) -> dict[str, Any]:
        images = [
            {k: v for k, v in image.items() if k not in ("url", "expires_at")}
            for image in content["images"]
        ]
        return {**content, "images": images}

    # The same answer as the call gave, but for fresh links.
    assert without_links(again.structured_content) == without_links(result.structured_content)


@pytest.mark.parametrize("era", ERAS)
async def test_client_without_elicitation_is_refused_with_the_way_out(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    result = await generate(server, era, None)
    assert result.structured_content["confirmation"] == "unsupported"
    text = result.content[0].text
    assert "cannot answer a confirmation question" in text
    assert "paid:auto" in text
    assert upstream.requests == []


@pytest.mark.parametrize("era", ERAS)
async def test_unknown_price_says_so(server: RunningServer, era: str) -> None:
    answers = Answers(True)
    await generate(server, era, answers, relay="unpriced")
    assert "Estimated cost: unknown" in answers.questions[0]


@pytest.mark.parametrize("era", ERAS)
async def test_free_relays_never_ask(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    answers = Answers(False)
    for relay in ("placeholder", "upstream-free"):
        result = await generate(server, era, answers, relay=relay)
        assert "confirmation" not in result.structured_content
        assert len(result.structured_content["images"]) == 1
    assert answers.questions == []


@pytest.mark.parametrize("era", ERAS)
async def test_a_batch_asks_once_for_its_total(
    server: RunningServer, upstream: FakeUpstream, era: str
) -> None:
    source = "data:image/png;base64," + base64.b64encode(png_bytes((1024, 1024))).decode()
    upstream.defaults["/v1/images/edits"] = images_reply(png_bytes((1024, 1024)))
    answers = Answers(True)
    async with client(server, era, answers) as c:
        result = await c.call_tool(
            "edit_image", {"prompt": "x", "images": [source] * 3, "batch": True}
        )
    assert len(result.structured_content["images"]) == 3
    (question,) = answers.questions
    assert "Make 3 image(s)" in question
    assert "about USD 0.120" in question
    assert len(upstream.calls("/v1/images/edits")) == 3


@pytest.mark.parametrize("era", ERAS)
async def test_a_batch_of_mixed_sizes_asks_for_what_each_item_costs(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    # An edit keeps its input's size, so a cheap first image must not price the batch.
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    sized = OpenAIImagesRelayConfig(
        kind="openai-images",
        base_url=f"{upstream.base_url}/v1",
        api_key_env="FAKE_PAID_KEY",
        price=PriceTable(per_image={"1024x1024": 0.04, "1536x1024": 5.0}),
    )
    upstream.defaults["/v1/images/edits"] = images_reply(png_bytes((1024, 1024)))

    def data_url(size: tuple[int, int]) -> str:
        return "data:image/png;base64," + base64.b64encode(png_bytes(size)).decode()

    images = [data_url((1024, 1024)), data_url((1536, 1024)), data_url((1536, 1024))]
    answers = Answers(True)
    async with (
        running_server(tmp_path / "state", relays={"sized": sized}, default_relay="sized") as s,
        client(s, era, answers) as c,
    ):
        result = await c.call_tool("edit_image", {"prompt": "x", "images": images, "batch": True})
    (question,) = answers.questions
    assert "Make 3 image(s) at 1024x1024 (x1), 1536x1024 (x2)" in question
    assert "about USD 10.040" in question
    assert result.structured_content["estimated_cost"] == pytest.approx(10.04)
    sent = [call.body for call in upstream.calls("/v1/images/edits")]
    assert [b'name="size"\r\n\r\n1024x1024' in body for body in sent] == [True, False, False]


async def test_paid_auto_bot_is_not_asked(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    bot = "bot-token-0123456789abcdefghijklmn"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nsubject = "bot"\nsha256 = "{hashlib.sha256(bot.encode()).hexdigest()}"\n'
        f'[[tokens]]\nsubject = "human"\ntoken = "human-token-0123456789abcdefghij"\n'
    )
    tokens.chmod(0o600)
    acl = tmp_path / "acl.toml"
    acl.write_text('[default]\nscopes = ["*"]\n[subjects."token:bot"]\nscopes = ["paid:auto"]\n')
    async with running_server(
        tmp_path / "state",
        relays=relays(upstream),
        default_relay="paid",
        tokens_file=tokens,
        acl_file=acl,
    ) as server:
        answers = Answers(False)
        async with server.client(bot, elicitation_handler=answers) as c:
            result = await c.call_tool("generate_image", {"prompt": "x"})
        assert result.structured_content["confirmation"] == "paid:auto"
        assert answers.questions == []
        # "*" alone does not let a caller spend without asking.
        async with server.client(
            "human-token-0123456789abcdefghij", elicitation_handler=answers
        ) as c:
            result = await c.call_tool("generate_image", {"prompt": "x"})
        assert result.structured_content["confirmation"] == "declined"
        assert len(answers.questions) == 1


async def test_confirmations_are_audited(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    audit = tmp_path / "audit.jsonl"
    async with running_server(
        tmp_path / "state", relays=relays(upstream), default_relay="paid", audit_log=str(audit)
    ) as server:
        await generate(server, "legacy", Answers(True))
        await generate(server, "legacy", Answers(ElicitResult(action="decline")))
        await generate(server, "modern", Answers(True))
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(line["outcome"], line["confirmation"]) for line in lines] == [
        ("ok", "accepted"),
        ("not_confirmed", "declined"),
        ("input_required", "asked"),
        ("ok", "accepted"),
    ]
    assert lines[0]["estimated_cost"] == 0.04


async def test_modern_confirmation_survives_a_restart_and_works_on_a_replica(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    state_key = "k" * 48
    settings: dict[str, Any] = {
        "relays": relays(upstream),
        "default_relay": "paid",
        "bearer_token": "shared-token-0123456789abcdef",
        "request_state_key": state_key,
    }
    arguments = {"prompt": "across replicas"}
    async with (
        running_server(tmp_path / "a", **settings) as first,
        first.client("shared-token-0123456789abcdef", elicitation_handler=Answers(True)) as c,
    ):
        asked = await c.session.call_tool("generate_image", arguments, allow_input_required=True)
    assert isinstance(asked, mcp_types.InputRequiredResult)
    assert upstream.requests == []
    (answer_key,) = asked.input_requests or {}
    yes = {answer_key: mcp_types.ElicitResult(action="accept", content={"value": True})}

    async def retry(directory: str, **changes: Any) -> Any:
        async with (
            running_server(tmp_path / directory, **{**settings, **changes}) as other,
            other.client("shared-token-0123456789abcdef", elicitation_handler=Answers(True)) as c,
        ):
            return await c.session.call_tool(
                "generate_image",
                arguments,
                input_responses=yes,
                request_state=asked.request_state,
                allow_input_required=True,
            )

    done = await retry("b")  # another process, same key: accepted
    assert isinstance(done, mcp_types.CallToolResult)
    assert done.structured_content is not None
    assert done.structured_content["confirmation"] == "accepted"
    assert len(upstream.calls(PATH)) == 1
    with pytest.raises(Exception, match="Invalid or expired requestState"):
        await retry("c", request_state_key="z" * 48)
    assert len(upstream.calls(PATH)) == 1


async def test_a_sealed_question_of_one_subject_is_useless_to_another(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    alice, mallory = "alice-token-0123456789abcdef", "mallory-token-0123456789abcde"
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        f'[[tokens]]\nsubject = "alice"\nsha256 = "{hashlib.sha256(alice.encode()).hexdigest()}"\n'
        f'[[tokens]]\nsubject = "mallory"\n'
        f'sha256 = "{hashlib.sha256(mallory.encode()).hexdigest()}"\n'
    )
    tokens.chmod(0o600)
    arguments = {"prompt": "alice's picture"}
    async with running_server(
        tmp_path / "state",
        relays=relays(upstream),
        default_relay="paid",
        tokens_file=tokens,
        acl_open=True,
    ) as server:
        async with server.client(alice, elicitation_handler=Answers(True)) as c:
            asked = await c.session.call_tool(
                "generate_image", arguments, allow_input_required=True
            )
        assert isinstance(asked, mcp_types.InputRequiredResult)
        (answer_key,) = asked.input_requests or {}
        yes = {answer_key: mcp_types.ElicitResult(action="accept", content={"value": True})}
        async with server.client(mallory, elicitation_handler=Answers(True)) as c:
            with pytest.raises(Exception, match="Invalid or expired requestState"):
                await c.session.call_tool(
                    "generate_image",
                    arguments,
                    input_responses=yes,
                    request_state=asked.request_state,
                    allow_input_required=True,
                )
        assert upstream.requests == []
        # The same state in alice's own hands is a yes: the refusal above was the subject.
        async with server.client(alice, elicitation_handler=Answers(True)) as c:
            done = await c.session.call_tool(
                "generate_image",
                arguments,
                input_responses=yes,
                request_state=asked.request_state,
                allow_input_required=True,
            )
        assert isinstance(done, mcp_types.CallToolResult)
        assert len(upstream.calls(PATH)) == 1


async def test_an_answer_without_state_is_not_a_yes(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    async with server.client(elicitation_handler=Answers(True)) as c:
        result = await c.session.call_tool(
            "generate_image",
            {"prompt": "sneaky"},
            input_responses={
                "confirm_paid_call": mcp_types.ElicitResult(
                    action="accept", content={"value": True}
                )
            },
            allow_input_required=True,
        )
    assert isinstance(result, mcp_types.InputRequiredResult)  # asked again, properly
    assert upstream.requests == []


# Quotas ---------------------------------------------------------------------------


async def quota_server(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, limits: Limits
) -> Any:
    return running_server(
        state_dir,
        clock,
        relays=relays(upstream),
        default_relay="upstream-free",
        quotas=QuotaSettings(default=limits),
    )


async def test_quota_exhaustion_says_which_usage_and_when(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    upstream.script(PATH, images_reply(png_bytes((1024, 1024)), png_bytes((1024, 1024), "red")))
    async with await quota_server(state_dir, upstream, clock, Limits(images_per_day=2)) as server:
        async with server.client() as c:
            await c.call_tool("generate_image", {"prompt": "x", "n": 2})
            with pytest.raises(ToolError) as refused:
                await c.call_tool("generate_image", {"prompt": "x"})
            usage = (await c.call_tool("get_usage", {})).structured_content
        assert str(refused.value).startswith(
            "quota exceeded: images_per_day (2 of 2 images used today, 1 asked); retry after "
        )
        assert len(upstream.calls(PATH)) == 1
        assert usage is not None
        assert usage["usage"]["images_today"] == 2
        assert usage["limits"]["images_per_day"] == 2
        clock.advance(86400)  # the next day
        async with server.client() as c:
            await c.call_tool("generate_image", {"prompt": "x"})
        assert len(upstream.calls(PATH)) == 2


async def test_cooldown(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    async with (
        await quota_server(state_dir, upstream, clock, Limits(cooldown_seconds=30)) as server,
        server.client() as c,
    ):
        await c.call_tool("generate_image", {"prompt": "x"})
        clock.advance(10)
        with pytest.raises(ToolError, match=r"cooldown_seconds .* retry after 20 s"):
            await c.call_tool("generate_image", {"prompt": "x"})
        clock.advance(20)
        await c.call_tool("generate_image", {"prompt": "x"})
    assert len(upstream.calls(PATH)) == 2


async def test_many_parallel_calls_against_one_remaining_slot(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    upstream.defaults[PATH] = slow(0.3, images_reply(png_bytes((1024, 1024))))
    async with await quota_server(state_dir, upstream, clock, Limits(images_per_day=1)) as server:

        async def attempt() -> bool:
            async with server.client() as c:
                try:
                    await c.call_tool("generate_image", {"prompt": "race"})
                    return True
                except ToolError:
                    return False

        outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    assert outcomes.count(True) == 1
    assert len(upstream.calls(PATH)) == 1


async def test_failed_and_declined_calls_consume_no_quota(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    upstream.script(PATH, error_reply(400, "bad", "no"))
    async with running_server(
        state_dir,
        clock,
        relays=relays(upstream),
        default_relay="paid",
        quotas=QuotaSettings(default=Limits(images_per_day=1)),
    ) as server:
        async with server.client(mode="legacy", elicitation_handler=Answers(True)) as c:
            with pytest.raises(ToolError, match="rejected the request"):
                await c.call_tool("generate_image", {"prompt": "x"})
        async with server.client(mode="legacy", elicitation_handler=Answers(False)) as c:
            await c.call_tool("generate_image", {"prompt": "x"})
        async with server.client(mode="legacy", elicitation_handler=Answers(True)) as c:
            result = await c.call_tool("generate_image", {"prompt": "x"})
            usage = (await c.call_tool("get_usage", {})).structured_content
    assert len(result.structured_content["images"]) == 1
    assert usage is not None
    assert usage["usage"]["images_today"] == 1
    assert usage["usage"]["spend_today"] == 0.04


async def test_counters_survive_a_restart(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    limits = Limits(images_per_day=1)
    async with (
        await quota_server(state_dir, upstream, clock, limits) as server,
        server.client() as c,
    ):
        await c.call_tool("generate_image", {"prompt": "x"})
    async with (
        await quota_server(state_dir, upstream, clock, limits) as server,
        server.client() as c,
    ):
        with pytest.raises(ToolError, match="images_per_day"):
            await c.call_tool("generate_image", {"prompt": "x"})
    assert len(upstream.calls(PATH)) == 1


async def running_count(server: RunningServer) -> int:
    async with server.client() as c:
        usage = (await c.call_tool("get_usage", {})).structured_content
    assert usage is not None
    running: int = usage["usage"]["running"]
    return running


async def test_a_client_that_cancels_its_call_frees_its_slot_at_once(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handshake-era client stops waiting (its timeout) and sends
    notifications/cancelled: the upstream request is aborted, the reservation released
    then (not when its one-hour lease runs out), and nothing is stored."""
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    working, hung_up = asyncio.Event(), asyncio.Event()
    upstream.script(PATH, watched(working, hung_up, images_reply(png_bytes((1024, 1024)))))
    limits = Limits(max_concurrent=1, images_per_day=5)
    try:
        async with await quota_server(state_dir, upstream, clock, limits) as server:
            async with client(server, "legacy", None) as c:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(c.call_tool("generate_image", {"prompt": "x"}), 1)
            await asyncio.wait_for(hung_up.wait(), 5)
            assert await running_count(server) == 0
            async with server.client() as c:
                (job,) = (await c.call_tool("list_jobs", {})).structured_content["jobs"]
                assert job["status"] == "cancelled"
                assert (await c.call_tool("list_images", {})).structured_content["images"] == []
                result = await c.call_tool("generate_image", {"prompt": "next"})
                usage = (await c.call_tool("get_usage", {})).structured_content
            assert len(result.structured_content["images"]) == 1
            assert usage is not None
            assert usage["usage"]["images_today"] == 1
    finally:
        working.set()


async def test_a_client_that_hangs_up_leaves_its_job_running(
    state_dir: Path, upstream: FakeUpstream, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2026-07-28 client stops waiting (it closes the call's stream, which is also what a
    dropped connection looks like): the job goes on, since the upstream may already
    bill for it; its slot is held until it ends, then its image is listed."""
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    working, hung_up = asyncio.Event(), asyncio.Event()
    upstream.script(PATH, watched(working, hung_up, images_reply(png_bytes((1024, 1024)))))
    limits = Limits(max_concurrent=1, images_per_day=5)
    async with await quota_server(state_dir, upstream, clock, limits) as server:
        async with client(server, "modern", None) as c:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.call_tool("generate_image", {"prompt": "x"}), 1)
        await asyncio.sleep(0.3)
        assert await running_count(server) == 1  # held by the running job, not leaked
        working.set()
        for _ in range(50):
            if await running_count(server) == 0:
                break
            await asyncio.sleep(0.1)
        async with server.client() as c:
            (job,) = (await c.call_tool("list_jobs", {})).structured_content["jobs"]
            images = (await c.call_tool("list_images", {})).structured_content["images"]
            usage = (await c.call_tool("get_usage", {})).structured_content
        assert not hung_up.is_set()
        assert job["status"] == "completed"
        assert [image["asset_id"] for image in images] == job["asset_ids"]
        assert usage is not None
        assert usage["usage"]["images_today"] == 1
        assert usage["usage"]["running"] == 0


async def test_a_client_that_leaves_a_paid_question_open_frees_its_slot(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """A handshake-era client asked to confirm goes away without answering."""
    never = asyncio.Event()

    async def hang(message: str, response_type: Any, params: Any, ctx: Any) -> Any:
        await never.wait()

    async with server.client(mode="legacy", elicitation_handler=hang) as c:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.call_tool("generate_image", {"prompt": "x"}), 1)
    for _ in range(50):
        if await running_count(server) == 0:
            break
        await asyncio.sleep(0.1)
    assert await running_count(server) == 0
    assert upstream.requests == []


@pytest.mark.parametrize("era", ERAS)
async def test_a_cooldown_lets_a_confirmed_paid_call_through(
    state_dir: Path,
    upstream: FakeUpstream,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    era: str,
) -> None:
    """Asking the question is not a call: the answered retry is not in its cooldown."""
    monkeypatch.setenv("FAKE_PAID_KEY", KEY)
    async with running_server(
        state_dir,
        clock,
        relays=relays(upstream),
        default_relay="paid",
        quotas=QuotaSettings(default=Limits(cooldown_seconds=30)),
    ) as server:
        result = await generate(server, era, Answers(True))
        assert result.structured_content["confirmation"] == "accepted"
        assert len(result.structured_content["images"]) == 1
        with pytest.raises(ToolError, match="cooldown_seconds"):
            await generate(server, era, Answers(True))
    assert len(upstream.calls(PATH)) == 1


async def test_a_yes_pays_for_one_call_only(server: RunningServer, upstream: FakeUpstream) -> None:
    """The same sealed state with the same accepting answer, sent again: asked anew."""
    arguments = {"prompt": "one picture"}
    async with server.client(elicitation_handler=Answers(True)) as c:
        asked = await c.session.call_tool("generate_image", arguments, allow_input_required=True)
        assert isinstance(asked, mcp_types.InputRequiredResult)
        (answer_key,) = asked.input_requests or {}
        yes = {answer_key: mcp_types.ElicitResult(action="accept", content={"value": True})}
        results = [
            await c.session.call_tool(
                "generate_image",
                arguments,
                input_responses=yes,
                request_state=asked.request_state,
                allow_input_required=True,
            )
            for _ in range(3)
        ]
    assert isinstance(results[0], mcp_types.CallToolResult)
    assert all(isinstance(again, mcp_types.InputRequiredResult) for again in results[1:])
    assert len(upstream.calls(PATH)) == 1


@pytest.mark.parametrize("era", ERAS)
async def test_an_accept_without_a_value_is_not_a_yes(
    server: RunningServer, upstream: FakeUpstream, era: str, caplog: pytest.LogCaptureFixture
) -> None:
    result = await generate(server, era, Answers(ElicitResult(action="accept")))
    assert result.structured_content["images"] == []
    assert result.structured_content["confirmation"] == "declined"
    assert "not confirmed (declined)" in result.content[0].text
    assert upstream.requests == []
    assert "Traceback" not in caplog.text


async def test_a_client_whose_question_handler_fails_is_not_confirmed(
    server: RunningServer, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(message: str, response_type: Any, params: Any, ctx: Any) -> Any:
        raise RuntimeError("the client's own bug")

    async with server.client(mode="legacy", elicitation_handler=broken) as c:
        result = await c.call_tool("generate_image", {"prompt": "x"})
    assert result.structured_content["images"] == []
    assert result.structured_content["confirmation"] == "cancelled"
    assert "could not answer" in result.content[0].text
    assert upstream.requests == []
    assert "Traceback" not in caplog.text
