"""What every backend records the same way, so that the same figures come out of any
of them: UTC days, the reservation lease, the error of a job whose process is gone."""

from datetime import UTC, datetime

LEASE_SECONDS = 3600.0
"""A reservation not committed or released by then ends by itself (a crashed process
can't hold a quota slot forever)."""

ABANDONED = {
    "kind": "Interrupted",
    "message": "imagegate stopped (a restart or a crash) while this job ran; it did not "
    "finish and its quota reservation was released; start it again",
}
"""The error of a job whose process is gone."""


CLOCK_MARGIN_SECONDS = 300.0
"""How far the clocks of processes sharing a database may differ: a spent nonce is kept
this much longer than it can be presented, so that a replica whose clock runs ahead
can't forget it while one whose clock runs behind would still accept it."""


def day_of(now: float) -> str:
    """The UTC day, as the quota counters name it (YYYY-MM-DD; its month is [:7])."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
