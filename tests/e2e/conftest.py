from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import ManualClock
from tests.e2e.harness import RunningServer, running_server


@pytest.fixture
async def server(state_dir: Path, clock: ManualClock) -> AsyncIterator[RunningServer]:
    async with running_server(state_dir, clock) as running:
        yield running
