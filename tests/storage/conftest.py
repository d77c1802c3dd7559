from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imagegate.storage.interfaces import Storage
from tests.storage.backends import BACKENDS, Backend


@pytest.fixture(params=BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
async def storage(backend: Backend, state_dir: Path) -> AsyncIterator[Storage]:
    opened = backend.open(state_dir)
    yield opened
    await opened.aclose()
