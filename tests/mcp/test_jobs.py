"""Progress notifications of a waiting call: always higher than the one before, also
after a relay has said it is done and the job is not. A finished job's result: the
images the call has in hand, or read back."""

from typing import Any, cast

from fastmcp import Context

from imagegate.access.identity import Identity
from imagegate.access.policy import Caller
from imagegate.core.errors import NotFound
from imagegate.core.ids import AssetId, Subject, new_asset_id, new_job_id
from imagegate.core.images import ImageFormat
from imagegate.mcp.jobs import Progress, finished_result
from imagegate.service.images import ImageService
from imagegate.storage.interfaces import Asset, Job, JobState


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[float, float | None, str]] = []

    async def report_progress(self, progress: float, total: float | None, message: str) -> None:
        self.sent.append((progress, total, message))


async def test_progress_never_goes_back_nor_stops() -> None:
    recorder = Recorder()
    progress = Progress(cast(Context, cast(Any, recorder)))
    await progress(0.5, "drawing")
    await progress(0.3, "a relay that goes back")
    await progress(None, "unknown")
    await progress(1.0, "the relay is done")
    for _ in range(5):  # the job is not: heartbeats go on past 99.9, without a total
        await progress(1.0, "storing")
    await progress.done()
    values = [value for value, _, _ in recorder.sent]
    assert values == sorted(set(values))
    assert values[:4] == [50.0, 50.1, 50.2, 99.9]
    assert all(total == 100.0 for value, total, _ in recorder.sent if value <= 99.9)
    assert all(total is None for value, total, _ in recorder.sent[4:-1])
    final, total, message = recorder.sent[-1]
    assert final == total
    assert final > values[-2]
    assert message.startswith("done (")


ALICE, BOB = Subject("token:alice"), Subject("token:bob")


def asset(owner: Subject) -> Asset:
    return Asset(
        new_asset_id(), owner, "ab" * 32, ImageFormat.PNG, 8, 8, 100, "r", "p", None, {}, 1
    )


class Index:
    """The service's part finished_result uses, with the index's reads counted."""

    def __init__(self, stored: list[Asset]) -> None:
        self.stored = {a.id: a for a in stored}
        self.reads: list[AssetId] = []

    async def get(self, caller: Caller, asset_id: AssetId) -> Asset:
        self.reads.append(asset_id)
        found = self.stored.get(asset_id)
        if found is None or found.owner != caller.subject:
            raise NotFound(f"image {asset_id} not found")
        return found

    def publish(self, asset: Asset) -> None:
        return None


async def test_a_finished_job_answers_with_the_images_in_hand_and_reads_the_rest() -> None:
    """The call that ran the job has its images: no read. Any other (a job this call
    didn't run) is read, as the owner may see it; one in hand but someone else's is
    not taken from the hand."""
    mine, read_back, unindexed, foreign = asset(ALICE), asset(ALICE), asset(ALICE), asset(BOB)
    index = Index([mine, read_back])
    ids = [mine.id, read_back.id, unindexed.id, foreign.id]
    job = Job(
        new_job_id(), ALICE, "generate_image", JobState.COMPLETED, 1, 2, outcome={"assets": ids}
    )
    caller = Caller(Identity(ALICE), frozenset())
    service = cast(ImageService, cast(Any, index))
    result = await finished_result(service, caller, job, [mine, unindexed, foreign])
    assert [image["asset_id"] for image in result.structured_content["images"]] == [
        mine.id,
        read_back.id,
        unindexed.id,
    ]
    assert index.reads == [read_back.id, foreign.id]
