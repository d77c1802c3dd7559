from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imagegate.storage.embedded import open_embedded
from imagegate.storage.interfaces import Storage


@pytest.fixture
async def storage(state_dir: Path) -> AsyncIterator[Storage]:
    """The embedded storage in a fresh state directory, closed after the test."""
    state_dir.mkdir(mode=0o700)
    opened = open_embedded(state_dir, 10**7)
    yield opened
    await opened.aclose()
