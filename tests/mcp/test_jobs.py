"""Progress notifications of a waiting call: always higher than the one before, also
after a relay has said it is done and the job is not."""

from typing import Any, cast

from fastmcp import Context

from imagegate.mcp.jobs import Progress


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
