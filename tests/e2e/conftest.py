from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ManualClock
from tests.e2e.browser import browser_page, chromium
from tests.e2e.harness import RunningServer, running_server
from tests.e2e.idp import Provider, oidc_provider

__all__ = ["browser_page", "chromium"]  # fixtures of the browser tests, used by name


@pytest.fixture
async def server(state_dir: Path, clock: ManualClock) -> AsyncIterator[RunningServer]:
    async with running_server(state_dir, clock) as running:
        yield running


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """The real test OpenID provider, one per test module."""
    with oidc_provider(tmp_path_factory.mktemp("idp")) as running:
        yield running
