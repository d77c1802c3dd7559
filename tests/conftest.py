import os
from pathlib import Path

import pytest


class ManualClock:
    """A clock the test moves by hand: expiry without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.current = start

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No IMAGEGATE_* setting of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("IMAGEGATE_"):
            monkeypatch.delenv(name)
    return


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    return path


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
